"""A tiny model and task registered from the tests: next-token prediction on arithmetic
sequences ``x_{t+1} = (x_t + k) mod V``, built from formerkit.nn blocks.

Importing this module registers the model ``toy-lm`` and the task ``toy-seq``; recipes name it
in ``imports:`` so subprocesses (CLI, torchrun) register it too.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from formerkit.config import ConfigBase, check_divisible, check_positive, check_probability
from formerkit.models.base import ModelOutput, PreTrainedModel, load_state_dict_into, load_weights
from formerkit.models.registry import _MODELS, register_model
from formerkit.nn import Encoder
from formerkit.tasks.base import _TASKS, Task, TaskSetup, register_task


@dataclasses.dataclass
class ToyConfig(ConfigBase):
    vocab_size: int = 11
    d_model: int = 16
    n_heads: int = 2
    n_layers: int = 2
    d_ff: int = 32
    dropout: float = 0.0
    max_seq_len: int = 16

    def validate(self) -> None:
        check_positive(self, "vocab_size", "d_model", "n_heads", "n_layers", "d_ff")
        check_probability(self, "dropout")
        check_divisible(self, "d_model", "n_heads")


class ToyLM(PreTrainedModel):
    config_class = ToyConfig

    def __init__(self, config: ToyConfig) -> None:
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.pos = nn.Embedding(config.max_seq_len, config.d_model)
        self.encoder = Encoder.build(
            config.n_layers, d_model=config.d_model, n_heads=config.n_heads,
            d_ff=config.d_ff, dropout=config.dropout, norm_first=True,
            final_norm=True)
        self.head = nn.Linear(config.d_model, config.vocab_size)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None,
                scale: torch.Tensor | None = None) -> ModelOutput:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.embed(input_ids) + self.pos(positions)
        x, _ = self.encoder(x, is_causal=True)
        logits = self.head(x)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
            if scale is not None:  # lets a test inject a non-finite loss
                loss = loss * scale.float().mean()
        return ModelOutput(loss=loss, logits=logits)


if "toy-lm" not in _MODELS:
    register_model("toy-lm", config_class=ToyConfig, presets={"wide": {"d_model": 32}},
                   description="test-only toy causal LM")(ToyLM)


@dataclasses.dataclass
class ToyData(ConfigBase):
    n_train: int = 64
    n_val: int = 16
    n_test: int = 16
    seq_len: int = 8
    nan_at: int = -1  # training sample index whose loss becomes NaN (-1: never)


@dataclasses.dataclass
class ToyTaskConfig(ConfigBase):
    metric: str = "loss"
    note: str = ""


def make_sequences(n: int, seq_len: int, vocab: int, generator: torch.Generator) -> torch.Tensor:
    start = torch.randint(0, vocab, (n, 1), generator=generator)
    step = torch.randint(1, 3, (n, 1), generator=generator)
    return (start + step * torch.arange(seq_len + 1)) % vocab  # (B, T + 1)


class ToyDataset(torch.utils.data.Dataset):
    def __init__(self, seqs: torch.Tensor, nan_at: int = -1) -> None:
        self.seqs = seqs
        self.nan_at = nan_at

    def __len__(self) -> int:
        return len(self.seqs)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        scale = torch.tensor(float("nan") if i == self.nan_at else 1.0)
        return {"input_ids": self.seqs[i, :-1], "labels": self.seqs[i, 1:], "scale": scale}


class ToySeqTask(Task):
    name = "toy-seq"
    models = ("toy-lm",)  # lets `formerkit generate` find this task for a bare model dir
    description = "test-only next-token prediction on arithmetic sequences"
    data_config = ToyData
    task_config = ToyTaskConfig

    def setup(self, model: dict[str, Any], data: ToyData, task: ToyTaskConfig, *,
              seed: int) -> TaskSetup:
        from formerkit.models.registry import create_model

        fields = {k: v for k, v in model.items() if k not in ("name", "preset")}
        net = create_model(model["name"], model.get("preset"), **fields)
        g = torch.Generator().manual_seed(1234)
        vocab = net.config.vocab_size
        splits = {name: make_sequences(n, data.seq_len, vocab, g) for name, n in
                  (("train", data.n_train), ("val", data.n_val), ("test", data.n_test))}

        def evaluate(m: nn.Module, split: str) -> dict[str, float]:
            seqs = splits[split]
            device = next(m.parameters()).device
            out = m(seqs[:, :-1].to(device), labels=seqs[:, 1:].to(device))
            accuracy = (out.logits.argmax(-1).cpu() == seqs[:, 1:]).float().mean()
            return {"loss": float(out.loss), "accuracy": float(accuracy)}

        def save_artifacts(model_dir: Path) -> None:
            (model_dir / "toy_artifact.json").write_text(json.dumps({"vocab": vocab}))

        def after_training(m: nn.Module, output_dir: Path) -> None:
            (output_dir / "after_training.txt").write_text("done\n")

        return TaskSetup(model=net, train_dataset=ToyDataset(splits["train"], data.nan_at),
                         evaluate=evaluate, save_artifacts=save_artifacts,
                         after_training=after_training,
                         count_tokens=lambda b: int(b["input_ids"].numel()),
                         metric_for_best=task.metric,
                         greater_is_better=task.metric == "accuracy")

    @staticmethod
    def _load(model_dir: Path) -> ToyLM:
        config = json.loads((model_dir / "config.json").read_text())
        config.pop("formerkit")
        net = ToyLM(ToyConfig.from_dict(config))
        load_state_dict_into(net, load_weights(model_dir), source=model_dir)
        return net.eval()

    def generate(self, model_dir: Path, prompt: str, **options: Any) -> str:
        net = self._load(model_dir)
        ids = [int(t) for t in prompt.split()]
        for _ in range(int(options.get("max_new_tokens", 3))):
            logits = net(torch.tensor([ids])).logits
            ids.append(int(logits[0, -1].argmax()))
        return " ".join(map(str, ids))

    def predict(self, model_dir: Path, input_path: Path, **options: Any) -> Any:
        net = self._load(model_dir)
        rows = [[int(t) for t in line.split()] for line in input_path.read_text().splitlines()
                if line.strip()]
        return [int(net(torch.tensor([row])).logits[0, -1].argmax()) for row in rows]


if "toy-seq" not in _TASKS:
    register_task(ToySeqTask)


def write_recipe(path: Path, **trainer: Any) -> Path:
    """A recipe YAML for the toy task; ``trainer`` entries override the defaults below."""
    import yaml

    settings = {"max_steps": 6, "batch_size": 8, "lr": 0.01, "warmup_steps": 2,
                "eval_every": 3, "log_every": 1, "progress": False, "seed": 0}
    settings.update(trainer)
    recipe = {"description": "toy recipe for tests", "imports": ["toytask"],
              "model": {"name": "toy-lm", "n_layers": 2}, "data": {"n_train": 64},
              "task": {"name": "toy-seq"}, "trainer": settings}
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def subprocess_env() -> dict[str, str]:
    """Environment for CLI subprocesses: toy task importable, one thread each."""
    env = dict(os.environ)
    paths = [str(Path(__file__).resolve().parent), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["OMP_NUM_THREADS"] = "1"
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env
