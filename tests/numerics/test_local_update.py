"""The three-factor rule is the gradient (SPEC §3): Σ_n J_nᵀ g_n, computed with the layer's
local Jacobian and the modulatory signal, equals autograd of the layer objective; the
readout's delta rule equals autograd of the cross-entropy."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from biohsic.functional import (cross_entropy_grad, dense, gaussian_kernel, hidden_forward,
                                hidden_local_grad, leaky_step)
from biohsic.functional.modulator import _exact_signals
from biohsic.functional.layers import LAYER_NORM_EPS, hidden_drive_grad, output_error, rectify_normalize

from ._helpers import F64, generator, one_hot_labels, reference_objective, rel_err

D_X, D_IN, D_OUT, CLASSES = 6, 5, 7, 3


def reference_layer(a, weight, bias):
    """z = LayerNorm(relu(W a + b)) with torch's own layer_norm (no affine parameters)."""
    u = a @ weight.transpose(-1, -2) + bias.unsqueeze(-2)
    return F.layer_norm(torch.relu(u), (weight.shape[-2],), eps=LAYER_NORM_EPS)


def layer_problem(n, seed, *lead):
    gen = generator(seed)
    x = torch.randn(*lead, n, D_X, generator=gen, dtype=F64)           # network input
    y = one_hot_labels(n, CLASSES, gen, *lead)
    a = torch.randn(*lead, n, D_IN, generator=gen, dtype=F64)          # this layer's input
    weight = torch.randn(*lead, D_OUT, D_IN, generator=gen, dtype=F64) / D_IN**0.5
    bias = 0.1 * torch.randn(*lead, D_OUT, generator=gen, dtype=F64)
    return x, y, a, weight, bias


@pytest.mark.parametrize("lead", [(), (3,)])
@pytest.mark.parametrize("sigmas", [(0.5, 0.1, 1.0), (1.0, 0.1, 0.5), (2.0, 1.0, 3.0)])
@pytest.mark.parametrize("gamma", [0.0, 2.0, 50.0])
@pytest.mark.parametrize("n", [2, 6, 64])
def test_local_rule_equals_autograd_of_layer_objective(n, gamma, sigmas, lead):
    sx, sy, sz = sigmas
    x, y, a, weight, bias = layer_problem(n, n + int(gamma), *lead)
    kx, ky = gaussian_kernel(x, sigma=sx), gaussian_kernel(y, sigma=sy)

    w, b = weight.clone().requires_grad_(), bias.clone().requires_grad_()
    z_ref = reference_layer(a, w, b)
    loss = reference_objective(kx, ky, gaussian_kernel(z_ref, sigma=sz), gamma).sum()  # sum over models
    grad_w, grad_b = torch.autograd.grad(loss, (w, b))

    cache = hidden_forward(a, weight, bias)
    torch.testing.assert_close(cache.out, z_ref.detach(), rtol=1e-12, atol=1e-12)
    g = _exact_signals(kx, ky, gaussian_kernel(cache.out, sigma=sz), cache.out, gamma=gamma, sigma_z=sz)
    d_w, d_b = hidden_local_grad(cache, g)
    assert d_w.shape == weight.shape and d_b.shape == bias.shape
    assert grad_w.norm() > 0
    assert rel_err(d_w, grad_w) < 1e-8
    assert rel_err(d_b, grad_b) < 1e-8
    if lead:  # each model's update is its own gradient, none mixed in from the others
        for k in range(lead[0]):
            assert rel_err(d_w[k], grad_w[k]) < 1e-8


@pytest.mark.parametrize("lead", [(), (3,)])
@pytest.mark.parametrize("batch", [1, 5])
def test_hidden_local_grad_equals_autograd_of_signal_dot_output(batch, lead):
    """For any signal g: Σ_n J_nᵀ g_n = ∂/∂θ Σ_n g_n · z_n, including dead (u ≤ 0) units."""
    _, _, a, weight, bias = layer_problem(batch, 3, *lead)
    g = torch.randn(*lead, batch, D_OUT, generator=generator(4), dtype=F64)
    w, b = weight.clone().requires_grad_(), bias.clone().requires_grad_()
    grad_w, grad_b = torch.autograd.grad((g * reference_layer(a, w, b)).sum(), (w, b))
    cache = hidden_forward(a, weight, bias)
    assert (cache.drive <= 0).any()  # the rectifier's gate is exercised
    d_w, d_b = hidden_local_grad(cache, g)
    assert rel_err(d_w, grad_w) < 1e-10
    assert rel_err(d_b, grad_b) < 1e-10


