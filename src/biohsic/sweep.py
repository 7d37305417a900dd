"""Sweeps: rules × a grid of settings, K seeds per trial, on a pool of processes or on Ray.

A **trial** is one rule label (``biohsic``, ``biohsic:paper``, ``bp``, …) at one point of the
grid (``--grid window=2,4,8 --grid lr=1e-4,1e-3``: the product of every grid), trained as one
ordinary run folder with its K seeds side by side, in ``<out>/<label>/<point>/`` (for an
empty grid, ``<out>/<label>/``). Everything is checked before the first trial trains —
every label, every configuration, the data, every folder already in ``<out>`` — so bad input
writes nothing.

Rerunning a sweep reuses each finished trial (same configuration, a ``summary.json``),
resumes each interrupted one from its checkpoint and retries each failed one. A trial that
fails (an exception, a crashed process) is reported and does not stop the others; one that
diverges is a row with status ``diverged``.

Executors run the trials:

- :class:`SerialExecutor` — one after another, in this process;
- :class:`ProcessExecutor` — ``local``: at most ``workers`` trials at once, each in its own
  fresh process (a crash takes down only its trial); ``workers`` defaults to the cores;
- :class:`RayExecutor` — ``ray`` (extra ``biohsic[ray]``): each trial a Ray task; joins the
  cluster at ``address`` or starts a local Ray instance.

Each trial gets one torch thread when it is a streaming rule (its per-sample operations are
too small to share) and ``cores // workers`` otherwise; the executors give a trial the same
number of threads, so they give the same numbers.

Outputs in ``<out>``: ``sweep.csv`` and ``sweep.md`` (one line per trial: the grid values,
mean ± sd over seeds of validation and test accuracy and loss), ``sweep.png`` (the metric
against each swept option, ±sd bands) and ``sweep.json`` (executor, wall time, failures).
The tables hold no timings, so that two executors' tables of one sweep are equal.
"""
from __future__ import annotations

import abc
import csv
import dataclasses
import io
import itertools
import math
import multiprocessing
import os
import socket
import statistics
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from .config import TrainConfig
from .errors import CheckpointError, ConfigError, DivergenceError
from .modulators import MODULATORS
from .plots import plot_sweep
from .presets import config_sources, setting_type
from .rules import RULES, check_config
from .runs import RunFolderLock, atomic_write_bytes, atomic_write_text, checkpoint_paths, read_json, write_json
from .train import Trainer, check_run_fits, load_dataset, saved_form, settings_mismatch

#: ``--rules all``: every registered rule, and the three-factor rule with both signals.
ALL = "all"
#: Modulator of a modulated rule's row when none is named (the library's default, the exact g_N).
DEFAULT_MODULATOR = TrainConfig.modulator
#: Settings a grid may not sweep, and the option that sets them instead.
NOT_IN_GRID = {"rule": "--rules", "modulator": "--rules (biohsic:<modulator>)", "seed": "--seed",
               "seeds": "--seeds"}
#: Columns of ``sweep.csv`` after the rule and the grid's settings.
RESULT_COLUMNS = ("seeds", "epochs", "epochs_completed", "status", "val_accuracy_mean", "val_accuracy_sd",
                  "val_loss_mean", "val_loss_sd", "test_accuracy_mean", "test_accuracy_sd", "test_loss_mean",
                  "test_loss_sd", "run_dir", "error")
EXECUTORS = ("local", "ray")


# --- rule labels ------------------------------------------------------------------------
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


# --- grids ------------------------------------------------------------------------------
Grid = dict[str, tuple[Any, ...]]
Point = tuple[tuple[str, Any], ...]


