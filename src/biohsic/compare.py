"""``biohsic compare``: every rule on one task, K seeds each, in one table (SPEC §6).

Each row of the comparison is one rule label: a rule name from :data:`biohsic.rules.RULES`,
for ``biohsic`` optionally with its modulator, ``biohsic:paper`` (``biohsic`` alone takes
``--modulator``, default ``exact``). A row is ONE :class:`~biohsic.train.Trainer` run with its
K seeds side by side, in ``<out>/<label>/`` (``:`` written as ``-``). All rows share every
setting (task, network, lr, epochs, seeds, …); only the rule (and the modulator) differ.

Before anything trains, the whole grid is checked: every label, every configuration, the
dataset, and every run folder already in ``<out>``. A folder whose run finished with the
same configuration is reused, not recomputed; one that stopped early resumes from its
checkpoint; one that holds other settings is an error. While it runs, ``compare`` is the
only writer of ``<out>`` and of every run folder in it (:class:`~biohsic.runs.RunFolderLock`).

Outputs in ``<out>``: ``compare.md`` (Markdown table), ``compare.csv`` (one line per row,
plain numbers) and ``compare.png`` (test accuracy and loss per epoch, mean ± sd bands).
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .config import TrainConfig
from .data import Dataset, load_task
from .errors import CheckpointError, ConfigError, DivergenceError
from .modulators import MODULATORS
from .plots import plot_compare
from .rules import RULES, check_config
from .runs import RunFolderLock, atomic_write_text, checkpoint_paths, read_json
from .train import Trainer, check_run_fits, saved_form, settings_mismatch

#: ``--rules all``: every registered rule, and the three-factor rule with both signals.
ALL = "all"
#: Modulator of a modulated rule's row when none is named (the library's default, the exact g_N).
DEFAULT_MODULATOR = TrainConfig.modulator
#: Columns of ``compare.csv``.
CSV_COLUMNS = ("rule", "rule_name", "modulator", "seeds", "epochs", "epochs_completed", "status", "batch",
               "test_accuracy_mean", "test_accuracy_sd", "test_loss_mean", "test_loss_sd",
               "train_accuracy_mean", "samples_per_second", "wall_seconds", "run_dir")


@dataclass(frozen=True)
class Entry:
    """One row of the comparison: its label, its complete configuration and its run folder."""

    label: str
    config: TrainConfig
    run_dir: Path


@dataclass(frozen=True)
class Row:
    """The aggregated result of one row: mean and sample standard deviation over its seeds."""

    label: str
    config: TrainConfig
    run_dir: Path
    status: str
    epochs_completed: int
    test_accuracy: tuple[float, float]
    test_loss: tuple[float, float]
    train_accuracy: tuple[float, float]
    samples_per_second: float
    wall_seconds: float


def rule_label(rule: str, modulator: str) -> str:
    """The row label of ``rule`` with ``modulator``: e.g. ``biohsic`` for the exact signal,
    ``biohsic:<modulator>`` otherwise; the bare rule name for a rule that takes no modulator."""
    return f"{rule}:{modulator}" if RULES[rule].modulated and modulator != DEFAULT_MODULATOR else rule


def all_labels() -> list[str]:
    """What ``--rules all`` means: every registered rule, plus ``<rule>:paper`` after each
    modulated rule (``biohsic:paper``, the authors' signal)."""

    labels = []
    for name in RULES:
        labels.append(name)
        if RULES[name].modulated:
            labels.append(rule_label(name, "paper"))
    return labels


def parse_rules(text: str | Sequence[str], modulator: str = DEFAULT_MODULATOR) -> list[tuple[str, str]]:
    """``(rule, modulator)`` of each comma-separated label, in order; ``modulator`` is the one
    a bare ``biohsic`` takes. Raises :class:`ConfigError` for an unknown rule or modulator, a
    modulator on another rule, a label given twice or an empty list."""

    parts = [p.strip() for p in (text.split(",") if isinstance(text, str) else text) if p.strip()]
    if parts == [ALL]:
        parts = all_labels()
    if not parts:
        raise ConfigError(f"--rules names no rule; give comma-separated labels from {', '.join(all_labels())}")
    pairs, seen = [], set()
    for part in parts:
        name, _, mod = part.partition(":")
        if name not in RULES:
            raise ConfigError(f"unknown rule {name!r} in --rules; choose from {', '.join(RULES)} or 'all'")
        if mod and not RULES[name].modulated:
            modulated = ", ".join(n for n, rule in RULES.items() if rule.modulated)
            raise ConfigError(f"--rules {part!r}: only {modulated} takes a modulator (biohsic:exact, biohsic:paper)")
        if mod and mod not in MODULATORS:
            raise ConfigError(f"unknown modulator {mod!r} in --rules {part!r}; choose one of {', '.join(MODULATORS)}")
        pair = (name, (mod or modulator) if RULES[name].modulated else DEFAULT_MODULATOR)
        label = rule_label(*pair)
        if label in seen:
            raise ConfigError(f"--rules lists {label} twice; give each rule label once")
        seen.add(label)
        pairs.append(pair)
    return pairs


def plan(base: TrainConfig, rules: str | Sequence[str], out: str | Path) -> list[Entry]:
    """One :class:`Entry` per rule label, each ``base`` with its rule and modulator, resolved
    and validated (so a bad setting is reported before anything trains)."""
    entries = []
    for rule, modulator in parse_rules(rules, base.modulator):
        config = dataclasses.replace(base, rule=rule, modulator=modulator).resolved()
        check_config(config)
        label = rule_label(rule, modulator)
        entries.append(Entry(label, config, Path(out) / label.replace(":", "-")))
    return entries


def run_state(entry: Entry) -> str:
    """What to do with ``entry.run_dir``: ``"reuse"`` (a finished run of this configuration),
    ``"resume"`` (a checkpoint of this configuration with fewer epochs) or ``"new"``.
    Raises :class:`CheckpointError` when the folder holds a run with other settings or more epochs."""
    folder = entry.run_dir
    has_checkpoint = bool(checkpoint_paths(folder))
    if not (has_checkpoint or (folder / "summary.json").exists()):
        return "new"
    mismatch = settings_mismatch(entry.config, folder)
    if mismatch:
        raise CheckpointError(f"{folder} holds a {entry.label} run with other settings ({mismatch}); "
                              "use the same options or choose another --out")
    summary = read_json(folder / "summary.json") if (folder / "summary.json").exists() else {}
    done = int(summary.get("epochs_completed", 0))
    if done > entry.config.epochs:
        raise CheckpointError(f"{folder} holds {done} epochs of {entry.label}, more than --epochs "
                              f"{entry.config.epochs}; pass --epochs {done} or choose another --out")
    if summary.get("status") in ("completed", "diverged") and summary.get("config") == saved_form(entry.config):
        return "reuse"
    return "resume" if has_checkpoint else "new"


def log_line(message: str) -> None:
    """Print a progress line on stderr."""
    print(message, file=sys.stderr)


def run_entry(entry: Entry, state: str, dataset: Dataset, *, progress: bool = False,
              log: Callable[[str], None] = log_line, threads: int | None = None) -> dict[str, Any]:
    """Train (or resume) ``entry``'s run unless ``state`` is ``"reuse"``; return its summary.
    A diverged run is recorded as such (its summary says so), not raised."""

    if state == "reuse":
        summary = read_json(entry.run_dir / "summary.json")
        log(f"{entry.label}: reusing {entry.run_dir} ({summary['status']}, {summary['epochs_completed']} epochs)")
        return summary
    cfg = entry.config
    trainer = Trainer(cfg, run_dir=entry.run_dir, dataset=dataset, progress=progress, threads=threads)
    if state == "resume" and trainer.resume():
        log(f"{entry.label}: resuming {entry.run_dir} after epoch {trainer.epoch}")
    else:
        log(f"{entry.label}: training {cfg.seeds} seeds side by side into {entry.run_dir}")

    def report(row: dict) -> None:
        log(f"{entry.label} epoch {row['epoch']}/{cfg.epochs}: test_accuracy={row['test_accuracy']:.4f} "
            f"test_loss={row['test_loss']:.4f} samples/s={row['samples_per_second']:.0f}")

    try:
        return trainer.run(on_epoch=report)
    except DivergenceError as err:
        log(f"{entry.label}: {err}")
        return read_json(entry.run_dir / "summary.json")


def mean_sd(values: Sequence[float] | None) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); sd is nan for one value, both nan for none."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def summarize(entry: Entry, summary: dict[str, Any]) -> Row:
    """Aggregate the per-model results of a run's summary into one :class:`Row`."""
    per_model = summary.get("per_model") or {}
    return Row(entry.label, entry.config, entry.run_dir, summary["status"], int(summary["epochs_completed"]),
               test_accuracy=mean_sd(per_model.get("test_accuracy")), test_loss=mean_sd(per_model.get("test_loss")),
               train_accuracy=mean_sd(per_model.get("train_accuracy")),
               samples_per_second=float(summary["samples_per_second"]), wall_seconds=float(summary["wall_seconds"]))


