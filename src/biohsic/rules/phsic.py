r"""pHSIC, the plausible kernelised bottleneck (Pogodin & Latham, NeurIPS 2020; SPEC §6).

Each hidden layer ℓ descends :math:`L_\ell = \mathrm{pHSIC}(Z_\ell, Z_\ell) - \gamma\,\mathrm{pHSIC}(Z_\ell, Y)`
(γ = ``config.gamma``; the authors use 2) through its own local term :math:`J^\top g`;
nothing crosses layers. The readout is trained by the cross-entropy gradient of the same
samples. Maths in :mod:`biohsic.functional.phsic`. Two rules, two forms:

- ``phsic`` — the minibatch form the authors train with: the exact gradient of
  :math:`L_\ell` on a minibatch of ``config.batch_size`` (≥ 2) samples.
- ``phsic-stream`` — the biologically plausible form: one sample at a time; the update
  of step t uses the pair (t, t-1) and running means of the two kernels over the stream
  (a working memory of one sample): :math:`\delta_t = 2(k^Z_t - \bar k^Z) - \gamma(k^Y_t - \bar k^Y)`
  times :math:`\partial k(z_t, z_{t-1})/\partial\theta`. The running means take the current
  pair first (so the first pair, with means equal to its own values, gives no update);
  until a previous sample exists, the hidden layers get no update (``.grad`` is ``None``).
  The previous sample's layer activities are kept as they were when it was seen
  (``config.memory="stored"``) or re-computed with the current weights (``"recompute"``).

Two names rather than one switching on ``--batch-size 1``: the two forms are different
algorithms (the minibatch form on one sample would have no gradient at all), and a rule's
streaming is a property of the rule, not of its batch size.

Settings (``TrainConfig`` fields, CLI flags): ``phsic_kernel`` (``"gaussian"``, default, or
``"cosine"``), ``phsic_sigma`` (the Gaussian z-kernel's absolute bandwidth, default 5.0) and
``phsic_horizon`` (``phsic-stream`` only: the running means' horizon T in samples,
default 100). The label kernel is always the cosine similarity of centred labels.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..config import TrainConfig
from ..functional.layers import HiddenCache
from ..functional.phsic import label_kernel, pair_factor, pair_signal, phsic_signal, running_mean, z_kernel
from ..network import Network
from .base import Rule, hidden_layer_name, register, write_grads
from .hsic import LayerObjectiveRule
from .readout import readout_step


@register
class PHSIC(LayerObjectiveRule):
    """pHSIC(Z, Z) − γ pHSIC(Z, Y) descended per hidden layer on minibatches."""

    name = "phsic"

    def __init__(self, network: Network, config: TrainConfig):
        super().__init__(network, config)
        self.kind, self.sigma = config.phsic_kernel, config.phsic_sigma

    def layer_signals(self, x: Tensor, y: Tensor, zs: list[Tensor]) -> list[Tensor]:
        return [phsic_signal(z, y, gamma=self.config.gamma, kind=self.kind, sigma=self.sigma) for z in zs]


@register
class PlausiblePHSIC(Rule):
    """The two-sample streaming pHSIC rule with running kernel means."""

    name = "phsic-stream"
    streaming = True

    def __init__(self, network: Network, config: TrainConfig):
        super().__init__(network, config)
        self.kind, self.sigma, self.horizon = config.phsic_kernel, config.phsic_sigma, config.phsic_horizon
        self.recompute = config.memory == "recompute"
        self.reset()

    def reset(self) -> None:
        weight = self.network.readout.weight
        zeros = torch.zeros(self.network.n_models, dtype=weight.dtype, device=weight.device)
        self.pairs = 0
        self.mean_y = zeros.clone()
        self.mean_z = [zeros.clone() for _ in self.network.hidden]
        self.previous: tuple[Tensor, Tensor, list[HiddenCache]] | None = None

    def _clear_hidden_grads(self) -> None:
        for layer in self.network.hidden:
            for param in layer.parameters():
                param.grad = None

    @torch.no_grad()
    def predict_and_write_grads(self, x: Tensor, y: Tensor) -> Tensor:
        net = self.network
        caches, logits = readout_step(net, x, y)
        x = net.expand(x)
        if self.previous is None:
            self._clear_hidden_grads()
        else:
            prev_x, prev_y, prev_caches = self.previous
            if self.recompute:
                prev_caches = net.hidden_caches(prev_x)
            self.pairs += 1
            k_y = label_kernel(y, prev_y)[..., 0, 0]
            self.mean_y = running_mean(self.mean_y, k_y, self.pairs, self.horizon)
            for l, (layer, cache, prev) in enumerate(zip(net.hidden, caches, prev_caches)):
                z_pair = torch.cat([cache.out, prev.out], -2)
                kernel = z_kernel(z_pair, kind=self.kind, sigma=self.sigma)
                k_z = kernel[..., 0, 1]
                self.mean_z[l] = running_mean(self.mean_z[l], k_z, self.pairs, self.horizon)
                factor = pair_factor(k_z, k_y, self.mean_z[l], self.mean_y, self.config.gamma)
                signal = pair_signal(z_pair, kernel, factor, kind=self.kind, sigma=self.sigma)
                self.watch.record("signal", hidden_layer_name(l), signal)
                pair_cache = HiddenCache(*(torch.cat([now, then], -2) for now, then in zip(cache, prev)))
                write_grads((layer.weight, layer.bias), layer.local_grad(pair_cache, signal))
        self.previous = (x, y, caches)
        return logits

    def state_dict(self) -> dict[str, Any]:
        previous = None
        if self.previous is not None:
            prev_x, prev_y, prev_caches = self.previous
            previous = {"x": prev_x, "y": prev_y, "caches": [tuple(cache) for cache in prev_caches]}
        return {"pairs": self.pairs, "mean_y": self.mean_y, "mean_z": list(self.mean_z), "previous": previous}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        weight = self.network.readout.weight

        def restore(tensor: Tensor) -> Tensor:
            return tensor.to(device=weight.device, dtype=weight.dtype, copy=True)

        self.pairs = int(state["pairs"])
        self.mean_y = restore(state["mean_y"])
        self.mean_z = [restore(mean) for mean in state["mean_z"]]
        previous = state["previous"]
        self.previous = None if previous is None else (
            restore(previous["x"]), restore(previous["y"]),
            [HiddenCache(*map(restore, cache)) for cache in previous["caches"]])
