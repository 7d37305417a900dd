"""Gaussian kernels against their definition (SPEC §2) and the O(N·d) sliding update."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from biohsic.functional import (gaussian_kernel, gaussian_kernel_row,
                                squared_distances)
from biohsic.functional.kernels import gaussian_gram, gram_squared_distances

from ._helpers import F64, generator


def loop_kernel(a: list[list[float]], b: list[list[float]], sigma: float) -> list[list[float]]:
    """k(a_i, b_j) = exp(-|a_i - b_j|² / (2σ² d)) with plain Python loops."""
    d = len(a[0])
    return [[math.exp(-sum((ai[k] - bj[k]) ** 2 for k in range(d)) / (2 * sigma**2 * d)) for bj in b]
            for ai in a]


@pytest.mark.parametrize("n,m,d,sigma", [(1, 1, 1, 1.0), (4, 4, 3, 0.5), (5, 3, 7, 2.0), (7, 2, 1, 0.3)])
def test_gaussian_kernel_equals_loop_definition(n, m, d, sigma):
    gen = generator(n * 100 + d)
    a = torch.randn(n, d, generator=gen, dtype=F64)
    b = torch.randn(m, d, generator=gen, dtype=F64)
    expected_ab = torch.tensor(loop_kernel(a.tolist(), b.tolist(), sigma), dtype=F64)
    expected_aa = torch.tensor(loop_kernel(a.tolist(), a.tolist(), sigma), dtype=F64)
    torch.testing.assert_close(gaussian_kernel(a, b, sigma=sigma), expected_ab, rtol=1e-13, atol=0)
    torch.testing.assert_close(gaussian_kernel(a, sigma=sigma), expected_aa, rtol=1e-13, atol=0)


def test_gaussian_kernel_broadcasts_over_model_dimension():
    a = torch.randn(3, 5, 4, generator=generator(1), dtype=F64)
    batched = gaussian_kernel(a, sigma=0.7)
    assert batched.shape == (3, 5, 5)
    for k in range(3):
        expected = torch.tensor(loop_kernel(a[k].tolist(), a[k].tolist(), 0.7), dtype=F64)
        torch.testing.assert_close(batched[k], expected, rtol=1e-13, atol=0)


def test_squared_distances_equals_loop_and_has_exact_zero_diagonal():
    a = 1e3 + torch.randn(6, 3, generator=generator(2), dtype=F64)  # large offset: |a|²+|b|²-2ab would cancel
    b = torch.randn(4, 3, generator=generator(3), dtype=F64)
    expected = torch.tensor([[sum((p - q) ** 2 for p, q in zip(ai, bj)) for bj in b.tolist()]
                             for ai in a.tolist()], dtype=F64)
    torch.testing.assert_close(squared_distances(a, b), expected, rtol=1e-13, atol=0)
    assert torch.all(torch.diagonal(squared_distances(a, a)) == 0)


@pytest.mark.parametrize("d,sigma", [(1, 1.0), (5, 0.4)])
def test_gaussian_kernel_row_equals_loop_definition(d, sigma):
    gen = generator(4 + d)
    new = torch.randn(d, generator=gen, dtype=F64)
    win = torch.randn(6, d, generator=gen, dtype=F64)
    expected = torch.tensor(loop_kernel([new.tolist()], win.tolist(), sigma)[0], dtype=F64)
    torch.testing.assert_close(gaussian_kernel_row(new, win, sigma=sigma), expected, rtol=1e-13, atol=0)


@settings(max_examples=50, deadline=None)
@given(data=st.data(), n=st.integers(1, 8), d=st.integers(1, 4), sigma=st.floats(0.2, 3.0))
def test_kernel_symmetric_unit_diagonal_entries_in_unit_interval(data, n, d, sigma):
    a = torch.from_numpy(data.draw(arrays(np.float64, (n, d), elements=st.floats(-3, 3))))
    k = gaussian_kernel(a, sigma=sigma)
    assert torch.equal(k, k.T)
    assert torch.all(torch.diagonal(k) == 1.0)
    assert torch.all(k > 0) and torch.all(k <= 1)


@pytest.mark.parametrize("lead", [(), (3,)])
@pytest.mark.parametrize("n,d", [(2, 1), (9, 4), (40, 16)])
def test_gram_squared_distances_equal_direct_differences(lead, n, d):
    a = torch.randn(*lead, n, d, generator=generator(n + d), dtype=F64)
    dist = gram_squared_distances(a)
    direct = squared_distances(a, a)
    torch.testing.assert_close(dist, direct, rtol=0, atol=1e-12 * float(direct.max()))
    assert torch.all(torch.diagonal(dist, dim1=-2, dim2=-1) == 0)
    assert torch.all(dist >= 0)
    # a duplicated sample: the Gram form can round to a negative value, which must be clamped
    dup = torch.cat([a, a[..., :1, :] * 1.0], -2)
    assert torch.all(gram_squared_distances(dup) >= 0)


@pytest.mark.parametrize("sigma,d", [(0.5, 3), (2.0, 7)])
def test_gaussian_gram_equals_both_bandwidth_conventions(sigma, d):
    a = torch.randn(2, 6, d, generator=generator(d), dtype=F64)
    # s² = σ² d: the dimension-scaled kernel of SPEC §2
    torch.testing.assert_close(gaussian_gram(a, s2=sigma**2 * d), gaussian_kernel(a, sigma=sigma),
                               rtol=1e-12, atol=1e-14)
    # s² = σ²: the absolute bandwidth exp(-|a-b|²/(2σ²)), written with loops
    expected = torch.tensor([[[math.exp(-sum((p - q) ** 2 for p, q in zip(ai, aj)) / (2 * sigma**2))
                               for aj in ak] for ai in ak] for ak in a.tolist()], dtype=F64)
    torch.testing.assert_close(gaussian_gram(a, s2=sigma**2), expected, rtol=1e-12, atol=1e-14)
