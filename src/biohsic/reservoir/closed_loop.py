r"""The closed loop (SPEC §4): reservoirs, not the working memory's kernels, produce the
modulatory signal of every hidden layer while the network learns.

One reservoir per hidden layer ℓ sees the stream of (x, y, z_ℓ) one sample at a time
(:meth:`biohsic.reservoir.Reservoir.step_sample`); its readout replaces :math:`g_N` in
the layer's update :math:`J_N^\top g_N`. Each of the K models trained side by side drives
its own copy of the reservoir state.

``learning``:

- ``"frozen"`` (the system's full form): the readouts were trained a priori
  (``biohsic reservoir train`` / ``train-task``) and never change;
- ``"delta"`` (the paper's mode): the readout keeps learning online, by the paper's delta
  rule at each of the T time steps (η = 5e-4), against the exact :math:`g_N` of the
  working memory (:class:`biohsic.modulators.KernelModulator`);
- ``"force"``: the same with recursive least squares once per sample, :math:`P_0 = I/\alpha`
  with the α the file's readout was trained with;
- ``"refit"``: the readout is re-fitted at intervals from a small store of exact targets
  (:class:`~biohsic.reservoir.learners.StoreRefit`, one readout per model, pulled towards the
  a priori readout with penalty ``refit_alpha``): every ``sample_every`` steps the exact
  :math:`g_N` of the working memory, projected onto what the layer's update keeps
  (:func:`~biohsic.functional.layers.layer_norm_projection`: LayerNorm's Jacobian removes
  the components along 1 and z), joins the store (so the working memory is read on those
  steps only), and after every ``refit_every`` new rows the readout is re-fitted. It needs
  ``store`` × (M + d_ℓ) numbers per layer and model besides the working memory.

In the online modes (delta, force) the K models share one readout, which learns from all
of them; in ``refit`` each model has its own.

Whatever the mode, the loop also measures how well the reservoir stands in for the exact
signal, on every step where the window is full, against the ceiling of a memoryless
circuit (:mod:`biohsic.reservoir.scores`); :meth:`ReservoirModulator.epoch_metrics`
returns the scores since it was last called.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from ..config import RESERVOIR_LEARNING, TrainConfig
from ..errors import CheckpointError, ConfigError, require
from ..functional.layers import HiddenCache, layer_norm_projection
from ..memory import WorkingMemory
from ..modulators import KernelModulator, ModulatorSpec, register_modulator
from ..network import Network
from .learners import FORCE_ALPHA, DeltaRule, Force, ReadoutLearner, StoreRefit
from .model import Reservoir
from .scores import LoopScores
from .study import TASK_STREAMS


def layer_file(folder: str | os.PathLike, layer: int) -> Path:
    """The file of hidden layer ``layer``'s reservoir in a folder written by
    ``biohsic reservoir train-task``."""
    return Path(folder) / f"layer{layer}.pt"


def reservoir_paths(spec: str, n_layers: int) -> list[Path]:
    """The reservoir file of each hidden layer: ``spec`` is a folder holding ``layer0.pt``,
    ``layer1.pt``, … (``biohsic reservoir train-task``) or comma-separated files, one per
    hidden layer in order."""
    if Path(spec).is_dir():
        return [layer_file(spec, layer) for layer in range(n_layers)]
    paths = [Path(part.strip()) for part in spec.split(",") if part.strip()]
    if len(paths) != n_layers:
        raise ConfigError(f"--reservoir names {len(paths)} file(s) but the network has {n_layers} hidden layer(s); "
                          f"give one file per hidden layer, comma-separated, or a folder made by "
                          f"`biohsic reservoir train-task`")
    return paths


def check_target(reservoir: Reservoir, path: str | os.PathLike, gamma: float, sigmas: Sequence[float]) -> None:
    """Raise :class:`~biohsic.errors.CheckpointError` unless the reservoir's readout was
    trained for the run's γ and σx, σy, σz (another target is another signal)."""
    cfg = reservoir.config
    same = math.isclose(cfg.gamma, gamma) and all(math.isclose(a, b) for a, b in zip(cfg.sigmas, sigmas))
    if not same:
        raise CheckpointError(
            f"{path} was trained for γ={cfg.gamma:g}, σ={','.join(f'{s:g}' for s in cfg.sigmas)}, this run uses "
            f"γ={gamma:g}, σ={','.join(f'{s:g}' for s in sigmas)}; train one with `biohsic reservoir train-task` "
            f"and the run's --gamma and --sigmas")


