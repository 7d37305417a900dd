r"""The working-memory circuit (SPEC §4): a rate reservoir that sees one sample at a time
and learns to output the modulatory signal :math:`g_N` of a layer.

:class:`Reservoir` is a thin ``nn.Module`` over :mod:`biohsic.functional.reservoir`; its
fixed random matrices are buffers, its state is explicit (:meth:`Reservoir.reset`) and
carries a leading model dimension K: in the closed loop each of K networks drives its own
copy of one reservoir, all copies sharing the readout. How a sample is presented:

- input current :math:`I = W_{in}[P x, y, z]` of the current sample only (x the network's
  input, y its one-hot label, z the layer's output); :math:`P` is an optional fixed random
  projection of high-dimensional inputs (``input_projection`` = its output size, entries
  :math:`\mathcal N(0, 1/\text{size})`, so distances are preserved on average); without
  it :math:`P = I`;
- ``steps_per_sample`` (T) Euler steps of :func:`~biohsic.functional.reservoir.reservoir_rates_step`;
- the reservoir's answer for the sample is its readout :math:`o = W_o r` at the last step.

Readout learning (a learner of :mod:`biohsic.reservoir.learners` passed with the target)
happens by default once per sample, at its last step, on the output that is handed on
(``every_step=True`` gives the paper's update at each of the T steps). The target is that
of the current window throughout, but the state needs several of the T steps to move to
the new sample, so the last step is the one worth fitting, and once per sample costs 1/T of
the RLS work. A reservoir presented without a target is frozen: its readout never changes.

Per sample::

    signal = reservoir.step_sample(x, y, z)                   # frozen: (K, d_z), its g_N for each model
    signal = reservoir.step_sample(x, y, z, target, learner)  # learning online (the paper's mode)
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor, nn

from ..config import require_finite, require_memory
from ..errors import CheckpointError, ConfigError, require
from ..functional.reservoir import NONLINEARITIES, input_current, reservoir_output, reservoir_rates_step
from ..runs import load_torch, save_torch
from .learners import ReadoutLearner

FILE_FORMAT = "biohsic-reservoir"
FILE_VERSION = 1


@dataclass(frozen=True)
class ReservoirConfig:
    """Everything that defines a reservoir and what its readout was trained to output.

    ``d_x``, ``d_y``, ``d_z``: the network input, the number of classes and the layer
    width (the output size, unless ``n_outputs`` says otherwise). ``window``, ``gamma``
    and ``sigmas`` describe the target g_N the readout learns (they do not enter the
    dynamics). Dynamics defaults are SPEC §4: p = 0.1, λ = 1.2, τ = 5, dt = 1, T = 20,
    W_in and W_fb ~ U(-1, 1) times ``input_scale`` and ``feedback_scale``; noise is
    uniform in ±``rate_noise`` / ±``output_noise`` as in the authors' code.
    """

    # sizes: the network input, the classes, the layer's width; M reservoir units
    d_x: int
    d_y: int
    d_z: int
    units: int = 2000
    # the target the readout learns: g_N of a window of N samples with γ and (σx, σy, σz)
    window: int = 8
    gamma: float = 2.0
    sigmas: tuple[float, float, float] = (0.5, 0.1, 1.0)
    # recurrent dynamics: p, λ, τ, dt (ms), T steps per sample
    connectivity: float = 0.1
    gain: float = 1.2
    tau: float = 5.0
    dt: float = 1.0
    steps_per_sample: int = 20
    # input, feedback and noise
    input_scale: float = 1.0
    feedback_scale: float = 1.0
    rate_noise: float = 0.0
    output_noise: float = 0.0
    input_projection: int | None = None
    nonlinearity: str = "tanh"
    # the readout's size (default d_z) and the seed of every random matrix
    n_outputs: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "sigmas", tuple(float(s) for s in self.sigmas))
        self.validate()

    @property
    def outputs(self) -> int:
        """The readout's size: ``n_outputs``, or the layer width ``d_z``."""
        return self.d_z if self.n_outputs is None else self.n_outputs

    @property
    def input_size(self) -> int:
        """Size of the reservoir's input [P x, y, z]."""
        return (self.input_projection or self.d_x) + self.d_y + self.d_z

    def validate(self) -> None:
        require(self.units >= 1, f"--units must be positive (the reservoir's size), got {self.units}")
        for flag, value in (("input-dim", self.d_x), ("classes", self.d_y), ("layer-dim", self.d_z)):
            require(value >= 1, f"--{flag} must be positive, got {value}")
        require(self.window >= 2, f"--window must be at least 2 (the working memory needs two samples), got {self.window}")
        require(len(self.sigmas) == 3 and all(math.isfinite(s) and s > 0 for s in self.sigmas),
             f"--sigmas takes three positive finite values σx σy σz, got {' '.join(map(str, self.sigmas))}")
        require(0 < self.connectivity <= 1, f"--connectivity must be in (0, 1], got {self.connectivity}")
        for option, value, positive in (("--gamma", self.gamma, False), ("--tau", self.tau, True),
                                        ("--dt", self.dt, True), ("--gain", self.gain, False),
                                        ("--input-scale", self.input_scale, False),
                                        ("--feedback-scale", self.feedback_scale, False),
                                        ("--rate-noise", self.rate_noise, False),
                                        ("--output-noise", self.output_noise, False)):
            require_finite(option, value, positive=positive)
        require(self.steps_per_sample >= 1, f"--steps-per-sample must be at least 1, got {self.steps_per_sample}")
        require(self.input_projection is None or self.input_projection >= 1,
             f"--input-projection must be positive, got {self.input_projection}")
        require(self.nonlinearity in NONLINEARITIES,
             f"unknown --nonlinearity {self.nonlinearity!r}; choose one of {', '.join(NONLINEARITIES)}")
        require(self.n_outputs is None or self.n_outputs >= 1,
             f"the readout needs at least one output, got {self.n_outputs}")

    def replace(self, **changes: Any) -> "ReservoirConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ReservoirConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown reservoir config keys {', '.join(unknown)}")
        return cls(**values)


