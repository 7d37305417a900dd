"""The exact modulatory signal is accurate where the kernel of z is nearly diagonal (small σ_z).

The reference is independent of :mod:`biohsic.functional`: the layer objective
L(z) = HSIC(X, Z) - γ HSIC(Y, Z) written from its definition (explicit centring matrix and
trace, the Gaussian kernel written out here) and differentiated by autograd in float64.
The expanded form (Σ_j w_j) z_n - Σ_j w_j z_j loses every digit here: its self-term
M_nn z_n is about 1e40 times the signal at σ_z = 0.1.
"""
from __future__ import annotations

import pytest
import torch

from biohsic.functional.modulator import _exact_signals, _signal_from_kernels
from biohsic.functional.kernels import gaussian_kernel

from ._helpers import F64, generator, one_hot_labels, rel_err

SIGMA_X, SIGMA_Y, GAMMA = 0.5, 0.25, 2.0
D_X, D_Y, D_Z = 6, 4, 16


def definition_kernel(v: torch.Tensor, sigma: float) -> torch.Tensor:
    """exp(-|v_i - v_j|² / (2σ²d)), every pair written out as a loop over the dimension."""
    n, d = v.shape
    squared = torch.zeros(n, n, dtype=F64)
    for k in range(d):
        squared = squared + (v[:, None, k] - v[None, :, k]) ** 2
    return torch.exp(-squared / (2 * sigma**2 * d))


def definition_objective(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, sigma_z: float) -> torch.Tensor:
    """L = [tr(K_X H K_Z H) - γ tr(K_Y H K_Z H)] / (N-1)² with H = I - 11ᵀ/N."""
    n = z.shape[0]
    h = torch.eye(n, dtype=F64) - 1.0 / n
    kz = definition_kernel(z, sigma_z)
    hsic_x = torch.trace(definition_kernel(x, SIGMA_X) @ h @ kz @ h)
    hsic_y = torch.trace(definition_kernel(y, SIGMA_Y) @ h @ kz @ h)
    return (hsic_x - GAMMA * hsic_y) / (n - 1) ** 2


def reference_signals(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, sigma_z: float) -> torch.Tensor:
    """∂L/∂z_n for every n by autograd of :func:`definition_objective`, ``(N, d_z)``."""
    z = z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(definition_objective(x, y, z, sigma_z), z)
    return grad


def activations(kind: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A window (x, y, z): z Gaussian (``random``), a LayerNorm of rectified drives
    (``layernorm``, as a hidden layer's output), or Gaussian with two near-duplicates."""
    gen = generator(seed)
    x = torch.randn(n, D_X, generator=gen, dtype=F64)
    y = one_hot_labels(n, D_Y, gen)
    z = torch.randn(n, D_Z, generator=gen, dtype=F64)
    if kind == "layernorm":
        z = torch.nn.functional.layer_norm(torch.relu(z + 0.3), (D_Z,))
    elif kind == "near-duplicates":
        z[-1] = z[0] + 1e-6 * torch.randn(D_Z, generator=gen, dtype=F64)
    return x, y, z


SIGMA_Z = [0.1, 0.2, 0.3, 1.0]
KINDS = ["random", "layernorm", "near-duplicates"]


@pytest.mark.parametrize("n", [2, 8, 64])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sigma_z", SIGMA_Z)
def test_every_sample_signal_matches_autograd_of_the_definition(sigma_z, kind, n):
    x, y, z = activations(kind, n, seed=n)
    expected = reference_signals(x, y, z, sigma_z)
    kx, ky, kz = gaussian_kernel(x, sigma=SIGMA_X), gaussian_kernel(y, sigma=SIGMA_Y), gaussian_kernel(z, sigma=sigma_z)
    got = _exact_signals(kx, ky, kz, z, gamma=GAMMA, sigma_z=sigma_z)
    for index in range(n):
        assert rel_err(got[index], expected[index]) <= 1e-9, f"sample {index}"


@pytest.mark.parametrize("n", [2, 8, 64])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sigma_z", SIGMA_Z)
def test_newest_sample_signal_matches_autograd_of_the_definition(sigma_z, kind, n):
    x, y, z = activations(kind, n, seed=100 + n)
    expected = reference_signals(x, y, z, sigma_z)
    kx, ky, kz = gaussian_kernel(x, sigma=SIGMA_X), gaussian_kernel(y, sigma=SIGMA_Y), gaussian_kernel(z, sigma=sigma_z)
    for index in (0, n - 1, torch.tensor(n - 1)):
        got = _signal_from_kernels(kx, ky, kz, z, index, gamma=GAMMA, sigma_z=sigma_z)
        assert rel_err(got, expected[int(index)]) <= 1e-9, f"sample {index}"


@pytest.mark.parametrize("n", [8, 64])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sigma_z", [0.3, 1.0])
def test_float32_signal_matches_the_float64_definition(sigma_z, kind, n):
    """Where float32 still represents the kernel (σ_z ≥ 0.3), the float32 signal keeps float32's accuracy."""
    x, y, z = (v.float().double() for v in activations(kind, n, seed=200 + n))
    expected = reference_signals(x, y, z, sigma_z)
    x32, y32, z32 = x.float(), y.float(), z.float()
    kx, ky = gaussian_kernel(x32, sigma=SIGMA_X), gaussian_kernel(y32, sigma=SIGMA_Y)
    kz = gaussian_kernel(z32, sigma=sigma_z)
    assert rel_err(_exact_signals(kx, ky, kz, z32, gamma=GAMMA, sigma_z=sigma_z), expected) <= 1e-4
    newest = _signal_from_kernels(kx, ky, kz, z32, n - 1, gamma=GAMMA, sigma_z=sigma_z)
    assert rel_err(newest, expected[-1]) <= 1e-4
