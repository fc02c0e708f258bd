"""ViT and MAE on their own: config errors name the field, the MAE loss is the pixel MSE over
the removed patches only, fixed positions stay fixed through save and load, and images of the
wrong size or channels are refused in one line."""

from __future__ import annotations

import pytest
import torch

import formerkit
from formerkit.models.vit import ViTConfig, ViTMAEForPreTraining
from formerkit.nn import image_patches

TINY = dict(image_size=8, patch_size=2, n_channels=1, d_model=16, n_heads=2, n_layers=1,
            d_ff=32, decoder_d_model=8, decoder_n_heads=2, decoder_n_layers=1, decoder_d_ff=16)


@pytest.mark.parametrize("changes,match", [
    (dict(image_size=10, patch_size=4), "image_size=10 is not divisible by patch_size=4"),
    (dict(mask_ratio=1.0), "mask_ratio must be in"),
    (dict(mask_ratio=0.0), "mask_ratio must be in"),
    (dict(d_model=18, n_heads=4), "d_model"),
    (dict(decoder_d_model=10, decoder_n_heads=4), "decoder_d_model"),
    (dict(activation="tanh"), "activation"),
])
def test_config_errors_name_the_field(changes, match):
    with pytest.raises(ValueError, match=match):
        ViTConfig(**{**TINY, **changes})


def test_mae_needs_widths_divisible_by_four():
    with pytest.raises(ValueError, match="divisible by 4"):
        ViTMAEForPreTraining(ViTConfig(**{**TINY, "decoder_d_model": 6, "decoder_n_heads": 2}))


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_mae_loss_is_the_mse_over_removed_patches(norm_pix_loss):
    torch.manual_seed(0)
    model = ViTMAEForPreTraining(ViTConfig(**TINY, norm_pix_loss=norm_pix_loss)).eval()
    pixels = torch.randn(3, 1, 8, 8)
    noise = torch.rand(3, 16)
    out = model(pixels, noise=noise)
    assert out.logits.shape == (3, 16, 4) and out.mask.shape == (3, 16)
    assert out.mask.sum().item() == 3 * 12  # int(16 * 0.25) = 4 kept per image
    target = image_patches(pixels, 2)
    if norm_pix_loss:
        target = (target - target.mean(-1, keepdim=True)) / \
            (target.var(-1, keepdim=True) + 1e-6).sqrt()
    removed = out.mask.bool()
    expected = (out.logits[removed] - target[removed]).pow(2).mean()
    torch.testing.assert_close(out.loss, expected)
    # the same noise gives the same mask; another ratio keeps another count
    assert torch.equal(model(pixels, noise=noise).mask, out.mask)
    assert model(pixels, noise=noise, mask_ratio=0.5).mask.sum().item() == 3 * 8
    torch.testing.assert_close(model.unpatchify(model.patchify(pixels)), pixels)


def test_mae_fixed_positions_survive_save_and_load(tmp_path):
    model = formerkit.create_model("vit-mae", **TINY)
    model.save_pretrained(tmp_path)
    loaded = formerkit.from_pretrained(tmp_path)
    for m in (model, loaded):
        assert not m.vit.embeddings.position.requires_grad
        assert not m.decoder.position.requires_grad
    torch.testing.assert_close(loaded.vit.embeddings.position, model.vit.embeddings.position)


def test_classifier_outputs_and_bad_images():
    model = formerkit.create_model("vit", **TINY, num_labels=4).eval()
    out = model(torch.randn(2, 1, 8, 8), labels=torch.tensor([1, 3]), output_attentions=True)
    assert out.logits.shape == (2, 4) and out.loss.dim() == 0
    assert [a.shape for a in out.attentions] == [(2, 2, 17, 17)]
    assert model(torch.randn(2, 1, 12, 12), interpolate_pos_encoding=True).logits.shape == (2, 4)
    with pytest.raises(ValueError, match="differs from the model's 8x8"):
        model(torch.randn(2, 1, 12, 12))
    with pytest.raises(ValueError, match="n_channels=1"):
        model(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="not divisible by patch_size=2"):
        model(torch.randn(2, 1, 9, 9), interpolate_pos_encoding=True)
