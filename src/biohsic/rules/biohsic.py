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
from ..functional.layers import cross_entropy_grad, hidden_local_grad
from ..functional.modulator import signal_at
from ..memory import WorkingMemory
from ..network import Network
from .base import Rule, register, set_grad


class Modulator(Protocol):
    """Produces each hidden layer's modulatory signal for the newest sample."""

    def __call__(self, memory: WorkingMemory, x: Tensor, y: Tensor, zs: list[Tensor]) -> list[Tensor]:
        """``x`` ``(K, d_x)``, ``y`` ``(K, classes)`` and ``zs[l]`` ``(K, d_l)`` are the newest
        sample's; returns one ``(K, d_l)`` signal per hidden layer."""

    def reset(self) -> None:
        """Forget the stream seen so far."""


class KernelModulator:
    """:math:`g_N` from the working memory's kernel matrices (``kind`` exact, paper or paper-jan2024)."""

    def __init__(self, kind: str, gamma: float, sigma_z: float):
        self.kind, self.gamma, self.sigma_z = kind, gamma, sigma_z

    def __call__(self, memory: WorkingMemory, x: Tensor, y: Tensor, zs: list[Tensor]) -> list[Tensor]:
        kx, ky = memory.kernels["x"], memory.kernels["y"]
        return [signal_at(kx, ky, memory.kernels[f"z{l}"], memory.values[f"z{l}"], memory.newest,
                          gamma=self.gamma, sigma_z=self.sigma_z, kind=self.kind)
                for l in range(len(zs))]

    def reset(self) -> None:
        """A kernel modulator has no state of its own."""


def build_modulator(network: Network, config: TrainConfig) -> Modulator:
    if config.modulator == "reservoir":
        from ..reservoir import ReservoirModulator

        return ReservoirModulator.from_config(network, config)
    return KernelModulator(config.modulator, config.gamma, config.sigmas[2])


@register
class BioHSIC(Rule):
    """The streaming three-factor rule with a working memory of the last ``config.window`` samples."""

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

    def reset(self) -> None:
        self.memory.reset()
        self.modulator.reset()

    def _recompute_window(self) -> None:
        """Re-run the remembered inputs through the current weights (``memory="recompute"``)."""
        for l, z in enumerate(self.network.features(self.memory.values["x"])):
            self.memory.replace(f"z{l}", z)

    @torch.no_grad()
    def compute_grads(self, x: Tensor, y: Tensor) -> Tensor:
        net = self.network
        caches = net.hidden_caches(x)
        zs = [cache.out[:, 0] for cache in caches]
        features = caches[-1].out if caches else net._expand(x)
        logits = net.readout(features)
        self.memory.push({"x": x[:, 0], "y": y[:, 0], **{f"z{l}": z for l, z in enumerate(zs)}})
        if self.recompute and self.memory.full:
            self._recompute_window()
        signals = self.modulator(self.memory, x[:, 0], y[:, 0], zs)
        if not self.memory.full:
            return logits
        for layer, cache, signal in zip(net.hidden, caches, signals):
            grad_w, grad_b = hidden_local_grad(cache, signal.unsqueeze(1))
            set_grad(layer.weight, grad_w)
            set_grad(layer.bias, grad_b)
        if self.readout_window:
            last = f"z{len(caches) - 1}" if caches else "x"
            window_features = self.memory.values[last]
            grad_w, grad_b = cross_entropy_grad(window_features, net.readout(window_features),
                                                self.memory.values["y"])
        else:
            grad_w, grad_b = cross_entropy_grad(features, logits, y)
        set_grad(net.readout.weight, grad_w)
        set_grad(net.readout.bias, grad_b)
        return logits

    def state_dict(self) -> dict[str, Any]:
        return {"memory": self.memory.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory.load_state_dict(state["memory"])
