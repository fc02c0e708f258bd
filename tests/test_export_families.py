"""Export of every family, each checked against PyTorch: forecasters (fixed-length lookback,
dynamic batch), every BERT head incl. multiple choice, seq2seq as encoder + decoder step (a
greedy loop in onnxruntime reproduces ``generate``), and HuggingFace directories that
``transformers`` loads with identical outputs; the CLI prints the measured difference."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import onnxruntime as ort  # noqa: E402

import formerkit.models as models  # noqa: E402
from formerkit import cli  # noqa: E402
from formerkit.export import DECODER_FILE, ENCODER_FILE, export  # noqa: E402
from formerkit.models import create_model  # noqa: E402
from formerkit.models.registry import build_config  # noqa: E402
from formerkit.models.timeseries.layers import patchify  # noqa: E402
from formerkit.models.transformer import TransformerConfig, TransformerForSeq2Seq  # noqa: E402

FORECASTERS = {
    "transformer-forecaster": dict(d_model=16, n_heads=2, n_layers=1, d_ff=32, label_len=8),
    "itransformer": dict(d_model=16, n_heads=2, n_layers=1, d_ff=32),
    "patchtst": dict(d_model=16, n_heads=2, n_layers=1, d_ff=32, patch_len=8, stride=4),
    "crossformer": dict(d_model=16, n_heads=2, n_layers=2, d_ff=32, patch_len=6, n_routers=3),
}
SHAPE = dict(seq_len=24, pred_len=12, n_vars=3, dropout=0.0)


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", sorted(FORECASTERS))
def test_forecasters_export_with_a_dynamic_batch(tmp_path, name):
    torch.manual_seed(0)
    model = create_model(name, **SHAPE, **FORECASTERS[name]).eval()
    model.save_pretrained(tmp_path)
    result = export(tmp_path)
    assert result.path == tmp_path / "model.onnx"
    assert 0 <= result.max_abs_diff[result.path] < 1e-4
    session = _session(result.path)
    assert [i.name for i in session.get_inputs()] == ["x"]
    for batch in (1, 5):  # traced with 2
        x = torch.randn(batch, 24, 3) * 3 + 1
        (got,) = session.run(["prediction"], {"x": x.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(got, model(x).prediction.numpy(), atol=1e-4, rtol=0)


def test_forecaster_with_calendar_features_takes_them_as_inputs(tmp_path):
    torch.manual_seed(0)
    model = create_model("transformer-forecaster", **SHAPE, n_marks=4,
                         **FORECASTERS["transformer-forecaster"]).eval()
    model.save_pretrained(tmp_path)
    session = _session(export(tmp_path).path)
    assert [i.name for i in session.get_inputs()] == ["x", "x_mark", "y_mark"]
    x, x_mark, y_mark = torch.randn(3, 24, 3), torch.randn(3, 24, 4), torch.randn(3, 12, 4)
    (got,) = session.run(None, {"x": x.numpy(), "x_mark": x_mark.numpy(),
                                "y_mark": y_mark.numpy()})
    with torch.no_grad():
        expected = model(x, x_mark, y_mark=y_mark).prediction.numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_patchify_gathers_the_same_patches_as_unfold():
    x = torch.randn(2, 3, 21)
    for patch_len, stride, pad in ((8, 4, 4), (5, 5, 0), (6, 3, 2)):
        padded = torch.nn.functional.pad(x, (0, pad), mode="replicate") if pad else x
        torch.testing.assert_close(patchify(x, patch_len, stride, pad_end=pad),
                                   padded.unfold(-1, patch_len, stride), rtol=0, atol=0)


BERT_HEADS = ["BertModel", "BertForPreTraining", "BertForMaskedLM",
              "BertForNextSentencePrediction", "BertForSequenceClassification",
              "BertForTokenClassification", "BertForQuestionAnswering", "BertForMultipleChoice"]


@pytest.mark.parametrize("cls", BERT_HEADS)
def test_every_bert_head_exports(tmp_path, cls):
    torch.manual_seed(0)
    model = getattr(models, cls)(build_config("bert", "tiny", vocab_size=200)).eval()
    model.save_pretrained(tmp_path)
    result = export(tmp_path)
    assert result.max_abs_diff[result.path] < 1e-4


def test_multiple_choice_takes_batch_choices_and_length_dynamically(tmp_path):
    torch.manual_seed(0)
    config = build_config("bert", "tiny", vocab_size=200)
    model = models.BertForMultipleChoice(config).eval()
    model.save_pretrained(tmp_path)
    session = _session(export(tmp_path).path)
    ids = torch.randint(3, config.vocab_size, (3, 4, 10))  # traced with (2, 2, 8)
    mask = torch.ones_like(ids)
    mask[1, :, 6:] = 0
    ids[mask == 0] = config.pad_token_id
    types = torch.zeros_like(ids)
    (got,) = session.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy(),
                                      "token_type_ids": types.numpy()})
    with torch.no_grad():
        expected = model(ids, mask, types).logits.numpy()
    assert got.shape == (3, 4)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def _seq2seq(tmp_path):
    torch.manual_seed(0)
    config = TransformerConfig(vocab_size=30, d_model=16, n_heads=2, n_encoder_layers=2,
                               n_decoder_layers=2, d_ff=32, max_seq_len=32, dropout=0.0,
                               pad_token_id=0, bos_token_id=1, eos_token_id=2,
                               decoder_start_token_id=1)
    model = TransformerForSeq2Seq(config).eval()
    model.save_pretrained(tmp_path)
    return model


def test_seq2seq_exports_an_encoder_and_a_decoder_step_that_decode_as_generate(tmp_path):
    model = _seq2seq(tmp_path)
    result = export(tmp_path)
    assert set(result.max_abs_diff) == {tmp_path / ENCODER_FILE, tmp_path / DECODER_FILE}
    assert all(d < 1e-4 for d in result.max_abs_diff.values())
    encoder, decoder = _session(tmp_path / ENCODER_FILE), _session(tmp_path / DECODER_FILE)
    ids = torch.randint(3, 30, (3, 11))  # traced with source 7, target 3
    mask = torch.ones_like(ids)
    mask[2, 8:] = 0
    ids[mask == 0] = 0
    (memory,) = encoder.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    out = np.full((3, 1), 1, dtype=np.int64)
    for _ in range(6):  # greedy, no eos handling needed to compare 6 steps
        (logits,) = decoder.run(None, {"decoder_input_ids": out, "encoder_hidden_states": memory,
                                       "attention_mask": mask.numpy()})
        out = np.concatenate([out, logits[:, -1].argmax(-1)[:, None]], axis=1)
    expected = model.generate(ids, mask, max_new_tokens=6, eos_token_id=[])
    np.testing.assert_array_equal(out, expected.numpy())


def test_seq2seq_onnx_output_must_be_a_folder(tmp_path):
    _seq2seq(tmp_path)
    with pytest.raises(ValueError, match="folder"):
        export(tmp_path, output=tmp_path / "x.onnx")


transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("family,cls", [("gpt", "GPTForCausalLM"), ("bert", "BertForMaskedLM"),
                                        ("bert", "BertForSequenceClassification"),
                                        ("bert", "BertForPreTraining")])
def test_hf_export_loads_in_transformers_with_identical_outputs(tmp_path, family, cls):
    torch.manual_seed(0)
    model = getattr(models, cls)(build_config(family, "tiny", vocab_size=200)).eval()
    model.save_pretrained(tmp_path / "model")
    result = export(tmp_path / "model", format="hf")
    assert result.path == tmp_path / "model-hf"
    assert result.max_abs_diff[result.path] < 1e-4
    arch = json.loads((result.path / "config.json").read_text())["architectures"][0]
    theirs = getattr(transformers, arch).from_pretrained(result.path).eval()
    ids = torch.randint(3, model.config.vocab_size, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(theirs(ids).logits if hasattr(theirs(ids), "logits")
                                   else theirs(ids).prediction_logits,
                                   model(ids).logits if model(ids).logits is not None
                                   else model(ids).prediction_logits, atol=1e-4, rtol=0)


def test_hf_export_of_seq2seq_loads_as_marian(tmp_path):
    model = _seq2seq(tmp_path / "m")
    result = export(tmp_path / "m", format="hf", output=tmp_path / "hf")
    assert result.max_abs_diff[tmp_path / "hf"] < 1e-4
    theirs = transformers.MarianMTModel.from_pretrained(tmp_path / "hf").eval()
    ids, dec = torch.randint(3, 30, (2, 7)), torch.randint(3, 30, (2, 4))
    with torch.no_grad():
        torch.testing.assert_close(theirs(input_ids=ids, decoder_input_ids=dec).logits,
                                   model(ids, None, dec).logits, atol=1e-4, rtol=0)


def test_hf_export_of_a_family_without_hf_equivalent_is_a_clear_error(tmp_path, capsys):
    create_model("itransformer", **SHAPE, **FORECASTERS["itransformer"]).save_pretrained(tmp_path)
    assert cli.main(["export", str(tmp_path), "--format", "hf"]) == 2
    assert "no HuggingFace equivalent" in capsys.readouterr().err


@pytest.mark.parametrize("fmt,checker", [("onnx", "onnxruntime"), ("hf", "transformers")])
def test_cli_export_prints_the_measured_difference(tmp_path, capsys, fmt, checker):
    torch.manual_seed(0)
    models.GPTForCausalLM(build_config("gpt", "tiny")).save_pretrained(tmp_path / "model")
    assert cli.main(["export", str(tmp_path / "model"), "--format", fmt]) == 0
    captured = capsys.readouterr()
    line = captured.err.strip().splitlines()[-1]
    assert line.startswith("wrote ") and f"max |{checker} - PyTorch| = " in line
    assert float(line.rsplit("= ", 1)[1].rstrip(")")) < 1e-4
    assert captured.out.strip() in line


@pytest.mark.parametrize("name", ["ViTForImageClassification", "ViTModel"])
def test_vit_exports_with_a_dynamic_batch(tmp_path, name):
    torch.manual_seed(0)
    config = build_config("vit", preset="tiny", num_labels=5)
    model = getattr(models, name)(config).eval()
    with torch.no_grad():  # non-trivial norms and biases
        for param_name, param in model.named_parameters():
            if "norm" in param_name or param_name.endswith("bias"):
                param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(tmp_path)
    result = export(tmp_path)
    assert 0 <= result.max_abs_diff[result.path] < 1e-4
    session = _session(result.path)
    assert [i.name for i in session.get_inputs()] == ["pixel_values"]
    field = "logits" if name == "ViTForImageClassification" else "last_hidden_state"
    assert session.get_outputs()[0].name == field
    for batch in (1, 4):  # traced with 2
        pixels = torch.randn(batch, 3, 32, 32)
        (got,) = session.run([field], {"pixel_values": pixels.numpy()})
        with torch.no_grad():
            expected = getattr(model(pixels), field).numpy()
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_mae_export_is_refused_with_a_reason(tmp_path):
    create_model("vit-mae", preset="tiny").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="masks patches at random"):
        export(tmp_path)


def test_mae_exports_to_huggingface_checked_with_a_fixed_mask(tmp_path):
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    create_model("vit-mae", preset="tiny").save_pretrained(tmp_path / "mae")
    result = export(tmp_path / "mae", format="hf")
    assert result.checked_with == "transformers"
    assert result.max_abs_diff[result.path] < 1e-4
