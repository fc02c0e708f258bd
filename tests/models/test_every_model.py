"""Every registered model: a tiny instance runs forward and backward, saves and loads back with
identical outputs (timm's "test every registered model")."""

from __future__ import annotations

import pytest
import torch

import formerkit
from formerkit.models.auto import from_pretrained
from formerkit.models.registry import get_model_entry

# Tiny overrides per registered name; a new model must be added here (the test below fails
# otherwise), so that no registered model goes untested.
TINY = {
    "gpt": dict(vocab_size=50, d_model=24, n_heads=3, n_layers=2, max_seq_len=16),
    "llama": dict(vocab_size=50, d_model=24, n_heads=4, n_kv_heads=2, n_layers=2, d_ff=40,
                  max_seq_len=16, sliding_window=6),
    "bert": dict(vocab_size=50, d_model=24, n_heads=3, n_layers=2, d_ff=48, max_seq_len=16),
    "transformer": dict(vocab_size=50, d_model=24, n_heads=3, n_encoder_layers=2,
                        n_decoder_layers=1, d_ff=48, max_seq_len=16),
    "har": dict(n_channels=9, n_classes=6, d_model=24, n_heads=3, n_layers=2, d_ff=48,
                max_seq_len=32),
    "har-mae": dict(n_channels=9, d_model=24, n_heads=3, n_layers=2, d_ff=48, max_seq_len=32,
                    span=4, decoder_d_model=12, decoder_n_heads=2, decoder_n_layers=1,
                    decoder_d_ff=24),
    "itransformer": dict(seq_len=24, pred_len=8, n_vars=3, d_model=24, n_heads=3, n_layers=2,
                         d_ff=48),
    "patchtst": dict(seq_len=24, pred_len=8, n_vars=3, d_model=24, n_heads=3, n_layers=2,
                     d_ff=48, patch_len=8, stride=4),
    "crossformer": dict(seq_len=24, pred_len=8, n_vars=3, d_model=24, n_heads=3, n_layers=2,
                        d_ff=48, patch_len=6),
    "transformer-forecaster": dict(seq_len=24, pred_len=8, n_vars=3, d_model=24, n_heads=3,
                                   n_layers=2, d_ff=48, label_len=12),
    "cnn": dict(image_size=8, n_channels=2, channels=3, d_model=10, num_labels=3),
    "vit": dict(image_size=8, patch_size=4, n_channels=2, d_model=24, n_heads=3, n_layers=2,
                d_ff=48, num_labels=3),
    "vit-mae": dict(image_size=8, patch_size=2, n_channels=2, d_model=24, n_heads=3,
                    n_layers=2, d_ff=48, decoder_d_model=12, decoder_n_heads=2,
                    decoder_n_layers=1, decoder_d_ff=24),
}


def _inputs(name: str, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Keyword inputs for text models; time-series models take one (B, T, C) tensor, passed
    positionally under the key ``""``."""
    gen = torch.Generator().manual_seed(0)
    config = model.config
    if name in ("gpt", "bert", "llama"):
        ids = torch.randint(1, 50, (2, 10), generator=gen)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if name == "transformer":
        return {"input_ids": torch.randint(4, 50, (2, 9), generator=gen),
                "decoder_input_ids": torch.randint(4, 50, (2, 7), generator=gen)}
    if name == "har":
        return {"": torch.randn(2, 20, config.n_channels, generator=gen)}
    if name == "har-mae":  # fixed noise: the same spans are masked before and after saving
        return {"inputs": torch.randn(2, 20, config.n_channels, generator=gen),
                "noise": torch.rand(2, 20 // config.span, generator=gen)}
    if name.startswith("vit") or name == "cnn":
        pixels = torch.randn(2, config.n_channels, config.image_size, config.image_size,
                             generator=gen)
        if name in ("vit", "cnn"):
            return {"pixel_values": pixels}
        return {"pixel_values": pixels, "noise": torch.rand(2, config.grid ** 2, generator=gen)}
    return {"": torch.randn(2, config.seq_len, config.n_vars, generator=gen)}


def _call(model: torch.nn.Module, inputs: dict[str, torch.Tensor]):
    if "" in inputs:
        return model(inputs[""])
    return model(**inputs)


def _main_output(output) -> torch.Tensor:
    for field in ("logits", "prediction", "last_hidden_state"):
        value = getattr(output, field, None)
        if value is not None:
            return value
    raise AssertionError(f"output has no logits/prediction/last_hidden_state: {output}")


def test_every_registered_model_has_a_tiny_config():
    # Other tests register toy models of their own; every model formerkit ships is covered.
    shipped = [name for name in formerkit.list_models()
               if get_model_entry(name).model_class.__module__.startswith("formerkit.")]
    assert sorted(TINY) == shipped


@pytest.mark.parametrize("name", sorted(TINY))
def test_forward_backward_save_load(name, tmp_path):
    torch.manual_seed(0)
    model = formerkit.create_model(name, **TINY[name])
    inputs = _inputs(name, model)
    model.train()
    out = _main_output(_call(model, inputs))
    assert torch.isfinite(out).all()
    out.float().pow(2).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    model.eval()
    with torch.no_grad():
        expected = _main_output(_call(model, inputs))
    model.save_pretrained(tmp_path)
    loaded = from_pretrained(tmp_path)
    assert type(loaded) is type(model)
    with torch.no_grad():
        torch.testing.assert_close(_main_output(_call(loaded, inputs)), expected)
