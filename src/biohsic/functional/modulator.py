r"""The global modulatory signal of the three-factor rule (SPEC §3, §3.1).

Notation: a window of N samples, kernel matrices :math:`K_X, K_Y, K_Z` (``(..., N, N)``),
the layer's outputs ``z`` (``(..., N, d_z)``), :math:`c = (N-1)^{-2}`,
:math:`s^2 = \sigma_z^2 d_z`, :math:`A = K_X - \gamma K_Y` and :math:`M = HAH`.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from .hsic import center
from .kernels import gaussian_kernel

KINDS = ("exact", "paper", "paper-jan2024")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown modulator kind {kind!r}; choose one of {', '.join(KINDS)}")


def _select(t: Tensor, index: int | Tensor, dim: int) -> Tensor:
    """Entry ``index`` of ``t`` along ``dim``, the dimension kept (size 1). ``index``: an int
    (negative counts from the end) or an integer tensor of one element, so that a compiled
    graph takes the position as data rather than as a constant."""
    if isinstance(index, int):
        return t.narrow(dim, index % t.shape[dim], 1)
    return t.index_select(dim, torch.as_tensor(index, device=t.device).reshape(1) % t.shape[dim])


def _exact_signals(kernel_x: Tensor, kernel_y: Tensor, kernel_z: Tensor, z: Tensor, *,
                   gamma: float, sigma_z: float) -> Tensor:
    r"""The modulatory signal of every sample of the window, :math:`g_n = \partial L/\partial z_n`:

    .. math:: g_n = -\frac{2c}{s^2} \sum_{j \ne n} M_{nj} K_{Z,nj} (z_n - z_j)

    Summed over the differences themselves: the self-term j = n is exactly zero, so nothing
    large cancels (the expanded form :math:`(\sum_j w_j) z_n - \sum_j w_j z_j` loses every
    digit once :math:`K_{Z,nj} \ll 1` for j ≠ n, i.e. small :math:`\sigma_z`). O(N²·d_z)
    memory. Returns ``(..., N, d_z)``. The minibatch HSIC rule's signal; the streaming rule
    calls :func:`_signal_from_kernels` for the newest sample only.
    """
    n, dz = z.shape[-2], z.shape[-1]
    weights = center(kernel_x - gamma * kernel_y) * kernel_z
    scale = -2.0 / ((n - 1) ** 2 * sigma_z**2 * dz)
    differences = z.unsqueeze(-2) - z.unsqueeze(-3)             # (..., N, N, d_z): z_n - z_j
    return scale * (weights.unsqueeze(-1) * differences).sum(-2)


def _modulation_row(kernel_x: Tensor, kernel_y: Tensor, index: int | Tensor, *, gamma: float) -> Tensor:
    r"""Row n of :math:`M = H (K_X - \gamma K_Y) H`, shared by every layer's signal.

    With the row means :math:`r = A\mathbf{1}/N` and the grand mean :math:`m` of
    :math:`A = K_X - \gamma K_Y`: :math:`M_{nj} = A_{nj} - r_n - r_j + m`. O(N²). Returns ``(..., N)``.
    """
    a = kernel_x - gamma * kernel_y
    row_means = a.mean(-1)
    return (_select(a, index, -2).squeeze(-2) - row_means - _select(row_means, index, -1)
            + row_means.mean(-1, keepdim=True))


def _exact_signal_from_row(m_row: Tensor, kernel_z_row: Tensor, z: Tensor, index: int | Tensor, *,
                           sigma_z: float) -> Tensor:
    r""":math:`g_n` from row n of M and row n of :math:`K_Z`: with :math:`w_j = M_{nj} K_{Z,nj}`,

    .. math:: g_n = -\frac{2c}{s^2}\sum_{j \ne n} w_j (z_n - z_j)

    summed over the differences, so the self-term is exactly zero and nothing cancels (see
    :func:`_exact_signals`). O(N·d_z). ``m_row``, ``kernel_z_row`` ``(..., N)``, ``z``
    ``(..., N, d_z)``, ``index`` an int or a 0-d integer tensor → ``(..., d_z)``.
    """
    n, dz = z.shape[-2], z.shape[-1]
    w = m_row * kernel_z_row
    scale = -2.0 / ((n - 1) ** 2 * sigma_z**2 * dz)
    differences = _select(z, index, -2) - z
    return scale * (w.unsqueeze(-2) @ differences).squeeze(-2)


def _paper_signal(kernel_x: Tensor, kernel_y: Tensor, kernel_z: Tensor, z: Tensor, index: int | Tensor, *,
                  gamma: float, sigma_z: float, variant: str = "paper") -> Tensor:
    r"""The modulatory signal of the authors' published code (SPEC §3.1), for reproduction.

    With :math:`\alpha_i = 2 K_{Z,ni}(z_n - z_i)/s^2` and :math:`HA` = A with its
    column means removed, :math:`(HA)_{ij} = A_{ij} - \frac{1}{N}\sum_k A_{kj}`:

    - ``variant="paper"`` (code after Oct 2024):
      :math:`\xi = \frac{c}{N}\big[\sum_{i\ne n} (HA)_{ii}\alpha_i + (HA)_{nn}\sum_{i\ne n}\alpha_i\big]`
    - ``variant="paper-jan2024"`` (the runs behind the paper's figures):
      :math:`\xi = \frac{c}{N}(HA)_{nn}\sum_{i\ne n}\alpha_i`

    It is *not* the gradient of the layer objective; the ``"exact"`` kind is.
    Returns ``(..., d_z)``.
    """
    n, dz = z.shape[-2], z.shape[-1]
    a = kernel_x - gamma * kernel_y
    ha_diag = torch.diagonal(a, dim1=-2, dim2=-1) - a.mean(-2)
    alpha = (2.0 / (sigma_z**2 * dz)) * _select(kernel_z, index, -2).transpose(-1, -2) * (_select(z, index, -2) - z)
    c = 1.0 / (n - 1) ** 2
    ha_nn = _select(ha_diag, index, -1)
    if variant == "paper-jan2024":
        return (c / n) * ha_nn * alpha.sum(-2)
    if variant != "paper":
        raise ValueError(f"unknown paper variant {variant!r}; choose 'paper' or 'paper-jan2024'")
    return (c / n) * ((ha_diag.unsqueeze(-1) * alpha).sum(-2) + ha_nn * alpha.sum(-2))


def _signal_from_kernels(kernel_x: Tensor, kernel_y: Tensor, kernel_z: Tensor, z: Tensor, index: int | Tensor, *,
                         gamma: float, sigma_z: float, kind: str = "exact") -> Tensor:
    """The modulatory signal of sample ``index`` of a window whose kernels are known, of
    the given ``kind`` (``"exact"``, ``"paper"`` or ``"paper-jan2024"``). ``"exact"`` costs
    O(N² + N·d_z): :func:`_modulation_row` then :func:`_exact_signal_from_row`."""
    _check_kind(kind)
    if kind == "exact":
        m_row = _modulation_row(kernel_x, kernel_y, index, gamma=gamma)
        return _exact_signal_from_row(m_row, _select(kernel_z, index, -2).squeeze(-2), z, index, sigma_z=sigma_z)
    return _paper_signal(kernel_x, kernel_y, kernel_z, z, index, gamma=gamma, sigma_z=sigma_z, variant=kind)


def modulatory_signal(x: Tensor, y: Tensor, z: Tensor, *, gamma: float,
                      sigmas: Sequence[float], kind: str = "exact") -> Tensor:
    r"""The global modulatory signal :math:`g_N` of the newest sample of a window.

    ``x`` ``(N, d_x)``, ``y`` ``(N, d_y)`` (one-hot) and ``z`` ``(N, d_z)`` are the
    window's inputs, labels and the layer's outputs, newest last (leading batch
    dimensions are allowed); ``sigmas = (σx, σy, σz)``. ``kind="exact"`` gives

    .. math:: g_N = \frac{\partial}{\partial z_N}\big[\mathrm{HSIC}(X,Z) - \gamma\,\mathrm{HSIC}(Y,Z)\big]
              = -\frac{2c}{s^2}\sum_j M_{Nj} K_{Z,Nj}(z_N - z_j);

    ``kind="paper"`` / ``"paper-jan2024"`` the authors' signal (SPEC §3.1).
    Returns ``(..., d_z)``.
    """
    _check_kind(kind)
    if not (x.shape[-2] == y.shape[-2] == z.shape[-2]):
        raise ValueError(f"x, y and z must hold the same number of samples, got {x.shape[-2]}, "
                         f"{y.shape[-2]} and {z.shape[-2]}")
    if z.shape[-2] < 2:
        raise ValueError(f"a window needs at least 2 samples, got {z.shape[-2]}")
    if len(sigmas) != 3:
        raise ValueError(f"sigmas takes three values (σx, σy, σz), got {len(sigmas)}")
    if not all(math.isfinite(s) and s > 0 for s in sigmas):
        raise ValueError(f"sigmas must be positive and finite, got {tuple(sigmas)}")
    sigma_x, sigma_y, sigma_z = sigmas
    kernels = [gaussian_kernel(v, sigma=s) for v, s in ((x, sigma_x), (y, sigma_y), (z, sigma_z))]
    return _signal_from_kernels(*kernels, z, -1, gamma=gamma, sigma_z=sigma_z, kind=kind)
