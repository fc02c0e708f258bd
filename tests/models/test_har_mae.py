"""The activity model's masked autoencoder: the loss is the normalised-signal MSE over the
removed spans, removed steps never reach the encoder, and its encoder moves to a classifier."""

from __future__ import annotations

import pytest
import torch

import formerkit
from formerkit.models.timeseries.har import HARConfig, HARTransformer
from formerkit.models.timeseries.har_mae import (
    HARMAEConfig,
    HARMAEForPreTraining,
    backbone_config,
    load_pretrained_backbone,
)

TINY = {"n_channels": 3, "max_seq_len": 32, "d_model": 16, "n_heads": 2, "n_layers": 2,
        "d_ff": 32, "span": 4, "mask_ratio": 0.5, "decoder_d_model": 8, "decoder_n_heads": 2,
        "decoder_d_ff": 16, "dropout": 0.0}


def tiny_model() -> HARMAEForPreTraining:
    torch.manual_seed(0)
    model = HARMAEForPreTraining(HARMAEConfig(**TINY)).eval()
    model.normalize.set_statistics(torch.randn(64, 32, 3) * 2 + 1)
    return model


def test_loss_is_the_normalised_mse_over_removed_spans():
    model = tiny_model()
    inputs = torch.randn(2, 32, 3) * 2 + 1
    noise = torch.rand(2, 8)
    out = model(inputs, noise=noise)
    assert out.logits.shape == (2, 32, 3) and out.mask.shape == (2, 32)
    removed = noise.argsort(dim=1)[:, 4:]  # the 4 highest-noise spans of 8 are removed
    expected_mask = torch.zeros(2, 8).scatter_(1, removed, 1.0).repeat_interleave(4, dim=1)
    torch.testing.assert_close(out.mask, expected_mask)
    target = model.normalize(inputs)
    per_step = (out.logits - target).pow(2).mean(-1)
    torch.testing.assert_close(out.loss, per_step[expected_mask.bool()].mean())


def test_removed_steps_never_reach_the_encoder():
    model = tiny_model()
    inputs = torch.randn(2, 32, 3)
    noise = torch.rand(2, 8)
    out = model(inputs, noise=noise)
    changed = inputs.clone()
    changed[out.mask.bool()] = 1000.0
    torch.testing.assert_close(model(changed, noise=noise).logits, out.logits)
    changed[~out.mask.bool()] += 1.0
    assert not torch.allclose(model(changed, noise=noise).logits, out.logits)


def test_gradients_reach_encoder_decoder_and_mask_token():
    model = tiny_model().train()
    model(torch.randn(4, 32, 3)).loss.backward()
    for name in ("embed.weight", "encoder.layers.0.self_attn.out_proj.weight", "mask_token",
                 "decoder_position.weight", "reconstruct.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_bad_settings_and_inputs_are_named():
    with pytest.raises(ValueError, match="max_seq_len=30 must be a multiple of span=4"):
        HARMAEConfig(**{**TINY, "max_seq_len": 30})
    with pytest.raises(ValueError, match="decoder_d_model=9 must be divisible"):
        HARMAEConfig(**{**TINY, "decoder_d_model": 9})
    with pytest.raises(ValueError, match="mask_ratio"):
        HARMAEConfig(**{**TINY, "mask_ratio": 1.0})
    model = tiny_model()
    with pytest.raises(ValueError, match="30 steps is not a multiple of span=4"):
        model(torch.randn(1, 30, 3))
    with pytest.raises(ValueError, match="expects n_channels=3"):
        model(torch.randn(1, 32, 4))
    with pytest.raises(ValueError, match="none of the 2 spans visible"):
        model(torch.randn(1, 8, 3), mask_ratio=0.6)
    with pytest.raises(ValueError, match="NaN"):
        model(torch.full((1, 32, 3), float("nan")))


def test_save_load_and_backbone_transfer(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "mae")
    loaded = formerkit.from_pretrained(tmp_path / "mae")
    assert type(loaded) is HARMAEForPreTraining and loaded.config.span == 4
    inputs, noise = torch.randn(2, 32, 3), torch.rand(2, 8)
    torch.testing.assert_close(loaded(inputs, noise=noise).loss, model(inputs, noise=noise).loss)

    config = backbone_config(model.config, n_classes=4, dropout=0.2)
    assert type(config) is HARConfig and config.d_model == 16 and config.dropout == 0.2
    torch.manual_seed(1)
    classifier = HARTransformer(config)
    head = classifier.classifier.weight.detach().clone()
    load_pretrained_backbone(classifier, tmp_path / "mae")
    source = model.state_dict()
    for name, tensor in classifier.state_dict().items():
        if name.startswith("classifier."):
            continue
        torch.testing.assert_close(tensor, source[name], msg=name)
    torch.testing.assert_close(classifier.classifier.weight, head)
    # the classifier's encoder computes what the pre-trained encoder computes
    normalized = model.normalize(inputs)
    expected, _ = model.encoder(model.embed_steps(normalized))
    got, _ = classifier.eval().encoder(classifier.embed_steps(classifier.normalize(inputs)))
    torch.testing.assert_close(got, expected)


def test_backbone_transfer_rejects_other_models_and_shapes():
    classifier = HARTransformer(backbone_config(HARMAEConfig(**TINY)))
    gpt = formerkit.create_model("gpt", "tiny")
    with pytest.raises(ValueError, match="GPTForCausalLM, not an activity model"):
        load_pretrained_backbone(classifier, gpt)
    wider = HARMAEForPreTraining(HARMAEConfig(**{**TINY, "d_model": 32}))
    with pytest.raises(ValueError, match="shape"):
        load_pretrained_backbone(classifier, wider)
