"""The reservoir's dynamics, readout learners and scores against hand computations,
autograd, closed forms and reference libraries (SPEC §4)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import r2_score as sk_r2_score

from biohsic.functional import hidden_local_grad, modulatory_signal
from biohsic.functional.reservoir import (delta_rule_increment, mean_cosine, memory_capacity, r2_score, ridge_readout,
                                          rls_step)
from biohsic.reservoir import DeltaRule, Force, Reservoir, ReservoirConfig, Ridge
from biohsic.reservoir.study import (StreamSettings, make_stream, random_layer, reservoir_memory_capacity,
                                     update_metrics, window_signals)

from ._helpers import F64, generator, rel_err


def tiny_reservoir(**changes) -> Reservoir:
    cfg = ReservoirConfig(d_x=2, d_y=2, d_z=3, units=5, connectivity=0.6, steps_per_sample=1, seed=4)
    return Reservoir(cfg.replace(**changes), dtype=F64)


def hand_step(res: Reservoir, u: list[float], r: list[float], o: list[float], v: list[float]):
    """u ← u + dt/τ (λ W_r r + W_in v + W_fb o − u), r = tanh u, o = W_o r, unit by unit."""
    cfg = res.config
    w_rec, w_in = res.w_rec.to_dense().tolist(), res.w_in.tolist()
    w_fb, w_out = res.w_fb.tolist(), res.w_out.tolist()
    m = len(u)
    new_u = [u[i] + cfg.dt / cfg.tau * (cfg.gain * sum(w_rec[i][j] * r[j] for j in range(m))
                                         + sum(w_in[i][j] * v[j] for j in range(len(v)))
                                         + sum(w_fb[i][j] * o[j] for j in range(len(o))) - u[i]) for i in range(m)]
    new_r = [math.tanh(a) for a in new_u]
    new_o = [sum(w_out[i][j] * new_r[j] for j in range(m)) for i in range(len(w_out))]
    return new_u, new_r, new_o


@pytest.mark.parametrize("steps", [1, 3])
def test_dynamics_equal_the_equations_by_hand(steps):
    res = tiny_reservoir(steps_per_sample=steps)
    gen = generator(0)
    res.w_out.copy_(torch.randn(res.w_out.shape, generator=gen, dtype=F64))
    x, y, z = (torch.randn(2, d, generator=gen, dtype=F64) for d in (2, 2, 3))
    res.reset()
    res.step_sample(x, y, z)  # a non-zero state to start from
    u, r, o = res.u.clone(), res.r.clone(), res.o.clone()
    x2, y2, z2 = (torch.randn(2, d, generator=gen, dtype=F64) for d in (2, 2, 3))
    out = res.step_sample(x2, y2, z2)
    for k in range(2):
        uk, rk, ok = u[k].tolist(), r[k].tolist(), o[k].tolist()
        v = x2[k].tolist() + y2[k].tolist() + z2[k].tolist()
        for _ in range(steps):
            uk, rk, ok = hand_step(res, uk, rk, ok, v)
        torch.testing.assert_close(res.u[k], torch.tensor(uk, dtype=F64), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(res.r[k], torch.tensor(rk, dtype=F64), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(out[k], torch.tensor(ok, dtype=F64), rtol=1e-12, atol=1e-14)


def test_input_projection_and_scale_enter_the_current_as_documented():
    res = tiny_reservoir(input_projection=4, input_scale=0.3)
    gen = generator(1)
    x, y, z = (torch.randn(3, d, generator=gen, dtype=F64) for d in (2, 2, 3))
    expected = torch.cat([x @ res.proj.T, y, z], -1) @ res.w_in.T
    torch.testing.assert_close(res.input_current(x, y, z), expected, rtol=1e-14, atol=0)
    assert res.w_in.abs().max() <= 0.3 and res.proj.shape == (4, 2)


def test_delta_rule_is_eta_times_the_gradient_of_the_mean_squared_error():
    gen = generator(2)
    w = torch.randn(3, 6, generator=gen, dtype=F64, requires_grad=True)
    rates, target = torch.randn(4, 6, generator=gen, dtype=F64), torch.randn(4, 3, generator=gen, dtype=F64)
    loss = 0.5 * ((rates @ w.T - target).square().sum(-1)).mean()
    loss.backward()
    error = (rates @ w.T - target).detach()
    torch.testing.assert_close(delta_rule_increment(rates, error, lr=0.01), 0.01 * w.grad, rtol=1e-13, atol=0)


def test_block_rls_equals_sequential_rls_and_ridge():
    gen = generator(3)
    m, n_out = 7, 2
    rates = torch.randn(12, m, generator=gen, dtype=F64)
    target = torch.randn(12, n_out, generator=gen, dtype=F64)
    alpha = 0.5

    def run(block: int):
        p, w = torch.eye(m, dtype=F64) / alpha, torch.zeros(n_out, m, dtype=F64)
        for s in range(0, 12, block):
            r, f = rates[s:s + block], target[s:s + block]
            step = rls_step(p, r)
            w = w - (r @ w.T - f).T @ step.gain.T
            p = p - step.gain @ step.p_rates.T
        return w, p

    w1, p1 = run(1)
    w4, p4 = run(4)
    torch.testing.assert_close(w4, w1, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(p4, p1, rtol=1e-10, atol=1e-12)
    ridge = ridge_readout(rates.T @ rates, target.T @ rates, alpha=alpha)
    torch.testing.assert_close(w1, ridge, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(p1, torch.linalg.inv(rates.T @ rates + alpha * torch.eye(m, dtype=F64)),
                               rtol=1e-10, atol=1e-12)


def test_ridge_readout_equals_least_squares_on_the_augmented_system():
    gen = generator(4)
    rates, target = torch.randn(30, 5, generator=gen, dtype=F64), torch.randn(30, 3, generator=gen, dtype=F64)
    alpha = 2.0
    aug_x = torch.cat([rates, math.sqrt(alpha) * torch.eye(5, dtype=F64)])
    aug_y = torch.cat([target, torch.zeros(5, 3, dtype=F64)])
    expected = torch.linalg.lstsq(aug_x, aug_y).solution.T
    torch.testing.assert_close(ridge_readout(rates.T @ rates, target.T @ rates, alpha=alpha), expected,
                               rtol=1e-10, atol=1e-12)


def _drive(res: Reservoir, u: torch.Tensor, targets: torch.Tensor | None, learn_until: int,
           learner=None) -> torch.Tensor:
    zero = torch.zeros(u.shape[1], 1, dtype=u.dtype)
    res.reset()
    outs = []
    for t in range(u.shape[0]):
        learn = targets is not None and 5 <= t < learn_until
        outs.append(res.step_sample(u[t], zero, zero, targets[t] if learn else None, learner))
    return torch.stack(outs)


def test_force_fits_a_delayed_copy_of_the_input_on_held_out_steps():
    """SPEC §4 dynamics (λ = 1.2, feedback on), one scalar input; target u_{t-1}."""
    cfg = ReservoirConfig(d_x=1, d_y=1, d_z=1, units=150, input_scale=0.5, steps_per_sample=5, seed=3)
    res = Reservoir(cfg, dtype=F64)
    u = torch.rand(1300, 1, 1, generator=generator(5), dtype=F64) * 2 - 1
    delayed = torch.cat([torch.zeros(1, 1, 1, dtype=F64), u[:-1]])
    outs = _drive(res, u, delayed, learn_until=1000, learner=Force(alpha=1.0))
    w_after_training = res.w_out.clone()
    assert float(r2_score(outs[1000:, 0], delayed[1000:, 0])) > 0.95
    assert torch.equal(res.w_out, w_after_training)  # no target after step 1000: frozen


def test_force_without_feedback_reaches_the_ridge_readout():
    cfg = ReservoirConfig(d_x=1, d_y=1, d_z=1, units=40, input_scale=0.5, steps_per_sample=3, feedback_scale=0, seed=1)
    u = torch.rand(200, 3, 1, generator=generator(6), dtype=F64) * 2 - 1
    target = torch.cat([torch.zeros(2, 3, 1, dtype=F64), u[:-2]]) ** 2
    readouts = []
    for learner in (Force(alpha=0.7), Ridge(alpha=0.7)):
        res = Reservoir(cfg, dtype=F64)
        _drive(res, u, target, learn_until=200, learner=learner)
        learner.finish(res.w_out)
        readouts.append(res.w_out.clone())
    assert rel_err(readouts[0], readouts[1]) < 1e-8


def test_every_step_delta_rule_equals_the_loop_of_the_paper():
    res = tiny_reservoir(steps_per_sample=4, feedback_scale=0.5)
    twin = tiny_reservoir(steps_per_sample=1, feedback_scale=0.5)
    gen = generator(7)
    x, y, z = (torch.randn(2, d, generator=gen, dtype=F64) for d in (2, 2, 3))
    target = torch.randn(2, 3, generator=gen, dtype=F64)
    res.step_sample(x, y, z, target, DeltaRule(lr=0.05, every_step=True))
    once_per_sample = DeltaRule(lr=0.05)
    for _ in range(4):  # one step per call, learning at its end = learning at every step
        twin.step_sample(x, y, z, target, once_per_sample)
    torch.testing.assert_close(res.w_out, twin.w_out, rtol=1e-13, atol=1e-15)


def test_learning_in_step_sample_is_one_learner_update_after_the_last_step():
    """Learning once per sample happens after the sample's last step: it equals a frozen
    presentation followed by one learner update from the last step's rates and output."""
    gen = generator(8)
    x, y, z = (torch.randn(3, d, generator=gen, dtype=F64) for d in (2, 2, 3))
    target = torch.randn(3, 3, generator=gen, dtype=F64)
    a, b = tiny_reservoir(steps_per_sample=3), tiny_reservoir(steps_per_sample=3)
    learner_a, learner_b = Force(), Force()
    for _ in range(3):
        out_a = a.step_sample(x, y, z, target, learner_a)
        out_b = b.step_sample(x, y, z)
        learner_b.update(b.w_out, b.r, b.o, target)
        torch.testing.assert_close(out_a, out_b, rtol=0, atol=0)
    torch.testing.assert_close(a.w_out, b.w_out, rtol=0, atol=0)
    assert not torch.equal(a.w_out, torch.zeros_like(a.w_out))


