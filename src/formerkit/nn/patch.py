"""Patches as tokens: 1-D patches of series (PatchTST, Nie et al. 2023), 2-D image patches and
their embedding (ViT, Dosovitskiy et al. 2021), position tables on a patch grid resized by
bicubic interpolation, 2-D sin-cos positions and random masking (MAE, He et al. 2022).

Image patches are ordered row-major over the (H / p, W / p) grid, and a patch's pixels are
flattened as (p, p, C), as HuggingFace's ViT and ViTMAE lay them out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def patchify(x: torch.Tensor, patch_len: int, stride: int, *, pad_end: int = 0,
             pad_front: int = 0) -> torch.Tensor:
    """Cut series into patches, padding by repeating the edge values.

    Args:
        x: (B, C, L).
        patch_len, stride: patch width and step.
        pad_end, pad_front: steps to add by repeating the last / first value.

    Returns:
        (B, C, P, patch_len) with P = (L + pads - patch_len) // stride + 1.
    """
    if pad_end or pad_front:
        x = F.pad(x, (pad_front, pad_end), mode="replicate")
    if x.shape[-1] < patch_len:
        raise ValueError(f"series of length {x.shape[-1]} is shorter than "
                         f"patch_len={patch_len}")
    # Gather by index rather than Tensor.unfold: the same values, and ONNX-exportable with a
    # dynamic batch (the exporter cannot size unfold's input after the edge padding).
    n_patches = (x.shape[-1] - patch_len) // stride + 1
    index = torch.arange(n_patches, device=x.device)[:, None] * stride \
        + torch.arange(patch_len, device=x.device)  # (P, patch_len)
    return x[..., index]  # (B, C, P, patch_len)


def check_image(pixel_values: torch.Tensor, patch_size: int, n_channels: int) -> None:
    """Raise ``ValueError`` unless ``pixel_values`` is (B, n_channels, H, W) with H and W
    multiples of ``patch_size``."""
    if pixel_values.dim() != 4:
        raise ValueError(f"pixel_values must be (batch, channels, height, width), got shape "
                         f"{tuple(pixel_values.shape)}")
    if pixel_values.shape[1] != n_channels:
        raise ValueError(f"pixel_values have {pixel_values.shape[1]} channels, the model "
                         f"expects n_channels={n_channels}")
    height, width = pixel_values.shape[-2:]
    if height % patch_size or width % patch_size:
        raise ValueError(f"image size {height}x{width} is not divisible by "
                         f"patch_size={patch_size}")


def image_patches(pixel_values: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, P, p * p * C) pixel patches (MAE's reconstruction targets)."""
    b, c, h, w = pixel_values.shape
    p = patch_size
    x = pixel_values.reshape(b, c, h // p, p, w // p, p)  # (B, C, h, p, w, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def image_from_patches(patches: torch.Tensor, patch_size: int, n_channels: int,
                       image_size: tuple[int, int]) -> torch.Tensor:
    """Inverse of ``image_patches``: (B, P, p * p * C) -> (B, C, H, W)."""
    h, w = image_size[0] // patch_size, image_size[1] // patch_size
    if h * w != patches.shape[1]:
        raise ValueError(f"{patches.shape[1]} patches do not tile a {image_size[0]}x"
                         f"{image_size[1]} image in {patch_size}x{patch_size} patches")
    p, b = patch_size, patches.shape[0]
    x = patches.reshape(b, h, w, p, p, n_channels)  # (B, h, w, p, p, C)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, n_channels, h * p, w * p)


