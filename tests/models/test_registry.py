"""Registry: create_model with presets and overrides; every registered model runs forward,
backward, save and load."""

import dataclasses

import pytest
import torch

import formerkit
from formerkit.config import ConfigBase, check_positive
from formerkit.models.base import ModelOutput, PreTrainedModel
from formerkit.models.registry import build_config, register_model


@dataclasses.dataclass
class _TinyConfig(ConfigBase):
    d_model: int = 4
    n_layers: int = 1

    def validate(self) -> None:
        check_positive(self, "d_model", "n_layers")


@register_model("_test-tiny", config_class=_TinyConfig, presets={"wide": {"d_model": 32}})
class _Tiny(PreTrainedModel):
    config_class = _TinyConfig

    def __init__(self, config):
        super().__init__(config)
        self.linear = torch.nn.Linear(config.d_model, config.d_model)

    def forward(self, x):
        return ModelOutput(logits=self.linear(x))


def test_create_model_with_preset_and_overrides():
    model = formerkit.create_model("_test-tiny", preset="wide", n_layers=3)
    assert model.config.d_model == 32 and model.config.n_layers == 3
    assert "_test-tiny" in formerkit.list_models()
    with pytest.raises(ValueError, match="did you mean '_test-tiny'"):
        formerkit.create_model("_test-tin")
    with pytest.raises(ValueError, match="no preset 'wid'; did you mean 'wide'"):
        build_config("_test-tiny", preset="wid")
    with pytest.raises(ValueError, match="n_layers must be positive"):
        formerkit.create_model("_test-tiny", n_layers=0)


def test_save_and_load_round_trip(tmp_path):
    model = formerkit.create_model("_test-tiny", d_model=6)
    model.save_pretrained(tmp_path)
    loaded = _Tiny.from_pretrained(tmp_path)
    x = torch.randn(2, 6)
    torch.testing.assert_close(loaded(x).logits, model(x).logits)


def test_a_plugin_model_loads_through_the_registry(tmp_path):
    """formerkit.from_pretrained finds a class a plugin defined (it is not in formerkit.models)."""
    import formerkit.models

    assert not hasattr(formerkit.models, "_Tiny")
    model = formerkit.create_model("_test-tiny", d_model=6)
    model.save_pretrained(tmp_path)
    loaded = formerkit.from_pretrained(tmp_path)
    assert type(loaded) is _Tiny
    x = torch.randn(2, 6)
    torch.testing.assert_close(loaded(x).logits, model(x).logits)


def test_load_errors_name_file_and_tensor(tmp_path):
    model = formerkit.create_model("_test-tiny", d_model=6)
    model.save_pretrained(tmp_path)
    other = formerkit.create_model("_test-tiny", d_model=6)
    state = other.state_dict()
    state["linear.weight"] = torch.zeros(5, 6)
    from formerkit.models.base import save_state_dict

    save_state_dict(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"'linear.weight' has shape \(5, 6\)"):
        _Tiny.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="model.safetensors"):
        _Tiny.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weights"):
        _Tiny.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _Tiny.from_pretrained(tmp_path / "missing")
