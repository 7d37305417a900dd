"""The scores of a circuit against the exact signal and the ceiling, and the refit circuit,
against autograd, brute-force sums and independent least-squares solutions (float64)."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from biohsic.functional import modulatory_signal
from biohsic.functional.layers import hidden_drive_grad, hidden_forward, layer_norm_projection
from biohsic.functional.reservoir import (block_update_cosines, expected_signal, ridge_readout,
                                          ridge_readout_towards)
from biohsic.network import HiddenLayer
from biohsic.reservoir.learners import StoreRefit
from biohsic.reservoir.scores import LoopScores

from ._helpers import F64, generator, one_hot_labels

SIGMAS, GAMMA = (0.9, 0.4, 1.3), 2.5


def random_layer(d_in: int, d_out: int, k: int, seed: int) -> HiddenLayer:
    layer = HiddenLayer(d_in, d_out, seeds=tuple(range(seed, seed + k)), salt=0, dtype=F64)
    with torch.no_grad():  # biases large enough that some units are off
        layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator(seed), dtype=F64) * 0.3)
    return layer


def autograd_update(layer: HiddenLayer, a: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
    """J_Nᵀ o by autograd: the gradient of Σ z·o with respect to (W, b), one sample per model,
    flattened ``(K, d_out·(d_in+1))``: reference independent of the hand-written backward pass."""
    weight, bias = layer.weight.detach().clone().requires_grad_(), layer.bias.detach().clone().requires_grad_()
    z = torch.nn.functional.layer_norm(torch.relu(a @ weight.transpose(1, 2) + bias[:, None]), (weight.shape[1],))
    dw, db = torch.autograd.grad((z * signal).sum(), (weight, bias))
    return torch.cat([dw.flatten(1), db], 1)


@pytest.mark.parametrize("d_in, d_out, seed", [(7, 5, 0), (3, 12, 1), (20, 4, 2)])
def test_the_scored_update_is_the_layers_vector_jacobian_product(d_in, d_out, seed):
    k = 3
    layer = random_layer(d_in, d_out, k, seed)
    gen = generator(seed + 10)
    a = torch.randn(k, 1, d_in, generator=gen, dtype=F64)
    signal = torch.randn(k, 1, d_out, generator=gen, dtype=F64)
    cache = layer.forward_cache(a)
    dw, db = layer.local_grad(cache, signal)
    ours = torch.cat([dw.flatten(1), db], 1)
    torch.testing.assert_close(ours, autograd_update(layer, a, signal), rtol=1e-10, atol=1e-13)
    # the scores use δ ⊗ [a, 1]: the same vector
    delta = layer.drive_grad(cache, signal)[:, 0]
    outer = delta[:, :, None] * torch.cat([a[:, 0], torch.ones(k, 1, dtype=F64)], 1)[:, None, :]
    flat = torch.cat([outer[..., :-1].flatten(1), outer[..., -1]], 1)
    torch.testing.assert_close(flat, ours, rtol=1e-12, atol=1e-15)


def test_the_projection_keeps_exactly_what_the_update_sees():
    gen = generator(3)
    cache = hidden_forward(torch.randn(4, 1, 6, generator=gen, dtype=F64),
                           torch.randn(4, 9, 6, generator=gen, dtype=F64), torch.randn(4, 9, generator=gen, dtype=F64))
    signal = torch.randn(4, 1, 9, generator=gen, dtype=F64)
    projected = layer_norm_projection(signal, cache.out)
    reference = hidden_drive_grad(cache, signal)
    # z's mean square is 1 - eps/Var[h]: a projection up to that
    torch.testing.assert_close(hidden_drive_grad(cache, projected), reference, rtol=0, atol=1e-3 * reference.abs().max())
    ones, along_z = torch.ones_like(signal), cache.out
    for removed in (ones, along_z):
        assert hidden_drive_grad(cache, removed).abs().max() < 1e-3 * reference.abs().max()


def brute_block_cosines(layer, a, pred, true, block):
    """Per-sample autograd updates summed over each block, cosines by math.fsum."""
    out = []
    for start in range(0, a.shape[0] - block + 1, block):
        sums = [sum(autograd_update(layer, a[t][None, None], s[t][None, None])[0] for t in range(start, start + block))
                for s in (pred, true)]
        p, q = (v.tolist() for v in sums)
        dot = math.fsum(x * y for x, y in zip(p, q))
        out.append(dot / math.sqrt(math.fsum(x * x for x in p) * math.fsum(y * y for y in q)))
    return torch.tensor(out, dtype=F64)


def test_block_update_cosines_are_the_cosines_of_summed_autograd_updates():
    layer = random_layer(6, 5, 1, 4)
    gen = generator(5)
    a = torch.randn(23, 6, generator=gen, dtype=F64)
    pred, true = (torch.randn(23, 5, generator=gen, dtype=F64) for _ in range(2))
    cache = layer.forward_cache(a[None])
    deltas = [layer.drive_grad(cache, s[None])[0] for s in (pred, true)]
    ours = block_update_cosines(*deltas, a, block=5)
    assert ours.shape == (4,)  # 23 rows: four full blocks of five
    torch.testing.assert_close(ours, brute_block_cosines(layer, a, pred, true, 5), rtol=1e-10, atol=1e-12)


def test_loop_scores_match_brute_force_over_a_block():
    k, block, d_x, d_y = 2, 4, 5, 3
    layers = [random_layer(d_x, 6, k, 7), random_layer(6, 4, k, 8)]
    scores = LoopScores(layers, window=3, gamma=GAMMA, sigmas=SIGMAS, block=block)
    gen = generator(9)
    outs, exacts, caches_all = [], [], []
    for _ in range(block):
        x = torch.randn(k, d_x, generator=gen, dtype=F64)
        y = one_hot_labels(1, d_y, gen, k)[:, 0]
        c0 = layers[0].forward_cache(x[:, None])
        c1 = layers[1].forward_cache(c0.out)
        caches = [c0, c1]
        signals = [torch.randn(k, l.width, generator=gen, dtype=F64) for l in layers]
        exact = [torch.randn(k, l.width, generator=gen, dtype=F64) for l in layers]
        scores.remember(x, y, caches)
        scores.record(x, y, caches, signals, exact)
        outs.append(signals)
        exacts.append(exact)
        caches_all.append(caches)
    metrics = scores.metrics()
    for l, layer in enumerate(layers):
        per_model = [brute_block_cosines(_model(layer, m), torch.stack([c[l].input[m, 0] for c in caches_all]),
                                         torch.stack([o[l][m] for o in outs]), torch.stack([e[l][m] for e in exacts]),
                                         block)[0] for m in range(k)]
        assert metrics["reservoir_update_cosine_100_series"][0][1][l] == pytest.approx(float(sum(per_model) / k),
                                                                                       rel=1e-9)
    assert metrics["reservoir_update_cosine_100"] == metrics["reservoir_update_cosine_100_series"][0][1]
    assert scores.metrics() == {}


def _model(layer: HiddenLayer, m: int) -> HiddenLayer:
    """Model m of a layer of K models, as a layer of one."""
    single = HiddenLayer(layer.weight.shape[2], layer.weight.shape[1], seeds=(0,), salt=0, dtype=F64)
    with torch.no_grad():
        single.weight.copy_(layer.weight[m:m + 1])
        single.bias.copy_(layer.bias[m:m + 1])
    return single


def enumerated_expectation(x, y, z, pool, window):
    """E[g_N | s] over histories drawn uniformly with replacement from the pool: the mean over
    every ordered history (all P^(N-1) of them)."""
    px, py, pz = pool
    signals = []
    for history in itertools.product(range(px.shape[0]), repeat=window - 1):
        idx = list(history)
        signals.append(modulatory_signal(torch.cat([px[idx], x[None]]), torch.cat([py[idx], y[None]]),
                                         torch.cat([pz[idx], z[None]]), gamma=GAMMA, sigmas=SIGMAS))
    return torch.stack(signals).mean(0)


def test_the_ceiling_estimate_converges_to_the_expectation_over_histories():
    gen = generator(11)
    pool_size, window, d = 4, 3, 5
    pool = (torch.randn(pool_size, d, generator=gen, dtype=F64), one_hot_labels(pool_size, 3, gen),
            torch.randn(pool_size, 4, generator=gen, dtype=F64))
    x, y, z = torch.randn(d, generator=gen, dtype=F64), one_hot_labels(1, 3, gen)[0], torch.randn(4, generator=gen,
                                                                                                  dtype=F64)
    exact = enumerated_expectation(x, y, z, pool, window)
    errors = []
    for histories in (4, 64, 1024, 16384):
        estimate = expected_signal(x[None], y[None], z[None], *(p[None] for p in pool), window=window,
                                   histories=histories, gamma=GAMMA, sigmas=SIGMAS, generator=generator(histories))[0]
        errors.append(float((estimate - exact).norm() / exact.norm()))
    assert errors[-1] < 0.02
    assert errors[-1] < errors[1] < errors[0]  # shrinks as histories are added (≈ 1/√H)


def test_the_ceiling_uses_each_samples_own_pool():
    gen = generator(12)
    pools = [torch.randn(2, 6, 3, generator=gen, dtype=F64), one_hot_labels(6, 2, gen, 2),
             torch.randn(2, 6, 4, generator=gen, dtype=F64)]
    current = [p[:, 0] for p in pools]
    both = expected_signal(*current, *pools, window=3, histories=50, gamma=GAMMA, sigmas=SIGMAS,
                           generator=generator(1))
    first = expected_signal(*(c[:1] for c in current), *(p[:1] for p in pools), window=3, histories=50,
                            gamma=GAMMA, sigmas=SIGMAS, generator=generator(1))
    torch.testing.assert_close(both[:1], first)  # sample 0 drew the same histories from its own pool


def test_ridge_towards_a_prior_is_the_augmented_least_squares_solution():
    gen = generator(13)
    rates, targets = torch.randn(9, 6, generator=gen, dtype=F64), torch.randn(9, 2, generator=gen, dtype=F64)
    prior, alpha = torch.randn(2, 6, generator=gen, dtype=F64), 0.7
    ours = ridge_readout_towards(rates.T @ rates, targets.T @ rates, prior, alpha=alpha)
    design = torch.cat([rates, math.sqrt(alpha) * torch.eye(6, dtype=F64)])
    wanted = torch.cat([targets, math.sqrt(alpha) * prior.T])
    reference = torch.linalg.lstsq(design, wanted).solution.T
    torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-12)
    zero = ridge_readout_towards(rates.T @ rates, targets.T @ rates, torch.zeros_like(prior), alpha=alpha)
    torch.testing.assert_close(zero, ridge_readout(rates.T @ rates, targets.T @ rates, alpha=alpha))


def test_store_refit_fits_each_model_on_its_own_last_rows_only():
    gen = generator(14)
    k, m, n_out, store, every, alpha = 2, 5, 3, 6, 4, 0.5
    prior = torch.randn(n_out, m, generator=gen, dtype=F64)
    refit = StoreRefit(prior, store=store, refit_every=every, alpha=alpha)
    rates = torch.randn(12, k, m, generator=gen, dtype=F64)
    targets = torch.randn(12, k, n_out, generator=gen, dtype=F64)
    for t in range(12):
        before = refit.output(rates[t])
        if t < every:
            torch.testing.assert_close(before, (prior @ rates[t].T).T)  # the prior until the first refit
        refit.add(rates[t], targets[t])
    for model in range(k):  # the last refit (after row 12) saw rows 6..11 of this model only
        r, f = rates[6:, model], targets[6:, model]
        design = torch.cat([r, math.sqrt(alpha) * torch.eye(m, dtype=F64)])
        reference = torch.linalg.lstsq(design, torch.cat([f, math.sqrt(alpha) * prior.T])).solution.T
        torch.testing.assert_close(refit.readouts[model], reference, rtol=1e-9, atol=1e-11)
