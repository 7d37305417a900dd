"""The modulatory signal (SPEC §3, §3.1): finite differences of the layer objective,
hand computations on a tiny window, consistency of the one-sample and all-sample forms,
permutation equivariance and input validation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from biohsic.functional import KINDS, gaussian_kernel, modulatory_signal
from biohsic.functional.modulator import (_exact_signal_from_row, _exact_signals, _modulation_row, _paper_signal,
                                          _signal_from_kernels)

from ._helpers import F64, centering_matrix, reference_objective, rel_err, window

SIGMAS = [(0.5, 0.1, 1.0), (1.0, 0.1, 0.5), (2.0, 1.0, 3.0)]


def kernels(x, y, z, sigmas):
    sx, sy, sz = sigmas
    return gaussian_kernel(x, sigma=sx), gaussian_kernel(y, sigma=sy), gaussian_kernel(z, sigma=sz)


def objective_of_z(kx, ky, z, gamma, sigma_z):
    return float(reference_objective(kx, ky, gaussian_kernel(z, sigma=sigma_z), gamma))


def finite_difference_grad(kx, ky, z, n, gamma, sigma_z, h=1e-5):
    """Central differences of L = HSIC(X,Z) - γ HSIC(Y,Z) w.r.t. z_n."""
    grad = torch.empty(z.shape[-1], dtype=F64)
    for k in range(z.shape[-1]):
        plus, minus = z.clone(), z.clone()
        plus[n, k] += h
        minus[n, k] -= h
        grad[k] = (objective_of_z(kx, ky, plus, gamma, sigma_z)
                   - objective_of_z(kx, ky, minus, gamma, sigma_z)) / (2 * h)
    return grad


@pytest.mark.parametrize("sigmas", SIGMAS)
@pytest.mark.parametrize("gamma", [0.0, 2.0, 50.0])
@pytest.mark.parametrize("n", [2, 3, 6])
def test_exact_signal_equals_finite_differences(n, gamma, sigmas):
    x, y, z = window(n, 3, 3, 4, seed=10 * n + int(gamma))
    kx, ky, kz = kernels(x, y, z, sigmas)
    sz = sigmas[2]
    g_newest = modulatory_signal(x, y, z, gamma=gamma, sigmas=sigmas)
    fd_newest = finite_difference_grad(kx, ky, z, n - 1, gamma, sz)
    assert rel_err(g_newest, fd_newest) < 1e-6
    for i in range(n):
        fd = finite_difference_grad(kx, ky, z, i, gamma, sz)
        g = _signal_from_kernels(kx, ky, kz, z, i, gamma=gamma, sigma_z=sz)
        assert rel_err(g, fd) < 1e-6, f"index {i}"
    assert rel_err(_signal_from_kernels(kx, ky, kz, z, -1, gamma=gamma, sigma_z=sz), fd_newest) < 1e-6


@pytest.mark.parametrize("lead", [(), (3,)])
@pytest.mark.parametrize("n", [2, 5, 17])
@pytest.mark.parametrize("gamma", [0.0, 2.0, 50.0])
def test_exact_signal_equals_row_of_exact_signal_all(n, gamma, lead):
    x, y, z = window(n, 4, 3, 5, n, *lead)
    kx, ky, kz = kernels(x, y, z, (0.5, 0.1, 1.0))
    every = _exact_signals(kx, ky, kz, z, gamma=gamma, sigma_z=1.0)
    assert every.shape == z.shape
    for i in range(n):
        one = _signal_from_kernels(kx, ky, kz, z, i, gamma=gamma, sigma_z=1.0)
        torch.testing.assert_close(one, every[..., i, :], rtol=1e-10, atol=1e-15)
        torch.testing.assert_close(_signal_from_kernels(kx, ky, kz, z, i, gamma=gamma, sigma_z=1.0), one)


@pytest.mark.parametrize("lead", [(), (3,)])
@pytest.mark.parametrize("gamma", [0.0, 50.0])
def test_modulation_row_is_a_row_of_hah(gamma, lead):
    n = 6
    x, y, z = window(n, 4, 3, 5, 11, *lead)
    kx, ky, kz = kernels(x, y, z, (0.5, 0.1, 1.0))
    h = centering_matrix(n)
    m = h @ (kx - gamma * ky) @ h
    for i in [*range(n), -1]:
        row = _modulation_row(kx, ky, i, gamma=gamma)
        torch.testing.assert_close(row, m[..., i, :], rtol=1e-12, atol=1e-13)
        g = _exact_signal_from_row(row, kz[..., i, :], z, i, sigma_z=1.0)
        torch.testing.assert_close(g, _exact_signals(kx, ky, kz, z, gamma=gamma, sigma_z=1.0)[..., i, :],
                                   rtol=1e-10, atol=1e-15)


# --- a tiny window computed by hand (plain floats, explicit loops, straight from the SPEC) ---
X = [[0.2, -0.5], [1.0, 0.3], [-0.4, 0.8]]
Y = [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]
Z = [[0.5, -1.0], [-0.3, 0.4], [1.2, 0.1]]
GAMMA, SX, SY, SZ = 2.0, 0.7, 0.4, 1.3


def k_hand(a, b, sigma):
    d = len(a)
    return math.exp(-sum((a[k] - b[k]) ** 2 for k in range(d)) / (2 * sigma * sigma * d))


def hand_matrices():
    n = len(Z)
    kx = [[k_hand(X[i], X[j], SX) for j in range(n)] for i in range(n)]
    ky = [[k_hand(Y[i], Y[j], SY) for j in range(n)] for i in range(n)]
    kz = [[k_hand(Z[i], Z[j], SZ) for j in range(n)] for i in range(n)]
    a = [[kx[i][j] - GAMMA * ky[i][j] for j in range(n)] for i in range(n)]
    return n, kz, a


def hand_paper_signal(jan2024: bool):
    """ξ = (c/N)[Σ_{i<N} (HA)_ii α_i + (HA)_NN Σ_{i<N} α_i] (jan2024: second term only),
    α_i = 2 k_Z(z_N, z_i)(z_N - z_i)/s², HA = A with column means removed."""
    n, kz, a = hand_matrices()
    dz = len(Z[0])
    s2 = SZ * SZ * dz
    c = 1.0 / (n - 1) ** 2
    col_mean = [sum(a[k][j] for k in range(n)) / n for j in range(n)]
    ha = [[a[i][j] - col_mean[j] for j in range(n)] for i in range(n)]
    last = n - 1
    alpha = [[2 * kz[last][i] * (Z[last][k] - Z[i][k]) / s2 for k in range(dz)] for i in range(n)]
    xi = []
    for k in range(dz):
        sum_alpha = sum(alpha[i][k] for i in range(last))
        diag_term = sum(ha[i][i] * alpha[i][k] for i in range(last))
        xi.append(c / n * ((0.0 if jan2024 else diag_term) + ha[last][last] * sum_alpha))
    return xi


def hand_exact_signal():
    """g_N = -(2c/s²) Σ_j M_Nj K_Z,Nj (z_N - z_j), M = H A H with an explicit H."""
    n, kz, a = hand_matrices()
    dz = len(Z[0])
    h = [[(1.0 if i == j else 0.0) - 1.0 / n for j in range(n)] for i in range(n)]
    m = [[sum(h[i][p] * a[p][q] * h[q][j] for p in range(n) for q in range(n)) for j in range(n)]
         for i in range(n)]
    c, s2, last = 1.0 / (n - 1) ** 2, SZ * SZ * dz, n - 1
    return [-(2 * c / s2) * sum(m[last][j] * kz[last][j] * (Z[last][k] - Z[j][k]) for j in range(n))
            for k in range(dz)]


def _tensors():
    return (torch.tensor(X, dtype=F64), torch.tensor(Y, dtype=F64), torch.tensor(Z, dtype=F64))


@pytest.mark.parametrize("kind,jan2024", [("paper", False), ("paper-jan2024", True)])
def test_paper_signal_by_hand(kind, jan2024):
    x, y, z = _tensors()
    expected = torch.tensor(hand_paper_signal(jan2024), dtype=F64)
    got = modulatory_signal(x, y, z, gamma=GAMMA, sigmas=(SX, SY, SZ), kind=kind)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-16)
    kx, ky, kz = kernels(x, y, z, (SX, SY, SZ))
    torch.testing.assert_close(_paper_signal(kx, ky, kz, z, 2, gamma=GAMMA, sigma_z=SZ, variant=kind),
                               expected, rtol=1e-12, atol=1e-16)


def test_paper_variants_differ_and_are_not_the_gradient():
    """Guards the hand test against degenerate data: the three signals must differ here."""
    p, j, e = hand_paper_signal(False), hand_paper_signal(True), hand_exact_signal()
    assert max(abs(u - v) for u, v in zip(p, j)) > 1e-4
    assert max(abs(u - v) for u, v in zip(p, e)) > 1e-4


def test_exact_signal_by_hand():
    x, y, z = _tensors()
    expected = torch.tensor(hand_exact_signal(), dtype=F64)
    got = modulatory_signal(x, y, z, gamma=GAMMA, sigmas=(SX, SY, SZ))
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-16)
    kx, ky, kz = kernels(x, y, z, (SX, SY, SZ))
    torch.testing.assert_close(_exact_signals(kx, ky, kz, z, gamma=GAMMA, sigma_z=SZ)[-1], expected,
                               rtol=1e-12, atol=1e-16)


# --- permutation equivariance ---
@settings(max_examples=50, deadline=None)
@given(data=st.data(), n=st.integers(2, 7), gamma=st.floats(0.0, 50.0), kind=st.sampled_from(KINDS))
def test_signal_is_permutation_equivariant(data, n, gamma, kind):
    """Reordering the older samples of the window (newest kept last) leaves g_N unchanged;
    reordering the whole window permutes the rows of _exact_signals."""
    def draw(d):
        return torch.from_numpy(data.draw(arrays(np.float64, (n, d), elements=st.floats(-2, 2))))
    x, z = draw(3), draw(4)
    y = torch.nn.functional.one_hot(torch.tensor(data.draw(st.lists(st.integers(0, 2), min_size=n,
                                                                       max_size=n))), 3).to(F64)
    sigmas = (0.5, 0.3, 1.0)
    g = modulatory_signal(x, y, z, gamma=gamma, sigmas=sigmas, kind=kind)
    older = data.draw(st.permutations(range(n - 1)))
    perm = torch.tensor([*older, n - 1])
    g_perm = modulatory_signal(x[perm], y[perm], z[perm], gamma=gamma, sigmas=sigmas, kind=kind)
    atol = 1e-13 * (1.0 + gamma)  # summation order changes; terms scale with γ
    torch.testing.assert_close(g_perm, g, rtol=1e-9, atol=atol)

    full = torch.tensor(data.draw(st.permutations(range(n))))
    every = _exact_signals(*kernels(x, y, z, sigmas), z, gamma=gamma, sigma_z=1.0)
    every_perm = _exact_signals(*kernels(x[full], y[full], z[full], sigmas), z[full], gamma=gamma, sigma_z=1.0)
    torch.testing.assert_close(every_perm, every[full], rtol=1e-9, atol=atol)


# --- validation ---
def _valid():
    return window(4, 3, 2, 5, 0)


@pytest.mark.parametrize("bad", [
    dict(y=torch.zeros(3, 2, dtype=F64)),                               # mismatched N
    dict(x=torch.zeros(5, 3, dtype=F64)),                               # mismatched N
    dict(x=torch.zeros(1, 3, dtype=F64), y=torch.zeros(1, 2, dtype=F64), z=torch.zeros(1, 5, dtype=F64)),  # N < 2
    dict(sigmas=(0.0, 0.1, 1.0)), dict(sigmas=(0.5, -0.1, 1.0)), dict(sigmas=(0.5, 0.1, 0.0)),
    dict(kind="unknown"), dict(kind="Exact"), dict(sigmas=(0.5, 0.1)), dict(sigmas=(0.5, 0.1, 1.0, 1.0)),
    dict(sigmas=(0.5, float("inf"), 1.0)),
])
def test_modulatory_signal_rejects_bad_input(bad):
    x, y, z = _valid()
    args = dict(x=x, y=y, z=z, gamma=2.0, sigmas=(0.5, 0.1, 1.0), kind="exact") | bad
    with pytest.raises(ValueError):
        modulatory_signal(**args)


@pytest.mark.parametrize("sigmas", [(float("nan"), 0.1, 1.0), (0.5, float("nan"), 1.0)])
def test_modulatory_signal_rejects_nan_sigma(sigmas):
    x, y, z = _valid()
    with pytest.raises(ValueError):
        modulatory_signal(x, y, z, gamma=2.0, sigmas=sigmas)


def test_modulatory_signal_accepts_the_valid_input():
    x, y, z = _valid()
    for kind in KINDS:
        assert modulatory_signal(x, y, z, gamma=2.0, sigmas=(0.5, 0.1, 1.0), kind=kind).shape == (5,)


def test_signal_at_and_paper_signal_reject_unknown_kind():
    x, y, z = _valid()
    kx, ky, kz = kernels(x, y, z, (0.5, 0.1, 1.0))
    with pytest.raises(ValueError):
        _signal_from_kernels(kx, ky, kz, z, -1, gamma=2.0, sigma_z=1.0, kind="nope")
    with pytest.raises(ValueError):
        _paper_signal(kx, ky, kz, z, -1, gamma=2.0, sigma_z=1.0, variant="exact")
