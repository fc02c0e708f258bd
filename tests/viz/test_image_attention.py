"""``formerkit plot attention --image``: the [CLS] attention of a ViT over its patches (grid in
the patch embedding's order), attention rollout, image sources and their errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

import formerkit
from formerkit import viz
from formerkit.data.images import load_digits
from formerkit.nn.patch import image_patches

pytest.importorskip("matplotlib")


def run_cli(argv: list[str]) -> Path:
    command = viz.PLOT_COMMANDS["attention"]
    parser = argparse.ArgumentParser(prog="formerkit plot attention")
    command.add_arguments(parser)
    return Path(command.run(parser.parse_args(argv)))


def test_cls_grid_follows_the_patch_order_of_the_embedding():
    # 4x6 pixels in 2x2 patches: a 2x3 grid; put all of [CLS]'s weight on patch k
    image = torch.arange(24.0).reshape(1, 4, 6)
    patches = image_patches(image[None], 2)[0]  # (6, 4): the order the ViT reads them in
    for k in range(6):
        weights = torch.zeros(1, 1, 7, 7)
        weights[0, 0, 0, 1 + k] = 1.0
        grid = viz.image_attention.cls_attention_grid([weights], (2, 3))
        row, col = map(int, (grid[0, 0] == 1).nonzero()[0])
        assert torch.equal(image[0, 2 * row:2 * row + 2, 2 * col:2 * col + 2].flatten(),
                           patches[k])
    with pytest.raises(ValueError, match="expected \\[CLS\\] \\+ 6 patches"):
        viz.image_attention.cls_attention_grid([torch.zeros(1, 1, 5, 5)], (2, 3))


def test_attention_rollout_multiplies_residual_mixed_layers_in_order():
    torch.manual_seed(0)
    layers = [torch.softmax(torch.randn(1, 3, 5, 5), -1) for _ in range(3)]
    expected = torch.eye(5)
    for weights in layers:  # first layer applied first: R = A3 A2 A1
        mixed = 0.5 * weights[0].mean(0) + 0.5 * torch.eye(5)
        expected = (mixed / mixed.sum(-1, keepdim=True)) @ expected
    rollout = viz.attention_rollout(layers)
    torch.testing.assert_close(rollout, expected)
    torch.testing.assert_close(rollout.sum(-1), torch.ones(5))
    assert not torch.allclose(rollout, viz.attention_rollout(layers[::-1]))
    # tokens attending only to themselves: nothing flows between tokens
    torch.testing.assert_close(viz.attention_rollout([torch.eye(5)[None, None]] * 2),
                               torch.eye(5))


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    pytest.importorskip("sklearn")
    run = tmp_path_factory.mktemp("vit") / "run"
    formerkit.train("vit-digits", output_dir=run, overrides=[
        "trainer.max_steps=4", "trainer.batch_size=16", "trainer.eval_every=4",
        "trainer.progress=false", "model.d_model=16", "model.n_heads=2", "model.n_layers=2",
        "model.d_ff=32"])
    return run


def test_panels_overlay_each_heads_cls_weights_on_the_image(digits_run):
    model = formerkit.from_pretrained(digits_run / "model").eval()
    pixels = torch.from_numpy(load_digits().test.x[3])
    fig = viz.plot_attention_for_image(model, pixels, layers=[1], heads=[1])
    with torch.no_grad():
        weights = model(pixels[None], output_attentions=True).attentions
    overlay = fig.axes[2].get_images()[1].get_array()  # row "layer 1", head 1, over the image
    np.testing.assert_allclose(overlay, weights[1][0, 1, 0, 1:].reshape(4, 4).numpy(),
                               rtol=1e-6)
    assert fig.axes[2].get_ylabel() == "layer 1" and fig.axes[2].get_title() == "head 1"
    rollout = fig.axes[1].get_images()[1].get_array()
    np.testing.assert_allclose(rollout, viz.attention_rollout(weights)[0, 1:].reshape(4, 4),
                               rtol=1e-6)
    assert "predicted" in fig._suptitle.get_text()


def test_cli_reads_dataset_images_npy_and_image_files(digits_run, tmp_path):
    from test_viz import assert_image

    out = run_cli([str(digits_run), "--image", "test:7"])
    assert out == digits_run / "attention.png"
    assert_image(out)
    label = load_digits().test.y[7]
    fig = viz.plot_attention_for_image(digits_run, "test:7")
    assert fig._suptitle.get_text().endswith(f"label {label}")

    pixels = load_digits().val.x[0]
    np.save(tmp_path / "digit.npy", pixels[0])  # (H, W) for a grey model
    assert_image(run_cli([str(digits_run / "model"), "--image", str(tmp_path / "digit.npy"),
                          "--heads", "0", "--no-rollout", "-o", str(tmp_path / "a.svg")]))

    from PIL import Image

    picture = ((pixels[0] + 1) * 127.5).round().astype(np.uint8)
    Image.fromarray(np.kron(picture, np.ones((4, 4), np.uint8))).save(tmp_path / "digit.png")
    model = formerkit.from_pretrained(digits_run / "model")
    read, label, _ = viz.image_attention.image_input(model, tmp_path / "digit.png")
    assert read.shape == (1, 8, 8) and label is None
    np.testing.assert_allclose(read.numpy(), pixels, atol=0.02)  # 32x32 back down to 8x8
    assert_image(run_cli([str(digits_run), "--image", str(tmp_path / "digit.png"),
                          "-o", str(tmp_path / "b.png")]))


def test_bad_image_sources_are_one_line_errors(digits_run, tmp_path):
    with pytest.raises(ValueError, match="out of range: the test split has 359 images"):
        viz.plot_attention_for_image(digits_run, "test:359")
    with pytest.raises(ValueError, match="neither a file nor SPLIT:INDEX"):
        viz.plot_attention_for_image(digits_run, "holdout:3")
    model = formerkit.from_pretrained(digits_run / "model")
    with pytest.raises(ValueError, match="pass the run directory"):
        viz.plot_attention_for_image(model, "test:0")
    np.save(tmp_path / "rgb.npy", np.zeros((3, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"shape \(3, 8, 8\); the model reads \(H, W\) or "
                                         r"\(1, H, W\)"):
        viz.plot_attention_for_image(model, tmp_path / "rgb.npy")
    (tmp_path / "broken.png").write_text("not an image")
    with pytest.raises(ValueError, match="cannot read .*broken.png as an image"):
        viz.plot_attention_for_image(model, tmp_path / "broken.png")
    with pytest.raises(ValueError, match="layers must be indices in \\[0, 2\\)"):
        viz.plot_attention_for_image(digits_run, "test:0", layers=[2])
    with pytest.raises(ValueError, match="reads images, not text; pass --image"):
        viz.plot_attention_for_text(digits_run, "hello")
    with pytest.raises(ValueError, match="--target and --type are for text"):
        run_cli([str(digits_run), "--image", "test:0", "--type", "cross"])
    with pytest.raises(SystemExit):  # argparse: --text and --image are exclusive
        run_cli([str(digits_run), "--image", "test:0", "--text", "hi"])


def test_masked_autoencoder_is_refused_with_the_reason():
    mae = formerkit.create_model("vit-mae", preset="tiny")
    with pytest.raises(ValueError, match="removes a random share of the patches"):
        viz.plot_attention_for_image(mae, torch.zeros(3, 32, 32))


def test_text_models_are_refused(tmp_path):
    gpt = formerkit.create_model("gpt", vocab_size=11, d_model=16, n_heads=2, n_layers=1,
                                 d_ff=32, max_seq_len=8)
    with pytest.raises(ValueError, match="does not read images; pass --text"):
        viz.plot_attention_for_image(gpt, torch.zeros(1, 8, 8))
