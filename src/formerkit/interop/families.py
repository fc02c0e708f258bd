"""Imports every family's HuggingFace converter so that it registers itself."""
