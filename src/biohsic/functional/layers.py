r"""Layers as pure functions, and their *local* parameter updates.

A hidden layer is :math:`u = W a + b`, :math:`h = \mathrm{relu}(u)`,
:math:`z = \mathrm{LayerNorm}(h)` without affine parameters. Its local term is
:math:`J^\top g`, with :math:`J = \partial z / \partial (W, b)` the Jacobian of this
layer alone for one sample: post-synaptic factor times pre-synaptic activity.

Shapes: weights ``(..., out, in)``, biases ``(..., out)``, activities ``(..., B, in)``;
``...`` is the model dimension (independent networks trained side by side).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

LAYER_NORM_EPS = 1e-5


class HiddenCache(NamedTuple):
    """What a hidden layer's local update needs from its forward pass."""

    input: Tensor     # a: the layer's input, the pre-synaptic activity
    drive: Tensor     # u = W a + b (for leaky units, the membrane potential)
    out: Tensor       # z = LayerNorm(relu(u))
    inv_std: Tensor   # 1 / sqrt(Var[relu(u)] + eps), one per sample


def dense(a: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    r""":math:`u = W a + b` for a batch of rows: ``a`` ``(..., B, in)`` → ``(..., B, out)``."""
    return a @ weight.transpose(-1, -2) + bias.unsqueeze(-2)


def rectify_normalize(u: Tensor, eps: float = LAYER_NORM_EPS) -> tuple[Tensor, Tensor]:
    r""":math:`z = (h - \mu_h)/\sqrt{\mathrm{Var}[h] + \epsilon}` with :math:`h = \mathrm{relu}(u)`
    (biased variance over the layer's units, as ``torch.nn.functional.layer_norm`` without
    affine parameters). Returns ``(z, 1/sqrt(Var[h] + eps))``."""
    h = torch.relu(u)
    centred = h - h.mean(-1, keepdim=True)
    inv_std = torch.rsqrt(centred.square().mean(-1, keepdim=True) + eps)
    return centred * inv_std, inv_std


def hidden_forward(a: Tensor, weight: Tensor, bias: Tensor, eps: float = LAYER_NORM_EPS) -> HiddenCache:
    r"""Forward pass of a hidden layer of rate units, :math:`z = \mathrm{LN}(\mathrm{relu}(W a + b))`."""
    u = dense(a, weight, bias)
    z, inv_std = rectify_normalize(u, eps)
    return HiddenCache(a, u, z, inv_std)


def layer_norm_projection(signal: Tensor, z: Tensor) -> Tensor:
    r"""The part of a signal g a LayerNorm layer's update keeps,
    :math:`P g = g - \bar g - z\,\overline{g \odot z}` (means over units), with z the layer's
    normalised output (mean 0, mean square ≈ 1): the projection that removes the components
    along 1 and z, which :func:`hidden_drive_grad` discards (``(..., d)`` both)."""
    return signal - signal.mean(-1, keepdim=True) - z * (signal * z).mean(-1, keepdim=True)


def hidden_drive_grad(cache: HiddenCache, signal: Tensor) -> Tensor:
    r"""The post-synaptic factor :math:`\delta_n = \partial L/\partial u_n` of a hidden layer,
    from its signal :math:`g_n = \partial L/\partial z_n` (``(..., B, out)``).

    Through LayerNorm, :math:`\partial L/\partial h = \frac{1}{\sigma}\big(g - \bar g - z\,\overline{g \odot z}\big)`
    (means over units); through the rectifier, :math:`\delta = \partial L/\partial h \odot \mathrm{relu}'(u)`.
    """
    dh = cache.inv_std * layer_norm_projection(signal, cache.out)
    return dh * (cache.drive > 0)


def hidden_local_grad(cache: HiddenCache, signal: Tensor, presynaptic: Tensor | None = None,
                      bias_trace: Tensor | None = None) -> tuple[Tensor, Tensor]:
    r"""The local term :math:`\sum_n J_n^\top g_n` of a hidden layer: with the post-synaptic
    factor :math:`\delta_n` of :func:`hidden_drive_grad`, :math:`\partial L/\partial W = \sum_n \delta_n \bar a_n^\top`
    (post × pre) and :math:`\partial L/\partial b = \sum_n \delta_n \bar 1_n`.

    ``signal`` ``(..., B, out)`` holds :math:`g_n` for the B samples of ``cache``. The
    pre-synaptic factor :math:`\bar a` is the layer's input ``cache.input`` for rate units; for
    leaky units it is the eligibility trace of the input, ``presynaptic``, and
    :math:`\bar 1` the trace of the constant 1, ``bias_trace`` ``(..., B, 1)``
    (see :func:`leaky_step`). Returns ``(dW (..., out, in), db (..., out))``.
    """
    delta = hidden_drive_grad(cache, signal)
    pre = cache.input if presynaptic is None else presynaptic
    bias_delta = delta if bias_trace is None else delta * bias_trace
    return delta.transpose(-1, -2) @ pre, bias_delta.sum(-2)


def output_error(logits: Tensor, targets: Tensor) -> Tensor:
    r"""The error at the output, :math:`e_n = \partial L/\partial o_n = (\mathrm{softmax}(o_n) - y_n)/B`
    for the mean softmax cross-entropy of a batch (``(..., B, classes)``)."""
    return (torch.softmax(logits, -1) - targets) / logits.shape[-2]


def cross_entropy_grad(features: Tensor, logits: Tensor, targets: Tensor,
                       bias_trace: Tensor | None = None) -> tuple[Tensor, Tensor]:
    r"""The readout's delta rule: the gradient of the mean softmax cross-entropy,

    .. math:: \frac{\partial}{\partial W} = \frac{1}{B}\sum_n (\mathrm{softmax}(o_n) - y_n)\, z_n^\top,
              \qquad \frac{\partial}{\partial b} = \frac{1}{B}\sum_n (\mathrm{softmax}(o_n) - y_n)

    ``features`` ``(..., B, in)``, ``logits`` and one-hot ``targets`` ``(..., B, classes)``.
    For leaky units ``features`` is the eligibility trace of the readout's input and
    ``bias_trace`` ``(..., B, 1)`` the trace of the constant 1 (see :func:`leaky_step`).
    """
    error = output_error(logits, targets)
    bias_error = error if bias_trace is None else error * bias_trace
    return error.transpose(-1, -2) @ features, bias_error.sum(-2)


def leaky_step(state: Tensor, drive: Tensor, *, dt: float, tau: float) -> Tensor:
    r"""One Euler step of a leaky integrator, :math:`u \leftarrow u + \frac{dt}{\tau}(I - u)`
    with input current :math:`I` = ``drive`` (SPEC §5).

    The same filter applied to a layer's input gives its *eligibility trace*
    :math:`\bar a \leftarrow \bar a + \frac{dt}{\tau}(a - \bar a)`: for weights held fixed,
    :math:`\partial u(t)/\partial W = \bar a(t)^\top` and :math:`\partial u(t)/\partial b = \bar 1(t)`
    (the filtered constant 1), so the local term of a leaky layer is
    :func:`hidden_local_grad` with ``presynaptic`` = the trace of its input."""
    return state + (dt / tau) * (drive - state)


def prediction_steps(steps: int) -> int:
    r"""How many of the ``steps`` time steps of a sample's presentation the prediction of a
    network of leaky units averages its readout over: the last half, :math:`\max(\lfloor T/2\rfloor, 1)` (SPEC §5)."""
    return max(steps // 2, 1)
