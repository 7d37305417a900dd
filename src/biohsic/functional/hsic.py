"""The Hilbert-Schmidt independence criterion and the layer's bottleneck objective."""
from __future__ import annotations

from torch import Tensor


def center(kernel: Tensor) -> Tensor:
    r"""Double centring :math:`H K H` with :math:`H = I - \frac{1}{N}\mathbf{1}\mathbf{1}^\top`.

    Written as :math:`(HKH)_{ij} = K_{ij} - \bar K_{i\cdot} - \bar K_{\cdot j} + \bar K`
    (row, column and grand means), which costs O(N²) instead of two matrix products.
    """
    row_mean = kernel.mean(-1, keepdim=True)
    col_mean = kernel.mean(-2, keepdim=True)
    return kernel - row_mean - col_mean + row_mean.mean(-2, keepdim=True)


def hsic(kernel_a: Tensor, kernel_b: Tensor) -> Tensor:
    r"""Biased HSIC estimator of a window of N samples:

    .. math:: \mathrm{HSIC}(A, B) = \frac{\operatorname{tr}(K_A H K_B H)}{(N-1)^2}

    ``kernel_a`` and ``kernel_b`` are ``(..., N, N)``; returns ``(...)``. Uses
    :math:`\operatorname{tr}(K_A H K_B H) = \sum_{ij} (H K_A H)_{ij} (H K_B H)_{ji}` (H is
    idempotent; centring both kernels keeps the rounding error relative to the result small
    even when a kernel is nearly constant).
    """
    n = kernel_a.shape[-1]
    return (center(kernel_a) * center(kernel_b).transpose(-1, -2)).sum((-1, -2)) / (n - 1) ** 2


def layer_objective(kernel_x: Tensor, kernel_y: Tensor, kernel_z: Tensor, gamma: float) -> Tensor:
    r"""The hidden layer's information-bottleneck objective (minimised):

    .. math:: L = \mathrm{HSIC}(X, Z) - \gamma\,\mathrm{HSIC}(Y, Z)
              = \frac{\operatorname{tr}\big(H (K_X - \gamma K_Y) H K_Z\big)}{(N-1)^2}

    X is the network's input (not the layer's), Y the one-hot labels, Z the layer's output.
    """
    return hsic(kernel_x - gamma * kernel_y, kernel_z)
