"""Gaussian kernels on windows of samples, and their O(N·d) sliding update.

Every function broadcasts over leading dimensions: a window is a tensor
``(..., N, d)`` — ``...`` is typically a model dimension K (independent seeds
trained side by side) or nothing.
"""
from __future__ import annotations

import torch
from torch import Tensor


def squared_distances(a: Tensor, b: Tensor) -> Tensor:
    r"""Pairwise squared Euclidean distances :math:`D_{ij} = \|a_i - b_j\|^2`.

    ``a`` is ``(..., N, d)``, ``b`` is ``(..., M, d)``; the result is ``(..., N, M)``.
    Computed from the differences themselves (not ``|a|² + |b|² - 2ab``), so that
    the diagonal of ``D(a, a)`` is exactly zero and no cancellation error enters.
    """
    return (a.unsqueeze(-2) - b.unsqueeze(-3)).square().sum(-1)


def gaussian_kernel(a: Tensor, b: Tensor | None = None, *, sigma: float) -> Tensor:
    r"""Gaussian kernel matrix with the bandwidth scaled by the dimension d:

    .. math:: k(a, b) = \exp\!\left(-\frac{\|a - b\|^2}{2\sigma^2 d}\right)

    ``a`` is ``(..., N, d)`` and ``b`` (default ``a``) is ``(..., M, d)``; returns
    ``(..., N, M)``.
    """
    b = a if b is None else b
    d = a.shape[-1]
    return torch.exp(squared_distances(a, b) / (-2.0 * sigma * sigma * d))


def gaussian_kernel_row(new: Tensor, window: Tensor, *, sigma: float) -> Tensor:
    r"""Kernel values of one new sample against every sample of a window:
    :math:`k_j = \exp(-\|v - w_j\|^2 / (2\sigma^2 d))`, ``new`` ``(..., d)``,
    ``window`` ``(..., N, d)`` → ``(..., N)``. Cost O(N·d).
    """
    d = new.shape[-1]
    return torch.exp((window - new.unsqueeze(-2)).square().sum(-1) / (-2.0 * sigma * sigma * d))


def gram_squared_distances(a: Tensor) -> Tensor:
    r"""Squared distances :math:`D_{ij} = \|a_i - a_j\|^2` within one batch through its Gram
    matrix, :math:`\|a_i\|^2 + \|a_j\|^2 - 2 a_i^\top a_j`, clamped at 0 with an exactly zero
    diagonal. ``(..., N, d)`` → ``(..., N, N)`` in O(N²) memory: the minibatch fast path of
    :func:`squared_distances` (O(N²·d) memory), for batches of
    hundreds of samples.
    """
    sq_norms = a.square().sum(-1)
    dist = (sq_norms.unsqueeze(-1) + sq_norms.unsqueeze(-2) - 2.0 * (a @ a.transpose(-1, -2))).clamp_min(0.0)
    eye = torch.eye(a.shape[-2], dtype=torch.bool, device=a.device)
    return dist.masked_fill(eye, 0.0)


def gaussian_gram(a: Tensor, *, s2: float) -> Tensor:
    r"""Gaussian kernel matrix of one batch, :math:`K_{ij} = \exp(-\|a_i - a_j\|^2 / (2 s^2))`,
    ``(..., N, d)`` → ``(..., N, N)``. :math:`s^2 = \sigma^2` gives the absolute bandwidth of
    pHSIC, :math:`s^2 = \sigma^2 d` the dimension-scaled kernel of SPEC §2
    (:func:`gaussian_kernel`).
    """
    return torch.exp(gram_squared_distances(a) / (-2.0 * s2))