def parse_grid(texts: Iterable[str], option: str = "--grid") -> Grid:
    """The grid of ``--grid`` texts: ``NAME=V1,V2,…``, several names in one text allowed
    (``lr=1e-4,1e-3,batch_size=8,32``), a list value's items joined by ``/`` (``hidden=128/64``).
    NAME is a setting of ``config.json`` (``-`` may stand for ``_``); values are checked
    against its type. A :class:`ConfigError` for an unknown or repeated name, a value that
    does not parse, a value given twice or a name without values."""
    grid: Grid = {}
    for text in texts:
        name = None
        for token in text.split(","):
            key, eq, value = token.partition("=")
            value = value if eq else key
            if eq:
                name = key.strip().replace("-", "_")
                where = f"{option} {text!r}"
                if name in NOT_IN_GRID:
                    raise ConfigError(f"{where}: {name} is set by {NOT_IN_GRID[name]}, not by a grid")
                kind = setting_type(name, where)
                if name in grid:
                    raise ConfigError(f"{where}: {name} is gridded twice; give its values once")
                grid[name] = ()
            elif name is None:
                raise ConfigError(f"{option} {text!r}: expected NAME=V1,V2,…, e.g. window=2,4,8")
            if value.strip() or not eq:  # ``name=`` alone: values follow in the next tokens
                parsed = kind.parse(value, where)
                if parsed in grid[name]:
                    raise ConfigError(f"{where}: {name} lists {value.strip()} twice; give each value once")
                grid[name] += (parsed,)
        if name is None:
            raise ConfigError(f"{option} {text!r}: expected NAME=V1,V2,…, e.g. window=2,4,8")
    empty = [name for name, values in grid.items() if not values]
    if empty:
        raise ConfigError(f"{option}: {', '.join(empty)} has no values; write {empty[0]}=V1,V2,…")
    return grid


def value_text(value: Any) -> str:
    """A grid value as written in tables and folder names: ``true``, ``0.001``, ``128/64``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "/".join(value_text(v) for v in value)
    if value is None:
        return "none"
    return repr(value) if isinstance(value, float) else str(value)


def point_text(point: Point, separator: str = ",") -> str:
    """A grid point as ``lr=0.001,window=4``."""
    return separator.join(f"{name}={value_text(value)}" for name, value in point)


def points(grid: Grid) -> list[Point]:
    """Every point of the product of the grid's values, the first name varying slowest."""
    return [tuple(zip(grid, values)) for values in itertools.product(*grid.values())]


# --- trials -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Trial:
    """One rule label at one grid point: its complete configuration and its run folder."""

    label: str
    point: Point
    config: TrainConfig
    run_dir: Path
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def name(self) -> str:
        """``label`` and the grid point, for messages: ``biohsic lr=0.001``."""
        return f"{self.label} {point_text(self.point)}".strip()


def plan_sweep(base: TrainConfig, rules: str | Sequence[str], grid: Mapping[str, Sequence[Any]], out: str | Path,
               sources: Mapping[str, str] | None = None) -> list[Trial]:
    """One :class:`Trial` per rule label × grid point, each resolved and validated (so a bad
    setting is reported before anything trains). ``sources``: where ``base``'s settings came
    from; a trial's rule comes from ``--rules`` and its grid values from ``--grid``."""
    sources = dict(sources or config_sources(base))
    trials = []
    for rule, modulator in parse_rules(rules, base.modulator):
        label = rule_label(rule, modulator)
        folder = Path(out) / label.replace(":", "-")
        for point in points({name: tuple(values) for name, values in grid.items()}):
            config = dataclasses.replace(base, rule=rule, modulator=modulator, **dict(point)).resolved()
            check_config(config)
            run_dir = folder / point_text(point).replace("/", "x") if point else folder
            trial_sources = {**sources, "rule": "--rules", "modulator": "--rules", **{k: "--grid" for k, _ in point}}
            trials.append(Trial(label, point, config, run_dir, trial_sources))
    return trials


def trial_state(trial: Trial) -> str:
    """What to do with ``trial.run_dir``: ``"reuse"`` (a finished run of this configuration),
    ``"resume"`` (a checkpoint of this configuration with fewer epochs) or ``"new"``.
    Raises :class:`CheckpointError` when the folder holds a run with other settings or more epochs."""
    folder = trial.run_dir
    has_checkpoint = bool(checkpoint_paths(folder))
    if not (has_checkpoint or (folder / "summary.json").exists()):
        return "new"
    mismatch = settings_mismatch(trial.config, folder)
    if mismatch:
        raise CheckpointError(f"{folder} holds a {trial.label} run with other settings ({mismatch}); "
                              "use the same options or choose another --out")
    summary = read_json(folder / "summary.json") if (folder / "summary.json").exists() else {}
    done = int(summary.get("epochs_completed", 0))
    if done > trial.config.epochs:
        raise CheckpointError(f"{folder} holds {done} epochs of {trial.label}, more than --epochs "
                              f"{trial.config.epochs}; pass --epochs {done} or choose another --out")
    if summary.get("status") in ("completed", "diverged") and summary.get("config") == saved_form(trial.config):
        return "reuse"
    return "resume" if has_checkpoint else "new"


