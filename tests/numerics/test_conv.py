"""Convolutional hidden layers (float64): the forward pass against torch's own conv2d and
layer_norm one model at a time, and the local update J_Nᵀ g against autograd of the layer's
own objective with respect to that layer's parameters only — for the exact g_N of the
working memory and for an arbitrary signal, with the padding, stride and pooling variants of
the named architectures and others."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from biohsic.functional import gaussian_kernel
from biohsic.functional.conv import (ConvGeometry, avg_pool, avg_pool_transpose, conv_forward, conv_input_grad,
                                     conv_local_grad)
from biohsic.functional.layers import LAYER_NORM_EPS
from biohsic.functional.modulator import _exact_signals
from biohsic.network import ConvLayer, InputPooling

from ._helpers import F64, generator, one_hot_labels, reference_objective, rel_err

#: (input map, kernels, kernel size, stride, padding): the named architectures' 3×3 "same"
#: convolutions, a strided one, an unpadded 5×5, an odd-sized map with stride 2 and no padding.
GEOMETRIES = [
    ConvGeometry((2, 8, 8), 3, 3, 1, 1),
    ConvGeometry((3, 9, 9), 4, 3, 2, 1),
    ConvGeometry((2, 7, 6), 3, 5, 1, 0),
    ConvGeometry((1, 7, 7), 2, 3, 2, 0),
]
K = 2


def reference_conv_layer(a, weight, bias, geometry):
    """z = LayerNorm(relu(conv2d(a) + b)) over the whole map, model by model, with torch's own
    conv2d and layer_norm; ``a`` ``(K, B, C·H·W)`` → ``(K, B, O·H'·W')``."""
    outs = []
    for k in range(weight.shape[0]):
        maps = a[k].reshape(-1, *geometry.in_shape)
        u = F.conv2d(maps, weight[k], bias[k], stride=geometry.stride, padding=geometry.padding)
        outs.append(F.layer_norm(torch.relu(u), u.shape[1:], eps=LAYER_NORM_EPS).flatten(1))
    return torch.stack(outs)


def conv_problem(geometry, n, seed):
    gen = generator(seed)
    channels = geometry.in_shape[0]
    a = torch.randn(K, n, math.prod(geometry.in_shape), generator=gen, dtype=F64)
    fan_in = channels * geometry.kernel**2
    weight = torch.randn(K, geometry.out_channels, channels, geometry.kernel, geometry.kernel, generator=gen,
                         dtype=F64) / fan_in**0.5
    bias = 0.1 * torch.randn(K, geometry.out_channels, generator=gen, dtype=F64)
    return gen, a, weight, bias


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_forward_equals_torch_conv_and_layer_norm(geometry):
    _, a, weight, bias = conv_problem(geometry, 3, 1)
    cache = conv_forward(a, weight, bias, geometry)
    assert cache.out.shape == (K, 3, math.prod(geometry.out_shape))
    torch.testing.assert_close(cache.out, reference_conv_layer(a, weight, bias, geometry), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("n", [2, 6])
def test_local_update_equals_autograd_of_layer_objective(geometry, n):
    """Exact g_N: Σ_n J_nᵀ g_n equals the gradient of HSIC(X,Z) − γ HSIC(Y,Z) with respect to
    this layer's kernels and biases (its input a is a constant), for each model separately."""
    gen, a, weight, bias = conv_problem(geometry, n, 10 + n)
    x = torch.randn(K, n, 5, generator=gen, dtype=F64)
    y = one_hot_labels(n, 3, gen, K)
    sx, sy, sz, gamma = 0.5, 0.1, 1.0, 2.0
    kx, ky = gaussian_kernel(x, sigma=sx), gaussian_kernel(y, sigma=sy)
    w, b = weight.clone().requires_grad_(), bias.clone().requires_grad_()
    z_ref = reference_conv_layer(a, w, b, geometry)
    loss = reference_objective(kx, ky, gaussian_kernel(z_ref, sigma=sz), gamma).sum()
    grad_w, grad_b = torch.autograd.grad(loss, (w, b))

    cache = conv_forward(a, weight, bias, geometry)
    g = _exact_signals(kx, ky, gaussian_kernel(cache.out, sigma=sz), cache.out, gamma=gamma, sigma_z=sz)
    d_w, d_b = conv_local_grad(cache, g, geometry)
    assert d_w.shape == weight.shape and d_b.shape == bias.shape
    assert grad_w.norm() > 0
    for k in range(K):
        assert rel_err(d_w[k], grad_w[k]) < 1e-8
        assert rel_err(d_b[k], grad_b[k]) < 1e-8


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_local_update_is_the_layers_own_jacobian_transposed_for_any_signal(geometry):
    """J_Nᵀ g for an arbitrary signal g (not a gradient of anything the layer knows)."""
    gen, a, weight, bias = conv_problem(geometry, 4, 3)
    g = torch.randn(K, 4, math.prod(geometry.out_shape), generator=gen, dtype=F64)
    w, b = weight.clone().requires_grad_(), bias.clone().requires_grad_()
    grad_w, grad_b = torch.autograd.grad(reference_conv_layer(a, w, b, geometry), (w, b), grad_outputs=g)
    d_w, d_b = conv_local_grad(conv_forward(a, weight, bias, geometry), g, geometry)
    assert rel_err(d_w, grad_w) < 1e-10
    assert rel_err(d_b, grad_b) < 1e-10


