"""Attention over image patches: where a Vision Transformer's [CLS] token looks, per layer and
head, drawn over the image, with attention rollout (Abnar & Zuidema, 2020, "Quantifying
Attention Flow in Transformers"); ``formerkit plot attention RUN --image ...``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from formerkit.viz import _chosen_indices, load_model, new_figure

SPLITS = ("train", "val", "test")


def reads_images(model) -> bool:
    """Whether ``model`` is a Vision Transformer (its config has an image and a patch size)."""
    config = getattr(model, "config", None)
    return hasattr(config, "image_size") and hasattr(config, "patch_size")


def cls_attention_grid(attentions: Sequence[torch.Tensor], grid: tuple[int, int],
                       batch_index: int = 0) -> torch.Tensor:
    """The [CLS] query's attention to each patch: (L, H, grid_h, grid_w).

    Args:
        attentions: per-layer (B, H, 1 + P, 1 + P) weights, [CLS] first and the patches in
            row-major order (as ``PatchEmbedding2d`` flattens them).
        grid: patches per column and per row; ``grid_h * grid_w == P``.
    """
    maps = torch.stack([w[batch_index].detach().float().cpu() for w in attentions])
    n_patches = grid[0] * grid[1]
    if maps.shape[-1] != n_patches + 1:
        raise ValueError(f"attention maps cover {maps.shape[-1]} tokens, expected [CLS] + "
                         f"{n_patches} patches of a {grid[0]}x{grid[1]} grid")
    return maps[:, :, 0, 1:].reshape(*maps.shape[:2], *grid)


def attention_rollout(attentions: Sequence[torch.Tensor], batch_index: int = 0) -> torch.Tensor:
    """Attention rollout: how much each token's input flows into each token's final state.

    Each layer's head-averaged weights A become 0.5 * A + 0.5 * I (the residual path), rows
    renormalised, and the layers are multiplied from the first up: R = A_L ... A_1.

    Returns:
        (T, T); row 0, columns 1: are the [CLS] token's rollout over the patches.
    """
    rollout = None
    for weights in attentions:
        mixed = weights[batch_index].detach().float().cpu().mean(0)
        mixed = 0.5 * mixed + 0.5 * torch.eye(mixed.shape[-1])
        mixed = mixed / mixed.sum(-1, keepdim=True)
        rollout = mixed if rollout is None else mixed @ rollout
    if rollout is None:
        raise ValueError("attentions is empty: pass the per-layer weights from "
                         "output_attentions=True")
    return rollout


def _display(image: torch.Tensor) -> tuple[np.ndarray, str | None]:
    """(C, H, W) pixels -> an array imshow draws (min-max scaled) and its colormap."""
    pixels = image.detach().float().cpu()
    low, high = float(pixels.min()), float(pixels.max())
    pixels = (pixels - low) / (high - low) if high > low else torch.zeros_like(pixels)
    if pixels.shape[0] == 1:
        return pixels[0].numpy(), "gray"
    if pixels.shape[0] == 3:
        return pixels.permute(1, 2, 0).numpy(), None
    return pixels.mean(0).numpy(), "gray"  # other channel counts: their mean


def plot_image_attention(attentions: Sequence[torch.Tensor], image: torch.Tensor, *,
                         patch_size: int, layers: Sequence[int] | None = None,
                         heads: Sequence[int] | None = None, rollout: bool = True,
                         title: str | None = None, cmap: str = "inferno", alpha: float = 0.6):
    """The [CLS] attention over the patches of ``image``, one row per layer, one panel per head.

    Args:
        attentions: per-layer (B, H, 1 + P, 1 + P) weights of a ViT reading ``image`` (batch
            index 0), from ``output_attentions=True``.
        image: (C, H, W) pixels the model read.
        patch_size: the model's patch side; the grid is (H / p, W / p).
        layers, heads: indices to draw (default all).
        rollout: add a panel with the attention rollout of all layers.
        title: figure title.

    Returns:
        The matplotlib figure. The first row shows the image (and the rollout); each panel
        after it overlays one head's [CLS]-to-patch weights on the image.
    """
    if image.dim() != 3:
        raise ValueError(f"image must be (C, H, W), got shape {tuple(image.shape)}")
    height, width = image.shape[-2:]
    if height % patch_size or width % patch_size:
        raise ValueError(f"image of {height}x{width} pixels is not divisible by "
                         f"patch_size={patch_size}")
    if not attentions:
        raise ValueError("attentions is empty: pass the per-layer weights from "
                         "output_attentions=True")
    grid = (height // patch_size, width // patch_size)
    maps = cls_attention_grid(attentions, grid)  # (L, H, gh, gw)
    n_layers, n_heads = maps.shape[:2]
    layers = _chosen_indices("layers", layers, n_layers)
    heads = _chosen_indices("heads", heads, n_heads)
    pixels, image_cmap = _display(image)
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)  # the patch grid over the pixel grid
    n_cols = max(len(heads), 2 if rollout else 1)
    fig, axes = new_figure(1 + len(layers), n_cols, squeeze=False,
                           figsize=(2.2 * n_cols + 1.0, 2.2 * (1 + len(layers)) + 0.4),
                           layout="constrained")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].imshow(pixels, cmap=image_cmap, interpolation="nearest")
    axes[0][0].set_title("input", fontsize=9)
    if rollout:
        cls_flow = attention_rollout(attentions)[0, 1:].reshape(grid)
        axes[0][1].imshow(pixels, cmap=image_cmap, interpolation="nearest")
        axes[0][1].imshow(cls_flow.numpy(), cmap=cmap, alpha=alpha, extent=extent,
                          interpolation="nearest", vmin=0.0)
        axes[0][1].set_title("rollout, all layers", fontsize=9)
    for ax in axes[0][2 if rollout else 1:]:
        ax.axis("off")
    vmax = float(maps[layers][:, heads].max()) or 1.0
    overlay = None
    for row, layer in enumerate(layers, start=1):
        for col in range(n_cols):
            ax = axes[row][col]
            if col >= len(heads):
                ax.axis("off")
                continue
            ax.imshow(pixels, cmap=image_cmap, interpolation="nearest")
            overlay = ax.imshow(maps[layer, heads[col]].numpy(), cmap=cmap, alpha=alpha,
                                extent=extent, interpolation="nearest", vmin=0.0, vmax=vmax)
            if row == 1:
                ax.set_title(f"head {heads[col]}", fontsize=9)
            if col == 0:
                ax.set_ylabel(f"layer {layer}", fontsize=9)
    fig.colorbar(overlay, ax=axes[1:].ravel().tolist(), shrink=0.8,
                 label="[CLS] attention weight")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def image_input(model, source: str | Path, run_dir: str | Path | None = None
                ) -> tuple[torch.Tensor, str | None, list[str] | None]:
    """The pixels ``model`` reads for ``source``, with the true label when it is known.

    Args:
        model: a ViT (its config has ``image_size``, ``patch_size``, ``n_channels``).
        source: ``SPLIT:INDEX`` (image INDEX of the train/val/test split of the run's dataset,
            e.g. ``test:7``), a ``.npy`` array of pixel values as the model reads them ((H, W)
            or (C, H, W)), or an image file (PNG, JPEG, ...), converted to the model's
            channels, resized to its ``image_size`` (block averages when shrinking) and
            scaled from 0..255 to [-1, 1], the range of the digits data and of HF's ViT
            image processors (mean = std = 0.5).
        run_dir: the training run whose recipe names the dataset (``SPLIT:INDEX`` only).

    Returns:
        ``(pixels (C, H, W), label name or None, class names or None)``.
    """
    config = model.config
    path = Path(source)
    split, _, index = str(source).partition(":")
    if not path.exists() and split in SPLITS and index.lstrip("-").isdigit():
        return _dataset_image(run_dir, split, int(index))
    if not path.is_file():
        raise ValueError(f"image {str(source)!r} is neither a file nor SPLIT:INDEX "
                         f"(SPLIT one of {SPLITS}, e.g. test:0)")
    if path.suffix.lower() == ".npy":
        pixels = torch.from_numpy(np.load(path).astype(np.float32))
        pixels = pixels[None] if pixels.dim() == 2 else pixels
        if pixels.dim() != 3 or pixels.shape[0] != config.n_channels:
            raise ValueError(f"{path} holds an array of shape {tuple(pixels.shape)}; the model "
                             f"reads (H, W) or ({config.n_channels}, H, W)")
        return pixels, None, None
    from PIL import Image  # matplotlib depends on Pillow

    try:
        picture = Image.open(path)
        picture = picture.convert("L" if config.n_channels == 1 else "RGB")
    except OSError as error:
        raise ValueError(f"cannot read {path} as an image: {error}") from None
    if config.n_channels not in (1, 3):
        raise ValueError(f"the model reads {config.n_channels} channels; an image file gives "
                         "1 or 3 (pass a .npy array)")
    size = config.image_size
    # Shrinking averages each block of pixels (the UCI digits are such block counts of 32x32
    # bitmaps); enlarging interpolates bilinearly.
    shrink = picture.width >= size and picture.height >= size
    picture = picture.resize((size, size), Image.Resampling.BOX if shrink
                             else Image.Resampling.BILINEAR)
    pixels = np.asarray(picture, dtype=np.float32) / 127.5 - 1.0
    pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(pixels)), None, None


def _dataset_image(run_dir: str | Path | None, split: str, index: int
                   ) -> tuple[torch.Tensor, str, list[str]]:
    from formerkit.tasks.image_classification import ImageDataConfig, load_image_data
    from formerkit.train.recipe import load_run_recipe

    run = _run_directory(run_dir)
    if run is None:
        raise ValueError("an image given as SPLIT:INDEX comes from a training run's dataset; "
                         "pass the run directory (or give an image file)")
    recipe = load_run_recipe(run)
    data = recipe.data
    if not isinstance(data, ImageDataConfig):
        raise ValueError(f"run {run} trained task {recipe.task_name!r}, not on an image "
                         "dataset; give an image file")
    dataset = load_image_data(data)
    images = getattr(dataset, split)
    if not -len(images) <= index < len(images):
        raise ValueError(f"image index {index} is out of range: the {split} split has "
                         f"{len(images)} images")
    label = int(images.y[index])
    return torch.from_numpy(images.x[index]), dataset.class_names[label], dataset.class_names


def _run_directory(path: str | Path | None) -> Path | None:
    """The run directory of a run or its ``model/`` folder (``None`` if neither)."""
    if path is None:
        return None
    path = Path(path)
    for candidate in (path, path.parent):
        if (candidate / "recipe.yaml").is_file():
            return candidate
    return None


def plot_attention_for_image(model, image: str | Path | torch.Tensor, *,
                             layers: Sequence[int] | None = None,
                             heads: Sequence[int] | None = None, rollout: bool = True):
    """Attention maps of a Vision Transformer reading one image.

    Args:
        model: a ``ViTForImageClassification`` or ``ViTModel``, or a model or run directory.
        image: (C, H, W) pixels, or a source as ``image_input`` reads it (``test:7``, a
            ``.npy`` file, an image file).
        layers, heads: indices to draw (default all); ``rollout``: add the rollout panel.

    Returns:
        The matplotlib figure; a classifier's title gives its prediction (and the true label
        of a dataset image).
    """
    run_dir = model if isinstance(model, (str, Path)) else None
    if run_dir is not None:
        model = load_model(run_dir)
    config = model.config
    if not reads_images(model):
        raise ValueError(f"{type(model).__name__} does not read images; pass --text instead")
    if hasattr(model, "decoder") and hasattr(model, "unpatchify"):
        raise ValueError(f"{type(model).__name__} removes a random share of the patches; plot "
                         "the attention of the ViT fine-tuned from it (or a ViTModel)")
    label = class_names = None
    if isinstance(image, torch.Tensor):
        pixels = image
    else:
        pixels, label, class_names = image_input(model, image, run_dir)
    from formerkit.viz.explorer import run_with_attentions

    with torch.no_grad():
        out = run_with_attentions(model, pixel_values=pixels[None].float())
    title = f"[CLS] attention of {type(model).__name__} over {config.patch_size}-pixel patches"
    logits = getattr(out, "logits", None)
    if logits is not None and logits.shape[-1] > 1:
        probs = torch.softmax(logits[0].float(), -1)
        guess = int(probs.argmax())
        name = class_names[guess] if class_names else str(guess)
        title += f"\npredicted {name} ({100 * float(probs[guess]):.1f}%)"
        if label is not None:
            title += f", label {label}"
    return plot_image_attention(out.attentions, pixels, patch_size=config.patch_size,
                                layers=layers, heads=heads, rollout=rollout, title=title)