def trial_threads(config: TrainConfig, workers: int, threads: int | None = None) -> int | None:
    """Torch threads of one trial: ``threads`` when given; one for a streaming rule; otherwise
    the cores shared among ``workers`` trials at once (``None``: torch's own default, one worker)."""
    if threads is not None:
        return threads
    if RULES[config.rule].streaming:
        return 1
    return None if workers == 1 else max(1, cpu_count() // workers)


def cpu_count() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# --- running one trial ------------------------------------------------------------------
@dataclass(frozen=True)
class TrialJob:
    """Everything a worker needs to run one trial (picklable)."""

    config: TrainConfig
    run_dir: str
    sources: dict[str, str]
    state: str
    threads: int | None
    download: bool = False
    progress: bool = False
    return_files: bool = False


@dataclass(frozen=True)
class TrialOutcome:
    """What a trial left: its summary, or the one-line error that stopped it; with
    ``return_files``, the files of its run folder (for a driver that does not share its disk)."""

    summary: dict[str, Any] | None
    error: str | None = None
    files: dict[str, bytes] = field(default_factory=dict)


def run_trial(job: TrialJob) -> TrialOutcome:
    """Train (or resume) one trial into its run folder; never raises for the trial's own
    failures (they become ``error``). A diverged run returns its summary (status ``diverged``)."""
    run_dir = Path(job.run_dir)
    try:
        trainer = Trainer(job.config, run_dir=run_dir, progress=job.progress, download=job.download,
                          threads=job.threads, sources=job.sources)
        if job.state == "resume":
            trainer.resume()
        try:
            summary = trainer.run()
        except DivergenceError:
            summary = read_json(run_dir / "summary.json")
    except Exception as err:  # a trial's failure of any kind is its row, not the sweep's end
        return TrialOutcome(None, error_line(err))
    files = {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()} if job.return_files else {}
    return TrialOutcome(summary, files=files)


def error_line(err: BaseException) -> str:
    """``Type: first line of the message`` (``Type`` alone for an empty message)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def materialize(run_dir: Path, files: Mapping[str, bytes]) -> None:
    """Write a trial's returned run-folder files where this process sees none (a cluster whose
    nodes do not share ``--out``); a folder the trial wrote in place is left as it is."""
    if not files or (run_dir / "summary.json").exists():
        return
    with RunFolderLock(run_dir):
        for name, data in files.items():
            atomic_write_bytes(run_dir / name, data)


# --- executors --------------------------------------------------------------------------
OnDone = Callable[[int, TrialOutcome], None]


class Executor(abc.ABC):
    """Runs trial jobs; ``on_done(index, outcome)`` is called in this process as each ends."""

    #: trials at once
    workers: int = 1
    #: whether jobs return their run folder's files (their disk may not be this process's)
    returns_files: bool = False

    @abc.abstractmethod
    def run(self, jobs: Sequence[TrialJob], on_done: OnDone) -> None:
        """Run every job; return when all have ended."""

    def close(self) -> None:
        """Release what the executor holds (processes, a connection)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def describe(self) -> str:
        return f"{type(self).__name__} ({self.workers} at once)"


class SerialExecutor(Executor):
    """One trial after another, in this process (progress bars allowed)."""

    def run(self, jobs: Sequence[TrialJob], on_done: OnDone) -> None:
        for index, job in enumerate(jobs):
            on_done(index, run_trial(job))

    def describe(self) -> str:
        return "in this process, one trial at a time"


def _worker_loop(connection, runner: Callable[[TrialJob], TrialOutcome]) -> None:
    """The body of a :class:`ProcessExecutor` worker: run each job received, send its outcome,
    until ``None`` arrives."""
    while (job := connection.recv()) is not None:
        connection.send(runner(job))
    connection.close()


@dataclass
class _Worker:
    """A worker process, the parent's end of its pipe, and the job it runs (index, or None)."""

    process: Any
    connection: Any
    job: int | None = None


