"""Forecasters: shapes, registry, save/load, RevIN invertibility, overfitting a tiny batch."""

from __future__ import annotations

import pytest
import torch

import formerkit
from formerkit.models import create_model, list_models
from formerkit.models.timeseries import FORECASTERS, Crossformer, PatchTST, RevIN
from formerkit.models.timeseries.layers import patchify

TINY = {
    "transformer-forecaster": dict(d_model=16, n_heads=2, n_layers=1, d_ff=32, label_len=8),
    "itransformer": dict(d_model=16, n_heads=2, n_layers=1, d_ff=32),
    "patchtst": dict(d_model=16, n_heads=2, n_layers=1, d_ff=32, patch_len=8, stride=4),
    "crossformer": dict(d_model=16, n_heads=2, n_layers=2, d_ff=32, patch_len=6, n_routers=3),
}
SHAPE = dict(seq_len=24, pred_len=12, n_vars=3)


def tiny(name: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, **{**SHAPE, "dropout": 0.0, **TINY[name], **overrides})


def test_all_forecasters_registered_and_exported():
    assert set(FORECASTERS) <= set(list_models())
    for name in ("TransformerForecaster", "ITransformer", "PatchTST", "Crossformer",
                 "ForecasterConfig", "ITransformerConfig", "PatchTSTConfig",
                 "CrossformerConfig"):
        assert getattr(formerkit, name).__name__ == name


@pytest.mark.parametrize("name", FORECASTERS)
@pytest.mark.parametrize("n_marks", [0, 2])
def test_shapes_loss_and_backward(name, n_marks):
    model = tiny(name, n_marks=n_marks)
    x, target = torch.randn(4, 24, 3), torch.randn(4, 12, 3)
    marks = dict(x_mark=torch.randn(4, 24, 2), y_mark=torch.randn(4, 12, 2)) if n_marks else {}
    out = model(x, target=target, **marks)
    assert out.prediction.shape == (4, 12, 3)
    torch.testing.assert_close(out.loss, torch.mean((out.prediction - target) ** 2))
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model(x, **marks).loss is None


@pytest.mark.parametrize("name", FORECASTERS)
def test_save_load_round_trip(name, tmp_path):
    model = tiny(name).eval()
    x = torch.randn(2, 24, 3)
    model.save_pretrained(tmp_path / name)
    loaded = formerkit.from_pretrained(tmp_path / name)
    assert type(loaded) is type(model) and loaded.config == model.config
    torch.testing.assert_close(loaded(x).prediction, model(x).prediction)


@pytest.mark.parametrize("name", FORECASTERS)
def test_revin_makes_forecast_shift_and_scale_equivariant(name):
    # With RevIN, forecasting a*x + b gives a*forecast(x) + b (per variate).
    model = tiny(name).eval()
    x = torch.randn(2, 24, 3)
    scale, shift = torch.tensor([2.0, 0.5, 10.0]), torch.tensor([-3.0, 100.0, 1.0])
    with torch.no_grad():
        base, moved = model(x).prediction, model(x * scale + shift).prediction
    torch.testing.assert_close(moved, base * scale + shift, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("affine", [False, True])
def test_revin_is_invertible(affine):
    revin = RevIN(3, affine=affine)
    if affine:
        with torch.no_grad():
            revin.weight.copy_(torch.tensor([0.5, 2.0, 1.5]))
            revin.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    x = torch.randn(4, 20, 3) * 5 + 7
    normalized, stats = revin.normalize(x)
    if not affine:
        torch.testing.assert_close(normalized.mean(1), torch.zeros(4, 3), atol=1e-5, rtol=0)
        torch.testing.assert_close(normalized.std(1, unbiased=False), torch.ones(4, 3),
                                   atol=1e-3, rtol=0)
    torch.testing.assert_close(revin.denormalize(normalized, stats), x, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", FORECASTERS)
def test_tiny_model_overfits_a_batch(name):
    model = tiny(name, revin=False)
    torch.manual_seed(1)
    steps = torch.arange(36, dtype=torch.float32)
    series = torch.stack([torch.sin(steps / 3 + p) for p in (0.0, 1.0, 2.0)], dim=1)
    x, target = series[:24].expand(4, -1, -1), series[24:].expand(4, -1, -1)
    x = x + 0.05 * torch.randn_like(x)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = model(x, target=target).loss.item()
    for _ in range(40):
        loss = model(x, target=target).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.02 * first


def test_patchify_and_patch_count():
    x = torch.arange(10.0).reshape(1, 1, 10)
    patches = patchify(x, 4, 2, pad_end=2)
    assert patches.shape == (1, 1, 5, 4)
    assert patches[0, 0, -1].tolist() == [8.0, 9.0, 9.0, 9.0]  # end padded with the last value
    front = patchify(x, 4, 4, pad_front=2)
    assert front[0, 0, 0].tolist() == [0.0, 0.0, 0.0, 1.0]
    model = tiny("patchtst")
    assert isinstance(model, PatchTST) and model.config.n_patches == 6


def test_crossformer_hierarchy():
    model = tiny("crossformer", seq_len=22, pred_len=13, n_layers=3)
    assert isinstance(model, Crossformer)
    assert (model.in_segments, model.out_segments, model.pad_front) == (4, 3, 2)
    assert len(model.decoder) == 4  # one decoder layer per encoder scale plus the embedding
    routers = [block.dimension.router.shape[0] for block in model.encoder]
    assert routers == [4, 2, 1]  # segments per scale: 4, merged by 2 -> 2 -> 1
    assert model(torch.randn(2, 22, 3)).prediction.shape == (2, 13, 3)


def test_input_errors_name_the_argument():
    model = tiny("itransformer")
    with pytest.raises(ValueError, match="seq_len=24"):
        model(torch.randn(2, 20, 3))
    with pytest.raises(ValueError, match="target"):
        model(torch.randn(2, 24, 3), target=torch.randn(2, 11, 3))
    with pytest.raises(ValueError, match="n_marks"):
        create_model("itransformer", n_marks=-1)
    with pytest.raises(ValueError, match="label_len"):
        create_model("transformer-forecaster", seq_len=10, label_len=20)
    with pytest.raises(ValueError, match="d_model"):
        create_model("patchtst", d_model=10, n_heads=4)
