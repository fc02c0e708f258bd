"""Checkpoint layouts other than formerkit's own are plugins of ``models/base.py``: models never
import ``formerkit.interop``, which publishes HuggingFace and GGUF as entry points."""

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

import formerkit
from formerkit.models import base
from formerkit.models.base import CheckpointFormat, checkpoint_formats, register_checkpoint_format
from formerkit.models.gpt import GPTConfig, GPTForCausalLM

SRC = Path(formerkit.__file__).parent


@pytest.mark.parametrize("layer", ["models", "nn"])
def test_models_and_blocks_never_import_interop(layer):
    offenders = []
    for file in (SRC / layer).rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{file.name}: {n}" for n in names if n.startswith("formerkit.interop")]
    assert offenders == []


def test_installed_formats_include_huggingface_and_gguf():
    names = {fmt.name for fmt in checkpoint_formats()}
    assert {"huggingface", "gguf"} <= names


@pytest.fixture
def npz_format():
    """A plugin's read-only format: a GPT's weights and config in one ``.npz`` file."""

    def load(cls, path, raw_config, overrides):
        arrays = dict(np.load(path))
        config = GPTConfig.from_dict({**dict(zip(arrays["keys"], arrays["values"].tolist())),
                                      **overrides})
        model = cls(config)
        model.load_state_dict({k[2:]: torch.from_numpy(v) for k, v in arrays.items()
                               if k.startswith("w.")})
        return model

    fmt = register_checkpoint_format(CheckpointFormat(
        name="test-npz", claims=lambda path, raw: raw is None and path.suffix == ".npz",
        class_name=lambda path, raw: "GPTForCausalLM", load=load))
    yield fmt
    base._FORMATS.pop("test-npz")


def test_a_plugin_format_loads_through_from_pretrained(npz_format, tmp_path):
    fields = {"vocab_size": 11, "d_model": 8, "n_heads": 2, "n_layers": 1, "d_ff": 16,
              "max_seq_len": 8}
    torch.manual_seed(0)
    model = GPTForCausalLM(GPTConfig(**fields)).eval()
    file = tmp_path / "model.npz"
    np.savez(file, keys=np.array(list(fields)), values=np.array(list(fields.values())),
             **{"w." + k: v.numpy() for k, v in model.state_dict().items()})
    loaded = formerkit.from_pretrained(file, dropout=0.0)
    assert type(loaded) is GPTForCausalLM
    ids = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(loaded.eval()(ids).logits, model(ids).logits, rtol=0, atol=0)


def test_saving_hf_without_the_format_installed_is_a_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setattr(base, "checkpoint_formats", lambda: [])  # as if no format were installed
    model = GPTForCausalLM(GPTConfig(vocab_size=11, d_model=8, n_heads=2, n_layers=1, d_ff=16,
                                     max_seq_len=8))
    with pytest.raises(ValueError, match="checkpoint format 'huggingface' is not installed"):
        model.save_pretrained(tmp_path, hf=True)