class ProcessExecutor(Executor):
    """``workers`` processes (``spawn``: nothing of this process's state is shared), each
    running one trial after another. A process that dies without an outcome (out of memory,
    killed) fails only its trial; a fresh process takes its place. ``runner``: what a worker
    calls with each job (a module-level function; :func:`run_trial`)."""

    def __init__(self, workers: int, runner: Callable[[TrialJob], TrialOutcome] = run_trial):
        if workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        self.workers = workers
        self.runner = runner
        self.context = multiprocessing.get_context("spawn")

    def _start(self) -> _Worker:
        parent, child = self.context.Pipe()
        process = self.context.Process(target=_worker_loop, args=(child, self.runner))
        process.start()
        child.close()
        return _Worker(process, parent)

    def run(self, jobs: Sequence[TrialJob], on_done: OnDone) -> None:
        waiting = list(range(len(jobs)))
        pool = [self._start() for _ in range(min(self.workers, len(jobs)))]
        try:
            while waiting or any(w.job is not None for w in pool):
                for worker in pool:
                    if worker.job is None and waiting:
                        worker.job = waiting.pop(0)
                        worker.connection.send(jobs[worker.job])
                busy = [w for w in pool if w.job is not None]
                ready = wait([w.connection for w in busy] + [w.process.sentinel for w in busy])
                for worker in busy:
                    if worker.connection not in ready and worker.process.sentinel not in ready:
                        continue
                    index, outcome = worker.job, self._receive(worker)
                    worker.job = None
                    if outcome.error is not None and not worker.process.is_alive():
                        worker.process.join()
                        pool[pool.index(worker)] = self._start()
                    on_done(index, outcome)
        finally:
            self._stop(pool)

    @staticmethod
    def _receive(worker: _Worker) -> TrialOutcome:
        """The outcome the worker sent, or a failure when it died first."""
        try:
            return worker.connection.recv()
        except (EOFError, OSError):
            worker.process.join()
            return TrialOutcome(None, f"the trial's process ended with exit code {worker.process.exitcode} before "
                                      "it finished (out of memory? killed?); rerun the sweep to retry it")

    @staticmethod
    def _stop(pool: Sequence[_Worker]) -> None:
        """Let idle workers exit; end those still running a trial (interrupted: it resumes on rerun)."""
        for worker in pool:
            if worker.job is None and worker.process.is_alive():
                try:
                    worker.connection.send(None)
                except OSError:
                    pass
            else:
                worker.process.terminate()
        for worker in pool:
            worker.process.join()
            worker.connection.close()

    def describe(self) -> str:
        return f"local processes, {self.workers} trials at once"


