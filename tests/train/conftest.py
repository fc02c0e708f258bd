"""Fixtures of the trainer tests: the toy task module on sys.path, one torch thread (the CI
machine has two cores shared by everything; tiny models run fastest single-threaded)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

TOY_DIR = Path(__file__).resolve().parent
if str(TOY_DIR) not in sys.path:
    sys.path.insert(0, str(TOY_DIR))


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