@pytest.mark.parametrize("lead", [(), (3,)])
@pytest.mark.parametrize("batch", [1, 6])
def test_cross_entropy_grad_equals_autograd(batch, lead):
    gen = generator(5 + batch)
    features = torch.randn(*lead, batch, D_OUT, generator=gen, dtype=F64)
    weight = torch.randn(*lead, CLASSES, D_OUT, generator=gen, dtype=F64)
    bias = torch.randn(*lead, CLASSES, generator=gen, dtype=F64)
    targets = one_hot_labels(batch, CLASSES, gen, *lead)
    w, b = weight.clone().requires_grad_(), bias.clone().requires_grad_()
    logits = dense(features, w, b)
    # mean softmax cross-entropy of each model, summed over models
    loss = F.cross_entropy(logits.reshape(-1, CLASSES), targets.argmax(-1).reshape(-1), reduction="sum") / batch
    grad_w, grad_b = torch.autograd.grad(loss, (w, b))
    d_w, d_b = cross_entropy_grad(features, logits.detach(), targets)
    assert rel_err(d_w, grad_w) < 1e-12
    assert rel_err(d_b, grad_b) < 1e-12


def test_dense_equals_explicit_matrix_vector_product():
    gen = generator(9)
    a = torch.randn(2, 4, 3, generator=gen, dtype=F64)
    weight = torch.randn(2, 5, 3, generator=gen, dtype=F64)
    bias = torch.randn(2, 5, generator=gen, dtype=F64)
    out = dense(a, weight, bias)
    for k in range(2):
        for n in range(4):
            torch.testing.assert_close(out[k, n], weight[k] @ a[k, n] + bias[k], rtol=1e-13, atol=1e-14)


def test_leaky_step_is_the_euler_step_of_spec_5():
    """u ← u + (dt/τ)(I - u): by hand for dt = 1, τ = 5, and the fixed point u = I."""
    state = torch.tensor([[0.0, 1.0, -2.0]], dtype=F64)
    drive = torch.tensor([[1.0, 1.0, 3.0]], dtype=F64)
    expected = torch.tensor([[0.2, 1.0, -1.0]], dtype=F64)
    torch.testing.assert_close(leaky_step(state, drive, dt=1.0, tau=5.0), expected, rtol=1e-15, atol=1e-15)
    u = state
    for _ in range(200):
        u = leaky_step(u, drive, dt=1.0, tau=5.0)
    torch.testing.assert_close(u, drive, rtol=0, atol=1e-12)


@pytest.mark.parametrize("eps", [LAYER_NORM_EPS, 1e-2])
def test_rectify_normalize_equals_torch_layer_norm(eps):
    u = torch.randn(3, 4, 9, generator=generator(12), dtype=F64)
    z, inv_std = rectify_normalize(u, eps)
    h = torch.relu(u)
    torch.testing.assert_close(z, F.layer_norm(h, (9,), eps=eps), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(inv_std, 1 / torch.sqrt(h.var(-1, unbiased=False, keepdim=True) + eps),
                               rtol=1e-12, atol=0)


def test_hidden_drive_grad_equals_autograd_wrt_drive():
    _, _, a, weight, bias = layer_problem(5, 13, 2)
    g = torch.randn(2, 5, D_OUT, generator=generator(14), dtype=F64)
    u = dense(a, weight, bias).requires_grad_()
    (grad_u,) = torch.autograd.grad((g * F.layer_norm(torch.relu(u), (D_OUT,), eps=LAYER_NORM_EPS)).sum(), u)
    assert rel_err(hidden_drive_grad(hidden_forward(a, weight, bias), g), grad_u) < 1e-10


def test_output_error_equals_autograd_wrt_logits():
    gen = generator(15)
    logits = torch.randn(2, 6, CLASSES, generator=gen, dtype=F64).requires_grad_()
    targets = one_hot_labels(6, CLASSES, gen, 2)
    loss = F.cross_entropy(logits.reshape(-1, CLASSES), targets.argmax(-1).reshape(-1), reduction="sum") / 6
    (grad,) = torch.autograd.grad(loss, logits)
    assert rel_err(output_error(logits.detach(), targets), grad) < 1e-12
