"""``biohsic compare``: every rule on one task, K seeds each, in one table (SPEC §6).

Each row of the comparison is one rule label: a rule name from :data:`biohsic.rules.RULES`,
for ``biohsic`` optionally with its modulator, ``biohsic:paper`` (``biohsic`` alone takes
``--modulator``, default ``exact``). A row is ONE :class:`~biohsic.train.Trainer` run with its
K seeds side by side.

- :func:`compare`: all rows share every setting (task, network, lr, epochs, seeds, …); only
  the rule (and the modulator) differ. Row ``<label>`` trains in ``<out>/<label>/`` (``:``
  written as ``-``).
- :func:`tune`: each rule is first swept over a grid (its own default grid, or the one given)
  in ``<out>/tune/<label>/<point>/``, and the row is the trial with the best **validation**
  accuracy (ties: lower validation loss, then grid order). The choice sees validation figures
  only (:class:`ValidationScore`); the test figures of the chosen trial are then reported,
  with the chosen setting in the table.

Both run on the sweep machinery (:mod:`biohsic.sweep`): the whole grid is checked first
(every label, every configuration, the dataset, every run folder already in ``<out>``); a
finished run with the same configuration is reused, an interrupted one resumes; the trials
run on any executor (this process, local processes, Ray).

Outputs in ``<out>``: ``compare.md`` (Markdown table), ``compare.csv`` (one line per row,
plain numbers) and ``compare.png`` (test accuracy and loss per epoch, mean ± sd bands); when
tuned, also ``tuning.md``, ``tuning.csv`` and ``tuning.png``: every trial of the search.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from .config import TrainConfig
from .errors import ConfigError
from .plots import plot_compare
from .rules import RULES
from .runs import RunFolderLock, atomic_write_text
from .sweep import (Executor, Grid, SerialExecutor, Trial, TrialResult, epochs_text, log_line, mean_sd, parse_rules,
                    plan_sweep, pm, point_text, prepare, rule_label, run_sweep, write_sweep_outputs)

#: Columns of ``compare.csv``.
CSV_COLUMNS = ("rule", "rule_name", "modulator", "setting", "seeds", "epochs", "epochs_completed", "status", "batch",
               "val_accuracy_mean", "val_accuracy_sd", "test_accuracy_mean", "test_accuracy_sd", "test_loss_mean",
               "test_loss_sd", "train_accuracy_mean", "samples_per_second", "wall_seconds", "run_dir")
#: The learning rates a default tuning grid takes its values from (half-decade steps).
LR_LADDER = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
#: Minibatch sizes of a default tuning grid for a minibatch rule.
TUNING_BATCH_SIZES = (8, 32)


def plan(base: TrainConfig, rules: str | Sequence[str], out: str | Path,
         sources: Mapping[str, str] | None = None) -> list[Trial]:
    """One trial per rule label, each ``base`` with its rule and modulator, resolved and
    validated (so a bad setting is reported before anything trains), in ``<out>/<label>``."""
    return plan_sweep(base, rules, {}, out, sources)


def compare(base: TrainConfig, rules: str | Sequence[str], out: str | Path, *, executor: Executor | None = None,
            sources: Mapping[str, str] | None = None, download: bool = False, progress: bool = False,
            log: Callable[[str], None] = log_line, threads: int | None = None) -> list[TrialResult]:
    """Run every rule of ``rules`` with ``base``'s settings and seeds into ``out`` (default:
    in this process, one rule at a time); write and return the table's rows. Everything is
    checked (labels, settings, data, existing run folders) before the first run trains."""
    out = Path(out)
    trials = plan(base, rules, out, sources)
    with RunFolderLock(out):  # one writer of the table's folder
        states = prepare(trials, download)
        rows = run_sweep(trials, executor or SerialExecutor(), states=states, download=download, progress=progress,
                         threads=threads, log=log)
        write_outputs(rows, out)
    return rows


# --- tuning -------------------------------------------------------------------------------
def default_grid(config: TrainConfig) -> Grid:
    """The grid a rule is tuned over when none is given: learning rates of :data:`LR_LADDER`
    around ``config.lr`` — the one nearest it and its two neighbours for a streaming rule (one
    update per sample), it and the three above for a minibatch rule (which averages its
    batch's gradient and makes fewer steps), with batches of 8 and 32."""
    nearest = min(range(len(LR_LADDER)), key=lambda i: abs(math.log(LR_LADDER[i] / config.lr)))
    if RULES[config.rule].streaming:
        return {"lr": LR_LADDER[max(0, nearest - 1):nearest + 2]}
    return {"lr": LR_LADDER[nearest:nearest + 4], "batch_size": TUNING_BATCH_SIZES}


def rule_grid(config: TrainConfig, grid: Grid | None) -> Grid:
    """The grid rule ``config.rule`` is tuned over: ``grid`` (without ``batch_size`` for a
    streaming rule, which ignores it), or :func:`default_grid`."""
    if grid is None:
        return default_grid(config)
    return {name: values for name, values in grid.items()
            if not (name == "batch_size" and RULES[config.rule].streaming)}


@dataclass(frozen=True)
class ValidationScore:
    """What a tuning choice may see of a trial: its mean validation accuracy and loss."""

    accuracy: float
    loss: float


def validation_score(result: TrialResult) -> ValidationScore | None:
    """A completed trial's validation figures; ``None`` for a failed or diverged trial or one
    without a validation set (it cannot be chosen)."""
    accuracy, loss = result.val_accuracy[0], result.val_loss[0]
    if result.status != "completed" or math.isnan(accuracy) or math.isnan(loss):
        return None
    return ValidationScore(accuracy, loss)


def best_on_validation(scores: Sequence[ValidationScore | None]) -> int | None:
    """The index of the best score: highest validation accuracy, then lowest validation loss,
    then the first; ``None`` when no trial can be chosen."""
    eligible = [(i, s) for i, s in enumerate(scores) if s is not None]
    if not eligible:
        return None
    return min(eligible, key=lambda item: (-item[1].accuracy, item[1].loss, item[0]))[0]


@dataclass(frozen=True)
class Tuned:
    """One rule's tuning: every trial of its grid and the one chosen on validation (``None``
    when none completed)."""

    label: str
    grid: Grid
    trials: tuple[TrialResult, ...]
    chosen: TrialResult | None

    @property
    def setting(self) -> str:
        """The chosen setting, e.g. ``lr=0.003, batch_size=8`` (``none completed`` without one),
        with a warning when a value is the lowest or highest of three or more tried: the best
        may lie beyond the grid."""
        if self.chosen is None:
            return "none completed"
        edges = [f"{name} {'lowest' if value == min(self.grid[name]) else 'highest'} tried"
                 for name, value in self.chosen.trial.point
                 if len(self.grid[name]) >= 3 and value in (min(self.grid[name]), max(self.grid[name]))]
        text = point_text(self.chosen.trial.point, ", ")
        return f"{text} ({'; '.join(edges)})" if edges else text


def tune(base: TrainConfig, rules: str | Sequence[str], out: str | Path, grid: Grid | None = None, *,
         executor: Executor | None = None, sources: Mapping[str, str] | None = None, download: bool = False,
         progress: bool = False, log: Callable[[str], None] = log_line, threads: int | None = None) -> list[Tuned]:
    """Tune every rule of ``rules`` on the validation set (:func:`rule_grid`: ``grid`` or the
    rule's default grid), all trials on one ``executor``; write the tables of the chosen rows
    (``compare.*``) and of every trial (``tuning.*``) into ``out`` and return the tunings."""
    if base.resolved().val_fraction <= 0:
        raise ConfigError("--tune chooses settings on the validation set; --val-fraction must be above 0")
    out = Path(out)
    per_rule: list[tuple[str, Grid, list[Trial]]] = []
    for rule, modulator in parse_rules(rules, base.modulator):
        config = dataclasses.replace(base, rule=rule, modulator=modulator).resolved()
        label = rule_label(rule, modulator)
        searched = rule_grid(config, grid)
        per_rule.append((label, searched, plan_sweep(base, label, searched, out / "tune", sources)))
    trials = [trial for _, _, group in per_rule for trial in group]
    with RunFolderLock(out):  # one writer of the tables' folder
        states = prepare(trials, download)
        results = run_sweep(trials, executor or SerialExecutor(), states=states, download=download,
                            progress=progress, threads=threads, log=log)
        tunings, start = [], 0
        for label, searched, group in per_rule:
            found = tuple(results[start:start + len(group)])
            start += len(group)
            best = best_on_validation([validation_score(r) for r in found])
            tunings.append(Tuned(label, searched, found, None if best is None else found[best]))
        write_sweep_outputs(results, out, stem="tuning")
        chosen = [t.chosen for t in tunings if t.chosen is not None]
        if chosen:
            write_outputs(chosen, out, settings={t.label: t.setting for t in tunings if t.chosen is not None},
                          grids={t.label: t.grid for t in tunings})
    return tunings


# --- tables -------------------------------------------------------------------------------
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


def settings_line(base: TrainConfig, tuned: Sequence[str] = ()) -> str:
    """The settings every row shares, in one line (for ``compare.md``); ``tuned``: the settings
    each row chose for itself, left out."""
    c = base
    seeds = f"{c.seed}" if c.seeds == 1 else f"{c.seed}..{c.seed + c.seeds - 1}"
    parts = [("task", f"task {c.task}"), ("arch" if c.arch else "hidden", c.network_label()),
             ("lr", f"AdamW lr {c.lr:g}"), ("weight_decay", f"weight decay {c.weight_decay:g}"),
             ("epochs", f"{c.epochs} epochs"), ("seeds", f"seeds {seeds}"), ("window", f"window N={c.window}"),
             ("gamma", f"γ={c.gamma:g}"), ("sigmas", f"σ={','.join(f'{s:g}' for s in c.sigmas)}"),
             ("batch_size", f"minibatch {c.batch_size}"), ("neuron", f"{c.neuron} units"),
             ("memory", f"memory {c.memory}"), ("readout_update", f"readout update {c.readout_update}"),
             ("val_fraction", f"validation {c.val_fraction:g} of the training set (data seed {c.data_seed})"),
             ("dtype", f"{c.dtype} on {c.device}")]
    return "; ".join(text for name, text in parts if name not in tuned)


def markdown_table(rows: Sequence[TrialResult], settings: Mapping[str, str] | None = None) -> str:
    """The comparison as a Markdown table (accuracy in %, mean ± sd over seeds); ``settings``:
    each row's tuned setting by label (a column when given)."""
    tuned = settings is not None
    head = ["rule", *(["setting (chosen on validation)"] if tuned else []), "batch", "seeds", "epochs",
            "val accuracy (%)", "test accuracy (%)", "test loss", "samples/s", "train time (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.label, *([settings.get(r.label, "")] if tuned else []), batch_text(r.config), str(r.config.seeds),
                 epochs_text(r), pm(r.val_accuracy), pm(r.test_accuracy), pm(r.test_loss, 1, 3),
                 f"{r.samples_per_second:.0f}", f"{r.wall_seconds:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def grid_line(grids: Mapping[str, Grid]) -> str:
    """What each rule was tuned over, one line per distinct grid."""
    by_grid: dict[str, list[str]] = {}
    for label, grid in grids.items():
        text = "; ".join(f"{name} ∈ {{{', '.join(map(str, values))}}}" for name, values in grid.items())
        by_grid.setdefault(text or "nothing", []).append(label)
    return "\n".join(f"- {', '.join(labels)}: {text}" for text, labels in by_grid.items())


def markdown_page(rows: Sequence[TrialResult], settings: Mapping[str, str] | None = None,
                  grids: Mapping[str, Grid] | None = None) -> str:
    """``compare.md``: the shared settings, the table, and what its columns mean."""
    tuned = sorted({name for grid in (grids or {}).values() for name in grid})
    search = "" if grids is None else (
        "Each rule's setting was chosen on the validation set (best mean validation accuracy over the seeds; "
        f"every trial in tuning.md) from:\n{grid_line(grids)}\n\n")
    return (f"Settings: {settings_line(rows[0].config, tuned)}.\n\n{search}{markdown_table(rows, settings)}\n"
            "Mean ± sample sd over the seeds, after the last epoch. batch: samples per update "
            "(1 = streaming, N = working memory). samples/s and train time: the whole run, all seeds "
            "side by side, training only (evaluation excluded).\n")


def csv_text(rows: Sequence[TrialResult], settings: Mapping[str, str] | None = None) -> str:
    """``compare.csv``: one line per row, plain numbers (accuracy as a fraction; empty for none)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)

    def num(value: float) -> str:
        return "" if math.isnan(value) else repr(value)

    for r in rows:
        writer.writerow([r.label, r.config.rule, r.config.modulator if RULES[r.config.rule].modulated else "",
                         (settings or {}).get(r.label, ""), r.config.seeds, r.config.epochs, r.epochs_completed,
                         r.status, batch_text(r.config), num(r.val_accuracy[0]), num(r.val_accuracy[1]),
                         num(r.test_accuracy[0]), num(r.test_accuracy[1]), num(r.test_loss[0]), num(r.test_loss[1]),
                         num(r.train_accuracy[0]), num(r.samples_per_second), num(r.wall_seconds), str(r.run_dir)])
    return buffer.getvalue()


def write_outputs(rows: Sequence[TrialResult], out: Path, settings: Mapping[str, str] | None = None,
                  grids: Mapping[str, Grid] | None = None) -> None:
    """Write ``compare.md``, ``compare.csv`` and (with matplotlib) ``compare.png`` into ``out``."""
    atomic_write_text(out / "compare.md", markdown_page(rows, settings, grids))
    atomic_write_text(out / "compare.csv", csv_text(rows, settings))
    base = rows[0].config
    try:
        plot_compare({r.label: learning_curves(r.run_dir) for r in rows if r.status != "failed"},
                     out / "compare.png",
                     title=f"{base.task}, {base.network_label()}, {base.seeds} seeds (mean ± sd)")
    except ImportError:  # matplotlib is an optional extra
        return


__all__ = ["CSV_COLUMNS", "LR_LADDER", "Tuned", "ValidationScore", "best_on_validation", "compare", "csv_text",
           "default_grid", "learning_curves", "markdown_table", "plan", "rule_grid", "tune", "validation_score",
           "write_outputs"]
