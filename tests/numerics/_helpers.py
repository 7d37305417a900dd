"""Shared helpers of the numerics tests: random windows and reference formulas written
straight from SPEC §2 (explicit centring matrix H, explicit traces)."""
from __future__ import annotations

import torch
from torch import Tensor

F64 = torch.float64


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def one_hot_labels(n: int, classes: int, gen: torch.Generator, *lead: int) -> Tensor:
    """Random one-hot labels ``(*lead, n, classes)`` in float64."""
    idx = torch.randint(classes, (*lead, n), generator=gen)
    return torch.nn.functional.one_hot(idx, classes).to(F64)


def window(n: int, d_x: int, d_y: int, d_z: int, seed: int, *lead: int) -> tuple[Tensor, Tensor, Tensor]:
    """A random window (x, y, z): Gaussian inputs and layer outputs, one-hot labels."""
    gen = generator(seed)
    x = torch.randn(*lead, n, d_x, generator=gen, dtype=F64)
    y = one_hot_labels(n, d_y, gen, *lead)
    z = torch.randn(*lead, n, d_z, generator=gen, dtype=F64)
    return x, y, z


def centering_matrix(n: int, dtype: torch.dtype = F64) -> Tensor:
    """H = I - 11ᵀ/N as an explicit matrix."""
    return torch.eye(n, dtype=dtype) - torch.full((n, n), 1.0 / n, dtype=dtype)


def reference_hsic(ka: Tensor, kb: Tensor) -> Tensor:
    """tr(K_A H K_B H) / (N-1)² with an explicit H, over any leading dimensions."""
    n = ka.shape[-1]
    h = centering_matrix(n, ka.dtype).to(ka.device)
    return torch.diagonal(ka @ h @ kb @ h, dim1=-2, dim2=-1).sum(-1) / (n - 1) ** 2


def reference_objective(kx: Tensor, ky: Tensor, kz: Tensor, gamma: float) -> Tensor:
    """L = HSIC(X, Z) - γ HSIC(Y, Z), both terms with the explicit trace formula."""
    return reference_hsic(kx, kz) - gamma * reference_hsic(ky, kz)


def rel_err(actual: Tensor, expected: Tensor) -> float:
    """‖actual - expected‖ / ‖expected‖ (Frobenius, over the whole tensor)."""
    actual, expected = actual.to(F64), expected.to(F64)
    return float((actual - expected).norm() / expected.norm())
