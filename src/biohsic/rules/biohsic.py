r"""The information-bottleneck three-factor rule (Daruwalla & Lipasti 2024; SPEC §3).

One step, for the newest sample of each model:

1. forward through the hidden layers (each keeps its own local cache);
2. the working memory takes the sample's input, label and layer outputs;
3. each hidden layer receives its modulatory signal :math:`g_N` from the modulator
   ``config.modulator`` names in :data:`biohsic.modulators.MODULATORS` (the exact gradient
   from the memory's kernels by default);
4. each hidden layer writes its local term :math:`J_N^\top g_N` into ``.grad``;
5. the readout writes its cross-entropy gradient (window average or newest sample).

Nothing is propagated between layers. Until the memory holds N samples, no gradient is
written (``.grad`` stays ``None``, so the optimiser leaves the parameters alone).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..config import TrainConfig
from ..functional.layers import HiddenCache, cross_entropy_grad, leaky_step, prediction_steps
from ..memory import WorkingMemory
from ..modulators import build_modulator, check_modulator
from ..network import Network
from .base import Rule, register, write_grads, write_hidden_grads


@register
class BioHSIC(Rule):
    """The streaming three-factor rule with a working memory of the last ``config.window`` samples.

    With ``config.neuron == "leaky"`` the units are leaky integrators (SPEC §5): each sample
    is presented for ``config.steps_per_sample`` time steps, with one update per time step
    (the trainer calls :meth:`predict_and_write_grads` :attr:`substeps` times per sample); the local
    term uses eligibility traces of each layer's input (:func:`~biohsic.functional.leaky_step`),
    and the prediction is the readout averaged over the last half of the presentation.
    """

    name = "biohsic"
    streaming = True
    modulated = True

    def __init__(self, network: Network, config: TrainConfig):
        super().__init__(network, config)
        weight = network.readout.weight
        self.memory = WorkingMemory(config.window, input_dim=network.sizes[0], label_dim=network.sizes[-1],
                                    layer_dims=[layer.width for layer in network.hidden], sigmas=config.sigmas,
                                    n_models=network.n_models, dtype=weight.dtype, device=weight.device)
        self.modulator = build_modulator(network, config)
        self.recompute = config.memory == "recompute"
        self.readout_window = config.readout_update == "window"
        self.leaky = config.neuron == "leaky"
        self.reset()

    @classmethod
    def check_config(cls, config: TrainConfig) -> None:
        """Every setting runs, with any registered modulator that serves it."""
        check_modulator(config)

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
        for stream, z in zip(self.memory.layers, self.network.features(self.memory.inputs.values)):
            stream.replace(z)

    @torch.no_grad()
    def predict_and_write_grads(self, x: Tensor, y: Tensor) -> Tensor:
        if self.leaky:
            return self._leaky_step(x, y)
        caches = self.network.hidden_caches(x)
        features = self.network.readout_input(x, caches)
        logits = self.network.readout(features)
        self._remember(x, y, caches, new_sample=True)
        self._write_grads(caches, features, logits, x, y)
        return logits

    def _leaky_step(self, x: Tensor, y: Tensor) -> Tensor:
        cfg, net = self.config, self.network
        caches, self.state = net.leaky_step(x, self.state or None, dt=cfg.dt, tau=cfg.tau)
        output = self.state[-1]
        features = net.readout_input(x, caches)
        inputs = [cache.input for cache in caches] + [features, torch.ones_like(output[..., :1])]
        self.traces = [leaky_step(trace, value, dt=cfg.dt, tau=cfg.tau)
                       for trace, value in zip(self.traces or [torch.zeros_like(v) for v in inputs], inputs)]
        self._remember(x, y, caches, new_sample=self.time_step == 0)
        self._write_grads(caches, self.traces[-2], output, x, y, presynaptic=self.traces[:-2],
                          bias_trace=self.traces[-1])
        averaged = prediction_steps(self.substeps)
        if self.time_step >= self.substeps - averaged:
            self.output_sum = output.clone() if self.output_sum is None else self.output_sum + output
        self.time_step = (self.time_step + 1) % self.substeps
        if self.time_step:
            return output
        prediction, self.output_sum = self.output_sum / averaged, None
        return prediction

    def _remember(self, x: Tensor, y: Tensor, caches: list[HiddenCache], *, new_sample: bool) -> None:
        zs = [cache.out[:, 0] for cache in caches]
        if new_sample:
            self.memory.push(x[:, 0], y[:, 0], zs)
        else:
            self.memory.refresh_layers(zs)
        if self.recompute and self.memory.full:
            self._recompute_window()

    def _write_grads(self, caches: list[HiddenCache], features: Tensor, logits: Tensor, x: Tensor, y: Tensor,
                     presynaptic: list[Tensor] | None = None, bias_trace: Tensor | None = None) -> None:
        """Each hidden layer's local term J_Nᵀ g_N and the readout's delta rule into ``.grad``.
        ``features`` is the readout's input; for leaky units it is its eligibility trace, and
        ``presynaptic`` and ``bias_trace`` are the hidden layers' traces."""
        net = self.network
        signals = self.modulator(self.memory, x[:, 0], y[:, 0], caches)
        if not self.memory.full:   # no update while the window fills (after a reset too): no stale .grad
            for param in net.parameters():
                param.grad = None
            return
        write_hidden_grads(net, caches, [signal.unsqueeze(1) for signal in signals], presynaptic, bias_trace,
                           watch=self.watch)
        if self.readout_window:
            window_features = (net.readout.features(self.memory.layers[-1].values) if caches
                               else self.memory.inputs.values)
            grads = cross_entropy_grad(window_features, net.readout(window_features), self.memory.labels.values)
        else:
            grads = cross_entropy_grad(features, logits, y, bias_trace)
        write_grads((net.readout.weight, net.readout.bias), grads)

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
