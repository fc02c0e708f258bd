"""Plots: every ``formerkit plot KIND`` writes a PNG/SVG of sensible size with real content,
from tiny models and logs built here; the plotting helpers reject bad input clearly."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from formerkit import viz
from formerkit.models.registry import list_models


def assert_image(path: Path, min_size: tuple[int, int] = (200, 200)) -> None:
    """The file exists, is at least ``min_size`` pixels (w, h) and is not blank."""
    assert path.is_file(), path
    if path.suffix == ".svg":
        text = path.read_text()
        assert "<svg" in text and len(text) > 5000
        return
    import matplotlib.image

    pixels = matplotlib.image.imread(str(path))  # (H, W, C) floats in [0, 1]
    height, width = pixels.shape[:2]
    assert width >= min_size[0] and height >= min_size[1], (width, height)
    rgb = pixels[..., :3]
    assert float(rgb.std()) > 0.05, "image looks blank"
    assert (rgb < 0.9).mean() > 0.02, "almost nothing drawn"


def run_cli(kind: str, argv: list[str]) -> Path:
    """Parse ``argv`` as ``formerkit plot KIND`` would and run the command."""
    command = viz.PLOT_COMMANDS[kind]
    parser = argparse.ArgumentParser(prog=f"formerkit plot {kind}")
    command.add_arguments(parser)
    return Path(command.run(parser.parse_args(argv)))


def test_registered_kinds():
    assert {"attention", "positions", "curves", "masking"} <= set(viz.PLOT_COMMANDS)
    for kind, command in viz.PLOT_COMMANDS.items():
        parser = argparse.ArgumentParser()
        command.add_arguments(parser)  # every command declares its options
        assert command.help, kind
        # `formerkit plot` stores the kind in args.kind: an option must not overwrite it
        assert "kind" not in {action.dest for action in parser._actions}, kind


# ---- positions --------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_positions_cli(tmp_path, suffix):
    out = run_cli("positions", ["--max-len", "32", "--d-model", "32", "-o",
                                str(tmp_path / f"pos{suffix}")])
    assert_image(out, (600, 200))


def test_save_figure_rejects_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match="output path"):
        viz.save_figure(viz.plot_positions(8, 8), tmp_path / "pos.jpg")


# ---- attention --------------------------------------------------------------------------------

def test_plot_attention_from_blocks(tmp_path):
    from formerkit.nn import Encoder

    torch.manual_seed(0)
    encoder = Encoder.build(2, d_model=16, n_heads=2, d_ff=32).eval()
    tokens = "the cat sat on the mat".split()
    _, weights = encoder(torch.randn(1, len(tokens), 16), output_attentions=True)
    fig = viz.plot_attention(weights, tokens, title="tiny")
    assert len(fig.axes) == 2 * 2 + 1  # layers x heads panels + colour bar
    assert_image(viz.save_figure(fig, tmp_path / "a.png"))
    with pytest.raises(ValueError, match="query"):
        viz.plot_attention(weights, tokens[:-1])
    with pytest.raises(ValueError, match="heads"):
        viz.plot_attention(weights, tokens, heads=[5])


def _char_model(tmp_path: Path, name: str, text: str, **config) -> Path:
    from formerkit.data.tokenizers import train_char_tokenizer
    from formerkit.models.registry import create_model

    tokenizer = train_char_tokenizer(text)
    torch.manual_seed(0)
    model = create_model(name, vocab_size=tokenizer.vocab_size, d_model=16, n_heads=2,
                         d_ff=32, max_seq_len=32, dropout=0.0, **config)
    model.tokenizer = tokenizer
    run_dir = tmp_path / "run"
    model.save_pretrained(run_dir / "model")  # a run directory holds its model in model/
    return run_dir


@pytest.mark.skipif("gpt" not in list_models(), reason="GPT not available yet")
def test_attention_cli_gpt_run_dir(tmp_path):
    run_dir = _char_model(tmp_path, "gpt", "hello world", n_layers=2)
    out = run_cli("attention", [str(run_dir), "--text", "hello", "-o", str(tmp_path / "a.png")])
    assert_image(out)
    out = run_cli("attention", [str(run_dir / "model"), "--text", "hello", "--layers", "1",
                                "--heads", "0", "-o", str(tmp_path / "a.svg")])
    assert_image(out)


@pytest.mark.skipif("transformer" not in list_models(), reason="seq2seq not available yet")
@pytest.mark.parametrize("kind", ["cross", "encoder", "decoder"])
def test_attention_cli_seq2seq(tmp_path, kind):
    run_dir = _char_model(tmp_path, "transformer", "abcdefgh ", n_encoder_layers=1,
                          n_decoder_layers=2, pad_token_id=0, decoder_start_token_id=0)
    out = run_cli("attention", [str(run_dir), "--text", "abc de", "--target", "fgh",
                                "--type", kind, "-o", str(tmp_path / f"{kind}.png")])
    assert_image(out)


@pytest.mark.skipif("transformer" not in list_models(), reason="seq2seq not available yet")
def test_attention_seq2seq_generates_target_and_labels_axes(tmp_path):
    run_dir = _char_model(tmp_path, "transformer", "abcdefgh ", n_encoder_layers=1,
                          n_decoder_layers=1, pad_token_id=0, decoder_start_token_id=0,
                          eos_token_id=1)
    fig = viz.plot_attention_for_text(run_dir, "abc", max_new_tokens=4)
    panel = fig.axes[0]
    assert [t.get_text() for t in panel.get_xticklabels()] == ["a", "b", "c"]  # source keys
    assert 1 <= len(panel.get_yticklabels()) <= 5  # start token + up to 4 generated
    with pytest.raises(ValueError, match="kind"):
        viz.plot_attention_for_text(run_dir, "abc", kind="self")


# ---- curves -----------------------------------------------------------------------------------

def _write_log(run_dir: Path, decay: float, lr: float) -> Path:
    run_dir.mkdir(parents=True)
    lines = []
    for step in range(0, 101, 5):
        lines.append({"step": step, "loss": 3 * math.exp(-step / decay) + 0.5,
                      "lr": lr * min(1.0, step / 10), "tokens_per_s": 1000.0})
        if step % 25 == 0:
            lines.append({"step": step, "val_loss": 3 * math.exp(-step / decay) + 0.7,
                          "val_accuracy": 1 - math.exp(-step / 50)})
    (run_dir / "log.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return run_dir


def test_curves_cli_overlays_runs(tmp_path):
    a = _write_log(tmp_path / "a", 30, 1e-3)
    b = _write_log(tmp_path / "b", 60, 3e-4)
    out = run_cli("curves", [str(a), str(b / "log.jsonl"), "--labels", "fast,slow",
                             "--smooth", "0.5", "-o", str(tmp_path / "c.png")])
    assert_image(out, (800, 200))
    fig = viz.plot_curves([a, b])
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["loss", "val_accuracy", "lr"]
    loss_lines = fig.axes[0].get_lines()
    assert len(loss_lines) == 4  # train + val for each run
    np.testing.assert_allclose(loss_lines[0].get_ydata()[0], 3.5)


def test_curves_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        viz.plot_curves([tmp_path / "missing"])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "log.jsonl").write_text('{"step": 1, "loss": 2}\nnot json\n')
    with pytest.raises(ValueError, match="log.jsonl:2"):
        viz.plot_curves([bad])
    with pytest.raises(ValueError, match="metrics"):
        viz.plot_curves([_write_log(tmp_path / "ok", 30, 1e-3)], metrics=["val_bleu"])


# ---- masking ----------------------------------------------------------------------------------

def test_masking_categories_and_rates():
    cats = viz.masking_categories([2, 10, 11, 12, 13, 3], [2, 4, 11, 20, 13, 3],
                                  [-100, 10, -100, 12, 13, -100], mask_token_id=4,
                                  special_ids=[2, 3])
    assert cats == ["special", "masked", "unchanged", "replaced", "kept", "special"]
    rates = viz.masking_rates([cats])
    assert rates == {"selected": 0.75, "masked": 1 / 3, "replaced": 1 / 3, "kept": 1 / 3}


def test_plot_masking_figure(tmp_path):
    original = ["[CLS]", "the", "cat", "sat", "[SEP]"]
    draws = [(["[CLS]", "[MASK]", "cat", "dog", "[SEP]"],
              ["special", "masked", "unchanged", "replaced", "special"]),
             (original, ["special", "kept", "unchanged", "unchanged", "special"])]
    fig = viz.plot_masking(original, draws, rates={"selected": 0.15, "masked": 0.8,
                                                   "replaced": 0.1, "kept": 0.1})
    assert_image(viz.save_figure(fig, tmp_path / "m.png"), (500, 150))
    with pytest.raises(ValueError, match="categories"):
        viz.plot_masking(original, [(original, ["oops"] * 5)])


def test_masking_cli_and_rates(tmp_path):
    out = run_cli("masking", ["--text", "the cat sat on the mat", "--copies", "3", "-o",
                              str(tmp_path / "m.svg")])
    assert_image(out)
    fig = viz.plot_mlm_masking("the cat sat on the mat today", n_copies=2, n_rate_copies=3000)
    bars = [p.get_height() for p in fig.axes[1].patches]  # measured percentages
    np.testing.assert_allclose(bars, [15, 80, 10, 10], atol=2.5)
    shown = [t.get_text() for t in fig.axes[0].texts]
    assert shown[:2] == ["[CLS]", "the"] and "original" in shown


def test_formerkit_plot_command_line(tmp_path, capsys):
    from formerkit.cli import main

    run_dir = _write_log(tmp_path / "run", 30, 1e-3)
    with (run_dir / "log.jsonl").open("a") as log:  # the trainer's closing record
        log.write(json.dumps({"step": 100, "final": True, "val_loss": 0.7,
                              "test_loss": 0.8, "elapsed": 3.0}) + "\n")
    assert main(["plot", "curves", str(run_dir), "-o", str(tmp_path / "c.png")]) == 0
    assert_image(tmp_path / "c.png")
    assert str(tmp_path / "c.png") in capsys.readouterr().out
    titles = [ax.get_title() for ax in viz.plot_curves([run_dir]).axes if ax.get_visible()]
    assert titles == ["loss", "val_accuracy", "lr"]  # no test_/elapsed panels
    assert main(["plot", "positions", "-o", str(tmp_path / "p.svg")]) == 0
    assert_image(tmp_path / "p.svg")


@pytest.mark.skipif("bert" not in list_models(), reason="BERT not available yet")
def test_masking_and_attention_with_a_bert_model_dir(tmp_path):
    from formerkit.data.tokenizers import train_wordpiece
    from formerkit.models.registry import create_model

    text = "the cat sat on the mat while the dog slept"
    torch.manual_seed(0)
    tokenizer = train_wordpiece([text], vocab_size=60)
    model = create_model("bert", vocab_size=tokenizer.vocab_size, d_model=16, n_heads=2,
                         n_layers=1, d_ff=32, max_seq_len=32)
    model.tokenizer = tokenizer
    model.save_pretrained(tmp_path / "bert")
    out = run_cli("masking", ["--model", str(tmp_path / "bert"), "--text", text, "--whole-word",
                              "-o", str(tmp_path / "m.png")])
    assert_image(out)
    fig = viz.plot_attention_for_text(tmp_path / "bert", "the cat sat")
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["[CLS]", "the", "cat", "sat", "[SEP]"]


# ---- the time-series issues' kinds, through the same module ------------------------------------

@pytest.mark.skipif("confusion" not in viz.PLOT_COMMANDS, reason="confusion plot not added yet")
def test_confusion_cli(tmp_path):
    data = {"labels": ["WALKING", "SITTING", "LAYING"], "split": "test",
            "matrix": [[50, 3, 0], [4, 40, 6], [0, 2, 55]]}
    (tmp_path / "confusion.json").write_text(json.dumps(data))
    out = run_cli("confusion", [str(tmp_path)])
    assert out == tmp_path / "confusion.png"
    assert_image(out)


@pytest.mark.skipif("forecast" not in viz.PLOT_COMMANDS, reason="forecast plot not added yet")
def test_forecast_figure(tmp_path):
    t = np.arange(96 + 24)
    series = np.stack([np.sin(2 * np.pi * t / 24), np.cos(2 * np.pi * t / 48)], axis=-1)
    examples = {"columns": ["HUFL", "OT"], "windows": [0, 5], "split": "test",
                "history": np.stack([series[:96]] * 2), "truth": np.stack([series[96:]] * 2),
                "prediction": np.stack([series[96:] * 0.9] * 2)}
    fig = viz.plot_forecast(examples, variates=["HUFL", "OT"])
    assert_image(viz.save_figure(fig, tmp_path / "f.png"))
