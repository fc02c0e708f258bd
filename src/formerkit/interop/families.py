"""Imports every family's HuggingFace converter so that it registers itself."""

from formerkit.interop import (  # noqa: F401  (register)
    hf_bert,
    hf_gpt2,
    hf_llama,
    hf_marian,
    hf_vit,
)
