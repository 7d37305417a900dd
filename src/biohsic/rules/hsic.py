r"""The HSIC bottleneck (Ma, Lewis & Kleijn, AAAI 2020; SPEC §6), on minibatches.

Each hidden layer ℓ minimises its own objective on a minibatch of m = ``config.batch_size``
samples by its own gradient,

.. math:: L_\ell = \mathrm{HSIC}(X, Z_\ell) - \beta\,\mathrm{HSIC}(Y, Z_\ell),

with X the network's input and β = ``config.gamma``. The layer's update is
:math:`\sum_n J_n^\top g_n` with :math:`g_n = \partial L_\ell/\partial z_{\ell,n}` and
:math:`J_n` the layer's own Jacobian: no gradient crosses layers (the layer's input is a
constant of its objective). The readout is trained at the same time by the cross-entropy
gradient on the same batch, on the hidden features as they are (the authors train it
afterwards, in a separate "format" step).

Which HSIC: by default the plain biased estimator of SPEC §2 with the dimension-scaled
Gaussian kernels and bandwidths ``config.sigmas`` = (σx, σy, σz) (computed through the
batch's Gram matrix, :func:`biohsic.functional.kernels.gaussian_gram`) — the estimator the
three-factor rule uses, so that comparing the two isolates the minibatch versus the
streaming working memory. ``config.hsic_normalized = True`` (``--hsic-normalized``) uses the authors'
normalised HSIC instead (:mod:`biohsic.functional.bottleneck`: one m×m inverse per kernel
per step, O(m³)). The authors' own settings are σ = 5 for every kernel, β = 50, m = 512.
"""
from __future__ import annotations

import abc

import torch
from torch import Tensor

from ..config import TrainConfig
from ..errors import ConfigError
from ..functional.bottleneck import normalized_signal
from ..functional.modulator import _exact_signals
from ..functional.kernels import gaussian_gram
from ..network import Network
from .base import Rule, register, write_hidden_grads
from .readout import readout_step


class LayerObjectiveRule(Rule):
    r"""A minibatch rule in which each hidden layer descends its own objective of (x, y, z):
    subclasses give each layer's signal :math:`g_n = \partial L_\ell/\partial z_{\ell,n}`;
    the layer's update is its local term :math:`\sum_n J_n^\top g_n`, the readout's the
    cross-entropy gradient on the batch."""

    def __init__(self, network: Network, config: TrainConfig):
        super().__init__(network, config)
        if config.batch_size < 2:
            raise ConfigError(f"--batch-size must be at least 2 for --rule {self.name} (its objective "
                              f"compares samples of a minibatch), got {config.batch_size}")

    @abc.abstractmethod
    def layer_signals(self, x: Tensor, y: Tensor, zs: list[Tensor]) -> list[Tensor]:
        """Each hidden layer's signal ``(K, B, d_l)`` for the batch ``x`` ``(K, B, d_in)``,
        one-hot ``y`` ``(K, B, classes)`` and the layers' outputs ``zs``."""

    @torch.no_grad()
    def predict_and_write_grads(self, x: Tensor, y: Tensor) -> Tensor:
        caches, logits = readout_step(self.network, x, y)
        x = self.network.expand(x)
        write_hidden_grads(self.network, caches, self.layer_signals(x, y, [cache.out for cache in caches]),
                           watch=self.watch)
        return logits


@register
class HSICBottleneck(LayerObjectiveRule):
    """Each hidden layer descends HSIC(X, Z) − β HSIC(Y, Z) on the minibatch (β = ``config.gamma``)."""

    name = "hsic"

    def __init__(self, network: Network, config: TrainConfig):
        super().__init__(network, config)
        self.normalized = config.hsic_normalized

    def layer_signals(self, x: Tensor, y: Tensor, zs: list[Tensor]) -> list[Tensor]:
        sigma_x, sigma_y, sigma_z = self.config.sigmas
        beta = self.config.gamma
        kernel_x = gaussian_gram(x, s2=sigma_x**2 * x.shape[-1])
        kernel_y = gaussian_gram(y, s2=sigma_y**2 * y.shape[-1])

        def signal(z: Tensor) -> Tensor:
            kernel_z = gaussian_gram(z, s2=sigma_z**2 * z.shape[-1])
            if self.normalized:
                return normalized_signal(kernel_x, kernel_y, kernel_z, z, beta=beta, sigma_z=sigma_z)
            return _exact_signals(kernel_x, kernel_y, kernel_z, z, gamma=beta, sigma_z=sigma_z)

        return [signal(z) for z in zs]
