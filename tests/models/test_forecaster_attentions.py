"""Forecasters return per-layer, per-head attention weights with ``output_attentions=True``:
the prediction is unchanged, the weights are distributions with the documented shapes, and
they are the weights the layers really use."""

from __future__ import annotations

import math

import pytest
import torch

from formerkit.models import create_model
from formerkit.models.timeseries import FORECASTERS, Crossformer

TINY = {
    "transformer-forecaster": dict(d_model=16, n_heads=2, n_layers=2, d_ff=32, label_len=8,
                                   n_decoder_layers=2),
    "itransformer": dict(d_model=16, n_heads=2, n_layers=2, d_ff=32),
    "patchtst": dict(d_model=16, n_heads=2, n_layers=2, d_ff=32, patch_len=8, stride=4),
    "crossformer": dict(d_model=16, n_heads=2, n_layers=2, d_ff=32, patch_len=6, n_routers=3),
}
B, L, H, C, HEADS = 2, 24, 12, 3, 2
FIELDS = ("attentions", "cross_attentions", "encoder_attentions")


def tiny(name: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    config = dict(seq_len=L, pred_len=H, n_vars=C, dropout=0.0, **TINY[name])
    return create_model(name, **{**config, **overrides}).eval()


def expected_shapes(name: str, n_marks: int = 0) -> dict[str, list[tuple[int, ...]]]:
    """The shapes each model documents, per field and layer."""
    if name == "transformer-forecaster":
        steps = TINY[name]["label_len"] + H
        return {"encoder_attentions": [(B, HEADS, L, L)] * 2,
                "attentions": [(B, HEADS, steps, steps)] * 2,
                "cross_attentions": [(B, HEADS, steps, L)] * 2}
    if name == "itransformer":
        return {"attentions": [(B, HEADS, C + n_marks, C + n_marks)] * 2}
    if name == "patchtst":
        patches = (L + 4 - 8) // 4 + 1  # padded at the end by one stride
        return {"attentions": [(B * C, HEADS, patches, patches)] * 2}
    routers, s_out = TINY[name]["n_routers"], math.ceil(H / 6)
    scales = [math.ceil(L / 6), math.ceil(L / 6 / 2)]  # 4 segments, merged by 2 -> 2

    def two_stage(segments: int) -> list[tuple[int, ...]]:
        return [(B * C, HEADS, segments, segments), (B * segments, HEADS, routers, C),
                (B * segments, HEADS, C, routers)]

    return {"encoder_attentions": [s for n in scales for s in two_stage(n)],
            "attentions": two_stage(s_out) * 3,
            "cross_attentions": [(B * C, HEADS, s_out, n) for n in [scales[0], *scales]]}


@pytest.mark.parametrize("backend", ["sdpa", "math"])
@pytest.mark.parametrize("name", FORECASTERS)
def test_weights_are_distributions_with_documented_shapes(name, backend):
    model = tiny(name, backend=backend)
    x = torch.randn(B, L, C)
    with torch.no_grad():
        plain = model(x)
        out = model(x, output_attentions=True)
    assert all(getattr(plain, field) is None for field in FIELDS)
    torch.testing.assert_close(out.prediction, plain.prediction, atol=1e-6, rtol=0)
    shapes = expected_shapes(name)
    for field in FIELDS:
        weights = getattr(out, field)
        if field not in shapes:
            assert weights is None, field
            continue
        assert [tuple(w.shape) for w in weights] == shapes[field], field
        for w in weights:
            assert bool((w >= 0).all())
            torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", FORECASTERS)
def test_off_path_is_bitwise_deterministic_and_on_in_training_mode(name):
    # Off: two calls agree bit for bit; on with dropout active still gives weights.
    model = tiny(name)
    x = torch.randn(B, L, C)
    with torch.no_grad():
        assert torch.equal(model(x).prediction, model(x, output_attentions=False).prediction)
    model = tiny(name, dropout=0.1).train()
    out = model(x, target=torch.randn(B, H, C), output_attentions=True)
    out.loss.backward()
    assert out.attentions is not None and all(w is not None for w in out.attentions)


def test_itransformer_calendar_tokens_and_weights_match_manual_attention():
    model = tiny("itransformer", n_marks=2, revin=False)
    x, marks = torch.randn(B, L, C), torch.randn(B, L, 2)
    with torch.no_grad():
        out = model(x, x_mark=marks, output_attentions=True)
        assert [tuple(w.shape) for w in out.attentions] == \
            expected_shapes("itransformer", n_marks=2)["attentions"]
        # Recompute layer 0 from its projections: post-norm, so attention reads the tokens.
        series = torch.cat([x.transpose(1, 2), marks.transpose(1, 2)], dim=1)  # (B, N, L)
        tokens = model.embedding(series)  # (B, N, D)
        q, k, _ = model.encoder.layers[0].self_attn.qkv_proj(tokens).chunk(3, dim=-1)
        q = q.reshape(B, C + 2, HEADS, -1).transpose(1, 2)  # (B, heads, N, K)
        k = k.reshape(B, C + 2, HEADS, -1).transpose(1, 2)
        manual = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    torch.testing.assert_close(out.attentions[0], manual, atol=1e-6, rtol=1e-5)


def test_patchtst_rows_are_channel_independent():
    # Changing variate 1 of sample 0 changes only row 0 * C + 1 of the weights.
    model = tiny("patchtst")
    x = torch.randn(B, L, C)
    moved = x.clone()
    moved[0, :, 1] = torch.randn(L) * 3
    with torch.no_grad():
        before = model(x, output_attentions=True).attentions[0]
        after = model(moved, output_attentions=True).attentions[0]
    changed = [i for i in range(B * C) if not torch.equal(before[i], after[i])]
    assert changed == [1]


def test_transformer_forecaster_decoder_self_attention_is_causal():
    out = tiny("transformer-forecaster")(torch.randn(B, L, C), output_attentions=True)
    for w in out.attentions:
        future = torch.triu(torch.ones(w.shape[-2:], dtype=torch.bool), diagonal=1)
        assert bool((w[..., future] == 0).all())


def test_crossformer_split_stages():
    out = tiny("crossformer")(torch.randn(B, L, C), output_attentions=True)
    stages = Crossformer.split_stages(out.encoder_attentions)
    assert list(stages) == ["time", "sender", "receiver"]
    assert all(len(ws) == 2 for ws in stages.values())  # one per encoder scale
    assert stages["time"][1].shape == (B * C, HEADS, 2, 2)
    assert len(Crossformer.split_stages(out.attentions)["receiver"]) == 3  # decoder layers
    with pytest.raises(ValueError, match="3 tensors per layer"):
        Crossformer.split_stages(out.encoder_attentions[:2])
