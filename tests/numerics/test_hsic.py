"""HSIC, centring and the layer objective against their definitions (SPEC §2), and
hypothesis property tests of the estimator."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from biohsic.functional import center, gaussian_kernel, hsic, layer_objective

from ._helpers import F64, centering_matrix, generator, reference_hsic, window


@pytest.mark.parametrize("lead", [(), (3,)])
@pytest.mark.parametrize("n", [2, 5, 9])
def test_center_equals_hkh_for_general_matrices(lead, n):
    """Also for non-symmetric K: the row and column means must not be swapped."""
    k = torch.randn(*lead, n, n, generator=generator(n), dtype=F64)
    h = centering_matrix(n)
    torch.testing.assert_close(center(k), h @ k @ h, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("lead", [(), (3,)])
@pytest.mark.parametrize("n", [2, 5, 9])
def test_hsic_equals_trace_formula(lead, n):
    x, _, z = window(n, 3, 2, 4, n, *lead)
    kx, kz = gaussian_kernel(x, sigma=0.7), gaussian_kernel(z, sigma=1.3)
    torch.testing.assert_close(hsic(kx, kz), reference_hsic(kx, kz), rtol=1e-12, atol=1e-15)
    # tr(K_A H K_B H) for arbitrary (non-symmetric) matrices: the transpose in hsic() matters
    gen = generator(100 + n)
    a, b = torch.randn(2, *lead, n, n, generator=gen, dtype=F64)
    torch.testing.assert_close(hsic(a, b), reference_hsic(a, b), rtol=1e-12, atol=1e-13)


def test_hsic_tiny_window_by_hand():
    """N = 2: H K H = (k11 + k22 - k12 - k21)/4 · [[1,-1],[-1,1]], so
    tr(K_A H K_B H) = (a11+a22-a12-a21)(b11+b22-b12-b21)/4."""
    a = torch.tensor([[1.0, 0.3], [0.3, 1.0]], dtype=F64)
    b = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=F64)
    expected = (2 - 0.6) * (2 - 1.6) / 4 / 1**2
    assert abs(float(hsic(a, b)) - expected) < 1e-15


@pytest.mark.parametrize("gamma", [0.0, 2.0, 50.0])
@pytest.mark.parametrize("lead", [(), (3,)])
def test_layer_objective_equals_two_term_form(gamma, lead):
    x, y, z = window(6, 3, 4, 5, 7, *lead)
    kx, ky, kz = gaussian_kernel(x, sigma=0.5), gaussian_kernel(y, sigma=0.1), gaussian_kernel(z, sigma=1.0)
    expected = reference_hsic(kx, kz) - gamma * reference_hsic(ky, kz)
    torch.testing.assert_close(layer_objective(kx, ky, kz, gamma), expected, rtol=1e-12, atol=1e-14)


def _windows(data, n, d_a, d_b):
    a = torch.from_numpy(data.draw(arrays(np.float64, (n, d_a), elements=st.floats(-3, 3))))
    b = torch.from_numpy(data.draw(arrays(np.float64, (n, d_b), elements=st.floats(-3, 3))))
    return a, b


@settings(max_examples=50, deadline=None)
@given(data=st.data(), n=st.integers(2, 8), d_a=st.integers(1, 4), d_b=st.integers(1, 4),
       sigma_a=st.floats(0.2, 3.0), sigma_b=st.floats(0.2, 3.0))
def test_hsic_symmetric_nonnegative_and_permutation_invariant(data, n, d_a, d_b, sigma_a, sigma_b):
    a, b = _windows(data, n, d_a, d_b)
    ka, kb = gaussian_kernel(a, sigma=sigma_a), gaussian_kernel(b, sigma=sigma_b)
    value = hsic(ka, kb)
    # kernel entries are in (0, 1] and N ≤ 8: each estimate is exact to about N²·eps in absolute terms
    tol = 1e-12
    assert abs(float(value - hsic(kb, ka))) <= tol
    assert float(value) >= -tol
    # Cauchy-Schwarz, HSIC(A,B)² ≤ HSIC(A,A)·HSIC(B,B), with each factor's rounding allowed for
    bound = ((float(hsic(ka, ka)) + tol) * (float(hsic(kb, kb)) + tol)) ** 0.5
    assert float(value) <= bound + tol
    perm = torch.tensor(data.draw(st.permutations(range(n))))
    permuted = hsic(gaussian_kernel(a[perm], sigma=sigma_a), gaussian_kernel(b[perm], sigma=sigma_b))
    assert abs(float(permuted - value)) <= tol


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hsic_of_independent_samples_is_small(seed):
    """N = 200 independent Gaussians: HSIC(X, Z) ≪ HSIC(X, X); a dependent Z (a noisy
    function of X) gives a large value, so the threshold separates the two cases."""
    gen = generator(seed)
    x = torch.randn(200, 3, generator=gen, dtype=F64)
    z = torch.randn(200, 3, generator=gen, dtype=F64)
    z_dep = torch.tanh(x) + 0.1 * torch.randn(200, 3, generator=gen, dtype=F64)
    kx, kz, kd = (gaussian_kernel(v, sigma=1.0) for v in (x, z, z_dep))
    reference = float(hsic(kx, kx))
    assert float(hsic(kx, kz)) < 0.1 * reference  # measured 0.03-0.04 (the O(1/N) bias)
    assert float(hsic(kx, kd)) > 0.3 * reference
