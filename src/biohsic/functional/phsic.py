r"""pHSIC, the plausible kernelised bottleneck of Pogodin & Latham (NeurIPS 2020; SPEC §6).

Each hidden layer minimises, on m samples with kernel matrices :math:`K_Z` (its output)
and :math:`K_Y` (the labels),

.. math:: L = \mathrm{pHSIC}(Z, Z) - \gamma\,\mathrm{pHSIC}(Z, Y), \qquad
          \mathrm{pHSIC}(A, B) = \overline{(K_A - \bar K_A) \circ K_B}
          = \overline{K_A \circ K_B} - \bar K_A \bar K_B

(bars: means over all m² entries; the estimator is symmetric in A and B).

Kernels:

- on the layer's output, a Gaussian with an *absolute* bandwidth,
  :math:`k(a, b) = \exp(-\|a - b\|^2 / (2\sigma^2))` (not scaled by the dimension, unlike
  :func:`biohsic.functional.kernels.gaussian_kernel`; the authors use σ = 5;
  :func:`gaussian_gram`), or the cosine similarity :math:`k(a, b) = \hat a^\top \hat b`, :math:`\hat a = a / \max(\|a\|, \epsilon)`;
- on the labels, the cosine similarity of *centred* one-hot labels :math:`y - \frac{1}{C}\mathbf 1`
  (each label centred over its C classes, as the authors' ``--center-labels``): 1 for the
  same class, :math:`-1/(C-1)` otherwise, so that its mean over balanced classes is 0.

Two forms of the update (both in :mod:`biohsic.rules.phsic`):

- the **minibatch** form: the exact gradient of L on a minibatch (:func:`phsic_signal`);
- the **plausible two-sample** form (the paper's biologically plausible rule, a working
  memory of one sample): the pair (current sample t, previous sample t-1) with the kernel
  means replaced by running means over the stream (:func:`running_mean`,
  :func:`pair_factor`, :func:`pair_signal`).

Every function broadcasts over leading dimensions (the model dimension K).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .kernels import gaussian_gram

Z_KERNELS = ("gaussian", "cosine")
COSINE_EPS = 1e-6


def _check_kind(kind: str) -> None:
    if kind not in Z_KERNELS:
        raise ValueError(f"unknown pHSIC kernel {kind!r}; choose one of {', '.join(Z_KERNELS)}")


def normalize(a: Tensor, eps: float = COSINE_EPS) -> Tensor:
    r""":math:`\hat a = a / \max(\|a\|, \epsilon)` along the last dimension."""
    return a / a.norm(dim=-1, keepdim=True).clamp_min(eps)


def cosine_kernel(a: Tensor, b: Tensor | None = None, *, eps: float = COSINE_EPS) -> Tensor:
    r"""Cosine similarity kernel :math:`k(a, b) = \hat a^\top \hat b` with
    :math:`\hat a = a / \max(\|a\|, \epsilon)` (a zero vector is similar to nothing).

    ``a`` ``(..., N, d)``, ``b`` (default ``a``) ``(..., M, d)`` → ``(..., N, M)``.
    """
    a_hat = normalize(a, eps)
    b_hat = a_hat if b is None else normalize(b, eps)
    return a_hat @ b_hat.transpose(-1, -2)


def label_kernel(y: Tensor, y2: Tensor | None = None) -> Tensor:
    r"""The label kernel: cosine similarity of one-hot labels centred over their C classes,
    :math:`k(y, y') = \cos(y - \tfrac{1}{C}\mathbf 1,\; y' - \tfrac{1}{C}\mathbf 1)`
    (1 for the same class, :math:`-1/(C-1)` otherwise). ``y`` ``(..., N, C)`` → ``(..., N, M)``."""
    y2 = y if y2 is None else y2
    return cosine_kernel(y - y.mean(-1, keepdim=True), y2 - y2.mean(-1, keepdim=True))


def z_kernel(z: Tensor, *, kind: str, sigma: float) -> Tensor:
    r"""The kernel matrix of layer outputs ``(..., N, d)``: ``"gaussian"`` with the absolute
    bandwidth ``sigma`` (:func:`gaussian_gram` with :math:`s^2 = \sigma^2`) or ``"cosine"``
    (:func:`cosine_kernel`; ``sigma`` unused)."""
    _check_kind(kind)
    if kind == "gaussian":
        return gaussian_gram(z, s2=sigma * sigma)
    return cosine_kernel(z)


def phsic(kernel_a: Tensor, kernel_b: Tensor) -> Tensor:
    r""":math:`\mathrm{pHSIC}(A, B) = \frac{1}{m^2}\sum_{ij} (K_{A,ij} - \bar K_A) K_{B,ij}`,
    ``(..., m, m)`` → ``(...)``."""
    centred = kernel_a - kernel_a.mean((-1, -2), keepdim=True)
    return (centred * kernel_b).mean((-1, -2))


def phsic_objective(kernel_z: Tensor, kernel_y: Tensor, gamma: float) -> Tensor:
    r"""The layer objective :math:`L = \mathrm{pHSIC}(Z, Z) - \gamma\,\mathrm{pHSIC}(Z, Y)`."""
    return phsic(kernel_z, kernel_z) - gamma * phsic(kernel_y, kernel_z)


def phsic_kernel_grad(kernel_z: Tensor, kernel_y: Tensor, gamma: float) -> Tensor:
    r"""The gradient of :func:`phsic_objective` with respect to the entries of :math:`K_Z`:

    .. math:: \frac{\partial L}{\partial K_{Z,ij}} = \frac{1}{m^2}
              \Big[2\big(K_{Z,ij} - \bar K_Z\big) - \gamma\big(K_{Y,ij} - \bar K_Y\big)\Big]

    (the first term includes the dependence of :math:`\bar K_Z` on :math:`K_Z`).
    """
    m = kernel_z.shape[-1]
    centred_z = kernel_z - kernel_z.mean((-1, -2), keepdim=True)
    centred_y = kernel_y - kernel_y.mean((-1, -2), keepdim=True)
    return (2.0 * centred_z - gamma * centred_y) / (m * m)


def gaussian_kernel_vjp(grad_kernel: Tensor, kernel: Tensor, z: Tensor, *, s2: float) -> Tensor:
    r"""Back through a Gaussian kernel matrix :math:`K_{ij} = \exp(-\|z_i - z_j\|^2 / (2 s^2))`:
    given :math:`G = \partial L/\partial K` (any ``(..., m, m)``, not necessarily symmetric),

    .. math:: \frac{\partial L}{\partial z_n} = -\frac{1}{s^2}\sum_j W_{nj}(z_n - z_j),
              \qquad W = (G + G^\top) \circ K .

    ``s2`` is :math:`s^2` (:math:`\sigma^2` for the absolute bandwidth,
    :math:`\sigma^2 d` for the dimension-scaled kernel). ``z`` ``(..., m, d)`` → ``(..., m, d)``.
    """
    weights = (grad_kernel + grad_kernel.transpose(-1, -2)) * kernel
    return (weights @ z - weights.sum(-1, keepdim=True) * z) / s2


def cosine_kernel_vjp(grad_kernel: Tensor, z: Tensor, *, eps: float = COSINE_EPS) -> Tensor:
    r"""Back through a cosine kernel matrix :math:`K = \hat Z \hat Z^\top`: with
    :math:`v_n = \partial L/\partial \hat z_n = \sum_j (G + G^\top)_{nj}\, \hat z_j`,

    .. math:: \frac{\partial L}{\partial z_n} = \frac{v_n - \hat z_n (\hat z_n^\top v_n)}{\|z_n\|}
              \quad (\|z_n\| > \epsilon), \qquad \frac{v_n}{\epsilon} \quad (\text{otherwise}).

    ``z`` ``(..., m, d)`` → ``(..., m, d)``.
    """
    norm = z.norm(dim=-1, keepdim=True)
    z_hat = z / norm.clamp_min(eps)
    v = (grad_kernel + grad_kernel.transpose(-1, -2)) @ z_hat
    tangent = (v - z_hat * (z_hat * v).sum(-1, keepdim=True)) / norm.clamp_min(eps)
    return torch.where(norm > eps, tangent, v / eps)


def z_kernel_vjp(grad_kernel: Tensor, kernel: Tensor, z: Tensor, *, kind: str, sigma: float) -> Tensor:
    r""":math:`\partial L/\partial z` from :math:`\partial L/\partial K_Z` for the kernel
    :func:`z_kernel` of the same ``kind`` and ``sigma`` (``kernel`` is its value on ``z``)."""
    _check_kind(kind)
    if kind == "gaussian":
        return gaussian_kernel_vjp(grad_kernel, kernel, z, s2=sigma * sigma)
    return cosine_kernel_vjp(grad_kernel, z)


def phsic_signal(z: Tensor, y: Tensor, *, gamma: float, kind: str = "gaussian", sigma: float = 5.0) -> Tensor:
    r"""The minibatch form: :math:`g_n = \partial L/\partial z_n` of
    :math:`L = \mathrm{pHSIC}(Z, Z) - \gamma\,\mathrm{pHSIC}(Z, Y)` for every sample of a
    minibatch, ``z`` ``(..., m, d)`` and one-hot ``y`` ``(..., m, C)`` → ``(..., m, d)``."""
    kernel_z = z_kernel(z, kind=kind, sigma=sigma)
    grad = phsic_kernel_grad(kernel_z, label_kernel(y), gamma)
    return z_kernel_vjp(grad, kernel_z, z, kind=kind, sigma=sigma)


def running_mean(mean: Tensor, value: Tensor, count: int, horizon: int) -> Tensor:
    r"""Running mean of a stream: :math:`\bar k \leftarrow \bar k + (k_t - \bar k)/\min(t, T)`
    for the t-th value (t ≥ 1): the plain average of the first T values, then an
    exponential average with rate 1/T (T = ``horizon``)."""
    return mean_update(mean, value, min(count, horizon))


def mean_update(mean: Tensor, value: Tensor, span: int | Tensor) -> Tensor:
    r"""One step of :func:`running_mean` with its span :math:`n = \min(t, T)` given (a number,
    or a tensor, so that a compiled step serves every t): :math:`\bar k + (k_t - \bar k)/n`."""
    return mean + (value - mean) / span


def pair_factor(k_z: Tensor, k_y: Tensor, mean_z: Tensor, mean_y: Tensor, gamma: float) -> Tensor:
    r"""The global third factor of the plausible rule for the pair (t, t-1):

    .. math:: \delta_t = 2\big(k^Z_t - \bar k^Z\big) - \gamma\big(k^Y_t - \bar k^Y\big),
              \qquad k^Z_t = k(z_t, z_{t-1}),\; k^Y_t = k(y_t, y_{t-1}),

    with :math:`\bar k` the running means. It is :math:`\partial\ell_t/\partial k^Z_t` of the
    single-pair estimate :math:`\ell_t = (k^Z_t - \bar k^Z)^2 - \gamma (k^Y_t - \bar k^Y) k^Z_t`
    of the population objective (means held fixed), whose gradient is the population
    gradient :math:`\mathbb E_{ij}\big[(2(k^Z_{ij} - \mathbb E k^Z) - \gamma(k^Y_{ij} - \mathbb E k^Y))\,\partial k^Z_{ij}\big]`.
    """
    return 2.0 * (k_z - mean_z) - gamma * (k_y - mean_y)


def pair_signal(z_pair: Tensor, kernel: Tensor, factor: Tensor, *, kind: str, sigma: float) -> Tensor:
    r"""The plausible rule's signal for both samples of the pair,
    :math:`g_t = \delta_t\,\partial k(z_t, z_{t-1})/\partial z_t` and
    :math:`g_{t-1} = \delta_t\,\partial k(z_t, z_{t-1})/\partial z_{t-1}`.

    ``z_pair`` ``(..., 2, d)`` holds the two outputs, ``kernel`` ``(..., 2, 2)`` is
    :func:`z_kernel` of ``z_pair`` (same ``kind`` and ``sigma``) and ``factor`` ``(...)`` is
    :math:`\delta_t` (:func:`pair_factor`); returns ``(..., 2, d)``. The Hebbian part of the
    update, :math:`J_t^\top g_t + J_{t-1}^\top g_{t-1}`, needs the previous sample's local
    activity: the working memory of one sample.
    """
    off_diagonal = 1.0 - torch.eye(2, dtype=kernel.dtype, device=kernel.device)
    grad = 0.5 * factor[..., None, None] * off_diagonal
    return z_kernel_vjp(grad, kernel, z_pair, kind=kind, sigma=sigma)
