r"""Readout only (SPEC §6): the hidden layers stay at their random initialisation and only the
readout learns, by the gradient of the mean softmax cross-entropy on a minibatch of
``config.batch_size`` samples. Any rule that claims its hidden layers learn must beat it.

:meth:`Readout.trainable_parameters` returns the readout's parameters only, so the optimiser
(weight decay included) never touches the hidden weights: they stay bit-identical.

This module also holds the step every layer-local rule shares (:func:`readout_step`): the
forward pass with each hidden layer's cache, and the readout's delta rule on the batch.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..functional.layers import HiddenCache, cross_entropy_grad
from ..network import Network
from .base import Rule, register, write_grads


def readout_step(network: Network, x: Tensor, y: Tensor) -> tuple[list[HiddenCache], Tensor]:
    """Forward ``x`` ``(K, B, d_in)`` through ``network`` keeping each hidden layer's cache, and
    write the readout's cross-entropy gradient on the batch (one-hot ``y``) into its ``.grad``.
    Returns the caches and the logits ``(K, B, classes)``."""
    caches = network.hidden_caches(x)
    features = network.readout_input(x, caches)
    logits = network.readout(features)
    write_grads((network.readout.weight, network.readout.bias), cross_entropy_grad(features, logits, y))
    return caches, logits


@register
class Readout(Rule):
    """Hidden layers frozen at their initialisation; the readout trained by cross-entropy."""

    name = "readout"

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.network.readout.parameters())

    @torch.no_grad()
    def predict_and_write_grads(self, x: Tensor, y: Tensor) -> Tensor:
        return readout_step(self.network, x, y)[1]