def _uniform(gen: torch.Generator, *shape: int) -> Tensor:
    return torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 - 1


def _sparse_csr(dense: Tensor) -> Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return dense.to_sparse_csr()


class Reservoir(nn.Module):
    r"""The auxiliary rate reservoir of SPEC §4 (see the module docstring for how a sample
    is presented and when the readout learns).

    Buffers: ``w_in`` ``(M, input_size)``, ``w_rec`` ``(M, M)`` sparse CSR (Gaussian entries
    of variance 1/(pM) at connection probability p, so λW_r has spectral radius ≈ λ),
    ``w_fb`` ``(M, n_out)``, ``w_out`` ``(n_out, M)`` (zero at the start) and ``proj``
    (the input projection, or empty). All are drawn in float64 from one
    ``torch.Generator`` seeded by ``config.seed``, so a reservoir is reproducible and the
    same in any precision. State: ``u``, ``r`` ``(K, M)`` and ``o`` ``(K, n_out)``, created
    at the first sample after :meth:`reset`.

    Use::

        reservoir.reset()
        for x, y, z in stream:                      # each (K, d)
            signal = reservoir.step_sample(x, y, z)  # (K, d_z), after T internal steps
    """

    def __init__(self, config: ReservoirConfig, *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None):
        super().__init__()
        self.config = config
        m, n_out = config.units, config.outputs
        # the float64 draws of W_r, its mask and their product, before they become sparse
        require_memory(25 * m * m, "cpu", f"a reservoir of --units {m}", "lower --units")
        gen = torch.Generator().manual_seed(int(config.seed))
        w_in = _uniform(gen, m, config.input_size) * config.input_scale
        mask = torch.rand(m, m, generator=gen, dtype=torch.float64) < config.connectivity
        w_rec = torch.randn(m, m, generator=gen, dtype=torch.float64) * mask / (config.connectivity * m) ** 0.5
        w_fb = _uniform(gen, m, n_out) * config.feedback_scale
        proj = (torch.randn(config.input_projection, config.d_x, generator=gen, dtype=torch.float64)
                / config.input_projection ** 0.5 if config.input_projection else torch.zeros(0, dtype=torch.float64))
        self.register_buffer("w_in", w_in.to(dtype))
        self.register_buffer("w_rec", _sparse_csr(w_rec.to(dtype)))
        self.register_buffer("w_fb", w_fb.to(dtype))
        self.register_buffer("w_out", torch.zeros(n_out, m, dtype=dtype))
        self.register_buffer("proj", proj.to(dtype))
        self.info: dict[str, Any] = {}
        self.u: Tensor | None = None
        self.r: Tensor | None = None
        self.o: Tensor | None = None
        self._noise: torch.Generator | None = None
        if device is not None:
            self.to(device)

    # ----------------------------------------------------------------- state
    def reset(self) -> None:
        """Forget the state (it restarts at u = 0 with the next sample) and restart the
        noise generator, so the same inputs give the same outputs again."""
        self.u = self.r = self.o = None
        self._noise = None

    def begin(self, n_models: int) -> None:
        """Start the state at rest for ``n_models`` models (and the noise generator) unless it
        holds them already; ``ValueError`` when it holds another number (:meth:`reset` first)."""
        if self.u is None:
            self._start(n_models)
        elif self.u.shape[0] != n_models:
            raise ValueError(f"the reservoir holds {self.u.shape[0]} models, got {n_models}; call reset() first")

    def _start(self, n_models: int) -> None:
        ref = self.w_in
        self.u = torch.zeros(n_models, self.config.units, dtype=ref.dtype, device=ref.device)
        self.r = self.u.clone()
        self.o = torch.zeros(n_models, self.config.outputs, dtype=ref.dtype, device=ref.device)
        if self.config.rate_noise or self.config.output_noise:
            self._noise = torch.Generator(device=ref.device).manual_seed(int(self.config.seed) + 7919)

    def _uniform_noise(self, like: Tensor, scale: float) -> Tensor | None:
        if not scale:
            return None
        return (torch.rand(like.shape, generator=self._noise, dtype=like.dtype, device=like.device) * 2 - 1) * scale

    def draw_noise(self, samples: int) -> tuple[Tensor | None, Tensor | None]:
        """The noise the next ``samples`` samples of :meth:`step_current` (frozen) would draw from
        this reservoir's generator, drawn now in the same order: the rate noise
        ``(samples, T, K, M)`` and the output noise ``(samples, T', K, n_out)`` (T' = T with
        feedback, else 1: the output is computed at the last step only), each ``None``
        without that noise. The state must have begun (:meth:`begin`)."""
        cfg = self.config
        outputs = cfg.steps_per_sample if cfg.feedback_scale != 0 else 1
        rates, outs = [], []
        for _ in range(samples):
            for step in range(cfg.steps_per_sample):
                rates.append(self._uniform_noise(self.u, cfg.rate_noise))
                if step >= cfg.steps_per_sample - outputs:
                    outs.append(self._uniform_noise(self.o, cfg.output_noise))

        def stacked(draws: list[Tensor | None], steps: int) -> Tensor | None:
            return torch.stack(draws).unflatten(0, (samples, steps)) if draws and draws[0] is not None else None

        return stacked(rates, cfg.steps_per_sample), stacked(outs, outputs)

    # -------------------------------------------------------------- dynamics
    def input_current(self, x: Tensor, y: Tensor, z: Tensor) -> Tensor:
        r"""The input current :math:`I = W_{in}[P x, y, z]` of one sample per model
        (``x`` ``(K, d_x)``, ``y`` ``(K, d_y)``, ``z`` ``(K, d_z)``) → ``(K, M)``."""
        cfg = self.config
        if x.shape[-1] != cfg.d_x or y.shape[-1] != cfg.d_y or z.shape[-1] != cfg.d_z:
            raise ValueError(f"the reservoir takes x, y, z of sizes {cfg.d_x}, {cfg.d_y}, {cfg.d_z}, "
                             f"got {x.shape[-1]}, {y.shape[-1]}, {z.shape[-1]}")
        return input_current(x, y, z, self.w_in, self.proj if cfg.input_projection else None)

    @torch.no_grad()
    def step_current(self, current: Tensor, target: Tensor | None = None,
                     learner: ReadoutLearner | None = None) -> Tensor:
        """Present one input current ``(K, M)`` for T steps; return the readout at the last
        step ``(K, n_out)``. With a ``target`` ``(K, n_out)``, ``learner`` updates the readout
        (each step, or once after the last step); without a target, nothing learns."""
        cfg = self.config
        if target is not None and learner is None:
            raise ValueError("a target was given without a learner; pass one (e.g. learner=Force())")
        self.begin(current.shape[0])
        if target is not None:
            target = target.to(self.w_out.dtype)
        learn_each = target is not None and learner.every_step
        need_output = learn_each or cfg.feedback_scale != 0
        w_fb = self.w_fb if cfg.feedback_scale != 0 else None
        u, r, o = self.u, self.r, self.o
        for step in range(cfg.steps_per_sample):
            u, r = reservoir_rates_step(u, r, o, current, self.w_rec, w_fb=w_fb,
                                        gain=cfg.gain, dt=cfg.dt, tau=cfg.tau, nonlinearity=cfg.nonlinearity,
                                        rate_noise=self._uniform_noise(u, cfg.rate_noise))
            if need_output or step == cfg.steps_per_sample - 1:
                o = reservoir_output(r, self.w_out, self._uniform_noise(o, cfg.output_noise))
            if learn_each:
                learner.update(self.w_out, r, o, target)
        self.u, self.r, self.o = u, r, o
        if target is not None and not learn_each:
            learner.update(self.w_out, r, o, target)
        return o

    def step_sample(self, x: Tensor, y: Tensor, z: Tensor, target: Tensor | None = None,
                    learner: ReadoutLearner | None = None) -> Tensor:
        """Present one sample per model (``x`` ``(K, d_x)``, ``y`` ``(K, d_y)``, ``z``
        ``(K, d_z)``) for T steps and return the reservoir's signal ``(K, n_out)``: the
        readout at the last step. ``target`` and ``learner``: learn (see :meth:`step_current`)."""
        return self.step_current(self.input_current(x, y, z), target, learner)

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike, info: dict[str, Any] | None = None) -> None:
        """Write the reservoir (config, matrices, readout) as a weights-only file, atomically.
        ``info``: plain values describing how it was trained (kept in the file)."""
        tensors = {name: buf.detach().cpu() for name, buf in self.named_buffers()}
        payload = {"format": FILE_FORMAT, "version": FILE_VERSION, "config": self.config.to_dict(),
                   "dtype": str(self.w_in.dtype).removeprefix("torch."), "tensors": tensors, "info": dict(info or {})}
        with writing_to(path):
            save_torch(Path(path), payload)

    @classmethod
    def load(cls, path: str | os.PathLike, *, expect_window: int | None = None,
             expect_dims: Sequence[int] | None = None, device: torch.device | str | None = None) -> "Reservoir":
        """Read a file written by :meth:`save` (``torch.load(weights_only=True)``).
        ``expect_window`` and ``expect_dims`` = (d_x, d_y, d_z)
        are what the caller needs: a file trained for another window or layer raises
        :class:`~biohsic.errors.CheckpointError`, as does a missing or corrupt file."""
        payload = read_reservoir_file(path)
        info = payload.get("info", {})
        try:
            config = ReservoirConfig.from_dict(payload["config"])
            reservoir = cls(config, dtype=getattr(torch, payload["dtype"]))
            for name, buf in reservoir.named_buffers():
                stored = payload["tensors"][name]
                if stored.shape != buf.shape or stored.layout != buf.layout:
                    raise ValueError(f"{name} has shape {tuple(stored.shape)}, expected {tuple(buf.shape)}")
                setattr(reservoir, name, stored.to(buf.dtype))
        except (ConfigError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{path} is not a valid reservoir file ({exc}); "
                                  f"train a new one with `biohsic reservoir train`") from None
        reservoir.info = info
        reservoir.check_fits(path, expect_window=expect_window, expect_dims=expect_dims)
        return reservoir.to(device) if device is not None else reservoir

    def check_fits(self, path: str | os.PathLike, *, expect_window: int | None = None,
                   expect_dims: Sequence[int] | None = None) -> None:
        """Raise :class:`~biohsic.errors.CheckpointError` if this reservoir was trained for
        another window N or other layer sizes (d_x, d_y, d_z) than the caller needs."""
        cfg = self.config
        if expect_window is not None and int(expect_window) != cfg.window:
            raise CheckpointError(f"{path} was trained for window N={cfg.window}, this run needs N={expect_window}; "
                                  f"train one with `biohsic reservoir train --window {expect_window} ...`")
        if expect_dims is not None:
            wanted = tuple(int(d) for d in expect_dims)
            if wanted != (cfg.d_x, cfg.d_y, cfg.d_z):
                raise CheckpointError(
                    f"{path} was trained for input/classes/layer sizes {cfg.d_x}/{cfg.d_y}/{cfg.d_z}, this run needs "
                    f"{'/'.join(map(str, wanted))}; train one with `biohsic reservoir train --input-dim {wanted[0]} "
                    f"--classes {wanted[1]} --layer-dim {wanted[2]} ...`")


def read_reservoir_file(path: str | os.PathLike) -> dict[str, Any]:
    """The raw payload of a reservoir file, or :class:`~biohsic.errors.CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"reservoir file {path} not found; train one with `biohsic reservoir train --out {path}`")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        payload = load_torch(path)
    if not isinstance(payload, dict) or payload.get("format") != FILE_FORMAT:
        raise CheckpointError(f"{path} is not a reservoir file (no '{FILE_FORMAT}' header); "
                              f"train one with `biohsic reservoir train`")
    if payload.get("version") != FILE_VERSION:
        raise CheckpointError(f"{path} has reservoir file version {payload.get('version')}, this library reads "
                              f"version {FILE_VERSION}; train a new one with `biohsic reservoir train`")
    return payload


@contextlib.contextmanager
def writing_to(path: str | os.PathLike) -> Iterator[None]:
    """Turn a failure to write ``path`` (a folder that cannot be created or written) into
    one-line :class:`~biohsic.errors.ConfigError`."""
    try:
        yield
    except OSError as exc:
        raise ConfigError(f"cannot write {path} ({exc.strerror}); choose a writable --out") from None