def learning_curves(run_dir: Path) -> dict[str, list[float]]:
    """Per epoch, mean and sd over the seeds of test accuracy and test loss, from ``metrics.jsonl``."""
    path = run_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    curves: dict[str, list[float]] = {"epoch": [row["epoch"] for row in rows]}
    for key, name in (("test_accuracy", "accuracy"), ("test_loss", "loss")):
        stats = [mean_sd(row["per_model"][key]) for row in rows]
        curves[f"{name}_mean"] = [m for m, _ in stats]
        curves[f"{name}_sd"] = [0.0 if math.isnan(s) else s for _, s in stats]
    return curves


def batch_text(config: TrainConfig) -> str:
    """How a row's rule meets the data: a stream (with its working memory) or minibatches."""

    if not RULES[config.rule].streaming:
        return str(config.batch_size)
    return f"1 (N={config.window})" if RULES[config.rule].modulated else "1"


def _pm(value: tuple[float, float], scale: float, digits: int) -> str:
    mean, sd = value
    if math.isnan(mean):
        return "–"
    return f"{mean * scale:.{digits}f}" + ("" if math.isnan(sd) else f" ± {sd * scale:.{digits}f}")


def _epochs_text(row: Row) -> str:
    text = str(row.epochs_completed) if row.epochs_completed == row.config.epochs else \
        f"{row.epochs_completed} of {row.config.epochs}"
    return text if row.status == "completed" else f"{text}, {row.status}"


