r"""Convolutional hidden layers and average pooling as pure functions, K models side by side.

A convolutional hidden layer is :math:`u = W \ast a + b` (a 2-D convolution of the input
map :math:`a` of C channels with O kernels of size k×k, stride s, zero padding p),
:math:`h = \mathrm{relu}(u)` and :math:`z = \mathrm{LayerNorm}(h)` over the whole output map
(all O·H'·W' values of one sample, no affine parameters). Its z is the flattened map, before
any pooling: pooling belongs to the input of the layer above.

Maps travel flattened, channel-first: a sample's map of shape (C, H, W) is a row of C·H·W
values, so activities are ``(K, B, C·H·W)`` like those of dense layers, and the working
memory, the kernels and the caches treat both kinds alike. Weights are ``(K, O, C, k, k)``,
biases ``(K, O)``; the K models' convolutions run as one grouped convolution.

The local term of the layer is :math:`\sum_n J_n^\top g_n` through its own Jacobian: with
the post-synaptic factor :math:`\delta_n = \partial L/\partial u_n` of
:func:`~biohsic.functional.layers.hidden_drive_grad` (LayerNorm and rectifier),
:math:`\partial L/\partial W_{o,c,i,j} = \sum_n \sum_{x,y} \delta_{n,o,x,y}\, a_{n,c,sx+i-p,sy+j-p}`
(post × pre, summed over the positions where kernel o met the input) and
:math:`\partial L/\partial b_o = \sum_n \sum_{x,y} \delta_{n,o,x,y}`.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .layers import HiddenCache, hidden_drive_grad, rectify_normalize


class ConvGeometry(NamedTuple):
    """The shape of a convolution: its input map ``(channels, height, width)``, its number of
    kernels ``out_channels``, their size, the stride and the zero padding on each side."""

    in_shape: tuple[int, int, int]
    out_channels: int
    kernel: int
    stride: int
    padding: int

    @property
    def out_shape(self) -> tuple[int, int, int]:
        r"""The output map, :math:`(O, \lfloor (H + 2p - k)/s \rfloor + 1, \lfloor (W + 2p - k)/s \rfloor + 1)`."""
        _, height, width = self.in_shape
        return (self.out_channels, (height + 2 * self.padding - self.kernel) // self.stride + 1,
                (width + 2 * self.padding - self.kernel) // self.stride + 1)


def pooled_shape(shape: tuple[int, int, int], factor: int) -> tuple[int, int, int]:
    r"""The map after average pooling of window and stride ``factor``:
    :math:`(C, \lfloor H/f \rfloor, \lfloor W/f \rfloor)`."""
    channels, height, width = shape
    return channels, height // factor, width // factor


def _models_as_channels(a: Tensor, shape: tuple[int, int, int]) -> Tensor:
    """``(K, B, C·H·W)`` → ``(B, K·C, H, W)``: model k's channels are group k of a grouped convolution."""
    k, b = a.shape[:2]
    return a.reshape(k, b, *shape).transpose(0, 1).reshape(b, k * shape[0], *shape[1:])


def _channels_as_models(u: Tensor, n_models: int) -> Tensor:
    """``(B, K·O, H', W')`` → ``(K, B, O·H'·W')``, the inverse of :func:`_models_as_channels`."""
    b = u.shape[0]
    return u.reshape(b, n_models, -1).transpose(0, 1)


def avg_pool(a: Tensor, shape: tuple[int, int, int], factor: int) -> Tensor:
    r"""Average pooling of flattened maps ``(..., C·H·W)`` of shape ``shape`` over non-overlapping
    ``factor``×``factor`` windows, :math:`p_{c,x,y} = \frac{1}{f^2}\sum_{i,j<f} a_{c,fx+i,fy+j}`
    (rows and columns beyond the last whole window are dropped). Returns ``(..., C·H'·W')``."""
    channels, height, width = shape
    _, pooled_h, pooled_w = pooled_shape(shape, factor)
    lead = a.shape[:-1]
    maps = a.reshape(*lead, channels, height, width)
    if torch.is_grad_enabled() and a.requires_grad:  # back-propagation: avg_pool2d's own backward is the fast one
        return F.avg_pool2d(maps.reshape(-1, *shape), factor).reshape(*lead, -1)
    rows, cols = pooled_h * factor, pooled_w * factor
    # one strided slice per position in the window: faster on a CPU than avg_pool2d or a mean over a 6-D view
    total = sum(maps[..., i:rows:factor, j:cols:factor] for i in range(factor) for j in range(factor))
    return (total / factor**2).reshape(*lead, -1)


