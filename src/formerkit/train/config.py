"""Trainer settings: the recipe's ``trainer`` section as a validated dataclass.

The optimiser follows AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization",
2019); the ``noam`` schedule is the one of Vaswani et al., "Attention Is All You Need", 2017.
"""

from __future__ import annotations

import dataclasses

from formerkit.config import ConfigBase, check_choice, check_positive

SCHEDULES = ("constant", "cosine", "linear", "inverse_sqrt", "noam")
PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda", "mps")
STRATEGIES = ("ddp", "fsdp")


@dataclasses.dataclass
class TrainerConfig(ConfigBase):
    """Everything the ``Trainer`` needs besides the model and data.

    Attributes:
        max_steps: optimizer steps to run (the schedule spans them). ``None`` with
            ``max_epochs`` set: as many steps as ``max_epochs`` epochs hold.
        max_epochs: stop after this many passes over the training data (optional).
        batch_size: samples per optimizer step, across all processes and accumulation steps.
        grad_accum: micro-batches per optimizer step on each process.
        lr: peak learning rate (for ``schedule: noam`` a multiplier of the paper's formula).
        min_lr: floor the ``cosine`` and ``linear`` schedules decay to.
        warmup_steps: linear warmup from ``lr / warmup_steps`` to ``lr``.
        schedule: ``constant``, ``cosine``, ``linear``, ``inverse_sqrt`` or ``noam``
            (``lr * d_model**-0.5 * min(step**-0.5, step * warmup_steps**-1.5)``).
        weight_decay: decoupled weight decay of AdamW, applied to matrices only.
        decay_all: also decay biases, norm weights and embeddings.
        beta1, beta2, eps: AdamW constants.
        grad_clip: clip the global gradient norm to this value (``None`` or 0: no clipping).
        eval_every: evaluate on ``val`` every this many steps (0: only at the end).
        eval_at_end: evaluate on ``val`` and ``test`` after training.
        log_every: write a ``log.jsonl`` line every this many steps.
        checkpoint_every: save a resumable checkpoint every this many steps; one is also
            saved after every evaluation and at the end (0: only then).
        keep_checkpoints: how many of the latest checkpoints to keep.
        save_best: save the model with the best ``metric_for_best`` rather than the last one.
        metric_for_best: validation metric (without ``val_``) that picks the best model;
            ``None``: the task's choice.
        greater_is_better: direction of ``metric_for_best``; ``None``: the task's choice.
        early_stopping_patience: stop after this many evaluations without improvement.
        seed: seed of initialisation, data order and dropout.
        shuffle: reshuffle the training data every epoch.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``mps`` (Apple GPUs,
            where torch has it).
        precision: ``fp32``, ``bf16`` (autocast) or ``fp16`` (autocast with a grad scaler).
        compile: wrap the model with ``torch.compile``.
        activation_checkpointing: recompute each Transformer layer in the backward pass.
        strategy: ``ddp`` or ``fsdp`` when run under ``torchrun`` with several processes.
        num_workers: DataLoader worker processes (0: load in the training process).
        progress: show a progress bar (only on a terminal), in training and evaluation.
        report_to: where log lines go besides ``log.jsonl``: ``csv`` (``log.csv``) and/or
            ``tensorboard`` (``tensorboard/``, needs ``pip install 'formerkit[tensorboard]'``).
    """

    max_steps: int | None = 1000
    max_epochs: int | None = None
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 3e-4
    min_lr: float = 0.0
    warmup_steps: int = 0
    schedule: str = "cosine"
    weight_decay: float = 0.01
    decay_all: bool = False
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    grad_clip: float | None = 1.0
    eval_every: int = 0
    eval_at_end: bool = True
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    save_best: bool = True
    metric_for_best: str | None = None
    greater_is_better: bool | None = None
    early_stopping_patience: int | None = None
    seed: int = 0
    shuffle: bool = True
    device: str = "auto"
    precision: str = "fp32"
    compile: bool = False
    activation_checkpointing: bool = False
    strategy: str = "ddp"
    num_workers: int = 0
    progress: bool = True
    report_to: list[str] | str = dataclasses.field(default_factory=list)

    def validate(self) -> None:
        if self.max_steps is None and self.max_epochs is None:
            raise ValueError("TrainerConfig.max_steps and max_epochs cannot both be None")
        check_positive(self, "max_steps", "max_epochs", "batch_size", "grad_accum", "lr",
                       "log_every", "keep_checkpoints", "early_stopping_patience")
        for name in ("warmup_steps", "eval_every", "checkpoint_every", "num_workers",
                     "weight_decay", "min_lr", "eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"TrainerConfig.{name} must be >= 0, got {value!r}")
        if self.grad_clip is not None and self.grad_clip < 0:
            raise ValueError(f"TrainerConfig.grad_clip must be >= 0, got {self.grad_clip!r}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"TrainerConfig.{name} must be in [0, 1), "
                                 f"got {getattr(self, name)!r}")
        check_choice(self, "schedule", SCHEDULES)
        check_choice(self, "precision", PRECISIONS)
        check_choice(self, "device", DEVICES)
        check_choice(self, "strategy", STRATEGIES)
        from formerkit.train.loggers import check_reporters

        self.report_to = check_reporters(self.report_to)
        if self.schedule in ("inverse_sqrt", "noam") and self.warmup_steps < 1:
            raise ValueError(f"TrainerConfig.warmup_steps must be >= 1 for schedule "
                             f"{self.schedule!r}, got {self.warmup_steps}")
        if self.batch_size % self.grad_accum != 0:
            raise ValueError(f"TrainerConfig.batch_size={self.batch_size} must be divisible "
                             f"by grad_accum={self.grad_accum}")
