"""Multi-process training with ``torchrun``: process-group setup, DDP and FSDP wrapping,
and the few collectives the trainer needs.

DDP: Li et al., "PyTorch Distributed: Experiences on Accelerating Data Parallel Training"
(2020); FSDP: Zhao et al., "PyTorch FSDP" (2023), through torch's ``fully_shard``.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclasses.dataclass
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size`` processes, on ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False  # this code created the process group (and destroys it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``/``cpu``/``cuda``/``mps`` -> a device; one this machine lacks is an error."""
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            why = "this torch build has no MPS support" if mps is None or not mps.is_built() \
                else "no Apple GPU is available"
            raise ValueError(f"trainer.device='mps' but {why}; use trainer.device=cpu or auto")
        return torch.device("mps")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("trainer.device='cuda' but no CUDA device is available; "
                             "use trainer.device=cpu or auto")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(name)


def init_distributed(device: str = "auto") -> DistInfo:
    """Read torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``)
    and join the process group: NCCL on CUDA, gloo on CPU. A single process needs none."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size == 1:
        return DistInfo(device=dev)
    owns = False
    if not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
        owns = True
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(),
                    local_rank=local_rank, device=dev, owns_group=owns)


def cleanup(info: DistInfo) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, info: DistInfo, strategy: str) -> nn.Module:
    """DDP or FSDP wrapper for ``world_size > 1`` (the model itself otherwise).

    FSDP shards every formerkit ``EncoderLayer``/``DecoderLayer`` (and any module listed in
    the model's ``fsdp_modules`` attribute) and then the root, so only one layer's full
    parameters live on a device at a time.
    """
    if not info.distributed:
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [info.device.index] if info.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)
    from torch.distributed.fsdp import fully_shard

    from formerkit.nn.layers import DecoderLayer, EncoderLayer

    extra = tuple(getattr(model, "fsdp_modules", ()))
    for module in list(model.modules()):
        if module is not model and isinstance(module, (EncoderLayer, DecoderLayer, *extra)):
            fully_shard(module)
    fully_shard(model)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside DDP (FSDP2 shards in place; compiled modules keep their
    parameters in place too)."""
    return model.module if hasattr(model, "no_sync") and hasattr(model, "module") else model


def is_fsdp(model: nn.Module) -> bool:
    return hasattr(model, "set_requires_gradient_sync")


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full (unsharded) model state dict on CPU; with FSDP every rank must call this."""
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(model, options=options)
    return {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}


def load_full_state_dict(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True))
    else:
        unwrap(model).load_state_dict(weights, strict=True)


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(model, optimizer, options=options)
    return optimizer.state_dict()


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer,
                         state: dict[str, Any]) -> None:
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        set_optimizer_state_dict(model, optimizer, state,
                                 options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(state)


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a small tensor over processes (identity for one process)."""
    if info.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def broadcast_object(value: Any, info: DistInfo) -> Any:
    """Rank 0's ``value`` on every process."""
    if not info.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def enable_activation_checkpointing(model: nn.Module) -> int:
    """Set ``gradient_checkpointing=True`` on every formerkit ``Encoder``/``Decoder`` (each
    layer's activations are recomputed in the backward pass). Returns how many were found."""
    from formerkit.nn.layers import Decoder, Encoder

    stacks = [m for m in model.modules() if isinstance(m, (Encoder, Decoder))]
    if not stacks:
        raise ValueError("trainer.activation_checkpointing=true, but the model has no "
                         "formerkit.nn Encoder or Decoder stack to checkpoint")
    for stack in stacks:
        stack.gradient_checkpointing = True
    return len(stacks)