class RayExecutor(Executor):
    """Each trial a Ray task of as many CPUs as it uses threads. ``address``: an existing cluster
    (``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``), left running by :meth:`close`; ``None``
    starts a local Ray instance of ``workers`` CPUs (no dashboard), shut down by :meth:`close`. The trials of a cluster return their run
    folders' files, written here where the cluster's nodes do not share this disk."""

    def __init__(self, workers: int, address: str | None = None, object_store_mb: int | None = None):
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs Ray: pip install 'biohsic[ray]'") from None
        if workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        if address is not None:
            check_reachable(address)
        self.ray = ray
        options: dict[str, Any] = dict(log_to_driver=False)
        if address is None:  # a local instance: our CPUs, no dashboard
            options.update(num_cpus=workers, include_dashboard=False)
            if object_store_mb is not None:
                options.update(object_store_memory=object_store_mb * 1024 * 1024)
        try:  # "local": a new instance, even where `ray start` left one (or a stale pointer to one)
            ray.init(address=address or "local", **options)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise ConfigError(f"cannot start or join Ray at {address or 'a local instance'} ({error_line(err)}); "
                              "check --address (e.g. HOST:6379 of a running `ray start --head`)") from None
        self.started_here = address is None
        self.returns_files = address is not None
        self.workers = workers if address is None else max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.remote = ray.remote(run_trial)

    def run(self, jobs: Sequence[TrialJob], on_done: OnDone) -> None:
        ray = self.ray
        pending = {self.remote.options(num_cpus=job.threads or 1).remote(job): index for index, job in enumerate(jobs)}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    index = pending.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except ray.exceptions.RayError as err:
                        outcome = TrialOutcome(None, error_line(err))
                    on_done(index, outcome)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        self.ray.shutdown()  # stops a local instance; disconnects from a cluster

    def describe(self) -> str:
        return f"Ray, {self.workers} CPUs" + ("" if self.started_here else " (joined cluster)")


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """A :class:`ConfigError` unless ``HOST:PORT`` (or ``ray://HOST:PORT``) accepts a TCP
    connection within ``timeout`` seconds (``auto`` is left to Ray)."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise ConfigError(f"--address {address}: no Ray cluster reachable there ({err.strerror or err}); start one "
                          "with `ray start --head` and pass the address it prints") from None


def make_executor(name: str, workers: int | None = None, address: str | None = None) -> Executor:
    """``local`` (``workers`` processes; in this process for one worker) or ``ray``;
    ``workers`` defaults to the cores of this machine."""
    workers = cpu_count() if workers is None else workers
    if name == "local":
        if address is not None:
            raise ConfigError("--address is for --executor ray; drop it or add --executor ray")
        return SerialExecutor() if workers == 1 else ProcessExecutor(workers)
    if name == "ray":
        return RayExecutor(workers, address)
    raise ConfigError(f"unknown --executor {name!r}; choose one of {', '.join(EXECUTORS)}")


# --- results ----------------------------------------------------------------------------
def mean_sd(values: Sequence[float] | None) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); sd is nan for one value, both nan for none;
    with a non-finite value (a diverged loss) the plain mean and an sd of nan."""
    if not values:
        return math.nan, math.nan
    if not all(math.isfinite(v) for v in values):
        return sum(values) / len(values), math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


@dataclass(frozen=True)
class TrialResult:
    """A trial's outcome aggregated over its seeds: mean and sample sd of each metric."""

    trial: Trial
    status: str
    epochs_completed: int
    val_accuracy: tuple[float, float]
    val_loss: tuple[float, float]
    test_accuracy: tuple[float, float]
    test_loss: tuple[float, float]
    train_accuracy: tuple[float, float]
    samples_per_second: float
    wall_seconds: float
    error: str = ""

    @property
    def label(self) -> str:
        return self.trial.label

    @property
    def config(self) -> TrainConfig:
        return self.trial.config

    @property
    def run_dir(self) -> Path:
        return self.trial.run_dir


def result_of(trial: Trial, outcome: TrialOutcome) -> TrialResult:
    """The :class:`TrialResult` of a trial's summary (or of its failure)."""
    nan = (math.nan, math.nan)
    if outcome.summary is None:
        return TrialResult(trial, "failed", 0, nan, nan, nan, nan, nan, math.nan, math.nan, outcome.error or "")
    summary = outcome.summary
    per_model = summary.get("per_model") or {}
    stats = {key: mean_sd(per_model.get(key)) for key in
             ("val_accuracy", "val_loss", "test_accuracy", "test_loss", "train_accuracy")}
    return TrialResult(trial, summary["status"], int(summary["epochs_completed"]), **stats,
                       samples_per_second=float(summary["samples_per_second"]),
                       wall_seconds=float(summary["wall_seconds"]))