@pytest.mark.parametrize("pool", [2, 3])
def test_conv_layer_with_input_pooling_updates_only_its_own_parameters(pool):
    """A ConvLayer that pools the map below: its update is the gradient with respect to its own
    parameters of g·z through pooling, convolution, rectifier and LayerNorm; the input below
    receives nothing (it is a constant of the layer's objective)."""
    map_shape = (2, 8, 7)
    pooled = (2, 8 // pool, 7 // pool)
    geometry = ConvGeometry(pooled, 3, 3, 1, 1)
    layer = ConvLayer(geometry, seeds=(0, 1), salt=0, dtype=F64, pooling=InputPooling(map_shape, pool))
    gen = generator(5)
    a = torch.randn(K, 3, math.prod(map_shape), generator=gen, dtype=F64, requires_grad=True)
    g = torch.randn(K, 3, layer.width, generator=gen, dtype=F64)
    z = reference_conv_layer(F.avg_pool2d(a.reshape(-1, *map_shape), pool).reshape(K, 3, -1),
                             layer.weight, layer.bias, geometry)
    grad_w, grad_b = torch.autograd.grad(z, (layer.weight, layer.bias), grad_outputs=g)
    with torch.no_grad():
        d_w, d_b = layer.local_grad(layer.forward_cache(a), g)
    assert rel_err(d_w, grad_w) < 1e-10
    assert rel_err(d_b, grad_b) < 1e-10


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_input_grad_is_the_transposed_convolution_of_the_given_kernels(geometry):
    gen, a, _, bias = conv_problem(geometry, 3, 7)
    feedback = torch.randn(K, geometry.out_channels, geometry.in_shape[0], geometry.kernel, geometry.kernel,
                           generator=gen, dtype=F64)
    delta = torch.randn(K, 3, math.prod(geometry.out_shape), generator=gen, dtype=F64)
    a = a.requires_grad_()
    u = torch.stack([F.conv2d(a[k].reshape(-1, *geometry.in_shape), feedback[k], stride=geometry.stride,
                              padding=geometry.padding).flatten(1) for k in range(K)])
    (expected,) = torch.autograd.grad(u, a, grad_outputs=delta)
    assert rel_err(conv_input_grad(delta, feedback, geometry), expected) < 1e-12


@pytest.mark.parametrize("shape,factor", [((2, 8, 8), 2), ((3, 7, 5), 2), ((1, 9, 9), 3)])
def test_avg_pool_and_its_transpose(shape, factor):
    gen = generator(9)
    a = torch.randn(K, 4, math.prod(shape), generator=gen, dtype=F64, requires_grad=True)
    pooled = avg_pool(a, shape, factor)   # through autograd (avg_pool2d)
    reference = F.avg_pool2d(a.detach().reshape(-1, *shape), factor).reshape(K, 4, -1)
    torch.testing.assert_close(pooled.detach(), reference, rtol=1e-14, atol=1e-14)
    with torch.no_grad():                 # the rules' path (strided slices)
        torch.testing.assert_close(avg_pool(a, shape, factor), reference, rtol=1e-14, atol=1e-14)
    g = torch.randn_like(pooled)
    (expected,) = torch.autograd.grad(pooled, a, grad_outputs=g)
    torch.testing.assert_close(avg_pool_transpose(g, shape, factor), expected, rtol=1e-14, atol=1e-14)
