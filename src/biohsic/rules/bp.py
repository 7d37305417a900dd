r"""Back-propagation (SPEC §6): the gradient of the mean softmax cross-entropy of a minibatch
of ``config.batch_size`` samples with respect to every parameter, by ``torch.autograd``
through :meth:`biohsic.network.Network.forward` (the same network the other rules train).

The K models are independent: the loss is the sum over models of each model's own mean
cross-entropy, so model k's gradient is that of its own loss.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import Rule, register, write_grads


def mean_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    r"""Each model's mean softmax cross-entropy, :math:`-\frac{1}{B}\sum_n y_n^\top \log\mathrm{softmax}(o_n)`,
    ``(..., B, classes)`` → ``(...)``."""
    return -(targets * torch.log_softmax(logits, -1)).sum(-1).mean(-1)


@register
class Backprop(Rule):
    """End-to-end gradient descent on the cross-entropy, ordinary minibatches."""

    name = "bp"

    def predict_and_write_grads(self, x: Tensor, y: Tensor) -> Tensor:
        params = self.trainable_parameters()
        with torch.enable_grad():
            logits = self.network(x)
            grads = torch.autograd.grad(mean_cross_entropy(logits, y).sum(), params)
        write_grads(params, grads)
        return logits.detach()