def log_line(message: str) -> None:
    """Print a progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


def check_data(trials: Sequence[Trial], download: bool = False) -> None:
    """Load each distinct dataset of the trials once and check that every trial can run on it
    (:func:`~biohsic.train.check_run_fits`), so that missing or damaged files, a window or
    batch larger than the data or a run too large for memory are reported before anything trains."""
    datasets = {}
    for trial in trials:
        c = trial.config
        key = (c.task, c.data_dir, c.data_seed, c.val_fraction)
        if key not in datasets:
            datasets[key] = load_dataset(c, download=download)
        check_run_fits(c, datasets[key])


def prepare(trials: Sequence[Trial], download: bool = False) -> list[str]:
    """Every trial's state (:func:`trial_state`), after checking the folders and the data:
    raises before anything is written."""
    names = [t.run_dir for t in trials]
    if len(set(names)) != len(names):
        raise ConfigError("two trials share a run folder; give each grid value once")
    check_data(trials, download)
    return [trial_state(t) for t in trials]


def run_sweep(trials: Sequence[Trial], executor: Executor, *, states: Sequence[str] | None = None,
              download: bool = False, progress: bool = False, threads: int | None = None,
              log: Callable[[str], None] = log_line) -> list[TrialResult]:
    """Run every trial not already finished on ``executor``; return one result per trial, in
    order. ``states``: from :func:`prepare` (computed here when not given)."""
    states = list(states) if states is not None else prepare(trials, download)
    outcomes: dict[int, TrialOutcome] = {}
    jobs, indices = [], []
    for index, (trial, state) in enumerate(zip(trials, states)):
        if state == "reuse":
            summary = read_json(trial.run_dir / "summary.json")
            log(f"{trial.name}: reusing {trial.run_dir} ({summary['status']}, {summary['epochs_completed']} epochs)")
            outcomes[index] = TrialOutcome(summary)
            continue
        verb = "resuming" if state == "resume" else "training"
        log(f"{trial.name}: {verb} {trial.config.seeds} seeds side by side into {trial.run_dir}")
        jobs.append(TrialJob(trial.config, str(trial.run_dir), dict(trial.sources), state,
                             trial_threads(trial.config, executor.workers, threads), download,
                             progress and isinstance(executor, SerialExecutor), executor.returns_files))
        indices.append(index)

    def done(position: int, outcome: TrialOutcome) -> None:
        index = indices[position]
        trial = trials[index]
        materialize(trial.run_dir, outcome.files)
        outcomes[index] = dataclasses.replace(outcome, files={})
        if outcome.summary is None:
            log(f"{trial.name}: FAILED: {outcome.error}")
        else:
            summary = outcome.summary
            val = summary.get("val_accuracy")
            log(f"{trial.name}: {summary['status']} after {summary['epochs_completed']} epochs"
                + (f", val_accuracy={val:.4f}" if val is not None else ""))

    if jobs:
        executor.run(jobs, done)
    return [result_of(trial, outcomes[index]) for index, trial in enumerate(trials)]


# --- tables and figure ------------------------------------------------------------------
def pm(value: tuple[float, float], scale: float = 100.0, digits: int = 2) -> str:
    """``mean ± sd`` scaled (``–`` for none; no ``± sd`` for one seed)."""
    mean, sd = value
    if math.isnan(mean):
        return "–"
    return f"{mean * scale:.{digits}f}" + ("" if math.isnan(sd) else f" ± {sd * scale:.{digits}f}")


def epochs_text(result: TrialResult) -> str:
    """``15``, ``3 of 15`` or ``1 of 2, diverged``."""
    if result.status == "failed":
        return "failed"
    text = str(result.epochs_completed) if result.epochs_completed == result.config.epochs else \
        f"{result.epochs_completed} of {result.config.epochs}"
    return text if result.status == "completed" else f"{text}, {result.status}"


def relative_dir(result: TrialResult, out: Path) -> str:
    """The trial's run folder relative to ``out`` (so tables of two output folders compare)."""
    try:
        return result.run_dir.relative_to(out).as_posix()
    except ValueError:
        return result.run_dir.as_posix()


def grid_names(results: Sequence[TrialResult]) -> list[str]:
    """The swept settings of the results, in the grid's order."""
    names: dict[str, None] = {}
    for r in results:
        names.update(dict.fromkeys(name for name, _ in r.trial.point))
    return list(names)