def test_memory_capacity_of_one_linear_unit_matches_the_closed_form():
    """x_t = a x_{t-1} + u_t: r²_k = (1 - a²) a^{2k}, so MC = Σ_{k≥1} r²_k = a²."""
    a, steps = 0.8, 30000
    u = torch.rand(steps, generator=generator(9), dtype=F64) * 2 - 1
    x = torch.zeros(steps, 1, dtype=F64)
    x[0] = u[0]
    for t in range(1, steps):
        x[t] = a * x[t - 1] + u[t]
    mc = memory_capacity(x, u, max_delay=25)
    expected = torch.tensor([(1 - a * a) * a ** (2 * k) for k in range(26)], dtype=F64)
    torch.testing.assert_close(mc.profile, expected, rtol=0, atol=0.01)
    assert abs(mc.total - a * a) < 0.03


def test_memory_capacity_of_a_linear_reservoir_is_bounded_by_its_units_and_grows_with_them():
    totals = []
    for units in (8, 16, 32):
        cfg = ReservoirConfig(d_x=1, d_y=1, d_z=1, units=units, gain=0.8, tau=1.0, dt=1.0, steps_per_sample=1,
                              nonlinearity="linear", connectivity=1.0, feedback_scale=0, seed=0)
        mc = reservoir_memory_capacity(Reservoir(cfg, dtype=F64), samples=4000, streams=8, max_delay=3 * units)
        assert mc.total <= units  # Jaeger's bound, delays k ≥ 1
        assert float(mc.profile.sum()) <= 1.02 * units  # with k = 0: exactly M in the limit
        totals.append(mc.total)
    assert totals[0] > 0.75 * 8
    assert totals[0] < totals[1] < totals[2]


