"""Patch blocks: the Conv2d patch embedding equals a linear map of the pixel patches, patches
round-trip to images, grid positions resize as torch's bicubic interpolation, and random
masking keeps exactly the lowest-noise tokens and restores the order."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from formerkit.nn import (
    PatchEmbedding2d,
    image_from_patches,
    image_patches,
    prepend_token,
    random_masking,
    resize_grid_positions,
    unshuffle,
)


def test_patch_embedding_is_a_linear_map_of_the_pixel_patches():
    torch.manual_seed(0)
    embed = PatchEmbedding2d(patch_size=4, n_channels=3, d_model=10)
    pixels = torch.randn(2, 3, 8, 12)
    patches = image_patches(pixels, 4)  # (B, 6, 4 * 4 * 3) laid out (p, p, C)
    weight = embed.projection.weight.permute(0, 2, 3, 1).reshape(10, -1)  # (D, p * p * C)
    expected = patches @ weight.T + embed.projection.bias
    torch.testing.assert_close(embed(pixels), expected, atol=1e-5, rtol=1e-5)
    assert embed(pixels).shape == (2, 6, 10)


def test_image_patches_round_trip_and_row_major_order():
    pixels = torch.arange(2 * 1 * 4 * 6, dtype=torch.float).reshape(2, 1, 4, 6)
    patches = image_patches(pixels, 2)
    assert patches.shape == (2, 6, 4)
    assert patches[0, 1].tolist() == [2.0, 3.0, 8.0, 9.0]  # second patch of the first row
    torch.testing.assert_close(image_from_patches(patches, 2, 1, (4, 6)), pixels)
    with pytest.raises(ValueError, match="do not tile"):
        image_from_patches(patches, 2, 1, (6, 6))


@pytest.mark.parametrize("pixels,match", [
    (torch.randn(1, 1, 8, 8), "n_channels=3"),
    (torch.randn(1, 3, 8, 10), "not divisible by patch_size=4"),
    (torch.randn(3, 8, 8), r"\(batch, channels, height, width\)"),
])
def test_patch_embedding_rejects_bad_images(pixels, match):
    with pytest.raises(ValueError, match=match):
        PatchEmbedding2d(4, 3, 8)(pixels)


def test_prepend_token():
    token = torch.randn(1, 1, 5)
    out = prepend_token(token, torch.zeros(3, 4, 5))
    assert out.shape == (3, 5, 5)
    torch.testing.assert_close(out[:, 0], token[0].expand(3, -1))


def test_resize_grid_positions_is_bicubic_on_the_grid():
    table = torch.randn(1, 9, 6)
    assert resize_grid_positions(table, (3, 3)) is table
    resized = resize_grid_positions(table, (4, 5))
    grid = table.reshape(1, 3, 3, 6).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(4, 5), mode="bicubic", align_corners=False)
    torch.testing.assert_close(resized, expected.permute(0, 2, 3, 1).reshape(1, 20, 6))
    with pytest.raises(ValueError, match="square grid"):
        resize_grid_positions(torch.randn(1, 8, 6), (2, 2))


def test_random_masking_keeps_the_lowest_noise_tokens_and_restores_order():
    x = torch.randn(2, 8, 3)
    noise = torch.rand(2, 8, generator=torch.Generator().manual_seed(0))
    kept, mask, ids_restore = random_masking(x, 0.75, noise)
    assert kept.shape == (2, 2, 3)
    lowest = noise.argsort(dim=1)[:, :2]
    for b in range(2):
        torch.testing.assert_close(kept[b], x[b, lowest[b]])
        assert mask[b].tolist() == [0.0 if i in lowest[b] else 1.0 for i in range(8)]
    fill = torch.full((1, 1, 3), 7.0)
    restored = unshuffle(kept, fill, ids_restore)
    torch.testing.assert_close(restored[mask == 0], x[mask == 0])
    assert (restored[mask == 1] == 7.0).all()


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.5, 1.5])
def test_random_masking_rejects_ratios_outside_zero_one(ratio):
    with pytest.raises(ValueError, match="mask_ratio must be in"):
        random_masking(torch.randn(1, 4, 2), ratio)


def test_random_masking_checks_the_noise_shape():
    with pytest.raises(ValueError, match="noise must have shape"):
        random_masking(torch.randn(2, 4, 2), 0.5, torch.rand(2, 5))
