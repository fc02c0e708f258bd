"""Loading checks before it allocates: weights must exist, headers must fit the file, the
config must fit the weights; parameters are built on meta and the file's tensors put in place
(ties kept, memory near the checkpoint's size, no view of a file that may be rewritten)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch

import formerkit
from formerkit import GPTForCausalLM
from formerkit.models.base import read_weights, read_weights_header

TINY = dict(vocab_size=50, d_model=16, n_heads=2, n_layers=2, max_seq_len=16, dropout=0.0)


def _saved(tmp_path, **overrides):
    torch.manual_seed(0)
    model = formerkit.create_model("gpt", **{**TINY, **overrides})
    model.save_pretrained(tmp_path / "m")
    return model, tmp_path / "m"


def _hostile_config(path, **values):
    config = json.loads((path / "config.json").read_text())
    config.update(values)
    (path / "config.json").write_text(json.dumps(config))


def test_loaded_model_matches_keeps_ties_and_trains(tmp_path):
    model, path = _saved(tmp_path)
    loaded = GPTForCausalLM.from_pretrained(path)
    ids = torch.randint(0, 50, (2, 7))
    torch.testing.assert_close(loaded(ids).logits, model.eval()(ids).logits, rtol=0, atol=0)
    assert loaded.lm_head.weight is loaded.transformer.embed_tokens.weight
    assert all(p.requires_grad and not p.is_meta for p in loaded.parameters())
    assert not any(b.is_meta for b in loaded.buffers())


def test_weights_do_not_depend_on_the_file_after_loading(tmp_path):
    model, path = _saved(tmp_path)
    loaded = GPTForCausalLM.from_pretrained(path)
    ids = torch.randint(0, 50, (1, 5))
    before = loaded(ids).logits
    (path / "model.safetensors").write_bytes(b"")  # rewritten in place (a mapped file: SIGBUS)
    torch.testing.assert_close(loaded(ids).logits, before, rtol=0, atol=0)


def test_hostile_config_without_weights_fails_before_building(tmp_path, monkeypatch):
    _, path = _saved(tmp_path)
    (path / "model.safetensors").unlink()
    _hostile_config(path, vocab_size=10_000_000)
    monkeypatch.setattr(GPTForCausalLM, "__init__", _never_called)
    with pytest.raises(FileNotFoundError, match="no weights in"):
        GPTForCausalLM.from_pretrained(path)


def _never_called(*args, **kwargs):
    raise AssertionError("the model was built before its weights were checked")


@pytest.mark.parametrize("values", [{"vocab_size": 10_000_000}, {"n_layers": 100_000_000},
                                    {"d_model": 1_000_000, "n_heads": 1}])
def test_config_far_larger_than_its_weights_is_refused_at_once(tmp_path, monkeypatch, values):
    _, path = _saved(tmp_path)
    _hostile_config(path, **values)
    monkeypatch.setattr(GPTForCausalLM, "__init__", _never_called)
    with pytest.raises(ValueError, match="the config does not match the weights"):
        GPTForCausalLM.from_pretrained(path)


def test_misshapen_tensor_is_named_before_the_weights_are_read(tmp_path, monkeypatch):
    _, path = _saved(tmp_path)
    _hostile_config(path, vocab_size=60)
    import formerkit.models.base as base

    monkeypatch.setattr(base, "read_weights", lambda file: pytest.fail("weights were read"))
    with pytest.raises(ValueError, match="embed_tokens.weight' has shape \\(50, 16\\), model "
                                         "expects \\(60, 16\\)"):
        GPTForCausalLM.from_pretrained(path)


def test_header_pointing_past_the_end_of_the_file_is_refused(tmp_path):
    _, path = _saved(tmp_path)
    file = path / "model.safetensors"
    file.write_bytes(file.read_bytes()[:-64])  # truncated
    with pytest.raises(ValueError, match="does not fit in the file"):
        read_weights_header(file)
    with pytest.raises(ValueError, match="does not fit in the file"):
        GPTForCausalLM.from_pretrained(path)
    file.write_bytes((10**12).to_bytes(8, "little") + b"{}")
    with pytest.raises(ValueError, match="not a safetensors file"):
        read_weights(file)


def test_reader_matches_safetensors(tmp_path):
    from safetensors.torch import load_file, save_file

    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5), "h": torch.randn(2).half(),
               "bf": torch.randn(4, 1).bfloat16(), "empty": torch.zeros(0, 3),
               "scalar": torch.tensor(2.5), "mask": torch.tensor([True, False])}
    save_file(tensors, str(tmp_path / "t.safetensors"))
    ours, reference = read_weights(tmp_path / "t.safetensors"), \
        load_file(str(tmp_path / "t.safetensors"))
    assert ours.keys() == reference.keys()
    for key in ours:
        assert ours[key].dtype == reference[key].dtype and torch.equal(ours[key], reference[key])


MEASURE = """
import resource, sys, torch
from formerkit import GPTForCausalLM
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
model = GPTForCausalLM.from_pretrained(sys.argv[1])
with torch.no_grad():
    model(torch.zeros(1, 4, dtype=torch.long))
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


@pytest.mark.slow  # a subprocess and a 60 MB checkpoint
def test_loading_takes_memory_near_the_checkpoints_size(tmp_path):
    # Building the model and then copying the weights in takes twice the checkpoint's size.
    _, path = _saved(tmp_path, vocab_size=8192, d_model=512, n_heads=8, n_layers=2)
    size = (path / "model.safetensors").stat().st_size
    result = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    grown = int(result.stdout.strip().splitlines()[-1])
    assert grown < 1.3 * size, f"loading grew memory by {grown / size:.2f}x the checkpoint"


def test_building_a_model_larger_than_memory_is_refused_at_once():
    started = time.perf_counter()
    with pytest.raises(ValueError, match="more than this machine's"):
        formerkit.create_model("gpt", **{**TINY, "n_layers": 100_000_000})
    with pytest.raises(ValueError, match="more than this machine's"):
        formerkit.create_model("gpt", **{**TINY, "d_model": 1_000_000, "n_heads": 1})
    assert time.perf_counter() - started < 1.0


def test_a_failed_allocation_is_a_one_line_value_error(monkeypatch):
    from formerkit.models.registry import get_model_entry

    def out_of_memory(self, config):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] data. DefaultCPUAllocator: "
                           "not enough memory: you tried to allocate 4000000000000 bytes.")

    monkeypatch.setattr(get_model_entry("gpt").model_class, "__init__", out_of_memory)
    with pytest.raises(ValueError, match="not enough memory to build gpt GPTConfig\\("):
        formerkit.create_model("gpt", **TINY)
