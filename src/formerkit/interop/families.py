"""Imports every family's HuggingFace converter so that it registers itself."""

from formerkit.interop import hf_bert, hf_gpt2, hf_llama, hf_marian  # noqa: F401  (register)
