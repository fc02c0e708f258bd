"""Transformer building blocks shared by every formerkit model."""

from formerkit.nn.attention import BACKENDS, MultiHeadAttention, scaled_dot_product_attention
from formerkit.nn.cache import KVCache, LayerCache
from formerkit.nn.init import init_weights, scale_residual_projections
from formerkit.nn.layers import (
    ACTIVATIONS,
    Decoder,
    DecoderLayer,
    Encoder,
    EncoderLayer,
    FeedForward,
    get_activation,
)
from formerkit.nn.masks import causal_mask, make_attention_mask, padding_mask
from formerkit.nn.position import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    check_length,
    positions,
    sinusoidal_table,
)

__all__ = [
    "ACTIVATIONS", "BACKENDS", "Decoder", "DecoderLayer", "Encoder", "EncoderLayer",
    "FeedForward", "KVCache", "LayerCache", "LearnedPositionalEmbedding", "MultiHeadAttention",
    "SinusoidalPositionalEncoding", "causal_mask", "check_length", "get_activation",
    "init_weights", "make_attention_mask", "padding_mask", "positions",
    "scale_residual_projections", "scaled_dot_product_attention", "sinusoidal_table",
]
