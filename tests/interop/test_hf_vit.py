"""HuggingFace parity for ViT and ViT-MAE: transformers checkpoints load with equal logits,
losses and attention weights (also at another image size with interpolate_pos_encoding), and
save_pretrained(hf=True) writes directories transformers loads with equal outputs."""

from __future__ import annotations

import pytest
import torch

import formerkit
from formerkit.models import vit as fk

transformers = pytest.importorskip("transformers")

# d_model 36 with 3 heads (head width 12), 12x12 images in 4x4 patches (a 3x3 grid).
HF_CONFIG = dict(hidden_size=36, num_hidden_layers=2, num_attention_heads=3,
                 intermediate_size=50, image_size=12, patch_size=4, num_channels=3,
                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
MAE_DECODER = dict(decoder_hidden_size=20, decoder_num_hidden_layers=2,
                   decoder_num_attention_heads=2, decoder_intermediate_size=28)
B = 3


def _pixels(size: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randn(B, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial LayerNorms, biases, [CLS], mask token and positions (HF initialises some
    of them to 0 or 1; transformers 5 leaves a fresh MAE's fixed positions at zero)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or name.endswith(("bias", "cls_token", "mask_token", "position",
                                                "pos_embed", "position_embeddings")):
                param.add_(torch.randn_like(param) * 0.1)
    return model


def _hf(name: str, tmp_path, **extra) -> tuple[torch.nn.Module, str]:
    torch.manual_seed(0)
    if name == "ViTMAEForPreTraining":
        config = transformers.ViTMAEConfig(**HF_CONFIG, **MAE_DECODER, **extra)
    else:
        config = transformers.ViTConfig(**HF_CONFIG, num_labels=4, **extra)
    config._attn_implementation = "eager"
    model = _perturbed(getattr(transformers, name)(config).eval())
    directory = tmp_path / name
    model.save_pretrained(directory)
    return model, str(directory)


def _close(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4, msg=what)


def _attentions_equal(ours, theirs) -> None:
    assert len(ours) == len(theirs) == 2
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        _close(a, b, "attentions")


@pytest.mark.parametrize("size", [12, 20])
def test_image_classifier_matches_transformers(size, tmp_path):
    hf, directory = _hf("ViTForImageClassification", tmp_path)
    model = formerkit.from_pretrained(directory)
    assert type(model) is fk.ViTForImageClassification
    pixels, labels = _pixels(size), torch.tensor([0, 3, 1])
    kwargs = dict(interpolate_pos_encoding=size != 12, output_attentions=True)
    with torch.no_grad():
        theirs = hf(pixels, labels=labels, **kwargs)
        ours = model(pixels, labels=labels, **kwargs)
    _close(ours.logits, theirs.logits, "logits")
    _close(ours.loss, theirs.loss, "loss")
    _attentions_equal(ours.attentions, theirs.attentions)
    assert ours.attentions[0].shape[-1] == 1 + (size // 4) ** 2


def test_vit_model_matches_transformers_with_pooler(tmp_path):
    hf, directory = _hf("ViTModel", tmp_path)
    model = fk.ViTModel.from_pretrained(directory)
    with torch.no_grad():
        theirs, ours = hf(_pixels()), model(_pixels())
    _close(ours.last_hidden_state, theirs.last_hidden_state, "last_hidden_state")
    _close(ours.pooler_output, theirs.pooler_output, "pooler_output")


def test_classifier_checkpoint_as_bare_encoder_names_the_missing_pooler(tmp_path):
    _, directory = _hf("ViTForImageClassification", tmp_path)
    with pytest.raises(ValueError, match="missing tensor 'pooler.weight'"):
        fk.ViTModel.from_pretrained(directory)


@pytest.mark.parametrize("norm_pix_loss", [False, True])
@pytest.mark.parametrize("size", [12, 16])
def test_mae_matches_transformers_with_the_same_noise(size, norm_pix_loss, tmp_path):
    hf, directory = _hf("ViTMAEForPreTraining", tmp_path, norm_pix_loss=norm_pix_loss)
    model = formerkit.from_pretrained(directory)
    assert type(model) is fk.ViTMAEForPreTraining and model.config.mask_ratio == 0.75
    pixels = _pixels(size)
    noise = torch.rand(B, (size // 4) ** 2, generator=torch.Generator().manual_seed(2))
    kwargs = dict(noise=noise, interpolate_pos_encoding=size != 12)
    with torch.no_grad():
        theirs = hf(pixels, output_attentions=True, **kwargs)
        ours = model(pixels, output_attentions=True, **kwargs)
    torch.testing.assert_close(ours.mask, theirs.mask, atol=0, rtol=0)
    torch.testing.assert_close(ours.ids_restore, theirs.ids_restore, atol=0, rtol=0)
    _close(ours.logits, theirs.logits, "logits")
    _close(ours.loss, theirs.loss, "loss")
    _attentions_equal(ours.attentions, theirs.attentions)
    kept = int((size // 4) ** 2 * 0.25)
    assert ours.attentions[0].shape[-1] == 1 + kept
    assert ours.mask.sum(dim=1).tolist() == [(size // 4) ** 2 - kept] * B


def test_mae_sincos_positions_match_transformers_table():
    from transformers.models.vit_mae.modeling_vit_mae import (
        build_2d_sinusoidal_position_embedding,
    )

    config = fk.ViTConfig(image_size=12, patch_size=4, d_model=36, n_heads=3, n_layers=2,
                          d_ff=50, decoder_d_model=20, decoder_n_heads=2, decoder_n_layers=2,
                          decoder_d_ff=28)
    ours = fk.ViTMAEForPreTraining(config)
    for position, width in ((ours.vit.embeddings.position, 36), (ours.decoder.position, 20)):
        table = build_2d_sinusoidal_position_embedding(3, 3, width, cls_token=True)
        half = width // 2  # the released MAE weights' layout: the two halves swapped
        expected = torch.cat([table[..., half:], table[..., :half]], dim=-1)[None]
        torch.testing.assert_close(position, expected, atol=1e-6, rtol=0)
        assert not position.requires_grad


def _ours(name: str, **extra) -> torch.nn.Module:
    config = fk.ViTConfig(image_size=12, patch_size=4, d_model=36, n_heads=3, n_layers=2,
                          d_ff=50, num_labels=4, decoder_d_model=20, decoder_n_heads=2,
                          decoder_n_layers=2, decoder_d_ff=28, **extra)
    torch.manual_seed(0)
    return _perturbed(getattr(fk, name)(config).eval())


@pytest.mark.parametrize("name", ["ViTModel", "ViTForImageClassification",
                                  "ViTMAEForPreTraining"])
def test_save_pretrained_hf_round_trip(name, tmp_path):
    model = _ours(name, qkv_bias=name != "ViTModel")
    model.save_pretrained(tmp_path / "hf", hf=True)
    hf = getattr(transformers, name).from_pretrained(tmp_path / "hf",
                                                     attn_implementation="eager").eval()
    pixels = _pixels()
    with torch.no_grad():
        if name == "ViTMAEForPreTraining":
            noise = torch.rand(B, 9, generator=torch.Generator().manual_seed(3))
            ours, theirs = model(pixels, noise=noise), hf(pixels, noise=noise)
            _close(ours.logits, theirs.logits, "logits")
            _close(ours.loss, theirs.loss, "loss")
        elif name == "ViTModel":
            ours, theirs = model(pixels), hf(pixels)
            _close(ours.last_hidden_state, theirs.last_hidden_state, "last_hidden_state")
            _close(ours.pooler_output, theirs.pooler_output, "pooler_output")
        else:
            labels = torch.tensor([1, 2, 3])
            ours, theirs = model(pixels, labels=labels), hf(pixels, labels=labels)
            _close(ours.logits, theirs.logits, "logits")
            _close(ours.loss, theirs.loss, "loss")
    again = formerkit.from_pretrained(tmp_path / "hf")
    assert type(again) is type(model)
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=k)


def test_unsupported_pooler_is_named(tmp_path):
    _, directory = _hf("ViTModel", tmp_path, pooler_act="relu")
    with pytest.raises(ValueError, match="pooler"):
        fk.ViTModel.from_pretrained(directory)
