"""ONNX export: onnxruntime output equals PyTorch within 1e-4 (HAR at several lengths, BERT
classifiers and GPT without cache, with padding)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import onnxruntime as ort  # noqa: E402

import formerkit.models as models  # noqa: E402
from formerkit.export import benchmark_onnx, export_model  # noqa: E402
from formerkit.models.registry import build_config  # noqa: E402
from formerkit.models.timeseries.har import HARConfig, HARTransformer  # noqa: E402
from formerkit.nn import linear  # noqa: E402


def har_dir(tmp_path):
    torch.manual_seed(0)
    model = HARTransformer(HARConfig(d_model=16, n_heads=2, n_layers=2, d_ff=32, max_seq_len=32))
    model.normalize.set_statistics(torch.randn(20, 32, 9) * torch.linspace(0.1, 3, 9) + 2)
    model.save_pretrained(tmp_path / "model")
    return model.eval(), tmp_path


def test_har_onnx_matches_pytorch_at_two_lengths(tmp_path):
    model, run_dir = har_dir(tmp_path)
    path = export_model(run_dir, format="onnx")  # a run directory holding model/
    assert path == run_dir / "model" / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["inputs"]
    for batch, length in ((3, 32), (1, 11)):
        x = torch.randn(batch, length, 9) * 2 + 1
        (got,) = session.run(["logits"], {"inputs": x.numpy()})
        expected = model(x).logits.detach().numpy()
        assert got.shape == (batch, length, 6)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    timing = benchmark_onnx(path, batch=2, length=16, repeats=3)
    assert timing["ms_per_window"] == pytest.approx(timing["ms_per_call"] / 2)
    assert timing["file_mb"] > 0


@pytest.mark.slow
def test_har_dynamo_exporter(tmp_path):
    pytest.importorskip("onnxscript")
    model, run_dir = har_dir(tmp_path)
    path = export_model(run_dir / "model", output=tmp_path / "dyn.onnx", exporter="dynamo")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 20, 9)
    np.testing.assert_allclose(session.run(None, {"inputs": x.numpy()})[0],
                               model(x).logits.detach().numpy(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("family,cls,overrides", [
    ("bert", "BertForSequenceClassification", {"num_labels": 3}),
    ("bert", "BertForTokenClassification", {"num_labels": 5}),
    ("gpt", "GPTForCausalLM", {}),
    ("gpt", "GPTForSequenceClassification", {"num_labels": 3, "pad_token_id": 0}),
    ("llama", "LlamaForCausalLM", {"sliding_window": 6}),
    ("llama", "LlamaForSequenceClassification", {"num_labels": 3, "pad_token_id": 0}),
])
def test_text_models_onnx_match_pytorch_with_padding(tmp_path, family, cls, overrides):
    if not hasattr(models, cls):
        pytest.skip(f"{cls} not available")
    config = build_config(family, "tiny", **overrides)
    torch.manual_seed(0)
    model = getattr(models, cls)(config).eval()
    model.save_pretrained(tmp_path)
    path = export_model(tmp_path, output=tmp_path / "text.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids = torch.randint(3, config.vocab_size, (3, 11))
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 9:] = 0
    ids[mask == 0] = getattr(config, "pad_token_id", None) or 0
    feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    if "token_type_ids" in [i.name for i in session.get_inputs()]:
        feed["token_type_ids"] = np.zeros((3, 11), dtype=np.int64)
    (got,) = session.run(["logits"], feed)
    with torch.no_grad():
        expected = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()
    if expected.ndim == 3:  # per-token scores: padded positions are not defined outputs
        keep = mask.bool().numpy()
        got, expected = got[keep], expected[keep]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_export_rejects_unknown_format_and_exporter(tmp_path):
    _, run_dir = har_dir(tmp_path)
    with pytest.raises(ValueError, match="format"):
        export_model(run_dir, format="tflite")
    with pytest.raises(ValueError, match="exporter"):
        export_model(run_dir, exporter="jit")


@pytest.mark.skipif(not linear.has_onednn_linear(),
                    reason="this PyTorch has no oneDNN linear (x86 builds do)")
def test_export_traces_f_linear_where_pytorch_runs_onednn(tmp_path, monkeypatch):
    monkeypatch.setattr(linear, "ONEDNN_MIN_MACS", 1)  # every product of the tiny model
    config = build_config("llama", "tiny")
    torch.manual_seed(0)
    model = models.LlamaForCausalLM(config).eval()
    model.save_pretrained(tmp_path)
    path = export_model(tmp_path, output=tmp_path / "text.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids = torch.randint(3, config.vocab_size, (2, 9))
    feed = {"input_ids": ids.numpy(), "attention_mask": np.ones((2, 9), dtype=np.int64)}
    (got,) = session.run(["logits"], feed)
    calls = []
    original = linear._OneDNNLinear.apply
    monkeypatch.setattr(linear._OneDNNLinear, "apply",
                        lambda *args: calls.append(1) or original(*args))
    with torch.no_grad():
        expected = model(ids).logits
    assert calls  # PyTorch ran oneDNN's products; the exported graph has F.linear's
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4, rtol=0)
