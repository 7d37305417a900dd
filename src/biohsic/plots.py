"""Figures of a run. matplotlib is an optional extra (``pip install 'biohsic[cli]'``)."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

from .runs import atomic_write_bytes


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    """Save a matplotlib figure as PNG, atomically, and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def plot_curves(history: Sequence[dict], path: Path, title: str = "") -> None:
    """``curves.png``: accuracy, loss and each hidden layer's HSIC(X,Z), HSIC(Y,Z) per epoch."""
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    n_panels = 3 if history and history[0].get("hsic_xz") else 2
    fig, axes = plt.subplots(1, n_panels, figsize=(4.2 * n_panels, 3.4))
    axes[0].plot(epochs, [r["test_accuracy"] for r in history], "o-", label="test")
    axes[0].plot(epochs, [r["train_accuracy"] for r in history], "s--", label="train")
    axes[0].set(xlabel="epoch", ylabel="accuracy")
    axes[1].plot(epochs, [r["test_loss"] for r in history], "o-", label="test")
    axes[1].plot(epochs, [r["online_loss"] for r in history], "s--", label="online (train)")
    axes[1].set(xlabel="epoch", ylabel="cross-entropy")
    if n_panels == 3:
        for layer in range(len(history[0]["hsic_xz"])):
            axes[2].plot(epochs, [r["hsic_xz"][layer] for r in history], "o-", label=f"HSIC(X,Z{layer + 1})")
            axes[2].plot(epochs, [r["hsic_yz"][layer] for r in history], "s--", label=f"HSIC(Y,Z{layer + 1})")
        axes[2].set(xlabel="epoch", ylabel="HSIC (evaluation windows)")
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=9)
    save_figure(fig, path)
