"""The training loop: AdamW with warmup schedules, accumulation, clipping, mixed precision,
periodic evaluation, best-model tracking, early stopping and exact resumption; DDP/FSDP under
``torchrun``.

Optimiser and schedules: Loshchilov & Hutter (2019), Vaswani et al. (2017); mixed precision:
Micikevicius et al., "Mixed Precision Training" (2018).
"""

from __future__ import annotations

import contextlib
import errno
import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from formerkit.tasks.base import TaskSetup
from formerkit.train import checkpoint as ckpt
from formerkit.train import distributed as D
from formerkit.train.batches import GlobalBatches, MicroBatchLoader, check_divisible
from formerkit.train.config import TrainerConfig
from formerkit.train.distributed import enable_activation_checkpointing
from formerkit.train.errors import TrainingError
from formerkit.train.evaluation import default_compute_loss, make_evaluate, to_device
from formerkit.train.optim import build_optimizer, build_scheduler
from formerkit.train.progress import Progress
from formerkit.train.run_files import RunFiles, save_model
from formerkit.train.run_lock import RunLock
from formerkit.train.settings import RESUME_WITH_CHANGES_HINT, normalize, settings_diff

Batch = dict[str, torch.Tensor]


class Trainer:
    """Train a model on a dataset; works with a recipe's ``TaskSetup`` or with plain objects.

    Args:
        model: an ``nn.Module``; ``model(**batch).loss`` is the loss unless ``compute_loss``.
        train_dataset: map-style dataset of items that ``collate_fn`` turns into a batch.
        config: a ``TrainerConfig`` (default settings if ``None``).
        evaluate: ``evaluate(model, split) -> {metric: value}`` for ``"val"``/``"test"``.
        eval_dataset, test_dataset: alternatively, datasets evaluated by the built-in loop
            (mean ``loss`` plus ``metrics``).
        collate_fn: list of items -> dict of tensors (default: stack).
        compute_loss: ``compute_loss(model, batch) -> scalar`` (mean over the batch).
        metrics: ``metrics(model_output, batch) -> {name: value}`` for the built-in loop.
        output_dir: run directory (``log.jsonl``, ``metrics.json``, ``checkpoint/``,
            ``model/``); running again with the same directory resumes.
        batch_sampler, count_tokens, save_artifacts: as in ``TaskSetup``.
        after_training, metric_for_best, greater_is_better: as in ``TaskSetup``.
        recipe: the resolved recipe, written to ``output_dir/recipe.yaml``.
        settings: what each checkpoint records as the settings of the run (default: the
            recipe, or else the ``TrainerConfig`` and the model's config); resuming with other
            settings is refused unless ``resume_with_changes``.
        restart: start afresh even though ``output_dir`` holds an earlier run; its files are
            moved to ``output_dir/previous/<time>/``, never deleted.
        resume_with_changes: resume although the settings differ from the checkpoint's (the
            old settings are kept as ``output_dir/settings.step_N.json``).
    """

    def __init__(self, model: nn.Module, train_dataset: Any, *,
                 config: TrainerConfig | None = None,
                 evaluate: Callable[[nn.Module, str], dict[str, float]] | None = None,
                 eval_dataset: Any = None, test_dataset: Any = None,
                 collate_fn: Callable[[list[Any]], Batch] | None = None,
                 compute_loss: Callable[[nn.Module, Batch], torch.Tensor] | None = None,
                 metrics: Callable[[Any, Batch], dict[str, float]] | None = None,
                 output_dir: str | Path = "runs/trainer",
                 batch_sampler: Callable | None = None,
                 count_tokens: Callable[[Batch], int] | None = None,
                 save_artifacts: Callable[[Path], None] | None = None,
                 after_training: Callable[[nn.Module, Path], None] | None = None,
                 metric_for_best: str = "loss", greater_is_better: bool = False,
                 recipe: dict[str, Any] | None = None, settings: dict[str, Any] | None = None,
                 restart: bool = False, resume_with_changes: bool = False) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.config = config or TrainerConfig()
        if not isinstance(self.config, TrainerConfig):
            raise TypeError(f"config must be a TrainerConfig, got {type(config).__name__}")
        if evaluate is not None and (eval_dataset is not None or test_dataset is not None):
            raise ValueError("give either evaluate= or eval_dataset=/test_dataset=, not both")
        if evaluate is None and (eval_dataset is not None or test_dataset is not None):
            splits = {"val": eval_dataset, "test": test_dataset}
            evaluate = make_evaluate({k: v for k, v in splits.items() if v is not None},
                                     batch_size=self.config.batch_size, collate_fn=collate_fn,
                                     metrics=metrics)
        self.model = model
        self.train_dataset = train_dataset
        self.evaluate_fn = evaluate
        self.collate_fn = collate_fn
        self.compute_loss = compute_loss or default_compute_loss
        self.batch_sampler = batch_sampler
        self.count_tokens = count_tokens
        self.save_artifacts = save_artifacts
        self.after_training = after_training
        self.metric_for_best = self.config.metric_for_best or metric_for_best
        self.greater_is_better = greater_is_better if self.config.greater_is_better is None \
            else self.config.greater_is_better
        self.output_dir = Path(output_dir)
        self.recipe = recipe
        from formerkit.train.loggers import require_reporters

        require_reporters(self.config.report_to)  # a missing extra fails here, not mid-run
        self.settings = normalize(settings if settings is not None else
                                  recipe if recipe is not None else self._own_settings())
        self.restart = restart
        self.resume_with_changes = resume_with_changes
        self._lock: RunLock | None = None
        self._verified: set[Path] = set()  # checkpoints known good, for the cleanup

    def _own_settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {"trainer": self.config.to_dict()}
        model_config = getattr(self.model, "config", None)
        if hasattr(model_config, "to_dict"):
            settings["model"] = {"class": type(self.model).__name__, **model_config.to_dict()}
        return settings

    @classmethod
    def from_setup(cls, setup: TaskSetup, config: TrainerConfig, output_dir: str | Path,
                   recipe: dict[str, Any] | None = None, **options: Any) -> Trainer:
        """A trainer for a task's ``TaskSetup`` (what ``formerkit train`` builds); ``options``:
        ``settings``, ``restart``, ``resume_with_changes``."""
        return cls(setup.model, setup.train_dataset, config=config, evaluate=setup.evaluate,
                   collate_fn=setup.collate_fn, compute_loss=setup.compute_loss,
                   output_dir=output_dir, batch_sampler=setup.batch_sampler,
                   count_tokens=setup.count_tokens, save_artifacts=setup.save_artifacts,
                   after_training=setup.after_training, metric_for_best=setup.metric_for_best,
                   greater_is_better=setup.greater_is_better, recipe=recipe, **options)

    # ---- setup ---------------------------------------------------------------------------
    def _prepare(self) -> None:
        cfg = self.config
        self.info = info = D.init_distributed(cfg.device)
        if self.batch_sampler is None:
            check_divisible(cfg.batch_size, info.world_size, cfg.grad_accum)
        device = info.device
        if cfg.precision == "fp16" and cfg.strategy == "fsdp" and info.distributed:
            raise ValueError("trainer.precision=fp16 is not supported with strategy=fsdp; "
                             "use bf16")
        if cfg.precision == "bf16" and device.type == "cuda" and \
                not torch.cuda.is_bf16_supported():
            raise ValueError("trainer.precision=bf16 but this GPU has no bf16; use fp16")
        model = self.model.to(device)
        if cfg.activation_checkpointing:
            enable_activation_checkpointing(model)
        self.wrapped = D.wrap_model(model, info, cfg.strategy)
        if cfg.compile:
            D.unwrap(self.wrapped).compile()
        self.optimizer = build_optimizer(self.wrapped, cfg)
        self.batches = GlobalBatches(len(self.train_dataset), cfg.batch_size, seed=cfg.seed,
                                     shuffle=cfg.shuffle, batch_sampler=self.batch_sampler)
        steps_per_epoch = self.batches.steps_per_epoch()
        self.total_steps = cfg.max_steps or cfg.max_epochs * steps_per_epoch
        d_model = getattr(getattr(model, "config", None), "d_model", None)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.total_steps, d_model)
        self.scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
        self.autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else \
            contextlib.nullcontext
        self.loader = MicroBatchLoader(self.train_dataset, self.batches, rank=info.rank,
                                       world_size=info.world_size, grad_accum=cfg.grad_accum,
                                       collate_fn=self.collate_fn, num_workers=cfg.num_workers)
        self.files = RunFiles(self.output_dir, enabled=info.is_main, report_to=cfg.report_to)
        self.step, self.epoch, self.batch_index = 0, 0, 0
        self.best_metric: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0
        self.elapsed_before = 0.0
        self.last_eval: tuple[int, dict[str, float]] | None = None
        self.saved_step = -1
        self.stopped_early = False

    # ---- checkpoints ---------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        rng = ckpt.rng_state()
        if self.info.distributed:
            import torch.distributed as dist

            gathered: list[Any] = [None] * self.info.world_size
            dist.all_gather_object(gathered, rng)
            rng = gathered
        else:
            rng = [rng]
        state = {"step": self.step, "epoch": self.epoch, "batch_index": self.batch_index,
                 "optimizer": D.optimizer_state(self.wrapped, self.optimizer),
                 "scheduler": self.scheduler.state_dict(), "rng": rng,
                 "best_metric": self.best_metric, "best_step": self.best_step,
                 "bad_evals": self.bad_evals, "elapsed": self._elapsed(),
                 "world_size": self.info.world_size, "stopped_early": self.stopped_early,
                 "last_eval": list(self.last_eval) if self.last_eval else None}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def _save_checkpoint(self) -> None:
        weights = D.full_state_dict(self.wrapped)
        state = self._state()
        if self.info.is_main:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                ckpt.save_checkpoint(self.files.checkpoint_dir, self.step, weights, state,
                                     keep=self.config.keep_checkpoints, settings=self.settings,
                                     verified=self._verified)
            for warning in caught:
                self._print(str(warning.message))
        D.barrier(self.info)
        self.saved_step = self.step

    def _open_run(self) -> str | None:
        """On every process: the checkpoint to resume from (``None``: a new run). The main
        process takes the directory's lock, tidies it and checks the checkpoint; an error
        there stops every process."""
        outcome: tuple[str, str | None] = ("ok", None)
        error: BaseException | None = None
        if self.info.is_main:
            try:
                path = self._open_run_main()
                outcome = ("ok", str(path) if path else None)
            except (ValueError, OSError, TrainingError) as err:
                error, outcome = err, ("error", _one_line(err))
        kind, value = D.broadcast_object(outcome, self.info)
        if error is not None:
            raise error
        if kind == "error":
            raise TrainingError(str(value))
        return value

    def _open_run_main(self) -> Path | None:
        self._lock = RunLock(self.output_dir).acquire()
        holder = self._lock.took_over
        if holder and holder.get("pid") is not None:
            self._print(f"took over the lock of process {holder['pid']}, which no longer runs")
        if self.restart:
            archived = self.files.archive()
            if archived is not None:
                self._print(f"restart: the earlier run's files were moved to {archived}")
        removed = self.files.clean_leftovers()
        if removed:
            self._print(f"removed {len(removed)} temporary file(s) left by an interrupted run")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            path = ckpt.resume_point(self.files.checkpoint_dir)
        for warning in caught:
            self._print(str(warning.message))
        if path is not None:
            self._check_settings(path)
            self._verified.add(path)
        return path

    def _check_settings(self, path: Path) -> None:
        """Refuse to resume ``path`` with other settings than it was trained with (unless
        ``resume_with_changes``; the old ones are then kept beside the run)."""
        old = ckpt.read_settings(path)
        if old is None:  # written before checkpoints recorded their settings
            return
        changes = settings_diff(old, self.settings)
        if not changes:
            return
        shown = "; ".join(changes)
        if not self.resume_with_changes:
            raise ValueError(f"{path} was trained with other settings ({shown}); pass "
                             f"{RESUME_WITH_CHANGES_HINT} to go on with the new ones, "
                             f"{ckpt.RESTART_HINT} to start afresh, or use another "
                             "--output-dir")
        step = int(path.name[len(ckpt.PREFIX):])
        kept = self.files.keep_settings(step, old)
        self._print(f"resuming with changed settings ({shown}); the settings of steps up to "
                    f"{step} are kept in {kept}")

    def _resume(self, path: str | None) -> None:
        if path is None:
            return
        weights, state = ckpt.load_checkpoint(Path(path))
        try:
            D.load_full_state_dict(self.wrapped, weights)
            D.load_optimizer_state(self.wrapped, self.optimizer, state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            detail = " ".join(str(err).split())[:300]
            raise ValueError(f"checkpoint {path} does not fit this model and optimizer (is "
                             f"{self.output_dir} the run of another recipe? use a new "
                             f"--output-dir): {detail}") from None
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        rngs = state["rng"]
        if len(rngs) == self.info.world_size:
            ckpt.set_rng_state(rngs[self.info.rank])
        else:  # a different process count: data order is exact, dropout noise is reseeded
            torch.manual_seed(self.config.seed + 7919 * self.info.rank + state["step"])
        self.step, self.epoch, self.batch_index = state["step"], state["epoch"], \
            state["batch_index"]
        self.best_metric, self.best_step = state["best_metric"], state["best_step"]
        self.bad_evals, self.elapsed_before = state["bad_evals"], state["elapsed"]
        self.last_eval = tuple(state["last_eval"]) if state["last_eval"] else None
        self.stopped_early = bool(state.get("stopped_early", False))
        self.saved_step = self.step
        self._print(f"resuming from {path} (step {self.step})")

    # ---- the loop ------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Train (or resume) to ``max_steps``, evaluate, save the model; return final metrics
        (``val_*``, ``test_*``)."""
        self._prepare()
        try:
            return self._fit()
        except Exception as err:  # torch and safetensors report a full disk in their own types
            if not _disk_full(err):
                raise
            raise TrainingError(f"cannot write to {self.output_dir}: {_one_line(err)} (is the "
                                "disk full?); free some space and run the same command again "
                                "to resume from the last checkpoint") from None
        finally:
            self.files.close()
            if self._lock is not None:
                self._lock.release()
            D.cleanup(self.info)

    def _fit(self) -> dict[str, float]:
        cfg, info = self.config, self.info
        torch.manual_seed(cfg.seed + 7919 * info.rank)  # dropout noise (data order is separate)
        self._resume(self._open_run())
        self.files.start(self.recipe, self.step)
        self.start_time = time.time()
        self.progress = Progress(total=self.total_steps, initial=self.step,
                                 enabled=cfg.progress, is_main=info.is_main,
                                 interval=max(cfg.log_every, self.total_steps // 20))
        window: dict[str, float] = {"loss": 0.0, "steps": 0, "count": 0, "time": 0.0}
        self.wrapped.train()
        it = self.loader.iterate(self.epoch, self.batch_index)
        lr = self.optimizer.param_groups[0]["lr"]
        while self.step < self.total_steps and not self.stopped_early:
            t0 = time.perf_counter()  # throughput includes loading the data
            epoch, index, micro, global_size = next(it)
            if cfg.max_epochs is not None and epoch >= cfg.max_epochs:
                break
            lr = self.optimizer.param_groups[0]["lr"]
            loss, tokens = self._train_step(micro)
            self.step += 1
            self.epoch, self.batch_index = epoch, index + 1
            window["time"] += time.perf_counter() - t0
            window["loss"] += loss
            window["steps"] += 1
            window["count"] += tokens if self.count_tokens else global_size
            self.progress.update()
            if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                self._log_train(window, lr)
                window = {"loss": 0.0, "steps": 0, "count": 0, "time": 0.0}
            evaluate_now = self.evaluate_fn is not None and cfg.eval_every and \
                self.step % cfg.eval_every == 0
            if evaluate_now and self._periodic_eval():
                self.stopped_early = True  # saved with the checkpoint: a re-run stops too
            if evaluate_now or (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0):
                self._save_checkpoint()
        if window["steps"]:  # the run ended between log lines (max_epochs)
            self._log_train(window, lr)
        if self.evaluate_fn is not None and cfg.eval_every and not self.stopped_early and \
                (self.last_eval is None or self.last_eval[0] != self.step):
            self._periodic_eval()  # the last model competes for best too
        self.progress.close()
        if self.saved_step != self.step:
            self._save_checkpoint()
        return self._finish()

    def _train_step(self, micro: list[tuple[Any, float]]) -> tuple[float, int]:
        """Forward/backward over this process's micro-batches and one optimizer step.

        Returns the global-batch mean loss (over all processes) and the tokens counted.
        """
        info, model = self.info, self.wrapped
        loss_sum = torch.zeros((), device=info.device, dtype=torch.float32)
        tokens = 0
        for i, (batch, weight) in enumerate(micro):
            batch = to_device(batch, info.device)
            with self._sync(i == len(micro) - 1), self.autocast():
                loss = self.compute_loss(model, batch)
            # DDP and FSDP average gradients over processes, hence the world-size factor.
            scaled = loss * (weight * info.world_size)
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            loss_sum += loss.detach().float() * weight
            if self.count_tokens is not None and weight > 0:
                tokens += int(self.count_tokens(batch))
        totals = D.all_reduce_sum(torch.stack([loss_sum, loss_sum.new_tensor(float(tokens))]),
                                  info).tolist()
        value = totals[0]
        if not math.isfinite(value):
            self.optimizer.zero_grad(set_to_none=True)
            last = ckpt.find_resumable(self.files.checkpoint_dir) if info.is_main else None
            raise TrainingError(
                f"non-finite loss ({value}) at step {self.step + 1}; training stopped without "
                f"applying or saving this step (last good checkpoint: {last or 'none'}). "
                "Try a lower trainer.lr, trainer.grad_clip or trainer.precision=fp32")
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.config.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return value, int(totals[1])

    def _sync(self, sync: bool) -> contextlib.AbstractContextManager:
        """Skip the gradient all-reduce on all but the last micro-batch of a step."""
        model = self.wrapped
        if not self.info.distributed:
            return contextlib.nullcontext()
        if D.is_fsdp(model):
            model.set_requires_gradient_sync(sync)
            return contextlib.nullcontext()
        return contextlib.nullcontext() if sync else model.no_sync()

    # ---- evaluation ----------------------------------------------------------------------
    def evaluate(self, split: str) -> dict[str, float]:
        """Run the task's evaluation on ``split``; metrics come back prefixed (``val_loss``)."""
        if self.evaluate_fn is None:
            return {}
        module = D.unwrap(self.wrapped)
        was_training = module.training
        module.eval()
        progress = getattr(self, "progress", None)
        bar = progress.evaluating(module, split) if progress is not None else \
            contextlib.nullcontext()
        try:
            with torch.no_grad(), self.autocast(), bar:
                metrics = self.evaluate_fn(module, split) or {}
        finally:
            module.train(was_training)
        return {f"{split}_{k}": float(v) for k, v in metrics.items()}

    def _evaluate_if_present(self, split: str) -> dict[str, float]:
        """``evaluate(split)``, or nothing (with a message) when the task has no such split."""
        try:
            return self.evaluate(split)
        except (ValueError, KeyError, NotImplementedError, FileNotFoundError) as err:
            self._print(f"no {split} evaluation ({_one_line(err)})")
            return {}

    def _periodic_eval(self) -> bool:
        """Evaluate on val, track the best model; True when early stopping triggers."""
        # Every process evaluates (FSDP needs all of them); rank 0's numbers are the record.
        metrics = D.broadcast_object(self.evaluate("val"), self.info)
        self.last_eval = (self.step, metrics)
        self.files.log({"step": self.step, **metrics, "elapsed": round(self._elapsed(), 3)})
        shown = " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        self._print(f"step {self.step}: {shown}")
        key = f"val_{self.metric_for_best}"
        if key not in metrics:
            raise ValueError(f"metric_for_best={self.metric_for_best!r} is not among the "
                             f"evaluation metrics {sorted(metrics)}")
        value = metrics[key]
        better = self.best_metric is None or (value > self.best_metric if self.greater_is_better
                                              else value < self.best_metric)
        if better:
            self.best_metric, self.best_step, self.bad_evals = value, self.step, 0
            if self.config.save_best:
                weights = D.full_state_dict(self.wrapped)
                if self.info.is_main:
                    ckpt.save_checkpoint(self.files.best_dir, self.step, weights,
                                         {"step": self.step, "metric": value}, keep=1,
                                         settings=self.settings)
        else:
            self.bad_evals += 1
        patience = self.config.early_stopping_patience
        if patience is not None and self.bad_evals >= patience:
            self._print(f"early stopping at step {self.step}: no improvement of "
                        f"{key} for {self.bad_evals} evaluations")
            return True
        return False

    def _finish(self) -> dict[str, float]:
        cfg, info = self.config, self.info
        final_step = self.step
        if cfg.save_best and self.best_step is not None and self.best_step != self.step:
            path = ckpt.find_resumable(self.files.best_dir) if info.is_main else None
            ok = path is not None and path.name == f"{ckpt.PREFIX}{self.best_step:08d}"
            path = D.broadcast_object(str(path) if ok else None, info)
            if path:
                weights, _ = ckpt.load_checkpoint(Path(path))
                D.load_full_state_dict(self.wrapped, weights)
                final_step = self.best_step
                self._print(f"using the best model (step {final_step}, "
                            f"val_{self.metric_for_best} {self.best_metric:.4f})")
        metrics: dict[str, float] = {}
        if self.evaluate_fn is not None and cfg.eval_at_end:
            if self.last_eval is not None and self.last_eval[0] == final_step:
                metrics.update(self.last_eval[1])
            else:
                metrics.update(self._evaluate_if_present("val"))
            metrics.update(self._evaluate_if_present("test"))
            if metrics:
                self.files.log({"step": final_step, "final": True, **metrics,
                                "elapsed": round(self._elapsed(), 3)})
                self._print("final: " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        weights = D.full_state_dict(self.wrapped) if D.is_fsdp(self.wrapped) else None
        if info.is_main:
            self.files.write_metrics(metrics)
            save_model(D.unwrap(self.wrapped), self.files.model_dir, weights=weights,
                       save_artifacts=self.save_artifacts)
            if self.after_training is not None:
                self.after_training(D.unwrap(self.wrapped), self.output_dir)
        D.barrier(info)
        return metrics

    # ---- output --------------------------------------------------------------------------
    def _elapsed(self) -> float:
        return self.elapsed_before + time.time() - getattr(self, "start_time", time.time())

    def _log_train(self, window: dict[str, float], lr: float) -> None:
        rate = window["count"] / max(window["time"], 1e-9)
        rate_key = "tokens_per_s" if self.count_tokens else "samples_per_s"
        loss = window["loss"] / max(window["steps"], 1)
        self.files.log({"step": self.step, "loss": loss, "lr": lr, rate_key: round(rate, 1),
                        "elapsed": round(self._elapsed(), 3)})
        self.progress.train(self.step, loss, lr, rate, rate_key.replace("_per_s", "/s"))

    def _print(self, message: str) -> None:
        progress = getattr(self, "progress", None)
        if progress is not None:  # above the bar, when there is one
            progress.print(message)
        elif self.info.is_main:
            print(message, file=sys.stderr, flush=True)


def _disk_full(err: BaseException) -> bool:
    """A write that failed for lack of space: an ``OSError`` (ENOSPC, EDQUOT), or torch.save's
    ``RuntimeError`` and safetensors' ``SafetensorError`` that only say so in their text."""
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    if isinstance(err, (ValueError, TypeError, KeyError, TrainingError)):
        return False
    text = str(err)
    return any(sign in text for sign in ("No space left on device", "file write failed",
                                         "Disk quota exceeded", "os error 28"))


def _one_line(err: BaseException) -> str:
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    return " ".join(str(text).split()) or type(err).__name__
