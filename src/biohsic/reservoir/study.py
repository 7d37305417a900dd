r"""Training the reservoir a priori, evaluating it frozen, and the capacity study (SPEC §4).

The a priori stream is unrelated to any task: K independent streams of inputs
:math:`x \sim \mathcal N(0, I)` (``"random"``) or :math:`x = \mu_y + \mathcal N(0, I)` with
fixed random class centres (``"clusters"``, label-correlated inputs), uniform one-hot
labels y, and a layer output :math:`z = \mathrm{LN}(\mathrm{relu}(W x + b))` from a fixed
random hidden layer (:class:`biohsic.network.HiddenLayer`), so that z looks like a layer's
output and the layer's local term :math:`J_N^\top g` is defined. The target of sample t is
the exact :math:`g_N` of the window of samples t-N+1..t
(:func:`biohsic.functional.modulatory_signal`).

Each stream first runs ``washout`` + N - 1 samples without learning or scoring (the
reservoir forgets its zero start and the window fills), then every sample is learned from
(training) or scored (evaluation). Scores, on samples the readout never saw:

- ``r2``, ``cosine``: :math:`R^2` and mean cosine between the reservoir's output and g_N;
- ``update_r2``, ``update_cosine``: the same for the layer's update :math:`J_N^\top o`
  against :math:`J_N^\top g_N` (flattened (dW, db), through the same random layer).
"""
from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import torch
from torch import Tensor

from ..config import require_finite
from ..errors import ConfigError, DivergenceError
from ..functional.modulator import modulatory_signal
from ..functional.reservoir import (MemoryCapacity, memory_capacity, r2_from_moments, r2_score, ridge_readout,
                                    ridge_validation_sse, row_cosines)
from ..network import HiddenLayer
from ..plots import plot_capacity
from ..runs import atomic_write_text
from ..seeding import seeded_generator
from .learners import FORCE_ALPHA, LEARNERS, ReadoutLearner, Ridge
from .model import Reservoir, ReservoirConfig, writing_to

STREAM_KINDS = ("random", "clusters")
CAPACITY_WINDOWS = (2, 4, 8, 16, 32)
CAPACITY_UNITS = (250, 500, 1000, 2000, 4000)
RIDGE_ALPHAS = (1e-4, 1e-3, 0.01, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6)


@dataclass(frozen=True)
class StreamSettings:
    """A stream of a priori samples: ``samples`` scored/learned samples in all, spread over
    ``streams`` parallel streams (one reservoir copy each), after ``washout`` + N - 1
    unscored samples per stream. ``data_seed`` draws the samples, ``task_seed`` the fixed
    random layer (and the class centres of ``"clusters"``)."""

    samples: int = 4096
    streams: int = 32
    washout: int = 20
    kind: str = "random"
    data_seed: int = 0
    task_seed: int = 0

    def __post_init__(self) -> None:
        if self.samples < 1 or self.streams < 1:
            raise ConfigError(f"--samples and --streams must be positive, got {self.samples} and {self.streams}")
        if self.washout < 0:
            raise ConfigError(f"--washout must be non-negative, got {self.washout}")
        if self.kind not in STREAM_KINDS:
            raise ConfigError(f"unknown --stream {self.kind!r}; choose one of {', '.join(STREAM_KINDS)}")

    def per_stream(self) -> int:
        """Scored samples per stream (rounded up)."""
        return math.ceil(self.samples / self.streams)


@dataclass(frozen=True)
class LearnSettings:
    """Which readout learner trains the reservoir a priori, and its parameters.

    ``alphas``: the force/ridge penalty α (P0 = I/α). Several values (ridge only) are tried
    on a separate validation stream of ``validation`` × the training samples (data seed
    + 1 000 000), and the best is kept for each window: a bigger reservoir needs a
    stronger penalty for the same number of samples, so a fixed α would confound the
    capacity study with over-fitting (the classic FORCE α = 1 over-fits g_N: frozen R² < 0
    at M = 2000 with 4096 samples), and the best α depends on the rates' scale, so on the
    dynamics (1e3–1e5 with SPEC §4's, ≤ 100 with a weak input). ``None``: the grid
    :data:`RIDGE_ALPHAS` for ridge, :data:`FORCE_ALPHA` for force (what the validation picks
    with SPEC §4's dynamics).
    """

    learner: str = "force"
    lr: float = 5e-4
    alphas: tuple[float, ...] | None = None
    every_step: bool = False
    validation: float = 0.25

    def __post_init__(self) -> None:
        alphas = self.alphas if self.alphas is not None else RIDGE_ALPHAS if self.learner == "ridge" else (FORCE_ALPHA,)
        object.__setattr__(self, "alphas", tuple(float(a) for a in alphas))
        if self.learner not in LEARNERS:
            raise ConfigError(f"unknown --learner {self.learner!r}; choose one of {', '.join(LEARNERS)}")
        if not self.alphas or not all(math.isfinite(a) and a > 0 for a in self.alphas):
            raise ConfigError(f"--alpha takes positive finite values, got {','.join(map(str, self.alphas))}")
        require_finite("--lr", self.lr, positive=True)
        if len(self.alphas) > 1 and self.learner != "ridge":
            raise ConfigError("several --alpha values are tried only with --learner ridge; give one value")
        if not 0 < self.validation <= 1:
            raise ConfigError(f"--validation must be in (0, 1], got {self.validation}")

    def make(self) -> ReadoutLearner:
        if self.learner == "delta":
            return LEARNERS["delta"](lr=self.lr, every_step=self.every_step)
        return LEARNERS[self.learner](alpha=self.alphas[0], every_step=self.every_step)


