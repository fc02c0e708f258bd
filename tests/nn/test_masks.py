"""One mask convention: bool, True = may attend; causal aligned bottom-right."""

import pytest
import torch

from formerkit.nn import causal_mask, make_attention_mask, padding_mask


def test_causal_mask_square_is_lower_triangular():
    mask = causal_mask(4)
    assert mask.shape == (1, 1, 4, 4) and mask.dtype == torch.bool
    assert torch.equal(mask[0, 0], torch.ones(4, 4, dtype=torch.bool).tril())


def test_causal_mask_with_cache_offset_is_bottom_right():
    mask = causal_mask(2, 5)[0, 0]
    # Queries are the last two positions (3 and 4) of five keys.
    assert mask.tolist() == [[True, True, True, True, False], [True] * 5]


def test_padding_mask_from_hf_attention_mask():
    mask = padding_mask(torch.tensor([[1, 1, 0], [1, 1, 1]]))
    assert mask.shape == (2, 1, 1, 3)
    assert mask[0, 0, 0].tolist() == [True, True, False]


def test_combined_and_none_when_nothing_is_masked():
    assert make_attention_mask(torch.ones(2, 5), query_len=5) is None
    assert make_attention_mask(None, query_len=1, key_len=6, causal=True) is None
    mask = make_attention_mask(torch.tensor([[0, 1, 1]]), query_len=3, causal=True)
    assert mask[0, 0].tolist() == [[False, False, False], [False, True, False],
                                   [False, True, True]]


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="key_len"):
        causal_mask(5, 3)
    with pytest.raises(ValueError, match="covers 3 keys"):
        make_attention_mask(torch.ones(1, 3), query_len=2, key_len=4)
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        padding_mask(torch.ones(3))