def check_stream(reservoir: Reservoir, path: str | os.PathLike, layer: int, config: TrainConfig) -> None:
    """Raise :class:`~biohsic.errors.CheckpointError` unless the reservoir was trained for
    hidden layer ``layer`` of the run (its file records the layer when ``train-task`` wrote
    it) and, if on a task stream, on that stream of the run's task: the run's widths up to
    the layer, and the input model fitted on the run's own validation split (another
    split could hold the run's training samples)."""
    info = reservoir.info
    if "layer" in info and int(info["layer"]) != layer:
        raise CheckpointError(f"{path} was trained for hidden layer {info['layer']}, it is given for layer {layer}; "
                              f"pass one file per hidden layer in order, or the folder `biohsic reservoir train-task` "
                              f"wrote")
    kind = info.get("stream_kind")
    if kind not in TASK_STREAMS:
        return
    seed = info.get("stream_network_seed")
    if seed is not None and (config.seeds, config.seed) != (1, int(seed)):
        raise CheckpointError(f"{path} was fitted on the initial network of model seed {seed}; run it with "
                              f"--seed {seed} --seeds 1")
    trained = (info.get("stream_task"), tuple(int(h) for h in info.get("stream_hidden", ())),
               float(info.get("stream_fit_fraction", math.nan)), int(info.get("stream_fit_seed", -1)))
    needed = (config.task, tuple(config.hidden[:layer + 1]), float(config.val_fraction), int(config.data_seed))
    if trained != needed:
        raise CheckpointError(
            f"{path} was trained on the {kind} stream of task {trained[0]}, widths {','.join(map(str, trained[1]))}, "
            f"validation split {trained[2]:g} at data seed {trained[3]}; this run needs task {needed[0]}, widths "
            f"{','.join(map(str, needed[1]))}, split {needed[2]:g} at seed {needed[3]}; train one with `biohsic "
            f"reservoir train-task --stream {kind}` and the run's --task/--hidden/--val-fraction/--data-seed")