class Stream(NamedTuple):
    """Samples of K parallel streams, time first: ``x`` ``(L, K, d_x)``, ``y`` ``(L, K, d_y)``,
    ``z`` ``(L, K, d_z)``, and the random ``layer`` that produced z."""

    x: Tensor
    y: Tensor
    z: Tensor
    layer: HiddenLayer


class EvalResult(NamedTuple):
    r2: float
    cosine: float
    update_r2: float
    update_cosine: float
    samples: int


class CapacityRow(NamedTuple):
    window: int
    units: int
    r2: float
    cosine: float
    update_r2: float
    update_cosine: float
    online_r2: float
    alpha: float
    seconds: float


def random_layer(d_x: int, d_z: int, task_seed: int, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> HiddenLayer:
    """The fixed random hidden layer of the a priori stream (PyTorch's default dense
    initialisation, one model), frozen."""
    layer = HiddenLayer(d_x, d_z, seeds=(task_seed,), salt=0, dtype=dtype)
    return (layer if device is None else layer.to(device)).requires_grad_(False)


def make_stream(config: ReservoirConfig, settings: StreamSettings, length: int, *, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> Stream:
    """``length`` samples of ``settings.streams`` parallel a priori streams for a reservoir
    of ``config``'s sizes (see the module docstring)."""
    k, d_x, d_y = settings.streams, config.d_x, config.d_y
    gen = seeded_generator(settings.data_seed, 101)
    labels = torch.randint(d_y, (length, k), generator=gen)
    x = torch.randn(length, k, d_x, generator=gen, dtype=torch.float64)
    if settings.kind == "clusters":
        centres = torch.randn(d_y, d_x, generator=seeded_generator(settings.task_seed, 202),
                              dtype=torch.float64)
        x = x + centres[labels]
    y = torch.nn.functional.one_hot(labels, d_y).to(dtype)
    layer = random_layer(d_x, config.d_z, settings.task_seed, dtype, device)
    x, y = x.to(dtype=dtype, device=device), y.to(device)
    with torch.no_grad():
        z = layer(x)
    return Stream(x, y, z, layer)


def window_signals(x: Tensor, y: Tensor, z: Tensor, *, window: int, gamma: float, sigmas: Sequence[float],
                   chunk_elems: int = 1 << 23) -> Tensor:
    """The exact g_N of every sliding window of a stream: ``x``, ``y``, ``z`` ``(L, K, d)``
    → ``(L, K, d_z)``, row t holding the signal of the window t-N+1..t (newest last);
    the first N - 1 rows, which have no full window, are NaN. Windows are processed in
    chunks of about ``chunk_elems`` kernel-difference elements."""
    length, k = x.shape[:2]
    out = torch.full_like(z, float("nan"))
    views = [v.unfold(0, window, 1).movedim(-1, -2) for v in (x, y, z)]  # (L-N+1, K, N, d)
    per_window = k * window * window * max(x.shape[-1], y.shape[-1], z.shape[-1])
    step = max(1, chunk_elems // per_window)
    for start in range(0, length - window + 1, step):
        chunk = [v[start:start + step] for v in views]
        out[window - 1 + start:window - 1 + start + chunk[0].shape[0]] = modulatory_signal(
            *chunk, gamma=gamma, sigmas=sigmas)
    return out


def present(reservoir: Reservoir, stream: Stream, targets: Tensor | None, *, skip: int,
            learner: ReadoutLearner | None = None) -> Tensor:
    """Reset the reservoir and present the stream sample by sample; from sample ``skip`` on,
    ``learner`` learns from ``targets`` ``(L, K, n_out)`` (neither given: frozen).
    Returns the outputs of samples ``skip``.. ``(L - skip, K, n_out)``, each taken before
    that sample's readout update (the online prediction)."""
    reservoir.reset()
    outputs = []
    for t in range(stream.x.shape[0]):
        target = targets[t] if targets is not None and t >= skip else None
        out = reservoir.step_sample(stream.x[t], stream.y[t], stream.z[t], target, learner)
        if t >= skip:
            outputs.append(out.clone())
    return _finite(torch.stack(outputs))


def _stream_targets(config: ReservoirConfig, stream: Stream, windows: Sequence[int]) -> Tensor:
    return torch.cat([window_signals(stream.x, stream.y, stream.z, window=n, gamma=config.gamma, sigmas=config.sigmas)
                      for n in windows], -1)


def _train(config: ReservoirConfig, windows: Sequence[int], train: StreamSettings, learn: LearnSettings, *,
           dtype: torch.dtype, device: torch.device | str | None) -> tuple[Reservoir, list[float], list[float]]:
    """Train one reservoir whose readout outputs g_N for each window of ``windows`` side by
    side (``n_outputs = len(windows)·d_z``); returns it frozen and reset, with the online R²
    per window (NaN for ``ridge``, whose readout exists only at the end) and the α used."""
    if learn.learner == "ridge" and config.feedback_scale != 0:
        raise ConfigError("--learner ridge needs --feedback-scale 0 (its readout exists only after training, so it "
                          "never learns with its own output fed back); with feedback use --learner force")
    skip = train.washout + max(windows) - 1
    stream = make_stream(config, train, skip + train.per_stream(), dtype=dtype, device=device)
    targets = _stream_targets(config, stream, windows)
    reservoir = Reservoir(config, dtype=dtype, device=device)
    learner = learn.make()
    outputs = present(reservoir, stream, targets, skip=skip, learner=learner)
    learner.finish(reservoir.w_out)
    alphas = [learn.alphas[0]] * len(windows)
    if len(learn.alphas) > 1:
        alphas = _choose_ridge_penalty(reservoir, learner, config, windows, train, learn)
    online = [float("nan")] * len(windows)
    if learn.learner != "ridge":
        d_z = config.d_z
        online = [float(r2_score(outputs[..., i * d_z:(i + 1) * d_z].flatten(0, 1),
                                 targets[skip:, :, i * d_z:(i + 1) * d_z].flatten(0, 1))) for i in range(len(windows))]
    reservoir.reset()
    return reservoir, online, alphas


def _choose_ridge_penalty(reservoir: Reservoir, fit: Ridge, config: ReservoirConfig, windows: Sequence[int],
                          train: StreamSettings, learn: LearnSettings) -> list[float]:
    """Write into the readout, for each window, the ridge solution whose α has the least
    squared error on a validation stream; return the chosen α per window."""
    settings = replace(train, samples=max(train.streams, math.ceil(learn.validation * train.samples)),
                       data_seed=train.data_seed + 1_000_000)
    skip = settings.washout + max(windows) - 1
    stream = make_stream(config, settings, skip + settings.per_stream(), dtype=reservoir.w_in.dtype,
                         device=reservoir.w_in.device)
    val = Ridge(dtype=fit.dtype)
    present(reservoir, stream, _stream_targets(config, stream, windows), skip=skip, learner=val)
    d_z, groups = config.d_z, len(windows)
    best = torch.full((groups,), float("inf"), dtype=fit.dtype)
    chosen = [learn.alphas[0]] * groups
    for alpha in learn.alphas:
        w = ridge_readout(fit.cov, fit.cross, alpha=alpha)
        sse = ridge_validation_sse(w, val.cov, val.cross, val.target_sq).view(groups, d_z).sum(1).cpu()
        for g in range(groups):
            if sse[g] < best[g]:
                best[g], chosen[g] = sse[g], alpha
                reservoir.w_out[g * d_z:(g + 1) * d_z] = w[g * d_z:(g + 1) * d_z]
    return chosen


def update_metrics(layer: HiddenLayer, x: Tensor, output: Tensor, target: Tensor,
                   chunk_elems: int = 1 << 22) -> tuple[float, float]:
    r"""R² and mean cosine of the layer's local update :math:`J_N^\top o` against
    :math:`J_N^\top g_N` (:meth:`biohsic.network.HiddenLayer.local_grad`, flattened (dW, db)),
    one sample per row: ``x`` ``(n, d_x)``, ``output`` and ``target`` ``(n, d_z)``.
    Accumulated in chunks, in float64."""
    n = x.shape[0]
    step = max(1, chunk_elems // (layer.weight.shape[-1] * layer.weight.shape[-2]))
    sse, t_sum, t_sq, cos_sum = 0.0, 0.0, 0.0, 0.0
    with torch.no_grad():
        for start in range(0, n, step):
            cache = layer.forward_cache(x[start:start + step].unsqueeze(1))
            pred, true = (torch.cat([p.flatten(1) for p in layer.local_grad(cache, s[start:start + step, None])],
                                    1).double() for s in (output, target))
            sse = sse + (pred - true).square().sum()
            t_sum = t_sum + true.sum(0)
            t_sq = t_sq + true.square().sum(0)
            cos_sum = cos_sum + row_cosines(pred, true).sum()
    return float(r2_from_moments(sse, t_sum, t_sq, n)), float(cos_sum / n)


def _evaluate(reservoir: Reservoir, windows: Sequence[int], settings: StreamSettings) -> list[EvalResult]:
    config, d_z = reservoir.config, reservoir.config.d_z
    skip = settings.washout + max(windows) - 1
    stream = make_stream(config, settings, skip + settings.per_stream(), dtype=reservoir.w_in.dtype,
                         device=reservoir.w_in.device)
    targets = _stream_targets(config, stream, windows)[skip:].flatten(0, 1)
    outputs = present(reservoir, stream, None, skip=skip).flatten(0, 1)
    x = stream.x[skip:].flatten(0, 1)
    results = []
    for i in range(len(windows)):
        out, tgt = outputs[:, i * d_z:(i + 1) * d_z], targets[:, i * d_z:(i + 1) * d_z]
        upd_r2, upd_cos = update_metrics(stream.layer, x, out, tgt)
        results.append(EvalResult(float(r2_score(out, tgt)), float(row_cosines(out, tgt).mean()), upd_r2, upd_cos,
                                  out.shape[0]))
    return results


def train_apriori(config: ReservoirConfig, train: StreamSettings = StreamSettings(),
                  learn: LearnSettings = LearnSettings(), *, dtype: torch.dtype = torch.float32,
                  device: torch.device | str | None = None) -> tuple[Reservoir, dict]:
    """Train a reservoir's readout a priori to output g_N of ``config.window`` on an
    unrelated stream. Returns the frozen reservoir and a summary (stored in its file by
    the CLI): learner, samples, stream settings, online R² (fit while learning)."""
    reservoir, online, alphas = _train(config, [config.window], train, learn, dtype=dtype, device=device)
    summary = {"learner": learn.learner, "lr": learn.lr, "alpha": alphas[0], "every_step": learn.every_step,
               **{f"stream_{k}": v for k, v in asdict(train).items()}, "online_r2": online[0]}
    reservoir.info = summary
    return reservoir, summary


def evaluate_frozen(reservoir: Reservoir, settings: StreamSettings) -> EvalResult:
    """Score a reservoir with its readout frozen (no learner is used, the readout is never
    written) on the stream ``settings`` describes; see the module docstring."""
    return _evaluate(reservoir, [reservoir.config.window], settings)[0]


def capacity_study(base: ReservoirConfig, train: StreamSettings, evaluation: StreamSettings, learn: LearnSettings, *,
                   windows: Sequence[int] = CAPACITY_WINDOWS, units: Sequence[int] = CAPACITY_UNITS,
                   dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
                   progress: Callable[[CapacityRow], None] | None = None) -> list[CapacityRow]:
    """Frozen-evaluation scores for every window N and reservoir size M (SPEC §4: does the
    fit degrade with N and recover with M?).

    With feedback off (``base.feedback_scale == 0``) the reservoir's dynamics do not depend
    on its readout, so one run per M trains a readout for all windows at once (RLS's P,
    or ridge's rate covariance, is shared by all outputs); with feedback on, each (N, M)
    is its own run.
    The data stream is the same for every cell.
    """
    for n in windows:  # validate every cell before the first (long) run
        for m in units:
            base.replace(window=n, units=m)
    groups = [list(windows)] if base.feedback_scale == 0 else [[n] for n in windows]
    rows = []
    for m in units:
        for group in groups:
            start = time.perf_counter()
            config = base.replace(units=m, window=max(group),
                                  n_outputs=base.d_z * len(group) if len(group) > 1 else None)
            reservoir, online, alphas = _train(config, group, train, learn, dtype=dtype, device=device)
            scores = _evaluate(reservoir, group, evaluation)
            seconds = (time.perf_counter() - start) / len(group)
            for n, score, fit, alpha in zip(group, scores, online, alphas):
                row = CapacityRow(n, m, score.r2, score.cosine, score.update_r2, score.update_cosine, fit, alpha,
                                  seconds)
                rows.append(row)
                if progress is not None:
                    progress(row)
    return sorted(rows, key=lambda row: (row.window, row.units))


def reservoir_memory_capacity(reservoir: Reservoir, *, samples: int, streams: int = 16, max_delay: int = 40,
                              seed: int = 0, driven: bool = False) -> MemoryCapacity:
    r"""Jaeger's linear memory capacity of a reservoir (its readout frozen): a scalar i.i.d.
    input :math:`u_t \sim U(-1, 1)` enters through a fixed random vector
    :math:`w_u \sim U(-1, 1)` times the reservoir's ``input_scale`` (current
    :math:`u_t w_u`, held for the T steps of a sample); the state is the rate vector at the
    last step of each sample; ``samples`` samples in all over ``streams`` streams, plus
    ``max_delay`` per stream. ``driven=True`` adds the input current of a random a priori
    stream (:func:`make_stream`) to the probe: the memory left while the reservoir does
    its job. See :func:`biohsic.functional.reservoir.memory_capacity`."""
    gen = seeded_generator(seed, 303)
    ref = reservoir.w_in
    length = max_delay + math.ceil(samples / streams)
    w_u = ((torch.rand(reservoir.config.units, generator=gen, dtype=torch.float64) * 2 - 1)
           * reservoir.config.input_scale).to(ref)
    inputs = (torch.rand(length, streams, generator=gen, dtype=torch.float64) * 2 - 1).to(ref)
    stream = (make_stream(reservoir.config, StreamSettings(streams=streams, data_seed=seed, task_seed=seed), length,
                          dtype=ref.dtype, device=ref.device) if driven else None)
    reservoir.reset()
    states = []
    for t in range(length):
        current = inputs[t, :, None] * w_u
        if stream is not None:
            current = current + reservoir.input_current(stream.x[t], stream.y[t], stream.z[t])
        reservoir.step_current(current)
        states.append(reservoir.r.clone())
    states = _finite(torch.stack(states))
    return memory_capacity(states, inputs, max_delay=max_delay)


def _finite(values: Tensor) -> Tensor:
    if not torch.isfinite(values).all():
        raise DivergenceError("the reservoir's state became non-finite; lower --gain or --input-scale "
                              "(a linear reservoir needs a gain below 1)")
    return values


# ------------------------------------------------------------------ writers
_COLUMNS = CapacityRow._fields


def capacity_csv(rows: Sequence[CapacityRow]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_COLUMNS)
    for row in rows:
        writer.writerow([row.window, row.units] + [f"{v:.6g}" for v in row[2:]])
    return buffer.getvalue()


def capacity_markdown(rows: Sequence[CapacityRow], command: str | None = None) -> str:
    """A Markdown page: the frozen-evaluation R² as a window × units grid, then every score."""
    windows = sorted({row.window for row in rows})
    units = sorted({row.units for row in rows})
    cell = {(row.window, row.units): row for row in rows}
    lines = []
    if command:
        lines += [f"Command: `{command}`", ""]
    for title, field in (("R² of the reservoir's output against g_N (frozen, unseen windows)", "r2"),
                         ("Cosine of the update J_Nᵀo against J_Nᵀg_N (frozen, unseen windows)", "update_cosine")):
        lines += [f"{title}:", "", "| N \\ M | " + " | ".join(map(str, units)) + " |",
                  "|---|" + "---|" * len(units)]
        for n in windows:
            values = [f"{getattr(cell[(n, m)], field):.3f}" if (n, m) in cell else "–" for m in units]
            lines.append(f"| {n} | " + " | ".join(values) + " |")
        lines.append("")
    lines += ["All scores (s: seconds per cell, shared when one run serves all windows):", "",
              "| N | M | R² | cosine | update R² | update cosine | online R² | α | s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row.window} | {row.units} | {row.r2:.3f} | {row.cosine:.3f} | {row.update_r2:.3f} | "
                     f"{row.update_cosine:.3f} | {row.online_r2:.3f} | {row.alpha:g} | {row.seconds:.1f} |")
    return "\n".join(lines) + "\n"


def write_capacity(rows: Sequence[CapacityRow], out_dir, command: str | None = None) -> str:
    """Write ``capacity.csv``, ``capacity.md`` and ``capacity.png`` into ``out_dir``
    (atomically); returns the Markdown."""
    out = Path(out_dir)
    markdown = capacity_markdown(rows, command)
    with writing_to(out):
        atomic_write_text(out / "capacity.csv", capacity_csv(rows))
        atomic_write_text(out / "capacity.md", markdown)
        plot_capacity(rows, out / "capacity.png")
    return markdown
