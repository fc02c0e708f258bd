"""Time-series Transformers: activity recognition and forecasting."""

from formerkit.models.timeseries.crossformer import Crossformer, CrossformerConfig
from formerkit.models.timeseries.forecasting import ForecasterConfig, TransformerForecaster
from formerkit.models.timeseries.itransformer import ITransformer, ITransformerConfig
from formerkit.models.timeseries.layers import Forecaster, RevIN
from formerkit.models.timeseries.patchtst import PatchTST, PatchTSTConfig

FORECASTERS = ("transformer-forecaster", "itransformer", "patchtst", "crossformer")

__all__ = ["FORECASTERS", "Crossformer", "CrossformerConfig", "Forecaster", "ForecasterConfig",
           "ITransformer", "ITransformerConfig", "PatchTST", "PatchTSTConfig", "RevIN",
           "TransformerForecaster"]
