"""Transformer building blocks shared by every formerkit model."""

from formerkit.nn.attention import BACKENDS, MultiHeadAttention, scaled_dot_product_attention
from formerkit.nn.cache import KVCache, LayerCache
from formerkit.nn.init import init_weights, scale_residual_projections
from formerkit.nn.layers import (
    ACTIVATIONS,
    FEED_FORWARDS,
    Decoder,
    DecoderLayer,
    Encoder,
    EncoderLayer,
    FeedForward,
    GatedFeedForward,
    get_activation,
    make_feed_forward,
)
from formerkit.nn.masks import (
    causal_mask,
    make_attention_mask,
    padding_mask,
    sliding_window_mask,
)
from formerkit.nn.norms import NORMS, RMSNorm, make_norm
from formerkit.nn.patch import (
    PatchEmbedding2d,
    image_from_patches,
    image_patches,
    patchify,
    prepend_token,
    random_masking,
    resize_grid_positions,
    sincos_2d_table,
    unshuffle,
)
from formerkit.nn.position import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    check_length,
    positions,
    sinusoidal_table,
)
from formerkit.nn.rotary import ROPE_TYPES, RotaryEmbedding, apply_rotary

__all__ = [
    "ACTIVATIONS", "BACKENDS", "FEED_FORWARDS", "NORMS", "ROPE_TYPES", "Decoder",
    "DecoderLayer", "Encoder", "EncoderLayer", "FeedForward", "GatedFeedForward", "KVCache",
    "LayerCache", "LearnedPositionalEmbedding", "MultiHeadAttention", "PatchEmbedding2d",
    "RMSNorm",
    "RotaryEmbedding", "SinusoidalPositionalEncoding", "apply_rotary", "causal_mask",
    "check_length", "get_activation", "image_from_patches", "image_patches", "init_weights",
    "make_attention_mask", "make_feed_forward", "make_norm", "padding_mask", "patchify",
    "positions", "prepend_token", "random_masking", "resize_grid_positions",
    "scale_residual_projections", "scaled_dot_product_attention", "sincos_2d_table",
    "sinusoidal_table", "sliding_window_mask", "unshuffle",
]
