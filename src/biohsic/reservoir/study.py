r"""Training the reservoir a priori, evaluating it frozen, and the capacity study (SPEC §4).

The a priori stream is not the task's training data: K independent streams of inputs
:math:`x \sim \mathcal N(0, I)` (``"random"``), :math:`x = \mu_y + \mathcal N(0, I)` with
fixed random class centres (``"clusters"``, label-correlated inputs), or drawn from a model
of a task's inputs (``"task-gaussian"``: per class, the class mean plus a Gaussian of rank
:data:`TASK_STREAM_RANK` along the leading principal directions of the within-class spread,
plus isotropic noise with the variance they leave; fitted on the task's *validation* split,
which the network never trains on, so task-like inputs whose labels depend on them);
uniform one-hot labels y; and a layer output :math:`z = \mathrm{LN}(\mathrm{relu}(W a + b))`
from a fixed random hidden layer (:class:`biohsic.network.HiddenLayer`), so that z looks
like a layer's output and the layer's local term :math:`J_N^\top g` is defined. On a task
stream the layer is the last of a random network of the task's shape (``hidden``, the
widths up to and including the layer; its own salts, so never one of a run's networks)
and its input ``a`` is the previous layer's output; otherwise ``a = x``. The target of sample t is
the exact :math:`g_N` of the window of samples t-N+1..t
(:func:`biohsic.functional.modulatory_signal`).

Each stream first runs ``washout`` + N - 1 samples without learning or scoring (the
reservoir forgets its zero start and the window fills), then every sample is learned from
(training) or scored (evaluation). Scores, on samples the readout never saw:

- ``r2``, ``cosine``: :math:`R^2` and mean cosine between the reservoir's output and g_N;
- ``update_r2``, ``update_cosine``: the same for the layer's update :math:`J_N^\top o`
  against :math:`J_N^\top g_N` (flattened (dW, db), through the same random layer);
- ``update_cosine_100``: the cosine of the updates summed over blocks of
  :data:`AGGREGATE_BLOCK` consecutive samples of a stream (what a small learning rate applies);
- ``ceiling_cosine``, ``ceiling_cosine_100``: the same two cosines for the ceiling
  :math:`E[g_N \mid \text{current sample}]`, estimated by averaging :math:`g_N` over
  :data:`CEILING_HISTORIES` random histories drawn from the stream
  (:func:`biohsic.functional.reservoir.expected_signal`); ``ceiling_r2``, ``ceiling_update_r2``
  its R² against g_N and of its update.
"""
from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import torch
from torch import Tensor

from ..config import TrainConfig, require_finite
from ..data import Dataset, load_task, split_validation
from ..errors import ConfigError, DivergenceError
from ..functional.modulator import modulatory_signal
from ..functional.reservoir import (MemoryCapacity, block_update_cosines, expected_signal, memory_capacity,
                                    r2_from_moments, r2_score, ridge_readout, ridge_validation_sse, row_cosines)
from ..network import HiddenLayer
from ..plots import plot_capacity
from ..runs import atomic_write_text
from ..seeding import seeded_generator
from .learners import FORCE_ALPHA, LEARNERS, ReadoutLearner, Ridge
from .model import Reservoir, ReservoirConfig, writing_to

STREAM_KINDS = ("random", "clusters", "task-gaussian")
#: The streams drawn from a model of a task's inputs (they need ``StreamSettings.task``).
TASK_STREAMS = ("task-gaussian",)
#: Rank of the within-class Gaussian of ``"task-gaussian"``.
TASK_STREAM_RANK = 32
#: The random network of a task stream uses salts from here on (a run's networks use 0, 1, …).
STREAM_NETWORK_SALT = 7000
#: Consecutive samples whose updates are summed for the aggregated cosine.
AGGREGATE_BLOCK = 100
#: Random histories averaged for the ceiling E[g_N | current sample].
CEILING_HISTORIES = 32
CAPACITY_WINDOWS = (2, 4, 8, 16, 32)
CAPACITY_UNITS = (250, 500, 1000, 2000, 4000)
RIDGE_ALPHAS = (1e-4, 1e-3, 0.01, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6)


