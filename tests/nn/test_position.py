"""Sinusoidal positions against the paper's formula; learned positions; length errors."""

import math

import pytest
import torch

from formerkit.nn import LearnedPositionalEmbedding, SinusoidalPositionalEncoding, sinusoidal_table


def test_interleaved_table_matches_the_paper_formula():
    table = sinusoidal_table(50, 16)
    for pos in (0, 1, 7, 49):
        for i in range(8):
            angle = pos / 10000 ** (2 * i / 16)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_halves_layout_is_a_permutation_of_the_same_values():
    interleaved = sinusoidal_table(20, 8)
    halves = sinusoidal_table(20, 8, layout="halves")
    torch.testing.assert_close(halves[:, :4], interleaved[:, 0::2])
    torch.testing.assert_close(halves[:, 4:], interleaved[:, 1::2])


def test_modules_index_by_position_and_reject_long_sequences():
    encoding = SinusoidalPositionalEncoding(10, 8)
    ids = torch.arange(3, 7)[None]
    torch.testing.assert_close(encoding(ids)[0], sinusoidal_table(10, 8)[3:7])
    assert not any(name == "table" for name, _ in encoding.state_dict().items())
    with pytest.raises(ValueError, match="12 exceeds the maximum of 10"):
        encoding(torch.arange(12)[None])
    learned = LearnedPositionalEmbedding(6, 4)
    assert learned(torch.arange(6)[None]).shape == (1, 6, 4)
    with pytest.raises(ValueError, match="7 exceeds the maximum of 6"):
        learned(torch.arange(7)[None])


def test_bad_layout_and_odd_width():
    with pytest.raises(ValueError, match="layout"):
        sinusoidal_table(4, 4, layout="spiral")
    with pytest.raises(ValueError, match="even d_model"):
        sinusoidal_table(4, 5)
