"""How big a config's model must be, checked before anything is allocated.

A lower bound is enough to reject what cannot work: every Transformer layer holds at least its
query and output projections (``2 * d_model**2`` weights, whatever the key/value heads) and some
32 KB of Python objects (measured: 37 KB and 1.2 ms per GPT layer), and a token model holds a
``vocab_size x d_model`` embedding. ``n_layers=100_000_000`` or ``d_model=1_000_000`` is then a
one-line error instead of an hour-long build or an allocator traceback, and a ``config.json``
that describes far more weights than its weights file holds is refused before the model is built.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

LAYER_FIELDS = ("n_layers", "n_encoder_layers", "n_decoder_layers")
LAYER_OBJECT_BYTES = 16 * 1024  # half the measured Python overhead of one layer
GB = 1024 ** 3
SLACK_PARAMETERS = 1 << 20


def _int_field(config: Any, name: str) -> int:
    value = getattr(config, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def minimum_parameters(config: Any) -> int:
    """A lower bound on the parameter count of any formerkit model built from ``config``."""
    d_model = _int_field(config, "d_model")
    layers = sum(_int_field(config, name) for name in LAYER_FIELDS)
    return layers * 2 * d_model * d_model + _int_field(config, "vocab_size") * d_model


def minimum_bytes(config: Any) -> int:
    """A lower bound on the memory a float32 model of ``config`` takes."""
    layers = sum(_int_field(config, name) for name in LAYER_FIELDS)
    return 4 * minimum_parameters(config) + LAYER_OBJECT_BYTES * layers


def physical_memory() -> int | None:
    """Bytes of RAM of this machine, or ``None`` where the platform does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def describe(config: Any) -> str:
    shown = [f"{name}={getattr(config, name)}" for name in ("vocab_size", "d_model", *LAYER_FIELDS)
             if _int_field(config, name)]
    return f"{type(config).__name__}({', '.join(shown)})"


def check_fits_in_memory(config: Any, memory: int | None = None) -> None:
    """Raise ``ValueError`` when ``config``'s model cannot fit in this machine's memory."""
    memory = physical_memory() if memory is None else memory
    needed = minimum_bytes(config)
    if memory is not None and needed > memory:
        raise ValueError(f"{describe(config)} needs at least {needed / GB:,.1f} GB "
                         f"(>= {minimum_parameters(config):,} parameters), more than this "
                         f"machine's {memory / GB:,.1f} GB of memory; check these sizes")


def check_matches_weights(config: Any, stored: int, source: Path) -> None:
    """Raise ``ValueError`` when ``config`` describes far more parameters than the weights
    file ``source`` holds (``stored`` values): the config does not belong to those weights.

    Only a gross mismatch is refused here (a model registered by a user may count its layers
    differently); the shapes of the model built on the meta device are then compared exactly.
    """
    needed = minimum_parameters(config)
    if needed > 2 * stored + SLACK_PARAMETERS:
        raise ValueError(f"{describe(config)} describes at least {needed:,} parameters but "
                         f"{source} holds only {stored:,} values: the config does not match "
                         "the weights")