@dataclass(frozen=True)
class StreamSettings:
    """A stream of a priori samples: ``samples`` scored/learned samples in all, spread over
    ``streams`` parallel streams (one reservoir copy each), after ``washout`` + N - 1
    unscored samples per stream. ``data_seed`` draws the samples, ``task_seed`` the fixed
    random layer (and the class centres of ``"clusters"``). Task streams: ``task`` (and
    its ``data_dir``), whose validation split of ``fit_fraction`` at data seed ``fit_seed``
    (a run's ``--val-fraction`` and ``--data-seed``) the input model is fitted on;
    ``hidden``: the widths of the random network up to the layer (default: one layer);
    ``network_seed``: use instead the initial network of the run's model of that seed (its
    layers exactly as :class:`biohsic.network.Network` draws them), not a random one."""

    samples: int = 4096
    streams: int = 32
    washout: int = 20
    kind: str = "random"
    data_seed: int = 0
    task_seed: int = 0
    task: str | None = None
    data_dir: str | None = None
    hidden: tuple[int, ...] = ()
    fit_fraction: float = TrainConfig.val_fraction
    fit_seed: int = TrainConfig.data_seed
    network_seed: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.kind in TASK_STREAMS and self.task is None:
            raise ConfigError(f"--stream {self.kind} is drawn from a model of a task's inputs; use it with "
                              f"`biohsic reservoir train-task --task TASK`")
        if self.network_seed is not None and not (self.kind in TASK_STREAMS and self.hidden):
            raise ConfigError("--network-seed needs --stream task-gaussian (the run's own network serves a task stream)")
        if self.kind in TASK_STREAMS and not 0 < self.fit_fraction < 1:
            raise ConfigError(f"--stream {self.kind} is fitted on the task's validation split; its fraction must be "
                              f"in (0, 1), got {self.fit_fraction}")
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
    ``z`` ``(L, K, d_z)``, the random ``layer`` that produced z and its input ``a``
    ``(L, K, d_in)`` (``x`` itself for a one-layer stream)."""

    x: Tensor
    y: Tensor
    z: Tensor
    layer: HiddenLayer
    a: Tensor


class EvalResult(NamedTuple):
    r2: float
    cosine: float
    update_r2: float
    update_cosine: float
    samples: int
    update_cosine_100: float = float("nan")
    ceiling_r2: float = float("nan")
    ceiling_cosine: float = float("nan")
    ceiling_update_r2: float = float("nan")
    ceiling_update_cosine: float = float("nan")
    ceiling_update_cosine_100: float = float("nan")


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
                 device: torch.device | str | None = None, salt: int = 0) -> HiddenLayer:
    """The fixed random hidden layer of the a priori stream (PyTorch's default dense
    initialisation, one model), frozen."""
    layer = HiddenLayer(d_x, d_z, seeds=(task_seed,), salt=salt, dtype=dtype)
    return (layer if device is None else layer.to(device)).requires_grad_(False)


class GaussianInputs(NamedTuple):
    r"""A model of a task's inputs: :math:`x = \mu_y + B\epsilon + s\,\xi` with
    :math:`\epsilon \sim \mathcal N(0, I_r)`, :math:`\xi \sim \mathcal N(0, I_d)`; ``means``
    ``(classes, d)``, ``basis`` ``(d, r)`` (principal directions of the within-class spread,
    each scaled by its standard deviation) and ``residual`` the per-coordinate standard
    deviation the r directions leave."""

    means: Tensor
    basis: Tensor
    residual: float

    def sample(self, labels: Tensor, generator: torch.Generator) -> Tensor:
        """One input per label (``labels`` any shape) → ``labels.shape + (d,)``, float64."""
        eps = torch.randn(*labels.shape, self.basis.shape[1], generator=generator, dtype=torch.float64)
        noise = torch.randn(*labels.shape, self.means.shape[1], generator=generator, dtype=torch.float64)
        return self.means[labels] + eps @ self.basis.transpose(0, 1) + self.residual * noise


def fit_gaussian_inputs(x: Tensor, labels: Tensor, n_classes: int, rank: int = TASK_STREAM_RANK) -> GaussianInputs:
    """Fit :class:`GaussianInputs` to inputs ``x`` ``(n, d)`` with class indices ``labels``:
    class means, then the leading ``rank`` principal directions of the within-class residuals
    (SVD, float64)."""
    x = x.double()
    counts = torch.bincount(labels, minlength=n_classes).clamp_min(1).double()
    means = torch.zeros(n_classes, x.shape[1], dtype=torch.float64).index_add_(0, labels, x) / counts[:, None]
    centred = x - means[labels]
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
    rank = min(rank, len(singular))
    scale = singular / math.sqrt(len(x))
    residual = math.sqrt(float(scale[rank:].square().sum()) / x.shape[1])
    return GaussianInputs(means, vh[:rank].transpose(0, 1) * scale[:rank], residual)


@lru_cache(maxsize=4)
def task_inputs(task: str, data_dir: str | None, fraction: float, seed: int) -> tuple[GaussianInputs, Dataset]:
    """The input model of ``task``, fitted on its validation split (``fraction`` of the
    training set at data seed ``seed``: the samples a run with those settings never trains
    on), and the split task."""
    data = split_validation(load_task(task, data_dir=data_dir, data_seed=seed), fraction, seed)
    return fit_gaussian_inputs(data.x_val, data.y_val, data.n_classes), data


def _stream_network(config: ReservoirConfig, settings: StreamSettings, dtype: torch.dtype,
                    device: torch.device | str | None) -> list[HiddenLayer]:
    """The random layers the stream's z comes from: one (salt 0) on x, or a network of the
    widths ``settings.hidden`` (its own salts)."""
    if not settings.hidden:
        return [random_layer(config.d_x, config.d_z, settings.task_seed, dtype, device)]
    if settings.hidden[-1] != config.d_z:
        raise ConfigError(f"the stream's network ends in a layer of {settings.hidden[-1]} units, the reservoir's "
                          f"layer has {config.d_z}")
    sizes = (config.d_x, *settings.hidden)
    if settings.network_seed is not None:  # the run's model: Network's seeds and salts
        return [random_layer(n_in, n_out, settings.network_seed, dtype, device, salt=i)
                for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:]))]
    return [random_layer(n_in, n_out, settings.task_seed, dtype, device, salt=STREAM_NETWORK_SALT + i)
            for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:]))]


def _stream_inputs(config: ReservoirConfig, settings: StreamSettings, labels: Tensor,
                   gen: torch.Generator) -> Tensor:
    """The inputs ``(L, K, d_x)`` (float64) of the stream's labels."""
    if settings.kind in TASK_STREAMS:
        model, data = task_inputs(settings.task, settings.data_dir, settings.fit_fraction, settings.fit_seed)
        if (data.n_features, data.n_classes) != (config.d_x, config.d_y):
            raise ConfigError(f"--task {settings.task} has inputs of size {data.n_features} and {data.n_classes} "
                              f"classes, the reservoir takes {config.d_x} and {config.d_y}")
        return model.sample(labels, gen)
    x = torch.randn(*labels.shape, config.d_x, generator=gen, dtype=torch.float64)
    if settings.kind == "clusters":
        centres = torch.randn(config.d_y, config.d_x, generator=seeded_generator(settings.task_seed, 202),
                              dtype=torch.float64)
        x = x + centres[labels]
    return x


