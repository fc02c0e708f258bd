"""AdamW parameter groups and learning-rate schedules against their formulas."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from formerkit.train.config import TrainerConfig
from formerkit.train.optim import build_optimizer, build_scheduler, lr_lambda, parameter_groups


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.proj = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 10, bias=False)
        self.head.weight = self.embed.weight  # tied, as GPT-2's LM head
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)


def test_groups_exclude_biases_norms_embeddings_and_frozen():
    model = Tied()
    decay, no_decay = parameter_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model.proj.weight)}
    assert {id(p) for p in no_decay["params"]} == {
        id(model.embed.weight), id(model.proj.bias), id(model.norm.weight), id(model.norm.bias)}
    (everything,) = parameter_groups(model, 0.1, decay_all=True)
    assert len(everything["params"]) == 5


def test_decay_is_decoupled_and_only_on_matrices():
    model = Tied()
    config = TrainerConfig(lr=0.1, weight_decay=0.5)
    optimizer = build_optimizer(model, config)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    optimizer.step()
    # With zero gradients AdamW only decays: w <- w * (1 - lr * wd).
    torch.testing.assert_close(model.proj.weight, before["proj.weight"] * (1 - 0.1 * 0.5))
    for name in ("embed.weight", "proj.bias", "norm.weight", "frozen.weight"):
        torch.testing.assert_close(dict(model.named_parameters())[name], before[name])


def test_cpu_parameters_get_the_fused_kernel_and_its_steps_follow_adamw():
    torch.manual_seed(0)
    model = Tied()
    config = TrainerConfig(lr=0.05, weight_decay=0.1, beta1=0.8, beta2=0.9)
    optimizer = build_optimizer(model, config)
    assert all(group["fused"] for group in optimizer.param_groups)
    reference_model = Tied()
    reference_model.load_state_dict(model.state_dict())
    reference = torch.optim.AdamW(parameter_groups(reference_model, 0.1), lr=0.05,
                                  betas=(0.8, 0.9), eps=config.eps, foreach=False)
    start = model.proj.weight.detach().clone()
    x = torch.randint(0, 10, (4, 3))
    for _ in range(5):
        for m, opt in ((model, optimizer), (reference_model, reference)):
            opt.zero_grad()
            m.head(m.norm(m.proj(m.embed(x)))).logsumexp(-1).sum().backward()
            opt.step()
    for (name, got), want in zip(model.named_parameters(), reference_model.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6, msg=name)
    assert (model.proj.weight - start).abs().max() > 0.1  # five steps of lr 0.05 moved it


def test_no_trainable_parameters_is_an_error():
    model = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        parameter_groups(model, 0.1)


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant", "inverse_sqrt"])
def test_schedules_follow_their_formulas(schedule):
    config = TrainerConfig(lr=1.0, min_lr=0.1, warmup_steps=4, schedule=schedule)
    f = lr_lambda(config, total_steps=20)
    for s in range(4):
        assert f(s) == pytest.approx((s + 1) / 4)
    for s in range(4, 20):
        p = (s - 4) / 16
        expected = {"cosine": 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)),
                    "linear": 0.1 + 0.9 * (1 - p), "constant": 1.0,
                    "inverse_sqrt": math.sqrt(4 / (s + 1))}[schedule]
        assert f(s) == pytest.approx(expected)
    if schedule in ("cosine", "linear"):
        assert f(19) > 0.1 and f(25) == pytest.approx(0.1)  # the floor holds past the end


def test_noam_is_the_papers_formula():
    config = TrainerConfig(lr=2.0, warmup_steps=4000, schedule="noam")
    f = lr_lambda(config, total_steps=100_000, d_model=512)
    for step in (1, 100, 3999, 4000, 4001, 50_000):
        paper = 512 ** -0.5 * min(step ** -0.5, step * 4000 ** -1.5)
        assert f(step - 1) == pytest.approx(paper)
    peak = max(range(1, 10_000), key=lambda s: f(s - 1))
    assert peak == 4000
    with pytest.raises(ValueError, match="d_model"):
        lr_lambda(config, total_steps=10)


def test_scheduler_drives_the_optimizer_lr():
    model = nn.Linear(2, 2)
    config = TrainerConfig(lr=0.5, warmup_steps=2, schedule="linear")
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, total_steps=6)
    seen = []
    for _ in range(6):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    f = lr_lambda(config, 6)
    assert seen == pytest.approx([0.5 * f(s) for s in range(6)])


@pytest.mark.parametrize("bad", [dict(schedule="exp"), dict(precision="fp8"), dict(lr=0),
                                 dict(batch_size=6, grad_accum=4), dict(device="tpu"),
                                 dict(schedule="noam", warmup_steps=0), dict(beta2=1.0),
                                 dict(max_steps=None)])
def test_invalid_trainer_config_names_the_field(bad):
    with pytest.raises(ValueError) as err:
        TrainerConfig(**bad)
    key = next(iter(bad))
    assert key.split("_")[0] in str(err.value) or "warmup_steps" in str(err.value)
