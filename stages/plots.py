"""Figures people would rather look at than read: learning curves, confusion, augmentation.

Built on matplotlib's object API (Figure, not pyplot): no global state, safe in the worker
threads Prefect runs tasks in, and no display needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure


def learning_curves(history: dict[str, Sequence[float]], title: str) -> Figure:
    """The chapter's two panels: loss and val_loss, accuracy and val_accuracy, per epoch."""
    fig = Figure(figsize=(11, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for key, style in ((metric, "o-"), (f"val_{metric}", "s--")):
            values = history.get(key)
            if values:
                epochs = np.arange(1, len(values) + 1)
                ax.plot(epochs, values, style, label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return fig


def confusion_heatmap(cm: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """Confusion matrix as a heatmap, rows true, columns predicted, counts in the cells."""
    fig = Figure(figsize=(8, 7), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax, shrink=0.8)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = cm.max() / 2 if cm.size else 0
    for (i, j), count in np.ndenumerate(cm):
        ax.text(
            j,
            i,
            str(count),
            ha="center",
            va="center",
            fontsize=7,
            color="white" if count > threshold else "black",
        )
    ax.set_title(title)
    return fig


def image_grid(images: np.ndarray, title: str, ncols: int = 10) -> Figure:
    """Images (N, 28, 28[, 1]) in a grid: the chapter's 10x10 figure of augmented variants."""
    n = len(images)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(ncols, nrows + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, img in zip(axes, images, strict=False):
        ax.imshow(np.squeeze(img), cmap="gray", vmin=0.0, vmax=1.0)
    fig.suptitle(title)
    return fig
