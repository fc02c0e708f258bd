"""LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"): train a
low-rank update ``W + (alpha / r) B A`` of frozen linear layers, then merge it into ``W``.

Works with any formerkit model: linear layers are chosen by name patterns (``qkv_proj``,
``out_proj``, ``fc1``, or globs such as ``*.layers.0.*``), so it covers the fused QKV
projection of ``formerkit.nn.MultiHeadAttention`` as well as heads.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from collections.abc import Sequence

import torch
from torch import nn

from formerkit.nn.linear import apply_linear


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable rank-``r`` update.

    y = base(x) + (alpha / r) * dropout(x) A^T B^T, with A (r, in) and B (out, r). B starts at
    zero, so the wrapped layer initially computes exactly what ``base`` does.

    Args:
        base: the linear layer to adapt (its parameters are frozen).
        rank: r > 0.
        alpha: scaling numerator (scale = alpha / r).
        dropout: dropout on the adapter's input.
    """

    def __init__(self, base: nn.Linear, *, rank: int, alpha: float,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(rank, int) or rank <= 0:
            raise ValueError(f"LoRA rank must be a positive integer, got {rank!r}")
        if rank > min(base.in_features, base.out_features):
            raise ValueError(f"LoRA rank {rank} exceeds the layer's size "
                             f"({base.out_features} x {base.in_features})")
        self.base, self.rank, self.alpha = base, rank, alpha
        self.scale = alpha / rank
        for param in base.parameters():
            param.requires_grad_(False)
        weight = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, dtype=weight.dtype,
                                               device=weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, dtype=weight.dtype,
                                               device=weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear (and PEFT)
        self.dropout = nn.Dropout(dropout)

    @property
    def weight(self) -> torch.Tensor:
        """The frozen base weight (so code reading ``layer.weight`` keeps working)."""
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def delta_weight(self) -> torch.Tensor:
        """(out, in) update ``scale * B A``."""
        return (self.lora_B @ self.lora_A) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = self.dropout(x) @ self.lora_A.t() @ self.lora_B.t()  # (..., out)
        return apply_linear(self.base, x) + update * self.scale

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` whose weight includes the update (trainable again)."""
        layer = nn.Linear(self.base.in_features, self.base.out_features,
                          bias=self.base.bias is not None, device=self.base.weight.device,
                          dtype=self.base.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(self.base.weight + self.delta_weight())
            if self.base.bias is not None:
                layer.bias.copy_(self.base.bias)
        return layer


@dataclasses.dataclass(frozen=True)
class LoRAReport:
    """What ``apply_lora`` did: adapted module names and parameter counts."""

    adapted: tuple[str, ...]
    trainable: int
    total: int

    @property
    def fraction(self) -> float:
        return self.trainable / self.total

    def __str__(self) -> str:
        return (f"LoRA on {len(self.adapted)} layers: trainable {self.trainable:,} of "
                f"{self.total:,} parameters ({100 * self.fraction:.2f}%)")


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(name == p or name.endswith("." + p) or fnmatch.fnmatchcase(name, p)
               for p in patterns)


def apply_lora(model: nn.Module, *, targets: Sequence[str], rank: int = 8,
               alpha: float = 16.0, dropout: float = 0.0,
               modules_to_save: Sequence[str] = ()) -> LoRAReport:
    """Freeze ``model`` and wrap every ``nn.Linear`` whose name matches ``targets`` in a
    ``LoRALinear``, in place.

    Args:
        model: any module (a formerkit model).
        targets: name patterns: a module name, a suffix such as ``qkv_proj`` (matches
            ``encoder.layers.0.self_attn.qkv_proj``), or a glob.
        rank, alpha, dropout: LoRA hyperparameters.
        modules_to_save: patterns of modules trained in full (e.g. a new ``classifier``).

    Returns:
        a ``LoRAReport`` with the adapted layers and the trainable-parameter count.

    Raises:
        ValueError: when ``targets`` match no linear layer (naming the available ones).
    """
    if isinstance(targets, str):
        targets = [targets]
    linear_names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    chosen = [n for n in linear_names if _matches(n, targets)]
    if not chosen:
        sample = sorted({n.rsplit(".", 1)[-1] for n in linear_names})
        raise ValueError(f"LoRA targets {list(targets)} match no linear layer; "
                         f"linear layers are named like: {', '.join(sample)}")
    for param in model.parameters():
        param.requires_grad_(False)
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(getattr(parent, child), rank=rank, alpha=alpha,
                                          dropout=dropout))
    saved = [m for n, m in model.named_modules() if modules_to_save and
             _matches(n, modules_to_save)]
    if modules_to_save and not saved:
        raise ValueError(f"modules_to_save {list(modules_to_save)} match no module")
    for module in saved:
        for param in module.parameters():
            param.requires_grad_(True)
    return LoRAReport(tuple(chosen), trainable=sum(p.numel() for p in model.parameters()
                                                   if p.requires_grad),
                      total=sum(p.numel() for p in model.parameters()))


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every ``LoRALinear`` by a plain ``nn.Linear`` with the update merged in, in
    place, and make all parameters trainable again. Returns ``model``, whose state dict now
    has the original names (ready for ``save_pretrained`` and export)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.merged())
    for param in model.parameters():
        param.requires_grad_(True)
    return model


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) for m in model.modules())
