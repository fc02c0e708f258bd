"""HARTransformer: normalisation buffers, ViT init, shapes, loss and input errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from formerkit import create_model
from formerkit.models.timeseries.har import HARConfig, HARTransformer


def tiny(**overrides) -> HARTransformer:
    torch.manual_seed(0)
    values = dict(n_channels=3, n_classes=4, max_seq_len=16, d_model=16, n_heads=2, n_layers=2,
                  d_ff=32, dropout=0.0)
    values.update(overrides)
    return HARTransformer(HARConfig(**values)).eval()


def test_normalization_buffers_are_training_statistics_and_saved(tmp_path):
    model = tiny()
    data = torch.randn(50, 16, 3, dtype=torch.float64) * torch.tensor([1.0, 5.0, 0.1]) + \
        torch.tensor([2.0, -3.0, 9.8])
    model.normalize.set_statistics(data)
    flat = data.reshape(-1, 3)
    torch.testing.assert_close(model.normalize.mean, flat.mean(0).float())
    torch.testing.assert_close(model.normalize.var, flat.var(0, unbiased=False).float())
    normalised = model.normalize(data.float()).reshape(-1, 3)
    torch.testing.assert_close(normalised.mean(0), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(normalised.std(0, unbiased=False), torch.ones(3), atol=1e-4,
                               rtol=0)
    assert {"normalize.mean", "normalize.var"} <= set(model.state_dict())
    model.save_pretrained(tmp_path)
    loaded = HARTransformer.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.normalize.mean, model.normalize.mean)
    x = torch.randn(2, 16, 3) * 3 + 5
    torch.testing.assert_close(loaded(x).logits, model(x).logits)


def test_linear_layers_are_truncated_normal_002():
    model = tiny(d_model=128, d_ff=512, n_heads=4)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 2 + 2 * 4  # embed, classifier, per layer qkv, out, fc1, fc2
    for module in linears:
        assert module.weight.abs().max() <= 0.04 + 1e-7
        assert torch.count_nonzero(module.bias) == 0
    big = model.encoder.layers[0].ff.fc1.weight  # 65536 values
    # N(0, 0.02) cut at +-2 std has std 0.02 * 0.8796
    assert big.std().item() == pytest.approx(0.02 * 0.8796, rel=0.03)
    assert model.position.weight.abs().max() <= 0.04 + 1e-7


def test_shapes_loss_and_window_prediction():
    model = tiny()
    x = torch.randn(5, 12, 3)
    out = model(x)
    assert out.logits.shape == (5, 12, 4) and out.loss is None
    window_labels = torch.tensor([0, 1, 2, 3, 1])
    loss = model(x, labels=window_labels).loss
    reference = F.cross_entropy(out.logits.reshape(-1, 4), window_labels.repeat_interleave(12))
    torch.testing.assert_close(loss, reference)
    step_labels = window_labels[:, None].repeat(1, 12)
    step_labels[:, :3] = -100
    torch.testing.assert_close(model(x, labels=step_labels).loss,
                               F.cross_entropy(out.logits[:, 3:].reshape(-1, 4),
                                               step_labels[:, 3:].reshape(-1)))
    torch.testing.assert_close(model.window_logits(out.logits), out.logits.mean(dim=1))
    assert torch.equal(model.predict_windows(x), out.logits.mean(1).argmax(-1))
    attentions = model(x, output_attentions=True).attentions
    assert len(attentions) == 2 and attentions[0].shape == (5, 2, 12, 12)


def test_label_smoothing_mixes_a_uniform_target_into_the_loss():
    smooth = tiny(label_smoothing=0.1)
    x, labels = torch.randn(3, 12, 3), torch.tensor([0, 2, 3])
    logits = smooth(x).logits.reshape(-1, 4)
    log_probs = logits.log_softmax(-1)
    target = labels.repeat_interleave(12)
    # 0.9 * CE(true class) + 0.1 * mean over classes of -log p
    expected = (0.9 * -log_probs[torch.arange(36), target] - 0.1 * log_probs.mean(-1)).mean()
    torch.testing.assert_close(smooth(x, labels=labels).loss, expected)
    with pytest.raises(ValueError, match="label_smoothing"):
        HARConfig(label_smoothing=1.0)


def test_label_steps_matches_forward_and_covers_long_recordings():
    model = tiny()
    signal = torch.randn(16, 3)
    torch.testing.assert_close(model.label_steps(signal), model(signal[None]).logits[0]
                               .softmax(-1))
    long = torch.randn(53, 3)
    probs = model.label_steps(long, stride=5)
    assert probs.shape == (53, 4)
    torch.testing.assert_close(probs.sum(-1), torch.ones(53))
    # the first steps are covered by the first window only
    torch.testing.assert_close(probs[:5], model(long[None, :16]).logits[0, :5].softmax(-1))


def test_input_errors_name_the_problem():
    model = tiny()
    with pytest.raises(ValueError, match="4 channels.*n_channels=3"):
        model(torch.randn(2, 8, 4))
    with pytest.raises(ValueError, match="17 steps.*max_seq_len=16"):
        model(torch.randn(2, 17, 3))
    bad = torch.randn(2, 8, 3)
    bad[1, 4, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model(bad)
    with pytest.raises(ValueError, match=r"\(batch, time, channels\)"):
        model(torch.randn(8, 3))


def test_config_validation_and_registry():
    with pytest.raises(ValueError, match="d_model"):
        HARConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="class_names"):
        HARConfig(n_classes=2, class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="activation"):
        HARConfig(activation="tanh")
    model = create_model("har", preset="tiny", n_channels=9)
    assert isinstance(model, HARTransformer) and model.config.d_model == 16
