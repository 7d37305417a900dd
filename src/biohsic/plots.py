"""Figures of a run. matplotlib is an optional extra (``pip install 'biohsic[cli]'``).

Figures are drawn with matplotlib's object-oriented API (:class:`matplotlib.figure.Figure`,
no ``pyplot``): nothing here selects a backend or touches pyplot's global state, so importing
biohsic or writing a run's figures in a notebook leaves the notebook's plotting as it was.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping, Sequence

from .runs import atomic_write_bytes


def new_figure(**options):
    """A detached :class:`matplotlib.figure.Figure` (ImportError without matplotlib)."""
    from matplotlib.figure import Figure

    return Figure(**options)


def colour_cycle(n: int):
    """``n`` or more distinct line colours (tab10, or tab20 beyond ten lines)."""
    import matplotlib

    return matplotlib.colormaps["tab10" if n <= 10 else "tab20"].colors


def save_figure(fig, path: Path) -> None:
    """Save a matplotlib figure as PNG, atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def plot_curves(history: Sequence[dict], path: Path, title: str = "") -> None:
    """``curves.png``: accuracy, loss and each hidden layer's HSIC(X,Z), HSIC(Y,Z) per epoch."""
    epochs = [row["epoch"] for row in history]
    n_panels = 3 if history and history[0].get("hsic_xz") else 2
    fig = new_figure(figsize=(4.2 * n_panels, 3.4))
    axes = fig.subplots(1, n_panels)
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


def plot_compare(curves: Mapping[str, Mapping[str, Sequence[float]]], path: Path, title: str = "") -> None:
    """``compare.png``: test accuracy and test loss per epoch, one colour per rule, the mean over
    seeds as a line and ± one sd as a band. ``curves[label]`` holds equally long sequences
    ``epoch``, ``accuracy_mean``, ``accuracy_sd``, ``loss_mean`` and ``loss_sd``."""
    from matplotlib.ticker import MaxNLocator

    colours = colour_cycle(len(curves))
    fig = new_figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2)
    for (label, c), colour in zip(curves.items(), colours):
        for ax, name in zip(axes, ("accuracy", "loss")):
            mean, sd = c[f"{name}_mean"], c[f"{name}_sd"]
            ax.plot(c["epoch"], mean, "o-", ms=3, color=colour, label=label)
            ax.fill_between(c["epoch"], [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)],
                            color=colour, alpha=0.2, linewidth=0)
    axes[0].set(xlabel="epoch", ylabel="test accuracy")
    axes[1].set(xlabel="epoch", ylabel="test cross-entropy")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    if title:
        fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def plot_sweep(panels: Mapping[str, Mapping[str, Mapping[str, Sequence]]], path: Path, title: str = "") -> None:
    """``sweep.png``: one column per swept setting, validation accuracy (top) and test
    accuracy (bottom) against the setting's values, one colour per line, the mean over seeds
    as a line and ± one sd as a band. ``panels[name][line]`` holds equally long sequences
    ``value``, ``val_mean``, ``val_sd``, ``test_mean`` and ``test_sd``. Numbers spanning a
    factor of 8 or more are on a log axis; other values are placed evenly, in grid order."""
    fig = new_figure(figsize=(4.6 * len(panels) + 2.4, 6.4), layout="constrained")
    axes = fig.subplots(2, len(panels), squeeze=False)
    for column, (name, lines) in enumerate(panels.items()):
        values = [v for line in lines.values() for v in line["value"]]
        numeric = bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        categories = list(dict.fromkeys(str(v) for v in values))
        for (label, line), colour in zip(lines.items(), colour_cycle(len(lines))):
            x = line["value"] if numeric else [categories.index(str(v)) for v in line["value"]]
            for ax, split in zip(axes[:, column], ("val", "test")):
                mean, sd = line[f"{split}_mean"], line[f"{split}_sd"]
                ax.plot(x, mean, "o-", ms=3, color=colour, label=label)
                ax.fill_between(x, [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)],
                                color=colour, alpha=0.2, linewidth=0)
        for ax, split in zip(axes[:, column], ("validation", "test")):
            ax.set(xlabel=name, ylabel=f"{split} accuracy")
            ax.grid(alpha=0.3)
            if numeric and min(values) > 0 and max(values) >= 8 * min(values):
                ax.set_xscale("log")
                ax.minorticks_off()
            ticks = sorted(set(values)) if numeric else range(len(categories))
            ax.set_xticks(ticks, [f"{v:g}" for v in ticks] if numeric else categories)
        axes[0, column].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def plot_capacity(rows: Sequence, path: Path) -> None:
    """``capacity.png``: two heatmaps (output R², update cosine) of a frozen reservoir's fit
    over window N × units M (rows of :func:`biohsic.reservoir.study.capacity_study`)."""
    windows = sorted({row.window for row in rows})
    units = sorted({row.units for row in rows})
    cell = {(row.window, row.units): row for row in rows}
    fig = new_figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, (field, title) in zip(axes, (("r2", "output R² vs g_N"), ("update_cosine", "update cosine"))):
        grid = [[getattr(cell[(n, m)], field) if (n, m) in cell else float("nan") for m in units] for n in windows]
        image = ax.imshow(grid, cmap="viridis", vmin=min(0.0, min(min(r) for r in grid)), vmax=1.0, aspect="auto")
        for i, line in enumerate(grid):
            for j, value in enumerate(line):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="w" if value < 0.5 else "k", fontsize=8)
        ax.set_xticks(range(len(units)), [str(m) for m in units])
        ax.set_yticks(range(len(windows)), [str(n) for n in windows])
        ax.set_xlabel("reservoir units M")
        ax.set_ylabel("window N")
        ax.set_title(f"frozen reservoir: {title}")
        fig.colorbar(image, ax=ax)
    save_figure(fig, path)
