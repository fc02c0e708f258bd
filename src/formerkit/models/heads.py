"""Loss of classification heads, shared by every family (HF's ``problem_type`` rules)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def problem_type_for(config: Any, labels: torch.Tensor) -> str:
    """HF's rule: ``num_labels == 1`` regression; integer labels single-label; else multi-label."""
    problem = getattr(config, "problem_type", None)
    if problem is not None:
        return problem
    if config.num_labels == 1:
        return "regression"
    if labels.dtype in (torch.long, torch.int):
        return "single_label_classification"
    return "multi_label_classification"


def classification_loss(config: Any, logits: torch.Tensor,
                        labels: torch.Tensor) -> torch.Tensor:
    """Loss of (B, num_labels) logits: MSE (regression), cross-entropy (single label, -100
    ignored) or BCE-with-logits (multi-label, float (B, num_labels) targets)."""
    problem = problem_type_for(config, labels)
    if problem == "regression":
        if config.num_labels == 1:
            return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
        return F.mse_loss(logits, labels.to(logits.dtype))
    if problem == "single_label_classification":
        return F.cross_entropy(logits.view(-1, config.num_labels), labels.view(-1))
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
