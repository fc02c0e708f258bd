"""Shared fixtures: point FORMERKIT_DATA_DIR at ../shared/data when it exists."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

if "FORMERKIT_DATA_DIR" not in os.environ and SHARED_DATA.is_dir():
    os.environ["FORMERKIT_DATA_DIR"] = str(SHARED_DATA)

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def data_dir() -> Path:
    """The real-data folder; tests using it skip cleanly where it is absent."""
    value = os.environ.get("FORMERKIT_DATA_DIR")
    if not value or not Path(value).is_dir():
        pytest.skip("real datasets not available (set FORMERKIT_DATA_DIR)")
    return Path(value)
