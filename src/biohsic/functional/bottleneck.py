r"""The normalised HSIC of the HSIC bottleneck (Ma, Lewis & Kleijn, AAAI 2020; SPEC §6).

With the centred kernel matrix :math:`\bar K = H K H` of m samples and :math:`c = \epsilon m`,

.. math:: R = \bar K (\bar K + c I)^{-1} = I - c S, \qquad S = (\bar K + c I)^{-1},
          \qquad \mathrm{nHSIC}(A, B) = \operatorname{tr}(R_A R_B),

and each hidden layer minimises :math:`L = \mathrm{nHSIC}(X, Z) - \beta\,\mathrm{nHSIC}(Y, Z)`.
(The authors' code centres K on one side only, :math:`KH`; this module follows their
paper's symmetric :math:`HKH`.) The plain biased HSIC of SPEC §2 is
:func:`biohsic.functional.hsic.layer_objective`.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .hsic import center
from .phsic import gaussian_kernel_vjp

NORMALIZED_EPS = 1e-5


def _resolvent(kernel: Tensor, eps: float) -> Tensor:
    r""":math:`S = (HKH + \epsilon m I)^{-1}`."""
    m = kernel.shape[-1]
    eye = torch.eye(m, dtype=kernel.dtype, device=kernel.device)
    return torch.linalg.inv(center(kernel) + eps * m * eye)


def _normalized_operator(kernel: Tensor, eps: float) -> Tensor:
    r""":math:`R = I - \epsilon m S` (symmetric)."""
    m = kernel.shape[-1]
    eye = torch.eye(m, dtype=kernel.dtype, device=kernel.device)
    return eye - eps * m * _resolvent(kernel, eps)


def normalized_hsic(kernel_a: Tensor, kernel_b: Tensor, eps: float = NORMALIZED_EPS) -> Tensor:
    r""":math:`\mathrm{nHSIC}(A, B) = \operatorname{tr}(R_A R_B)`, ``(..., m, m)`` → ``(...)``."""
    r_a, r_b = _normalized_operator(kernel_a, eps), _normalized_operator(kernel_b, eps)
    return (r_a * r_b.transpose(-1, -2)).sum((-1, -2))


def normalized_objective(kernel_x: Tensor, kernel_y: Tensor, kernel_z: Tensor, beta: float,
                         eps: float = NORMALIZED_EPS) -> Tensor:
    r""":math:`L = \mathrm{nHSIC}(X, Z) - \beta\,\mathrm{nHSIC}(Y, Z)`."""
    return normalized_hsic(kernel_x, kernel_z, eps) - beta * normalized_hsic(kernel_y, kernel_z, eps)


def normalized_kernel_grad(kernel_x: Tensor, kernel_y: Tensor, kernel_z: Tensor, beta: float,
                           eps: float = NORMALIZED_EPS) -> Tensor:
    r"""The gradient of :func:`normalized_objective` with respect to :math:`K_Z`.

    With :math:`B = R_X - \beta R_Y`, :math:`L = \operatorname{tr}(B R_Z)` and
    :math:`dR_Z = c\, S_Z\, d\bar K_Z\, S_Z`, so

    .. math:: \frac{\partial L}{\partial K_Z} = H\,\big(c\, S_Z B S_Z\big)\,H .
    """
    m = kernel_z.shape[-1]
    b = _normalized_operator(kernel_x, eps) - beta * _normalized_operator(kernel_y, eps)
    s = _resolvent(kernel_z, eps)
    return center(eps * m * s @ b @ s)


def normalized_signal(kernel_x: Tensor, kernel_y: Tensor, kernel_z: Tensor, z: Tensor, *, beta: float,
                      sigma_z: float, eps: float = NORMALIZED_EPS) -> Tensor:
    r""":math:`g_n = \partial L/\partial z_n` of :func:`normalized_objective` for every sample,
    with :math:`K_Z` the dimension-scaled Gaussian kernel of SPEC §2 on ``z`` ``(..., m, d)``
    (bandwidth :math:`s^2 = \sigma_z^2 d`). Returns ``(..., m, d)``."""
    grad = normalized_kernel_grad(kernel_x, kernel_y, kernel_z, beta, eps)
    return gaussian_kernel_vjp(grad, kernel_z, z, s2=sigma_z * sigma_z * z.shape[-1])