def avg_pool_transpose(g: Tensor, shape: tuple[int, int, int], factor: int) -> Tensor:
    r"""The transpose of :func:`avg_pool`: each pooled value's gradient ``g`` ``(..., C·H'·W')``
    spread evenly, :math:`1/f^2` each, over its window of the ``shape`` map (zero where no
    window reached). Returns ``(..., C·H·W)``."""
    channels, height, width = shape
    _, pooled_h, pooled_w = pooled_shape(shape, factor)
    lead = g.shape[:-1]
    spread = g.reshape(*lead, channels, pooled_h, 1, pooled_w, 1).expand(
        *lead, channels, pooled_h, factor, pooled_w, factor) / factor**2
    full = g.new_zeros(*lead, channels, height, width)
    full[..., :pooled_h * factor, :pooled_w * factor] = spread.reshape(*lead, channels, pooled_h * factor,
                                                                       pooled_w * factor)
    return full.reshape(*lead, -1)


def conv_drive(a: Tensor, weight: Tensor, bias: Tensor, geometry: ConvGeometry) -> Tensor:
    r""":math:`u = W \ast a + b` for the flattened input maps ``a`` ``(K, B, C·H·W)`` of each model,
    with its own kernels ``weight`` ``(K, O, C, k, k)`` and bias ``(K, O)``; ``(K, B, O·H'·W')``."""
    n_models = weight.shape[0]
    u = F.conv2d(_models_as_channels(a, geometry.in_shape), weight.reshape(-1, *weight.shape[2:]),
                 bias.reshape(-1), stride=geometry.stride, padding=geometry.padding, groups=n_models)
    return _channels_as_models(u, n_models)


def conv_forward(a: Tensor, weight: Tensor, bias: Tensor, geometry: ConvGeometry) -> HiddenCache:
    r"""Forward pass of a convolutional hidden layer, :math:`z = \mathrm{LN}(\mathrm{relu}(W \ast a + b))`
    with LayerNorm over the whole output map of each sample."""
    u = conv_drive(a, weight, bias, geometry)
    z, inv_std = rectify_normalize(u)
    return HiddenCache(a, u, z, inv_std)


def conv_local_grad(cache: HiddenCache, signal: Tensor, geometry: ConvGeometry) -> tuple[Tensor, Tensor]:
    r"""The local term :math:`\sum_n J_n^\top g_n` of a convolutional hidden layer for the signal
    ``signal`` ``(K, B, O·H'·W')`` of the samples of ``cache`` (see the module docstring):
    the correlation of the post-synaptic factor :math:`\delta` with the pre-synaptic map, and
    :math:`\delta` summed over samples and positions. Returns ``(dW (K, O, C, k, k), db (K, O))``."""
    delta = hidden_drive_grad(cache, signal)
    n_models, batch = delta.shape[:2]
    weight_shape = (n_models * geometry.out_channels, geometry.in_shape[0], geometry.kernel, geometry.kernel)
    d_weight = torch.nn.grad.conv2d_weight(
        _models_as_channels(cache.input, geometry.in_shape), weight_shape,
        _models_as_channels(delta, geometry.out_shape), stride=geometry.stride, padding=geometry.padding,
        groups=n_models)
    d_bias = delta.reshape(n_models, batch, geometry.out_channels, -1).sum((1, 3))
    return d_weight.reshape(n_models, geometry.out_channels, *weight_shape[1:]), d_bias


def conv_input_grad(delta: Tensor, weight: Tensor, geometry: ConvGeometry) -> Tensor:
    r"""The transposed convolution :math:`\partial u/\partial a^\top \delta`: the map ``delta``
    ``(K, B, O·H'·W')`` sent back through the kernels ``weight`` ``(K, O, C, k, k)`` (a rule's
    own fixed kernels in feedback alignment) onto the input map, ``(K, B, C·H·W)``."""
    n_models, batch = delta.shape[:2]
    grad = torch.nn.grad.conv2d_input((batch, n_models * geometry.in_shape[0], *geometry.in_shape[1:]),
                                      weight.reshape(-1, *weight.shape[2:]),
                                      _models_as_channels(delta, geometry.out_shape),
                                      stride=geometry.stride, padding=geometry.padding, groups=n_models)
    return _channels_as_models(grad, n_models)


__all__ = ["ConvGeometry", "avg_pool", "avg_pool_transpose", "conv_drive", "conv_forward", "conv_input_grad",
           "conv_local_grad", "pooled_shape"]
