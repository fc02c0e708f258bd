"""KV cache for incremental decoding: preallocated key/value buffers written in place.

Each attention layer owns a ``LayerCache``; a ``KVCache`` holds one per layer. Self-attention
keys and values are appended step by step; cross-attention keys and values of the encoder
output are computed once per source and kept.
"""

from __future__ import annotations

import torch


class LayerCache:
    """Key/value buffers of one layer.

    Args:
        max_len: capacity to preallocate on the first append; the buffer doubles if exceeded.
    """

    def __init__(self, max_len: int | None = None) -> None:
        self.max_len = max_len
        self.k: torch.Tensor | None = None  # (B, H, capacity, K)
        self.v: torch.Tensor | None = None
        self.length = 0
        self.cross_k: torch.Tensor | None = None  # (B, H, S, K)
        self.cross_v: torch.Tensor | None = None

    def reserve(self, new_len: int, like: torch.Tensor) -> None:
        """Make room for ``new_len`` positions. like: (B, H, T, K) keys, for the buffers'
        batch, heads, head size, dtype and device."""
        if self.k is None:
            capacity = max(self.max_len or 0, new_len)
            self.k = like.new_empty(like.shape[0], like.shape[1], capacity, like.shape[3])
            self.v = torch.empty_like(self.k)
        elif new_len > self.k.shape[2]:
            capacity = max(new_len, 2 * self.k.shape[2])
            self.k = _grow(self.k, capacity)
            self.v = _grow(self.v, capacity)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write new keys/values (B, H, T, K) after the cached ones; return all (B, H, Tk, K)."""
        new_len = self.length + k.shape[2]
        self.reserve(new_len, k)
        # narrow() rather than slicing: this runs once per layer per decoded token.
        self.k.narrow(2, self.length, k.shape[2]).copy_(k)
        self.v.narrow(2, self.length, v.shape[2]).copy_(v)
        self.length = new_len
        return self.k.narrow(2, 0, new_len), self.v.narrow(2, 0, new_len)

    def set_cross(self, k: torch.Tensor, v: torch.Tensor) -> None:
        self.cross_k, self.cross_v = k, v

    def reorder(self, index: torch.Tensor, cross: bool = True) -> None:
        """Select batch rows (beam search): row i becomes old row ``index[i]``. With
        ``cross=False`` the cross-attention keys and values stay: right when ``index`` only
        moves rows among copies of one source, which all hold the same ones."""
        if self.k is not None:
            self.k = self.k.index_select(0, index)
            self.v = self.v.index_select(0, index)
        if cross and self.cross_k is not None:
            self.cross_k = self.cross_k.index_select(0, index)
            self.cross_v = self.cross_v.index_select(0, index)


def _grow(buffer: torch.Tensor, capacity: int) -> torch.Tensor:
    grown = buffer.new_empty(*buffer.shape[:2], capacity, buffer.shape[3])
    grown[:, :, : buffer.shape[2]] = buffer
    return grown


class KVCache:
    """One ``LayerCache`` per layer; ``length`` is the number of cached positions."""

    def __init__(self, n_layers: int, max_len: int | None = None) -> None:
        self.layers = [LayerCache(max_len) for _ in range(n_layers)]

    def __getitem__(self, index: int) -> LayerCache:
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def length(self) -> int:
        return self.layers[0].length if self.layers else 0

    def reorder(self, index: torch.Tensor, cross: bool = True) -> None:
        """``LayerCache.reorder`` of every layer."""
        for layer in self.layers:
            layer.reorder(index, cross)