def make_stream(config: ReservoirConfig, settings: StreamSettings, length: int, *, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> Stream:
    """``length`` samples of ``settings.streams`` parallel a priori streams for a reservoir
    of ``config``'s sizes (see the module docstring)."""
    gen = seeded_generator(settings.data_seed, 101)
    labels = torch.randint(config.d_y, (length, settings.streams), generator=gen)
    x = _stream_inputs(config, settings, labels, gen)
    y = torch.nn.functional.one_hot(labels, config.d_y).to(dtype=dtype, device=device)
    layers = _stream_network(config, settings, dtype, device)
    x = x.to(dtype=dtype, device=device)
    a = x
    with torch.no_grad():
        for layer in layers[:-1]:
            a = layer(a)
        z = layers[-1](a)
    return Stream(x, y, z, layers[-1], a)


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
    one sample per row: ``x`` ``(n, d_in)`` the layer's inputs, ``output`` and ``target``
    ``(n, d_z)``. Accumulated in chunks, in float64."""
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


def aggregated_update_cosine(layer: HiddenLayer, a: Tensor, output: Tensor, target: Tensor,
                             block: int = AGGREGATE_BLOCK) -> float:
    """The mean, over blocks of ``block`` consecutive samples of each stream, of the cosine
    of the summed updates J_tᵀo_t and J_tᵀg_t
    (:func:`~biohsic.functional.reservoir.block_update_cosines`); ``a`` ``(L, K, d_in)`` the
    layer's inputs, ``output`` and ``target`` ``(L, K, d_z)``, time first. NaN when no stream
    holds a full block."""
    with torch.no_grad():
        cache = layer.forward_cache(a.transpose(0, 1))
        pred, true = (layer.drive_grad(cache, s.transpose(0, 1)) for s in (output, target))
        cosines = torch.cat([block_update_cosines(pred[k], true[k], a[:, k], block) for k in range(a.shape[1])])
    return float(cosines.mean()) if len(cosines) else float("nan")


def ceiling_signals(stream: Stream, skip: int, config: ReservoirConfig, window: int,
                    histories: int = CEILING_HISTORIES, seed: int = 0, chunk: int = 256) -> Tensor:
    """The ceiling E[g_N | current sample] of each sample of the stream from ``skip`` on
    ``(L - skip, K, d_z)``, estimated with ``histories`` random histories drawn from those
    samples (:func:`~biohsic.functional.reservoir.expected_signal`)."""
    x, y, z = (v[skip:].flatten(0, 1) for v in (stream.x, stream.y, stream.z))
    gen = seeded_generator(seed, 404)
    parts = []
    for start in range(0, len(x), chunk):
        rows = slice(start, start + chunk)
        n = len(x[rows])
        parts.append(expected_signal(x[rows], y[rows], z[rows], *(v.expand(n, *v.shape) for v in (x, y, z)),
                                     window=window, histories=histories, gamma=config.gamma, sigmas=config.sigmas,
                                     generator=gen))
    return torch.cat(parts).unflatten(0, stream.x[skip:].shape[:2])


def _scores(layer: HiddenLayer, a: Tensor, out: Tensor, tgt: Tensor) -> tuple[float, ...]:
    """R², cosine, update R², update cosine and aggregated update cosine of ``out`` against
    ``tgt`` (``(L, K, d_z)``, time first; ``a`` the layer's inputs)."""
    flat_out, flat_tgt = out.flatten(0, 1), tgt.flatten(0, 1)
    upd_r2, upd_cos = update_metrics(layer, a.flatten(0, 1), flat_out, flat_tgt)
    return (float(r2_score(flat_out, flat_tgt)), float(row_cosines(flat_out, flat_tgt).mean()), upd_r2, upd_cos,
            aggregated_update_cosine(layer, a, out, tgt))


def _evaluate(reservoir: Reservoir, windows: Sequence[int], settings: StreamSettings,
              ceiling: bool = False) -> list[EvalResult]:
    config, d_z = reservoir.config, reservoir.config.d_z
    skip = settings.washout + max(windows) - 1
    stream = make_stream(config, settings, skip + settings.per_stream(), dtype=reservoir.w_in.dtype,
                         device=reservoir.w_in.device)
    targets = _stream_targets(config, stream, windows)[skip:]
    outputs = present(reservoir, stream, None, skip=skip)
    a = stream.a[skip:]
    results = []
    for i, window in enumerate(windows):
        out, tgt = outputs[..., i * d_z:(i + 1) * d_z], targets[..., i * d_z:(i + 1) * d_z]
        r2, cos, upd_r2, upd_cos, upd_cos_100 = _scores(stream.layer, a, out, tgt)
        bound = ()
        if ceiling:
            best = ceiling_signals(stream, skip, config, window, seed=settings.data_seed)
            b_r2, b_cos, b_upd_r2, b_upd_cos, b_upd_cos_100 = _scores(stream.layer, a, best, tgt)
            bound = (b_r2, b_cos, b_upd_r2, b_upd_cos, b_upd_cos_100)
        results.append(EvalResult(r2, cos, upd_r2, upd_cos, out.shape[0] * out.shape[1], upd_cos_100, *bound))
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


def evaluate_frozen(reservoir: Reservoir, settings: StreamSettings, ceiling: bool = False) -> EvalResult:
    """Score a reservoir with its readout frozen (no learner is used, the readout is never
    written) on the stream ``settings`` describes; ``ceiling``: score the ceiling too. See
    the module docstring."""
    return _evaluate(reservoir, [reservoir.config.window], settings, ceiling)[0]


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
