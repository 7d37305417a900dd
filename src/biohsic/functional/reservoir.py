r"""The working-memory reservoir (SPEC §4) as pure functions: its dynamics, its readout
learners and the measures of how well it fits a target.

Shapes: the reservoir state is ``(..., M)`` (``...`` is the model dimension K: each of
K networks drives its own copy of one reservoir), the recurrent matrix ``(M, M)`` (dense
or sparse CSR), the readout ``(n_out, M)``, the feedback matrix ``(M, n_out)``.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from .modulator import modulatory_signal

NONLINEARITIES = ("tanh", "linear")


def rate(u: Tensor, nonlinearity: str = "tanh") -> Tensor:
    r"""The firing rate of the reservoir's units, :math:`r = \tanh(u)` (``"tanh"``) or
    :math:`r = u` (``"linear"``, for the memory-capacity bound of a linear reservoir)."""
    if nonlinearity == "tanh":
        return torch.tanh(u)
    if nonlinearity == "linear":
        return u
    raise ValueError(f"unknown nonlinearity {nonlinearity!r}; choose one of {', '.join(NONLINEARITIES)}")


def input_current(x: Tensor, y: Tensor, z: Tensor, w_in: Tensor, projection: Tensor | None = None) -> Tensor:
    r"""The input current :math:`I = W_{in}[P x, y, z]` of one sample per model (``x``
    ``(K, d_x)``, ``y`` ``(K, d_y)``, ``z`` ``(K, d_z)``, cast to ``w_in``'s dtype) → ``(K, M)``;
    ``projection`` :math:`P` ``(p, d_x)``, or none (:math:`P = I`)."""
    x, y, z = (v.to(w_in.dtype) for v in (x, y, z))
    if projection is not None:
        x = x @ projection.transpose(0, 1)
    return torch.cat([x, y, z], -1) @ w_in.transpose(0, 1)


def recurrent_drive(w_rec: Tensor, r: Tensor) -> Tensor:
    r""":math:`W_r r` for a batch of rate vectors ``r`` ``(..., M)``; ``w_rec`` may be dense
    or sparse CSR (the product is taken as :math:`(W_r r^\top)^\top`, which a sparse
    matrix supports)."""
    flat = r.reshape(-1, r.shape[-1])
    return (w_rec @ flat.transpose(0, 1)).transpose(0, 1).reshape(r.shape)


def reservoir_rates_step(u: Tensor, r: Tensor, o: Tensor | None, current: Tensor, w_rec: Tensor, *,
                         w_fb: Tensor | None = None, gain: float, dt: float, tau: float,
                         nonlinearity: str = "tanh", rate_noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
    r"""One Euler step of the reservoir's units (SPEC §4):

    .. math:: u \leftarrow u + \frac{dt}{\tau}\big(\lambda W_r r + I + W_{fb}\, o - u\big),
              \qquad r \leftarrow \tanh(u) + \xi_r

    with :math:`I = W_{in}[x, y, z]` the input current of the sample being presented
    (``current``), :math:`\lambda` = ``gain``, ``r`` and ``o`` the rates and readout of the
    previous step, and :math:`\xi_r` = ``rate_noise`` (or none). ``w_fb=None`` leaves the
    feedback term out. Returns the new ``(u, r)``.
    """
    drive = current if gain == 0 else gain * recurrent_drive(w_rec, r) + current  # λ = 0: a memoryless map
    if w_fb is not None and o is not None:
        drive = drive + o @ w_fb.transpose(0, 1)
    u = u + (dt / tau) * (drive - u)
    r = rate(u, nonlinearity)
    return u, (r if rate_noise is None else r + rate_noise)


def reservoir_output(r: Tensor, w_out: Tensor, output_noise: Tensor | None = None) -> Tensor:
    r"""The linear readout :math:`o = W_o r + \xi_o` (``r`` ``(..., M)`` → ``(..., n_out)``)."""
    o = r @ w_out.transpose(0, 1)
    return o if output_noise is None else o + output_noise


def delta_rule_increment(rates: Tensor, error: Tensor, *, lr: float) -> Tensor:
    r"""The readout's online delta rule (SPEC §4), :math:`W_o \leftarrow W_o - \Delta` with

    .. math:: \Delta = \frac{\eta}{K}\sum_k e_k r_k^\top, \qquad e_k = o_k - \mathrm{target}_k

    ``rates`` ``(K, M)``, ``error`` ``(K, n_out)``: the K copies of the reservoir share one
    readout, so their updates are averaged (K = 1 is the paper's rule). Returns ``Δ``
    ``(n_out, M)``.
    """
    return (lr / rates.shape[0]) * error.transpose(0, 1) @ rates


class RlsStep(NamedTuple):
    """The low-rank factors of one recursive-least-squares step (see :func:`rls_step`)."""

    gain: Tensor   # G = P R (I + Rᵀ P R)⁻¹, (M, K)
    p_rates: Tensor  # P R, (M, K)


def rls_step(p: Tensor, rates: Tensor) -> RlsStep:
    r"""One step of recursive least squares (FORCE, Sussillo & Abbott 2009) for K rate
    vectors at once, the columns of :math:`R` = ``rates``\ :sup:`T` (``rates`` ``(K, M)``):

    .. math:: G = P R\,(I_K + R^\top P R)^{-1}, \qquad
              P \leftarrow P - G\,(P R)^\top, \qquad
              W_o \leftarrow W_o - E\, G^\top

    with :math:`E` = ``(o - target)``\ :sup:`T` ``(n_out, K)`` the errors before the update.
    K = 1 is the classic rule :math:`P \leftarrow P - \frac{P r r^\top P}{1 + r^\top P r}`,
    :math:`W_o \leftarrow W_o - e\,(P r)^\top/(1 + r^\top P r)`. Starting from
    :math:`P = I/\alpha` it computes the ridge regression of the targets on all the rates
    seen so far, with penalty α. The caller applies the updates in place (``P`` is M×M).
    Computed in ``p``'s precision.
    """
    r = rates.to(p.dtype).transpose(0, 1)
    pr = p @ r
    s = torch.eye(r.shape[1], dtype=p.dtype, device=p.device) + r.transpose(0, 1) @ pr
    gain = torch.linalg.solve(s, pr.transpose(0, 1)).transpose(0, 1)
    return RlsStep(gain, pr)


def ridge_readout(cov: Tensor, cross: Tensor, *, alpha: float) -> Tensor:
    r"""The least-squares readout with penalty α from accumulated statistics,

    .. math:: W_o = B\,(C + \alpha I)^{-1}, \qquad C = \sum_t r_t r_t^\top, \quad B = \sum_t f_t r_t^\top

    (``cov`` ``(M, M)``, ``cross`` ``(n_out, M)``, f the targets): the minimiser of
    :math:`\sum_t \|W r_t - f_t\|^2 + \alpha \|W\|^2`, which is where recursive least
    squares from :math:`P_0 = I/\alpha` (:func:`rls_step`) arrives on the same rates.
    """
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    return torch.linalg.solve(cov + alpha * eye, cross.transpose(-1, -2)).transpose(-1, -2)


def ridge_validation_sse(w_out: Tensor, cov: Tensor, cross: Tensor, target_sq: Tensor) -> Tensor:
    r"""The squared error of each readout row on held-out samples, from their statistics
    :math:`C = \sum_t r_t r_t^\top`, :math:`B = \sum_t f_t r_t^\top` and
    :math:`s_i = \sum_t f_{ti}^2`:

    .. math:: \sum_t (w_i \cdot r_t - f_{ti})^2 = w_i^\top C w_i - 2\, w_i \cdot b_i + s_i

    ``w_out`` ``(n_out, M)`` → ``(n_out,)``; lets a ridge penalty be chosen on a validation
    stream without storing its rates.
    """
    w = w_out.to(cov.dtype)
    return ((w @ cov) * w).sum(-1) - 2 * (w * cross).sum(-1) + target_sq


def r2_from_moments(sse: Tensor, target_sum: Tensor, target_sq_sum: Tensor, n: int) -> Tensor:
    r"""The coefficient of determination from running sums over n samples:

    .. math:: R^2 = 1 - \frac{\sum_t \|o_t - g_t\|^2}{\sum_t \|g_t - \bar g\|^2},
              \qquad \sum_t \|g_t - \bar g\|^2
              = \sum_i \Big(\sum_t g_{ti}^2 - \tfrac{1}{n}\big(\textstyle\sum_t g_{ti}\big)^2\Big)

    ``sse`` = :math:`\sum_t\|o_t - g_t\|^2`, ``target_sum`` and ``target_sq_sum`` the per-
    coordinate sums of :math:`g` and :math:`g^2`. Lets a long evaluation accumulate in chunks.
    """
    total = (target_sq_sum - target_sum.square() / n).sum()
    return 1.0 - sse / total


def r2_score(pred: Tensor, target: Tensor) -> Tensor:
    r"""The coefficient of determination of ``pred`` against ``target``, both ``(n, d)``:
    :math:`R^2 = 1 - \sum\|o_t - g_t\|^2 / \sum\|g_t - \bar g\|^2` with :math:`\bar g`
    the mean over the n samples (one per coordinate), pooled over the d coordinates.
    Computed in float64."""
    pred, target = pred.double(), target.double()
    return r2_from_moments((pred - target).square().sum(), target.sum(0), target.square().sum(0), target.shape[0])


def mean_cosine(a: Tensor, b: Tensor, eps: float = 1e-30) -> Tensor:
    r"""The mean over rows of :math:`\cos(a_t, b_t) = a_t\cdot b_t / (\|a_t\|\|b_t\|)`
    (``a``, ``b`` ``(n, d)``; a zero row counts as cosine 0). Computed in float64."""
    return row_cosines(a, b, eps).mean()


def row_cosines(a: Tensor, b: Tensor, eps: float = 1e-30) -> Tensor:
    r""":math:`\cos(a_t, b_t)` for each row t of ``a`` and ``b`` ``(n, d)``, in float64."""
    a, b = a.double(), b.double()
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(eps)


def ridge_readout_towards(cov: Tensor, cross: Tensor, prior: Tensor, *, alpha: float) -> Tensor:
    r"""The least-squares readout pulled towards a prior readout :math:`W_0` instead of zero,

    .. math:: W_o = (B + \alpha W_0)\,(C + \alpha I)^{-1}
              = \arg\min_W \sum_t \|W r_t - f_t\|^2 + \alpha \|W - W_0\|^2

    (``cov`` :math:`C = \sum_t r_t r_t^\top` ``(M, M)``, ``cross`` :math:`B = \sum_t f_t r_t^\top`
    ``(n_out, M)``, ``prior`` ``(n_out, M)``): with few samples the readout stays near
    :math:`W_0` along the directions they do not span. ``prior = 0`` is :func:`ridge_readout`.
    """
    return ridge_readout(cov, cross + alpha * prior.to(cross.dtype), alpha=alpha)


def expected_signal(x: Tensor, y: Tensor, z: Tensor, pool_x: Tensor, pool_y: Tensor, pool_z: Tensor, *,
                    window: int, histories: int, gamma: float, sigmas: Sequence[float],
                    generator: torch.Generator | None = None) -> Tensor:
    r"""An estimate of :math:`E[g_N \mid s]`, the best signal anything that sees only the
    current sample :math:`s = (x, y, z)` can output (the ceiling of a memoryless circuit):

    .. math:: \hat g(s) = \frac{1}{H}\sum_{h=1}^{H} g_N\big(s_{h,1}, \dots, s_{h,N-1}, s\big)

    with the N - 1 older samples of each of the H histories drawn uniformly, with
    replacement, from a pool of samples of the stream (their z as the layer gave them).
    ``x``, ``y``, ``z`` ``(B, d)`` are B current samples; the pools ``(B, P, d)`` (pool b
    serves sample b; an expanded view of one pool is fine). Returns ``(B, d_z)``. As H grows
    the estimate converges to the mean of :math:`g_N` over histories from the pool.
    """
    batch, pool = x.shape[0], pool_x.shape[1]
    index = torch.randint(pool, (batch, histories, window - 1), generator=generator)
    rows = torch.arange(batch)[:, None, None]
    index, rows = index.to(pool_x.device), rows.to(pool_x.device)

    def windows(current: Tensor, stored: Tensor) -> Tensor:
        newest = current[:, None, None, :].expand(batch, histories, 1, current.shape[-1])
        return torch.cat([stored[rows, index], newest.to(stored.dtype)], -2)

    signals = modulatory_signal(windows(x, pool_x), windows(y, pool_y), windows(z, pool_z), gamma=gamma, sigmas=sigmas)
    return signals.mean(1)


def block_update_cosines(delta_pred: Tensor, delta_true: Tensor, pre: Tensor, block: int) -> Tensor:
    r"""The cosine of the updates a run of ``block`` consecutive samples adds up to, for
    each full block of rows:

    .. math:: \cos\Big(\sum_{t \in b} \hat\delta_t\,[a_t, 1]^\top,\ \sum_{t \in b} \delta_t\,[a_t, 1]^\top\Big)

    (flattened (dW, db): with a small learning rate this sum, not each sample's update, is
    what moves the weights). ``delta_pred``, ``delta_true`` ``(T, d_out)`` are the
    post-synaptic factors of the two signals, ``pre`` ``(T, d_in)`` the layer's inputs.
    Returns ``(T // block,)``, in float64.
    """
    blocks = delta_pred.shape[0] // block
    pre = torch.cat([pre, torch.ones_like(pre[:, :1])], -1).double()[:blocks * block].unflatten(0, (blocks, block))
    sums = [(d.double()[:blocks * block].unflatten(0, (blocks, block)).transpose(1, 2) @ pre).flatten(1)
            for d in (delta_pred, delta_true)]
    return row_cosines(*sums)


class MemoryCapacity(NamedTuple):
    """Jaeger's linear memory capacity: ``total`` = Σ_{k≥1} ``profile[k]``."""

    total: float
    profile: Tensor  # r²_k for the delays k = 0..max_delay


def memory_capacity(states: Tensor, inputs: Tensor, *, max_delay: int, train_fraction: float = 0.5,
                    ridge: float = 1e-9) -> MemoryCapacity:
    r"""Jaeger's (2001) linear short-term memory capacity of a driven reservoir.

    For each delay k, a linear readout (with bias) of the state :math:`s_t` is fitted to
    the input :math:`u_{t-k}` by ridge regression on the first ``train_fraction`` of the
    time steps, and scored on the rest by the squared correlation

    .. math:: r_k^2 = \frac{\operatorname{cov}^2(\hat u_{t-k}, u_{t-k})}
                             {\operatorname{var}(\hat u)\operatorname{var}(u)},
              \qquad \mathrm{MC} = \sum_{k=1}^{k_{max}} r_k^2 .

    For i.i.d. inputs MC ≤ M (the number of units), with equality in the limit for a
    linear reservoir when the current input (k = 0) is counted too. ``states`` is
    ``(S, M)`` or ``(S, K, M)`` (K independent input streams), ``inputs`` ``(S,)`` or
    ``(S, K)``; time steps t < ``max_delay`` are dropped. ``ridge`` is relative to the
    mean eigenvalue of the state covariance. Computed in float64.
    """
    if states.dim() == 2:
        states, inputs = states.unsqueeze(1), inputs.unsqueeze(1)
    steps = states.shape[0]
    split = max_delay + int(train_fraction * (steps - max_delay))
    if split - max_delay < 2 or steps - split < 2:
        raise ValueError(f"{steps} time steps are too few for delays up to {max_delay}")
    delayed = torch.stack([inputs[max_delay - k:steps - k] for k in range(max_delay + 1)], -1).double()
    feats = states[max_delay:].double()
    cut = split - max_delay
    x_train, y_train = feats[:cut].flatten(0, 1), delayed[:cut].flatten(0, 1)
    x_test, y_test = feats[cut:].flatten(0, 1), delayed[cut:].flatten(0, 1)
    x_mean, y_mean = x_train.mean(0), y_train.mean(0)
    xc = x_train - x_mean
    cov = xc.transpose(0, 1) @ xc
    reg = ridge * cov.diagonal().mean().clamp_min(torch.finfo(cov.dtype).tiny)
    eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    weights = torch.linalg.solve(cov + reg * eye, xc.transpose(0, 1) @ (y_train - y_mean))
    pred = (x_test - x_mean) @ weights
    pc, yc = pred - pred.mean(0), y_test - y_test.mean(0)
    profile = (pc * yc).sum(0).square() / ((pc.square().sum(0) * yc.square().sum(0)).clamp_min(1e-300))
    return MemoryCapacity(float(profile[1:].sum()), profile)