class ReservoirModulator:
    """Each hidden layer's signal from its own reservoir (see the module docstring).

    ``reservoirs``: one per hidden layer, for the window, sizes and target of the run;
    ``exact``: the working memory's exact modulator (the target in the learning modes and
    the reference of the loop's scores); ``scores``: what measures the signal against the
    exact one and the ceiling on every full window (``None``: nothing is measured);
    ``store``, ``refit_every``, ``sample_every``, ``refit_alpha``: the ``"refit"`` mode's settings.
    """

    def __init__(self, reservoirs: Sequence[Reservoir], exact: Callable[..., list[Tensor]], *,
                 learning: str = "frozen", scores: LoopScores | None = None,
                 store: int = 256, refit_every: int = 32, sample_every: int = 10, refit_alpha: float = 1.0):
        if learning not in RESERVOIR_LEARNING:
            raise ConfigError(f"unknown --reservoir-learning {learning!r}; "
                              f"choose one of {', '.join(RESERVOIR_LEARNING)}")
        if sample_every < 1:
            raise ConfigError(f"--reservoir-sample-every must be a positive number of steps, got {sample_every}")
        self.reservoirs = list(reservoirs)
        self.exact = exact
        self.learning = learning
        self.scores = scores
        self.store, self.refit_every, self.sample_every = store, refit_every, sample_every
        self.learners = [self._learner(reservoir) for reservoir in self.reservoirs]
        self.refits = ([StoreRefit(reservoir.w_out, store=store, refit_every=refit_every, alpha=refit_alpha)
                        for reservoir in self.reservoirs] if learning == "refit" else [None] * len(self.reservoirs))
        self.full_steps = 0  # steps with a full window so far

    def _learner(self, reservoir: Reservoir) -> ReadoutLearner | None:
        """The readout learner of ``reservoir`` in this mode (``None``: frozen)."""
        alpha = float(reservoir.info.get("alpha", FORCE_ALPHA))
        if self.learning == "delta":
            return DeltaRule(every_step=True)
        if self.learning == "force":
            return Force(alpha=alpha)
        return None

    @classmethod
    def from_config(cls, network: Network, config: TrainConfig) -> "ReservoirModulator":
        """Load the run's reservoirs (``config.reservoir``, see :func:`reservoir_paths`) onto
        the network's device, checking that each fits its layer: window N, sizes
        (d_x, classes, d_ℓ), γ and σ, and the layer and stream it was trained for
        (:class:`~biohsic.errors.CheckpointError` otherwise)."""
        d_x, classes, widths = network.sizes[0], network.sizes[-1], network.sizes[1:-1]
        device = network.readout.weight.device
        reservoirs = []
        for layer, (path, width) in enumerate(zip(reservoir_paths(config.reservoir, len(widths)), widths)):
            reservoir = Reservoir.load(path, expect_window=config.window, expect_dims=(d_x, classes, width),
                                       device=device)
            check_target(reservoir, path, config.gamma, config.sigmas)
            check_stream(reservoir, path, layer, config)
            reservoirs.append(reservoir)
        scores = LoopScores(network.hidden, window=config.window, gamma=config.gamma, sigmas=config.sigmas,
                            seed=config.seed)
        return cls(reservoirs, KernelModulator("exact", config.gamma, config.sigmas[2]),
                   learning=config.reservoir_learning, scores=scores, store=config.reservoir_store,
                   refit_every=config.reservoir_refit_every, sample_every=config.reservoir_sample_every,
                   refit_alpha=config.reservoir_refit_alpha)

    def _learns_now(self) -> bool:
        """Whether the readouts learn from the exact g_N at this (full-window) step."""
        if self.learning == "refit":
            return self.full_steps % self.sample_every == 0
        return self.learning != "frozen"

    @torch.no_grad()
    def __call__(self, memory: WorkingMemory, x: Tensor, y: Tensor, caches: list[HiddenCache]) -> list[Tensor]:
        """The newest sample's signal of every hidden layer (``x`` ``(K, d_x)``, ``y``
        ``(K, classes)``, ``caches`` the hidden layers' forward passes) → one ``(K, d_l)``
        tensor per layer; in the learning modes the readouts learn from the exact g_N once the
        window is full (mode ``refit``: on every ``sample_every``-th such step)."""
        if self.scores is not None:
            self.scores.remember(x, y, caches)
        learn = memory.full and self._learns_now()
        needed = memory.full and (learn or self.scores is not None)
        exact = self.exact(memory, x, y, caches) if needed else [None] * len(caches)
        signals = []
        for reservoir, learner, refit, cache, target in zip(self.reservoirs, self.learners, self.refits, caches, exact):
            z = cache.out[:, 0]
            teach = learn and learner is not None
            signal = reservoir.step_sample(x, y, z, target if teach else None, learner if teach else None)
            if refit is not None:
                signal = refit.output(reservoir.r)
                if learn:
                    refit.add(reservoir.r, layer_norm_projection(target, z))
            signals.append(signal.to(z.dtype))
        if memory.full:
            self.full_steps += 1
            if self.scores is not None:
                self.scores.record(x, y, caches, signals, exact)
        return signals

    def epoch_metrics(self) -> dict[str, Any]:
        """The scores (:mod:`biohsic.reservoir.scores`), per hidden layer, since the last
        call; then starts counting afresh. Empty before the first full window."""
        return self.scores.metrics() if self.scores is not None else {}

    def reset(self) -> None:
        """Restart every reservoir's state (the readouts are kept)."""
        for reservoir in self.reservoirs:
            reservoir.reset()

    def state_dict(self) -> dict[str, Any]:
        """Each reservoir's state (and its noise generator's), when it learns its readout (and
        FORCE's P, or the refit store), the scores gathered since :meth:`epoch_metrics` was
        last called: all a checkpoint inside an epoch needs to continue exactly."""
        states = []
        for reservoir, learner, refit in zip(self.reservoirs, self.learners, self.refits):
            state = {"u": reservoir.u, "r": reservoir.r, "o": reservoir.o}
            if reservoir._noise is not None:
                state["noise"] = reservoir._noise.get_state()
            if learner is not None:
                state["w_out"] = reservoir.w_out
            if isinstance(learner, Force):
                state["p"] = learner.p
            if refit is not None:
                state["store"] = refit.state_dict()
            states.append(state)
        return {"learning": self.learning, "reservoirs": states, "full_steps": self.full_steps,
                "scores": self.scores.state_dict() if self.scores is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("learning") != self.learning or len(state.get("reservoirs", ())) != len(self.reservoirs):
            raise CheckpointError("the checkpoint's reservoir state belongs to another --reservoir-learning or "
                                  "network; resume with the same options")
        for reservoir, learner, refit, saved in zip(self.reservoirs, self.learners, self.refits, state["reservoirs"]):
            reservoir.u, reservoir.r, reservoir.o = saved["u"], saved["r"], saved["o"]
            if "noise" in saved:
                reservoir._noise = torch.Generator(device=reservoir.w_in.device)
                reservoir._noise.set_state(saved["noise"].cpu())
            if "w_out" in saved:
                reservoir.w_out.copy_(saved["w_out"])
            if "p" in saved:
                learner.p = saved["p"]
            if "store" in saved:
                refit.load_state_dict(saved["store"])
        self.full_steps = int(state.get("full_steps", 0))
        if self.scores is not None and state.get("scores") is not None:
            self.scores.load_state_dict(state["scores"])


def check_reservoir_config(config: TrainConfig) -> None:
    """The settings a closed loop cannot run: no reservoir files, or leaky units."""
    require(config.reservoir, "--modulator reservoir needs --reservoir FILE (train one with `biohsic reservoir train-task`)")
    require(config.neuron == "rate",
            "--neuron leaky is implemented for --rule biohsic with the exact or paper modulator only")


register_modulator("reservoir", ModulatorSpec(ReservoirModulator.from_config, check_reservoir_config))