def test_tanh_reservoir_memory_is_far_below_its_units():
    cfg = ReservoirConfig(d_x=1, d_y=1, d_z=1, units=60, feedback_scale=0, steps_per_sample=5, seed=2)
    mc = reservoir_memory_capacity(Reservoir(cfg), samples=1200, streams=8, max_delay=15)
    assert 0.5 < mc.total < 60


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 40), st.integers(1, 5), st.integers(0, 10_000))
def test_r2_score_equals_sklearn_variance_weighted(n, d, seed):
    gen = generator(seed)
    target = torch.randn(n, d, generator=gen, dtype=F64) * torch.rand(d, generator=gen, dtype=F64).add(0.1)
    pred = target + 0.5 * torch.randn(n, d, generator=gen, dtype=F64)
    expected = sk_r2_score(target.numpy(), pred.numpy(), multioutput="variance_weighted")
    assert np.isclose(float(r2_score(pred, target)), expected, rtol=1e-10, atol=1e-12)


def test_mean_cosine_equals_torch_cosine_similarity():
    gen = generator(10)
    a, b = torch.randn(9, 4, generator=gen, dtype=F64), torch.randn(9, 4, generator=gen, dtype=F64)
    expected = torch.nn.functional.cosine_similarity(a, b, dim=-1).mean()
    torch.testing.assert_close(mean_cosine(a, b), expected, rtol=1e-13, atol=0)


