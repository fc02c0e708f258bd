"""Data pipelines: tokenizers, datasets and collators for every family."""
