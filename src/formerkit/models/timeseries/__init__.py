"""Time-series Transformers: activity recognition and forecasting."""
