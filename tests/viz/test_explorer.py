"""The attention explorer's data: every view holds exactly the weights the model returns with
``output_attentions=True`` (decoded from the page), predictions match the logits, bad input is
a one-line error, and the page is self-contained."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from explorer_models import (
    series,
    text_models,
    tiny_series_model,
    tiny_text_model,
)
from formerkit.cli import main
from formerkit.models.bert import BertForMaskedLM, BertForPreTraining
from formerkit.models.bert_heads import BertForSequenceClassification
from formerkit.viz.explorer import (
    WEIGHT_LEVELS,
    AttentionView,
    Axis,
    decode_weights,
    encode_weights,
    explain,
    explain_html,
    render_html,
    write_explorer,
)

TOLERANCE = 0.5 / WEIGHT_LEVELS + 1e-7


def payload_of(page: str) -> dict:
    match = re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>',
                      page, re.S)
    assert match, "the page holds no payload"
    return json.loads(match.group(1))


def view_weights(payload: dict, name: str) -> np.ndarray:
    view = next(v for v in payload["views"] if v["name"] == name)
    return decode_weights(view["weights"], view["shape"])


def assert_same(decoded: np.ndarray, weights) -> None:
    expected = torch.stack([w for w in weights]).numpy()
    assert decoded.shape == expected.shape
    np.testing.assert_allclose(decoded, expected, atol=TOLERANCE, rtol=0)


def test_weight_encoding_round_trips_within_one_level():
    torch.manual_seed(0)
    weights = [torch.softmax(torch.randn(3, 5, 7), dim=-1) for _ in range(2)]
    decoded = decode_weights(encode_weights(weights), (2, 3, 5, 7))
    assert_same(decoded, weights)
    with pytest.raises(ValueError, match="NaN"):
        encode_weights([torch.full((1, 2, 2), float("nan"))])


# ---- text models ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", text_models())
def test_text_page_holds_the_models_own_attentions(name):
    model = tiny_text_model(name)
    seq2seq = hasattr(model.config, "decoder_start_token_id")
    payload = payload_of(explain_html(model, text="the cat sat", max_new_tokens=5))
    ids = torch.tensor([model.tokenizer.encode("the cat sat",
                                               add_special_tokens=not hasattr(model, "generate")
                                               or seq2seq)])
    with torch.no_grad():
        if seq2seq:
            decoder_ids = model.generate(ids, max_new_tokens=5)
            out = model(input_ids=ids, decoder_input_ids=decoder_ids, output_attentions=True)
            expected = {"encoder": out.encoder_attentions, "decoder": out.attentions,
                        "cross": out.cross_attentions}
        else:
            out = model(input_ids=ids, output_attentions=True)
            expected = {"self": out.attentions}
    assert [v["name"] for v in payload["views"]] == \
        (["cross", "decoder", "encoder"] if seq2seq else ["self"])
    for view, weights in expected.items():
        assert_same(view_weights(payload, view), [w[0] for w in weights])
    first = payload["views"][0]
    assert len(first["queries"]["labels"]) == first["shape"][2]
    assert len(first["keys"]["labels"]) == first["shape"][3]
    assert payload["predictions"], "every page shows a prediction"


def test_causal_lm_next_token_top_k_follows_the_logits():
    model = tiny_text_model("gpt")
    explanation = explain(model, text="the cat sat", top_k=3)
    ids = torch.tensor([model.tokenizer.encode("the cat sat", add_special_tokens=False)])
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=ids).logits[0], dim=-1)
    panel = explanation.predictions[0]
    assert panel["kind"] == "per_position" and panel["title"] == "Next token"
    assert panel["default"] == ids.shape[1] - 1 and len(panel["positions"]) == ids.shape[1]
    for position, top in panel["positions"].items():
        expected = probs[int(position)].topk(3)
        assert [p for _, p in top] == pytest.approx(expected.values.tolist(), abs=1e-5)
        assert top[0][0] == model.tokenizer.id_to_token(int(expected.indices[0]))
    # causal: no query attends to a later key
    weights = torch.stack(explanation.views[0].weights)
    assert float(torch.triu(weights, diagonal=1).abs().max()) == 0.0


def test_masked_lm_predicts_at_the_mask_only():
    model = tiny_text_model("bert", BertForMaskedLM)
    explanation = explain(model, text="the [MASK] sat on the mat")
    ids = model.tokenizer.encode("the [MASK] sat on the mat")
    mask_at = ids.index(model.tokenizer.mask_token_id)
    panel = explanation.predictions[0]
    assert panel["title"] == "Masked token" and list(panel["positions"]) == [str(mask_at)]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, mask_at]
    assert panel["positions"][str(mask_at)][0][0] == \
        model.tokenizer.id_to_token(int(logits.argmax()))


def test_pretraining_head_shows_masked_tokens_and_next_sentence_with_the_pair():
    model = tiny_text_model("bert", BertForPreTraining)
    explanation = explain(model, text="the cat sat", pair="a dog ran")
    encoded = model.tokenizer.encode_batch(["the cat sat"], ["a dog ran"])
    with torch.no_grad():
        out = model(input_ids=encoded["input_ids"], token_type_ids=encoded["token_type_ids"],
                    output_attentions=True)
    assert_same(decode_weights(explanation.views[0].to_payload()["weights"],
                               explanation.views[0].shape), [w[0] for w in out.attentions])
    titles = [p["title"] for p in explanation.predictions]
    assert titles == ["Masked token", "Next sentence"]
    scores = explanation.predictions[1]["scores"]
    assert sum(p for _, p in scores) == pytest.approx(1.0, abs=1e-4)
    assert ("pair", "a dog ran") in explanation.inputs


def test_classifier_shows_label_scores():
    model = tiny_text_model("bert", BertForSequenceClassification, num_labels=3)
    panel = explain(model, text="the cat sat").predictions[0]
    assert panel["kind"] == "scores" and len(panel["scores"]) == 3
    assert {label for label, _ in panel["scores"]} == {"label 0", "label 1", "label 2"}
    assert sum(p for _, p in panel["scores"]) == pytest.approx(1.0, abs=1e-4)


def test_seq2seq_views_put_target_on_rows_and_source_on_columns():
    model = tiny_text_model("transformer")
    explanation = explain(model, text="the cat sat on the mat", target="a dog ran")
    cross, decoder, encoder = explanation.views
    n_source = len(model.tokenizer.encode("the cat sat on the mat"))
    n_target = 1 + len(model.tokenizer.encode("a dog ran"))
    assert cross.shape[2:] == (n_target, n_source)
    assert decoder.shape[2:] == (n_target, n_target)
    assert encoder.shape[2:] == (n_source, n_source)
    assert cross.queries.sequence == "target" and cross.keys.sequence == "source"
    assert explanation.predictions[1]["sequence"] == "target"


# ---- time series ---------------------------------------------------------------------------
def _forward(model, **inputs):
    with torch.no_grad():
        return model(**inputs, output_attentions=True)


def test_itransformer_attends_variate_to_variate():
    model = tiny_series_model("itransformer")
    values = series()
    explanation = explain(model, series=values, columns=["a", "b", "c"])
    out = _forward(model, x=torch.from_numpy(values)[None])
    (view,) = explanation.views
    assert view.queries.labels == ["a", "b", "c"] and view.shape == (2, 2, 3, 3)
    assert_same(decode_weights(view.to_payload()["weights"], view.shape),
                [w[0] for w in out.attentions])
    assert view.keys.spans == [(c, 0, 32) for c in range(3)]
    curves = explanation.series["curves"]
    assert len(curves) == 3 and len(curves[0]["forecast"]) == 8
    np.testing.assert_allclose(np.array([c["forecast"] for c in curves]).T,
                               out.prediction[0].numpy(), atol=1e-4)


def test_patchtst_has_one_patch_view_per_variate():
    model = tiny_series_model("patchtst")
    explanation = explain(model, series=series())
    out = _forward(model, x=torch.from_numpy(series())[None])
    n_patches = model.config.n_patches
    assert len(explanation.views) == 3
    for c, view in enumerate(explanation.views):
        assert view.curves == [c] and view.shape == (2, 2, n_patches, n_patches)
        assert_same(decode_weights(view.to_payload()["weights"], view.shape),
                    [w[c] for w in out.attentions])  # encoder batch row c = variate c
        assert view.keys.spans[1] == (c, 4, 12)
        assert view.keys.spans[-1][2] == 32  # the padded last patch ends at the lookback


def test_har_attends_step_to_step_with_per_step_labels():
    model = tiny_series_model("har")
    values = series(steps=20)
    explanation = explain(model, series=values, true_label=1)
    out = _forward(model, inputs=torch.from_numpy(values)[None])
    (view,) = explanation.views
    assert view.shape == (2, 2, 20, 20)
    assert_same(decode_weights(view.to_payload()["weights"], view.shape),
                [w[0] for w in out.attentions])
    assert explanation.series["bands"]["labels"] == out.logits[0].argmax(-1).tolist()
    window, steps = explanation.predictions
    assert window["title"] == "Window activity (true: sit)"
    assert steps["sequence"] == "step" and len(steps["positions"]) == 20


def test_vanilla_forecaster_shows_encoder_cross_and_decoder_steps():
    model = tiny_series_model("transformer-forecaster")
    names = [v.name for v in explain(model, series=series()).views]
    assert names == ["encoder", "cross", "decoder"]


# ---- bad input -----------------------------------------------------------------------------
def test_model_without_attention_weights_is_named():
    class NoWeights(torch.nn.Module):
        def forward(self, input_ids):
            return input_ids

    with pytest.raises(ValueError, match="NoWeights has no attention weights"):
        explain(NoWeights(), text="hi")


def test_text_longer_than_the_context_is_an_error():
    model = tiny_text_model("gpt")
    with pytest.raises(ValueError, match=r"longer than the model's context \(max_seq_len=24\)"):
        explain(model, text=" ".join(["cat"] * 30))


def test_text_model_without_tokenizer_is_an_error():
    model = tiny_text_model("gpt")
    model.tokenizer = None
    with pytest.raises(ValueError, match="has no tokenizer"):
        explain(model, text="the cat")


@pytest.mark.parametrize("kwargs,message", [
    (dict(series=np.zeros((32, 3))), "reads text"),
    (dict(text="the cat", pair="a dog"), "takes no sentence pairs"),
    (dict(text=""), "non-empty text"),
    (dict(text="the cat", top_k=0), "top_k"),
])
def test_wrong_input_for_a_text_model(kwargs, message):
    with pytest.raises(ValueError, match=message):
        explain(tiny_text_model("gpt"), **kwargs)


def test_wrong_input_for_series_models():
    with pytest.raises(ValueError, match="reads a time series"):
        explain(tiny_series_model("itransformer"), text="hi")
    with pytest.raises(ValueError, match=r"seq_len=32, n_vars=3"):
        explain(tiny_series_model("itransformer"), series=np.zeros((10, 3)))
    with pytest.raises(ValueError, match="longer than the model's context"):
        explain(tiny_series_model("har"), series=series(steps=50))
    with pytest.raises(ValueError, match="cannot label the attention tokens of Crossformer"):
        explain(tiny_series_model("crossformer", patch_len=8, win_size=2, n_layers=1),
                series=series())


# ---- the page ------------------------------------------------------------------------------
def test_page_is_self_contained_and_survives_hostile_text(tmp_path):
    model = tiny_text_model("gpt")
    text = "the </script> cat"  # the tokenizer maps the unknown pieces to [UNK]
    page = explain_html(model, text=text)
    assert payload_of(page)["inputs"][0] == ["text", text]
    assert not re.search(r"(src|href)\s*=|https?://(?!www\.w3\.org/2000/svg)|@import|url\(",
                         page), "the page must not load anything"
    assert "Content-Security-Policy" in page and page.count("</script>") == 2
    path = write_explorer(model, tmp_path / "page.html", text="the cat")
    assert path.read_text().startswith("<!doctype html>")
    with pytest.raises(ValueError, match=r"\.html"):
        write_explorer(model, tmp_path / "page.png", text="the cat")


def test_view_checks_its_labels():
    axis = Axis("token", ["a", "b"])
    with pytest.raises(ValueError, match="2x2 but has 2 query and 3 key labels"):
        AttentionView("self", "t", "n", axis, Axis("token", ["a", "b", "c"]),
                      [torch.full((1, 2, 2), 0.5)])
    assert render_html({"format": "x", "title": "<b>", "subtitle": "", "inputs": [],
                        "views": [], "predictions": [], "series": None}).count("&lt;b&gt;") == 1


# ---- command line --------------------------------------------------------------------------
def test_cli_writes_the_page_of_a_model_directory(tmp_path, capsys):
    model = tiny_text_model("gpt")
    model.save_pretrained(tmp_path / "model")
    output = tmp_path / "out" / "gpt.html"
    assert main(["explain", str(tmp_path), "--text", "the cat sat", "-o", str(output)]) == 0
    assert capsys.readouterr().out.strip() == str(output)
    payload = payload_of(output.read_text())
    assert payload["views"][0]["shape"][:2] == [2, 4]


def test_cli_errors_are_one_line_with_status_2(tmp_path, capsys):
    model = tiny_text_model("gpt")
    model.tokenizer = None
    model.save_pretrained(tmp_path / "bare")
    cases = [
        (["explain", str(tmp_path / "bare"), "--text", "hi"], "has no tokenizer"),
        (["explain", str(tmp_path / "missing"), "--text", "hi"], "does not exist"),
    ]
    good = tmp_path / "good"
    with_tokenizer = tiny_text_model("gpt")
    with_tokenizer.save_pretrained(good)
    cases += [
        (["explain", str(good), "--text", " ".join(["cat"] * 30)], "longer than the model's"),
        (["explain", str(good), "--window", "3"], "reads text"),
    ]
    for argv, message in cases:
        assert main(argv + ["-o", str(tmp_path / "x.html")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("formerkit: error:") and message in err and "\n" not in err


def test_cli_series_model_reads_a_csv(tmp_path):
    model = tiny_series_model("har", channel_names=["x", "y", "z"])
    model.save_pretrained(tmp_path / "har")
    rows = ["x,y,z"] + [",".join(f"{v:.4f}" for v in row) for row in series(steps=24)]
    (tmp_path / "rec.csv").write_text("\n".join(rows) + "\n")
    output = tmp_path / "har.html"
    assert main(["explain", str(tmp_path / "har"), "--input", str(tmp_path / "rec.csv"),
                 "-o", str(output)]) == 0
    payload = payload_of(output.read_text())
    assert payload["views"][0]["shape"] == [2, 2, 24, 24]
    assert [c["name"] for c in payload["series"]["curves"]] == ["x", "y", "z"]


# ---- the guide -----------------------------------------------------------------------------
def test_guide_images_exist_and_options_match_the_command():
    from pathlib import Path

    from formerkit.cli import build_parser

    root = Path(__file__).resolve().parents[2]
    guide = (root / "docs" / "explorer.md").read_text()
    images = re.findall(r"\]\((images/[^)]+\.png)\)", guide)
    assert len(images) >= 3
    for image in images:
        path = root / "docs" / image
        assert path.is_file() and path.stat().st_size < 300_000, image
    parser = build_parser(with_plots=False)
    explain_parser = parser._subparsers._group_actions[0].choices["explain"]
    known = {option for action in explain_parser._actions for option in action.option_strings}
    documented = set(re.findall(r"^\| `(--[a-z-]+)", guide, re.M))
    assert documented and documented <= known, documented - known
    assert {"--text", "--pair", "--input", "--window", "--output"} <= known


@pytest.mark.parametrize("cls_name,title", [
    ("BertForQuestionAnswering", "Answer span"), ("BertForTokenClassification", "Token label"),
    ("BertForNextSentencePrediction", "Next sentence"),
    ("GPTForSequenceClassification", "Label scores"), ("GPTModel", "Prediction"),
])
def test_every_head_gets_the_panel_its_outputs_call_for(cls_name, title):
    import formerkit

    cls = getattr(formerkit, cls_name)
    model = tiny_text_model("gpt" if cls_name.startswith("GPT") else "bert", cls)
    explanation = explain(model, text="the cat sat")
    assert explanation.predictions[0]["title"] == title
    causal_note = "causal mask" in explanation.views[0].note
    assert causal_note == cls_name.startswith("GPT")  # read off the weights, not the class


class _NewFamilyLM(torch.nn.Module):
    """A causal LM the explorer has never heard of (torch's own attention, its own config):
    it only honours the contract, ``output_attentions=True`` -> ``attentions``."""

    def __init__(self, vocab_size: int, width: int = 16, heads: int = 2) -> None:
        super().__init__()
        from types import SimpleNamespace

        self.config = SimpleNamespace(vocab_size=vocab_size, max_seq_len=12)
        self.embed = torch.nn.Embedding(vocab_size, width)
        self.attention = torch.nn.MultiheadAttention(width, heads, batch_first=True)
        self.head = torch.nn.Linear(width, vocab_size)

    def forward(self, input_ids, attention_mask=None, output_attentions=False):
        from formerkit.models.base import ModelOutput

        x = self.embed(input_ids)
        n = input_ids.shape[1]
        future = torch.ones(n, n, dtype=torch.bool).triu(diagonal=1)
        y, weights = self.attention(x, x, x, attn_mask=future, need_weights=output_attentions,
                                    average_attn_weights=False)
        return ModelOutput(logits=self.head(y),
                           attentions=(weights,) if output_attentions else None)

    def generate(self, input_ids, max_new_tokens=1):
        return input_ids


def test_a_new_family_works_without_changes():
    tok = tiny_text_model("gpt").tokenizer
    torch.manual_seed(0)
    model = _NewFamilyLM(tok.vocab_size).eval()
    explanation = explain(model, text="the cat sat", tokenizer=tok)
    ids = torch.tensor([tok.encode("the cat sat", add_special_tokens=False)])
    with torch.no_grad():
        out = model(ids, output_attentions=True)
    assert_same(decode_weights(explanation.views[0].to_payload()["weights"],
                               explanation.views[0].shape), [out.attentions[0][0]])
    assert explanation.predictions[0]["title"] == "Next token"
    assert "causal mask" in explanation.views[0].note
    with pytest.raises(ValueError, match="longer than the model's context"):
        explain(model, text=" ".join(["cat"] * 13), tokenizer=tok)
