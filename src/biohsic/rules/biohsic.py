r"""The information-bottleneck three-factor rule (Daruwalla & Lipasti 2024; SPEC §3).

One step, for the newest sample of each model:

1. forward through the hidden layers (each keeps its own local cache);
2. the working memory takes the sample's input, label and layer outputs;
3. each hidden layer receives its modulatory signal :math:`g_N` (from the memory's
   kernels: ``exact`` or the authors' ``paper`` signal; or from a reservoir);
4. each hidden layer writes its local term :math:`J_N^\top g_N` into ``.grad``;
5. the readout writes its cross-entropy gradient (window average or newest sample).

Nothing is propagated between layers. Until the memory holds N samples, no gradient is
written (``.grad`` stays ``None``, so the optimiser leaves the parameters alone).
"""
from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor

from ..config import TrainConfig
from ..functional.layers import HiddenCache, cross_entropy_grad, hidden_local_grad, leaky_step
from ..functional.modulator import _exact_signal_from_row, _modulation_row, _signal_from_kernels
from ..memory import WorkingMemory
from ..network import Network
from .base import Rule, register, set_grad


class Modulator(Protocol):
    """Produces each hidden layer's modulatory signal for the newest sample."""

    def __call__(self, memory: WorkingMemory, x: Tensor, y: Tensor, caches: list[HiddenCache]) -> list[Tensor]:
        """``x`` ``(K, d_x)`` and ``y`` ``(K, classes)`` are the newest sample's, ``caches`` its
        hidden layers' forward passes (outputs ``(K, 1, d_l)``); returns one ``(K, d_l)``
        signal per hidden layer."""

    def reset(self) -> None:
        """Forget the stream seen so far."""

    def state_dict(self) -> dict[str, Any]:
        """State carried between steps, for checkpoints."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def epoch_metrics(self) -> dict[str, Any]:
        """Scores of the signal gathered since the last call (e.g. a reservoir's fit)."""


class KernelModulator:
    """:math:`g_N` from the working memory's kernel matrices (``kind`` exact, paper or paper-jan2024)."""

    def __init__(self, kind: str, gamma: float, sigma_z: float):
        self.kind, self.gamma, self.sigma_z = kind, gamma, sigma_z

    def __call__(self, memory: WorkingMemory, x: Tensor, y: Tensor, caches: list[HiddenCache]) -> list[Tensor]:
        kx, ky, newest = memory.kernels["x"], memory.kernels["y"], memory.newest
        if self.kind == "exact":  # row N of M is the same for every layer: compute it once
            m_row = _modulation_row(kx, ky, newest, gamma=self.gamma)
            return [_exact_signal_from_row(m_row, memory.kernels[f"z{l}"][:, newest], memory.values[f"z{l}"],
                                          newest, sigma_z=self.sigma_z) for l in range(len(caches))]
        return [_signal_from_kernels(kx, ky, memory.kernels[f"z{l}"], memory.values[f"z{l}"], newest,
                          gamma=self.gamma, sigma_z=self.sigma_z, kind=self.kind)
                for l in range(len(caches))]

    def reset(self) -> None:
        """A kernel modulator has no state of its own."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore."""

    def epoch_metrics(self) -> dict[str, Any]:
        """A kernel modulator measures nothing."""
        return {}


def build_modulator(network: Network, config: TrainConfig) -> Modulator:
    if config.modulator == "reservoir":
        from ..reservoir_loop import ReservoirModulator

        return ReservoirModulator.from_config(network, config)
    return KernelModulator(config.modulator, config.gamma, config.sigmas[2])


@register
class BioHSIC(Rule):
    """The streaming three-factor rule with a working memory of the last ``config.window`` samples.

    With ``config.neuron == "leaky"`` the units are leaky integrators (SPEC §5): each sample
    is presented for ``config.steps_per_sample`` time steps, with one update per time step
    (the trainer calls :meth:`compute_grads` :attr:`substeps` times per sample); the local
    term uses eligibility traces of each layer's input (:func:`~biohsic.functional.leaky_step`),
    and the prediction is the readout averaged over the last half of the presentation.
    """

    name = "biohsic"
    streaming = True

    def __init__(self, network: Network, config: TrainConfig):
        super().__init__(network, config)
        weight = network.readout.weight
        sigma_x, sigma_y, sigma_z = config.sigmas
        streams = {"x": (network.sizes[0], sigma_x), "y": (network.sizes[-1], sigma_y)}
        streams.update({f"z{l}": (size, sigma_z) for l, size in enumerate(network.sizes[1:-1])})
        self.memory = WorkingMemory(config.window, streams, network.n_models, weight.dtype, weight.device)
        self.modulator = build_modulator(network, config)
        self.recompute = config.memory == "recompute"
        self.readout_window = config.readout_update == "window"
        self.leaky = config.neuron == "leaky"
        self.reset()

    @property
    def substeps(self) -> int:
        return self.config.steps_per_sample if self.leaky else 1

    def reset(self) -> None:
        self.memory.reset()
        self.modulator.reset()
        self.time_step = 0            # within the current sample's presentation (leaky units)
        self.state: list[Tensor] = []  # membranes [u_1 … u_{L-1}, o] (leaky units)
        self.traces: list[Tensor] = []  # eligibility traces [ā_1 … ā_{L-1}, z̄_{L-1}, 1̄]
        self.output_sum: Tensor | None = None

    def _recompute_window(self) -> None:
        """Re-run the remembered inputs through the current weights (``memory="recompute"``)."""
        for l, z in enumerate(self.network.features(self.memory.values["x"])):
            self.memory.replace(f"z{l}", z)

    @torch.no_grad()
    def compute_grads(self, x: Tensor, y: Tensor) -> Tensor:
        if self.leaky:
            return self._leaky_step(x, y)
        caches = self.network.hidden_caches(x)
        features = self.network.readout_input(x, caches)
        logits = self.network.readout(features)
        self._remember(x, y, caches, new_sample=True)
        self._write_grads(caches, features, logits, x, y, bias_trace=None)
        return logits

    def _leaky_step(self, x: Tensor, y: Tensor) -> Tensor:
        cfg, net = self.config, self.network
        caches, self.state = net.leaky_step(x, self.state or None, dt=cfg.dt, tau=cfg.tau)
        output = self.state[-1]
        features = net.readout_input(x, caches)
        inputs = [cache.pre for cache in caches] + [features, torch.ones_like(output[..., :1])]
        self.traces = [leaky_step(trace, value, dt=cfg.dt, tau=cfg.tau)
                       for trace, value in zip(self.traces or [torch.zeros_like(v) for v in inputs], inputs)]
        caches = [cache._replace(pre=trace) for cache, trace in zip(caches, self.traces)]
        self._remember(x, y, caches, new_sample=self.time_step == 0)
        self._write_grads(caches, self.traces[-2], output, x, y, bias_trace=self.traces[-1])
        averaged = max(self.substeps // 2, 1)
        if self.time_step >= self.substeps - averaged:
            self.output_sum = output.clone() if self.output_sum is None else self.output_sum + output
        self.time_step = (self.time_step + 1) % self.substeps
        if self.time_step:
            return output
        prediction, self.output_sum = self.output_sum / averaged, None
        return prediction

    def _remember(self, x: Tensor, y: Tensor, caches: list, *, new_sample: bool) -> None:
        sample = {"x": x[:, 0], "y": y[:, 0], **{f"z{l}": cache.out[:, 0] for l, cache in enumerate(caches)}}
        if new_sample:
            self.memory.push(sample)
        else:
            self.memory.refresh_newest(sample)
        if self.recompute and self.memory.full:
            self._recompute_window()

    def _write_grads(self, caches: list, features: Tensor, logits: Tensor, x: Tensor, y: Tensor,
                     bias_trace: Tensor | None) -> None:
        """Each hidden layer's local term J_Nᵀ g_N and the readout's delta rule into ``.grad``.
        ``features`` is the readout's input (or its trace, for leaky units)."""
        net = self.network
        signals = self.modulator(self.memory, x[:, 0], y[:, 0], caches)
        if not self.memory.full:
            return
        for layer, cache, signal in zip(net.hidden, caches, signals):
            grad_w, grad_b = hidden_local_grad(cache, signal.unsqueeze(1))
            set_grad(layer.weight, grad_w)
            set_grad(layer.bias, grad_b if bias_trace is None else grad_b * bias_trace[:, 0])
        if self.readout_window:
            last = f"z{len(caches) - 1}" if caches else "x"
            window_features = self.memory.values[last]
            grad_w, grad_b = cross_entropy_grad(window_features, net.readout(window_features),
                                                self.memory.values["y"])
        else:
            grad_w, grad_b = cross_entropy_grad(features, logits, y)
            grad_b = grad_b if bias_trace is None else grad_b * bias_trace[:, 0]
        set_grad(net.readout.weight, grad_w)
        set_grad(net.readout.bias, grad_b)

    def epoch_metrics(self) -> dict[str, Any]:
        """The modulator's scores since the last call (a reservoir's cosines with the exact
        signal; nothing for the kernel modulators)."""
        return self.modulator.epoch_metrics()

    def state_dict(self) -> dict[str, Any]:
        return {"memory": self.memory.state_dict(), "time_step": self.time_step,
                "state": list(self.state), "traces": list(self.traces), "modulator": self.modulator.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory.load_state_dict(state["memory"])
        self.modulator.load_state_dict(state.get("modulator", {}))
        self.time_step = int(state.get("time_step", 0))
        self.state, self.traces = list(state.get("state", [])), list(state.get("traces", []))
