"""Shared fixtures: point FORMERKIT_DATA_DIR at ../shared/data when it exists."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TESTS_DIR = Path(__file__).resolve().parent

# Tests import shared helpers from sibling modules (e.g. ``from test_viz import assert_image``);
# pytest's importlib mode (needed for same-named test files in different folders) does not put
# the tests folder on sys.path by itself.
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

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