def sweep_markdown(results: Sequence[TrialResult], out: Path) -> str:
    """The sweep as a Markdown table: one line per trial, accuracy in %, mean ± sd over seeds."""
    names = grid_names(results)
    head = ["rule", *names, "seeds", "epochs", "val accuracy (%)", "test accuracy (%)", "val loss", "test loss",
            "run folder"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        point = dict(r.trial.point)
        cells = [r.label, *(value_text(point[n]) if n in point else "" for n in names), str(r.config.seeds),
                 epochs_text(r), pm(r.val_accuracy), pm(r.test_accuracy), pm(r.val_loss, 1, 3), pm(r.test_loss, 1, 3),
                 relative_dir(r, out) + (f" ({r.error})" if r.error else "")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def sweep_csv(results: Sequence[TrialResult], out: Path) -> str:
    """``sweep.csv``: one line per trial, plain numbers (accuracy as a fraction; empty for none)."""
    names = grid_names(results)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["rule", *names, *RESULT_COLUMNS])

    def num(value: float) -> str:
        return "" if math.isnan(value) else repr(value)

    for r in results:
        point = dict(r.trial.point)
        writer.writerow([r.label, *(value_text(point[n]) if n in point else "" for n in names), r.config.seeds,
                         r.config.epochs, r.epochs_completed, r.status, *map(num, r.val_accuracy),
                         *map(num, r.val_loss), *map(num, r.test_accuracy), *map(num, r.test_loss),
                         relative_dir(r, out), r.error])
    return buffer.getvalue()


def sweep_curves(results: Sequence[TrialResult], name: str) -> dict[str, dict[str, list]]:
    """For swept setting ``name``: one line per rule and combination of the other swept
    settings, its points ``(value, val mean, val sd, test mean, test sd)`` in grid order."""
    lines: dict[str, dict[str, list]] = {}
    for r in results:
        point = dict(r.trial.point)
        if name not in point or r.status == "failed":
            continue
        rest = point_text(tuple((k, v) for k, v in r.trial.point if k != name), " ")
        line = lines.setdefault(f"{r.label} {rest}".strip(), {k: [] for k in
                                ("value", "val_mean", "val_sd", "test_mean", "test_sd")})
        line["value"].append(point[name])
        for key, (mean, sd) in (("val", r.val_accuracy), ("test", r.test_accuracy)):
            line[f"{key}_mean"].append(mean)
            line[f"{key}_sd"].append(0.0 if math.isnan(sd) else sd)
    return lines


def write_sweep_outputs(results: Sequence[TrialResult], out: Path, stem: str = "sweep") -> None:
    """``<stem>.md``, ``<stem>.csv`` and (with matplotlib, for a non-empty grid) ``<stem>.png`` in ``out``."""
    atomic_write_text(out / f"{stem}.md", sweep_markdown(results, out))
    atomic_write_text(out / f"{stem}.csv", sweep_csv(results, out))
    names = grid_names(results)
    if not names:
        return
    base = results[0].config
    try:
        plot_sweep({name: sweep_curves(results, name) for name in names}, out / f"{stem}.png",
                   title=f"{base.task}, {base.seeds} seeds (mean ± sd)")
    except ImportError:  # matplotlib is an optional extra
        return


def sweep(base: TrainConfig, rules: str | Sequence[str], grid: Mapping[str, Sequence[Any]], out: str | Path, *,
          executor: Executor | None = None, sources: Mapping[str, str] | None = None, download: bool = False,
          progress: bool = False, threads: int | None = None,
          log: Callable[[str], None] = log_line) -> list[TrialResult]:
    """Plan, check and run the sweep of ``rules`` × ``grid`` with ``base``'s other settings into
    ``out`` (default executor: this process, one trial at a time); write its tables and figure
    and return one result per trial."""
    out = Path(out)
    trials = plan_sweep(base, rules, grid, out, sources)
    executor = executor or SerialExecutor()
    with RunFolderLock(out):  # one sweep writes its tables at a time (removed again if bad input stops it)
        states = prepare(trials, download)
        start = time.perf_counter()
        results = run_sweep(trials, executor, states=states, download=download, progress=progress,
                            threads=threads, log=log)
        write_sweep_outputs(results, out)
        write_json(out / "sweep.json", {
            "executor": executor.describe(), "wall_seconds": time.perf_counter() - start,
            "trials": len(results), "trained": sum(state != "reuse" for state in states),
            "grid": {name: [value_text(v) for v in values] for name, values in grid.items()},
            "failed": {r.trial.name: r.error for r in results if r.status == "failed"}})
    return results


__all__ = ["ALL", "EXECUTORS", "Executor", "ProcessExecutor", "RayExecutor", "SerialExecutor", "Trial", "TrialJob",
           "TrialOutcome", "TrialResult", "all_labels", "check_reachable", "make_executor", "mean_sd", "parse_grid",
           "parse_rules", "plan_sweep", "points", "prepare", "result_of", "rule_label", "run_sweep", "run_trial",
           "sweep", "sweep_csv", "sweep_markdown", "trial_state", "value_text", "write_sweep_outputs"]