class PatchEmbedding2d(nn.Module):
    """Non-overlapping p x p patches, each projected to D: a Conv2d of kernel = stride = p
    (the same as a linear map of ``image_patches`` with the weight laid out (D, C, p, p)).

    Args:
        patch_size: p; n_channels: C; d_model: D.
    """

    def __init__(self, patch_size: int, n_channels: int, d_model: int) -> None:
        super().__init__()
        self.patch_size, self.n_channels = patch_size, n_channels
        self.projection = nn.Conv2d(n_channels, d_model, kernel_size=patch_size,
                                    stride=patch_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, P, D) with P = (H / p) * (W / p), row-major."""
        if not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
            check_image(pixel_values, self.patch_size, self.n_channels)
        return self.projection(pixel_values).flatten(2).transpose(1, 2)  # (B, P, D)


def prepend_token(token: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A learned (1, 1, D) token (ViT's [CLS]) put in front of every sequence of (B, T, D)."""
    return torch.cat([token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + T, D)


def resize_grid_positions(table: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A (1, h0 * w0, D) position table on a square grid, resized to ``grid`` = (h, w) by
    bicubic interpolation (as DINO and HuggingFace's ``interpolate_pos_encoding``).

    Returns:
        (1, h * w, D); the table itself when the grid is unchanged.
    """
    n, dim = table.shape[1], table.shape[2]
    side = round(n ** 0.5)
    if side * side != n:
        raise ValueError(f"{n} positions do not form a square grid")
    if tuple(grid) == (side, side):
        return table
    square = table.reshape(1, side, side, dim).permute(0, 3, 1, 2)  # (1, D, h0, w0)
    resized = F.interpolate(square, size=tuple(grid), mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1).reshape(1, -1, dim)  # (1, h * w, D)


def sincos_2d_table(side: int, d_model: int) -> torch.Tensor:
    """MAE's fixed 2-D sin-cos positions for a ``side`` x ``side`` grid, (side * side, D).

    Each half of D encodes one grid axis with 1-D sin | cos features of frequencies
    1 / 10000^(i / (D/4)); the first half holds the column (w) index and the second the row
    index, the layout of the MAE code (and of its released weights).
    """
    if d_model % 4:
        raise ValueError(f"2-D sin-cos positions need d_model divisible by 4, got {d_model}")
    omega = 1.0 / 10000 ** (torch.arange(d_model // 4, dtype=torch.float64) / (d_model / 4))
    rows, cols = torch.meshgrid(torch.arange(side, dtype=torch.float64),
                                torch.arange(side, dtype=torch.float64), indexing="ij")
    features = [(axis.flatten()[:, None] * omega) for axis in (cols, rows)]  # (P, D/4) each
    return torch.cat([f(a) for a in features for f in (torch.sin, torch.cos)], dim=1).float()


def check_mask_ratio(mask_ratio: float) -> None:
    if not 0 < mask_ratio < 1:
        raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")


def random_masking(x: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep a random subset of tokens per sample (MAE): argsort noise, keep the first
    ``int(T * (1 - mask_ratio))``.

    Args:
        x: (B, T, D) tokens.
        mask_ratio: share of tokens removed, in (0, 1).
        noise: (B, T) values whose order decides what is kept (lowest first); uniform
            random by default (pass it for reproducible masks).

    Returns:
        (kept (B, T_keep, D), mask (B, T) with 1 = removed, 0 = kept, ids_restore (B, T): the
        index that puts [kept, removed] back in the original order).
    """
    check_mask_ratio(mask_ratio)
    batch, length, dim = x.shape
    if noise is None:
        noise = torch.rand(batch, length, device=x.device)
    elif tuple(noise.shape) != (batch, length):
        raise ValueError(f"noise must have shape (batch, patches) = {(batch, length)}, got "
                         f"{tuple(noise.shape)}")
    keep = int(length * (1 - mask_ratio))
    ids_shuffle = torch.argsort(noise.to(x.device), dim=1)  # (B, T) ascending noise
    ids_restore = torch.argsort(ids_shuffle, dim=1)  # (B, T)
    kept = torch.gather(x, 1, ids_shuffle[:, :keep, None].expand(-1, -1, dim))  # (B, keep, D)
    mask = torch.ones(batch, length, device=x.device, dtype=x.dtype)
    mask[:, :keep] = 0
    return kept, torch.gather(mask, 1, ids_restore), ids_restore


def unshuffle(kept: torch.Tensor, fill: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
    """Undo ``random_masking``: (B, T_keep, D) kept tokens and a (1, 1, D) fill token (MAE's
    mask token) -> (B, T, D) in the original order."""
    batch, keep, dim = kept.shape
    length = ids_restore.shape[1]
    full = torch.cat([kept, fill.expand(batch, length - keep, -1)], dim=1)  # (B, T, D)
    return torch.gather(full, 1, ids_restore[:, :, None].expand(-1, -1, dim))