def test_window_signals_equal_modulatory_signal_of_each_window():
    gen = generator(11)
    x = torch.randn(9, 2, 3, generator=gen, dtype=F64)
    y = torch.nn.functional.one_hot(torch.randint(3, (9, 2), generator=gen), 3).to(F64)
    z = torch.randn(9, 2, 4, generator=gen, dtype=F64)
    out = window_signals(x, y, z, window=4, gamma=2.0, sigmas=(0.5, 0.4, 1.0), chunk_elems=1)  # one window per chunk
    assert torch.isnan(out[:3]).all()
    for t in range(3, 9):
        for k in range(2):
            expected = modulatory_signal(x[t - 3:t + 1, k], y[t - 3:t + 1, k], z[t - 3:t + 1, k], gamma=2.0,
                                         sigmas=(0.5, 0.4, 1.0))
            torch.testing.assert_close(out[t, k], expected, rtol=1e-12, atol=0)


def test_update_metrics_equal_per_sample_local_updates():
    layer = random_layer(3, 4, task_seed=0, dtype=F64)
    gen = generator(12)
    x = torch.randn(7, 3, generator=gen, dtype=F64)
    target, output = torch.randn(7, 4, generator=gen, dtype=F64), torch.randn(7, 4, generator=gen, dtype=F64)
    rows = []
    for signal in (output, target):
        flat = []
        for n in range(7):
            dw, db = hidden_local_grad(layer.forward_cache(x[n:n + 1]), signal[n:n + 1])
            flat.append(torch.cat([dw.flatten(), db.flatten()]))
        rows.append(torch.stack(flat))
    r2, cos = update_metrics(layer, x, output, target, chunk_elems=12)  # one sample per chunk
    assert math.isclose(r2, float(r2_score(rows[0], rows[1])), rel_tol=1e-10)
    assert math.isclose(cos, float(mean_cosine(rows[0], rows[1])), rel_tol=1e-10)
    r2_same, cos_same = update_metrics(layer, x, target, target)
    assert math.isclose(r2_same, 1.0, rel_tol=1e-12) and math.isclose(cos_same, 1.0, rel_tol=1e-12)


def test_stream_layer_output_is_layer_normalised_and_labels_one_hot():
    cfg = ReservoirConfig(d_x=5, d_y=4, d_z=16, units=10)
    stream = make_stream(cfg, StreamSettings(streams=3, kind="clusters"), 11, dtype=F64)
    assert stream.x.shape == (11, 3, 5) and stream.y.shape == (11, 3, 4) and stream.z.shape == (11, 3, 16)
    assert torch.all(stream.y.sum(-1) == 1)
    torch.testing.assert_close(stream.z.mean(-1), torch.zeros(11, 3, dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(stream.z.var(-1, unbiased=False), torch.ones(11, 3, dtype=F64), rtol=1e-3, atol=0)