def settings_line(base: TrainConfig) -> str:
    """The settings every row shares, in one line (for ``compare.md``)."""
    c = base
    seeds = f"{c.seed}" if c.seeds == 1 else f"{c.seed}..{c.seed + c.seeds - 1}"
    return (f"task {c.task}; hidden {','.join(map(str, c.hidden))}; AdamW lr {c.lr:g}, weight decay "
            f"{c.weight_decay:g}; {c.epochs} epochs; seeds {seeds}; window N={c.window}; γ={c.gamma:g}; "
            f"σ={','.join(f'{s:g}' for s in c.sigmas)}; minibatch {c.batch_size}; {c.neuron} units; "
            f"memory {c.memory}; readout update {c.readout_update}; {c.dtype} on {c.device}")


def markdown_table(rows: Sequence[Row]) -> str:
    """The comparison as a Markdown table (accuracy in %, mean ± sd over seeds)."""
    lines = ["| rule | batch | seeds | epochs | test accuracy (%) | test loss | samples/s | train time (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.label} | {batch_text(r.config)} | {r.config.seeds} | {_epochs_text(r)} | "
                     f"{_pm(r.test_accuracy, 100, 2)} | {_pm(r.test_loss, 1, 3)} | {r.samples_per_second:.0f} | "
                     f"{r.wall_seconds:.1f} |")
    return "\n".join(lines) + "\n"


def markdown_page(rows: Sequence[Row]) -> str:
    """``compare.md``: the shared settings, the table, and what its columns mean."""
    base = rows[0].config
    return (f"Settings: {settings_line(base)}.\n\n{markdown_table(rows)}\n"
            "Mean ± sample sd over the seeds, after the last epoch. batch: samples per update "
            "(1 = streaming, N = working memory). samples/s and train time: the whole run, all seeds "
            "side by side, training only (evaluation excluded).\n")


def csv_text(rows: Sequence[Row]) -> str:
    """``compare.csv``: one line per row, plain numbers (accuracy as a fraction; empty for none)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)

    def num(value: float) -> str:
        return "" if math.isnan(value) else repr(value)

    for r in rows:
        writer.writerow([r.label, r.config.rule, r.config.modulator if RULES[r.config.rule].modulated else "",
                         r.config.seeds, r.config.epochs, r.epochs_completed, r.status, batch_text(r.config),
                         num(r.test_accuracy[0]), num(r.test_accuracy[1]), num(r.test_loss[0]), num(r.test_loss[1]),
                         num(r.train_accuracy[0]), num(r.samples_per_second), num(r.wall_seconds), str(r.run_dir)])
    return buffer.getvalue()


def write_outputs(rows: Sequence[Row], out: Path) -> None:
    """Write ``compare.md``, ``compare.csv`` and (with matplotlib) ``compare.png`` into ``out``."""
    atomic_write_text(out / "compare.md", markdown_page(rows))
    atomic_write_text(out / "compare.csv", csv_text(rows))
    base = rows[0].config
    try:
        plot_compare({r.label: learning_curves(r.run_dir) for r in rows}, out / "compare.png",
                     title=f"{base.task}, hidden {','.join(map(str, base.hidden))}, {base.seeds} seeds (mean ± sd)")
    except ImportError:  # matplotlib is an optional extra
        return


def compare(base: TrainConfig, rules: str | Sequence[str], out: str | Path, *, download: bool = False,
            progress: bool = False, log: Callable[[str], None] = log_line, threads: int | None = None) -> list[Row]:
    """Run every rule of ``rules`` with ``base``'s settings and seeds into ``out``; write and
    return the table's rows. Everything is checked (labels, settings, data, existing run
    folders) before the first run trains."""
    out = Path(out)
    entries = plan(base, rules, out)
    cfg = entries[0].config
    dataset = load_task(cfg.task, data_dir=cfg.data_dir, data_seed=cfg.data_seed, download=download)
    for entry in entries:
        check_run_fits(entry.config, dataset)
    with contextlib.ExitStack() as locks:
        # one writer of every run folder and of the table's folder; the table's is released
        # first, so an internal error's traceback is saved there
        for folder in (*(entry.run_dir for entry in entries), out):
            locks.enter_context(RunFolderLock(folder))
        states = [run_state(entry) for entry in entries]
        rows = [summarize(entry, run_entry(entry, state, dataset, progress=progress, log=log, threads=threads))
                for entry, state in zip(entries, states)]
        write_outputs(rows, out)
    return rows


__all__ = ["ALL", "Entry", "Row", "all_labels", "compare", "csv_text", "learning_curves", "log_line", "markdown_table",
           "mean_sd", "parse_rules", "plan", "rule_label", "run_entry", "run_state", "summarize", "write_outputs"]
