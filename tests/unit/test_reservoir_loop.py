"""The closed loop (SPEC §4): reservoirs produce each hidden layer's signal inside the
streaming rule; frozen readouts never change, online ones learn from the exact g_N; the
in-loop scores, checkpoints and the errors a user can cause."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from biohsic.config import TrainConfig
from biohsic.errors import CheckpointError, ConfigError
from biohsic.functional.layers import hidden_local_grad
from biohsic.functional.modulator import modulatory_signal
from biohsic.network import Network
from biohsic.reservoir import DeltaRule, Force, Reservoir, ReservoirConfig
from biohsic.reservoir.closed_loop import ReservoirModulator, check_stream, layer_file, reservoir_paths
from biohsic.rules import build_rule

SIZES = [5, 6, 4, 3]
WINDOW, GAMMA, SIGMAS = 4, 3.0, (0.8, 0.4, 1.5)


def save_reservoirs(folder, widths=(6, 4), window=WINDOW, gamma=GAMMA, d_x=5, dtype=torch.float64, **dynamics):
    """One small reservoir per layer (float64 unless ``dtype``; ``dynamics``: other
    :class:`ReservoirConfig` fields) with a random (non-zero) readout."""
    folder.mkdir(exist_ok=True)
    for layer, width in enumerate(widths):
        config = ReservoirConfig(d_x=d_x, d_y=3, d_z=width, units=20, window=window, gamma=gamma, sigmas=SIGMAS,
                                 **{"steps_per_sample": 3, **dynamics}, seed=layer)
        reservoir = Reservoir(config, dtype=dtype)
        reservoir.w_out.copy_(torch.randn(reservoir.w_out.shape, generator=torch.Generator().manual_seed(layer),
                                          dtype=torch.float64) * 0.1)
        reservoir.save(layer_file(folder, layer), info={"alpha": 0.5})
    return folder


@pytest.fixture
def folder(tmp_path):
    return save_reservoirs(tmp_path / "res")


def make_rule(reservoir, learning="frozen", k=2, **settings):
    net = Network(SIZES, seeds=range(k), dtype=torch.float64)
    cfg = TrainConfig(task="xor", window=WINDOW, gamma=GAMMA, sigmas=SIGMAS, modulator="reservoir",
                      reservoir=str(reservoir), reservoir_learning=learning, **settings).resolved()
    return net, build_rule(net, cfg)


def stream(n, k=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, k, 1, SIZES[0], generator=gen, dtype=torch.float64)
    y = F.one_hot(torch.randint(0, SIZES[-1], (n, k, 1), generator=gen), SIZES[-1]).double()
    return x, y


def window_target(history, layer):
    """The exact g_N of the last WINDOW samples, newest last, from the raw history."""
    xs, ys, zs = (torch.stack([h[i] for h in history[-WINDOW:]], 1) for i in (0, 1, 2 + layer))
    return modulatory_signal(xs, ys, zs, gamma=GAMMA, sigmas=SIGMAS)


@pytest.mark.parametrize("learning", ["frozen", "delta", "force"])
def test_layer_updates_use_the_reservoir_signal(folder, learning):
    net, rule = make_rule(folder, learning)
    ref = [Reservoir.load(layer_file(folder, l)) for l in range(2)]
    learners = [{"frozen": None, "delta": DeltaRule(every_step=True), "force": Force(alpha=0.5)}[learning]
                for _ in ref]
    start = [r.w_out.clone() for r in rule.modulator.reservoirs]
    x, y = stream(WINDOW + 6)
    history = []
    for t in range(len(x)):
        with torch.no_grad():
            caches = net.hidden_caches(x[t])
        history.append((x[t][:, 0], y[t][:, 0], *(c.out[:, 0] for c in caches)))
        full = len(history) >= WINDOW
        targets = [window_target(history, l) if full and learning != "frozen" else None for l in range(2)]
        signals = [r.step_sample(x[t][:, 0], y[t][:, 0], c.out[:, 0], g, learner)
                   for r, c, g, learner in zip(ref, caches, targets, learners)]
        rule.predict_and_write_grads(x[t], y[t])
        if not full:
            assert net.hidden[0].weight.grad is None
            continue
        for layer, cache, signal in zip(net.hidden, caches, signals):
            gw, gb = hidden_local_grad(cache, signal.unsqueeze(1))
            torch.testing.assert_close(layer.weight.grad, gw, rtol=1e-9, atol=1e-14)
            torch.testing.assert_close(layer.bias.grad, gb, rtol=1e-9, atol=1e-14)
        with torch.no_grad():  # move the weights, as an optimiser would
            for p in net.parameters():
                p.add_(0.05 * torch.randn_like(p))
    for before, res, r in zip(start, rule.modulator.reservoirs, ref):
        if learning == "frozen":
            assert torch.equal(res.w_out, before) and rule.modulator.learners == [None, None]
        else:
            assert not torch.equal(res.w_out, before)
            torch.testing.assert_close(res.w_out, r.w_out, rtol=1e-9, atol=1e-14)


def test_epoch_metrics_are_the_cosines_with_the_exact_signal(folder):
    net, rule = make_rule(folder, k=3)
    x, y = stream(WINDOW + 3, k=3)
    for t in range(WINDOW + 2):
        rule.predict_and_write_grads(x[t], y[t])
    assert set(rule.epoch_metrics()) == {"reservoir_signal_cosine", "reservoir_update_cosine",
                                         "reservoir_ceiling_update_cosine"}
    probe = [Reservoir.load(layer_file(folder, l)) for l in range(2)]
    for res, live in zip(probe, rule.modulator.reservoirs):
        res.u, res.r, res.o = live.u.clone(), live.r.clone(), live.o.clone()
    t = WINDOW + 2
    with torch.no_grad():
        caches = net.hidden_caches(x[t])
    rule.predict_and_write_grads(x[t], y[t])
    metrics = rule.epoch_metrics()
    exact = [rule.modulator.exact(rule.memory, x[t][:, 0], y[t][:, 0], [c.out[:, 0] for c in caches])]
    for l, (res, cache) in enumerate(zip(probe, caches)):
        out = res.step_sample(x[t][:, 0], y[t][:, 0], cache.out[:, 0])
        g = exact[0][l]
        signal_cos = F.cosine_similarity(out, g, dim=-1).mean()
        flat = [torch.cat([p.flatten(1) for p in hidden_local_grad(cache, s.unsqueeze(1))], 1) for s in (out, g)]
        update_cos = F.cosine_similarity(*flat, dim=-1).mean()
        assert metrics["reservoir_signal_cosine"][l] == pytest.approx(float(signal_cos), rel=1e-9)
        assert metrics["reservoir_update_cosine"][l] == pytest.approx(float(update_cos), rel=1e-9)
    assert rule.epoch_metrics() == {}


def continue_from_a_checkpoint(folder, x, y, split, learning, **settings):
    """Train a rule on ``x[:split]``, load its state into a second one, train both on the rest
    and assert that they write the same gradients at every step; returns both rules and the state."""
    net, rule = make_rule(folder, learning, **settings)
    for t in range(split):
        rule.predict_and_write_grads(x[t], y[t])
    state = copy.deepcopy(rule.state_dict())
    net2, rule2 = make_rule(folder, learning, **settings)
    net2.load_state_dict(net.state_dict())
    rule2.load_state_dict(state)
    for t in range(split, len(x)):
        rule.predict_and_write_grads(x[t], y[t])
        rule2.predict_and_write_grads(x[t], y[t])
        for a, b in zip(net.parameters(), net2.parameters()):
            assert torch.equal(a.grad, b.grad)
    return (rule, rule2), state


@pytest.mark.parametrize("learning", ["frozen", "force"])
def test_checkpoint_state_continues_the_same_stream(folder, learning):
    x, y = stream(WINDOW + 8)
    _, state = continue_from_a_checkpoint(folder, x, y, WINDOW + 3, learning)
    with pytest.raises(CheckpointError, match="reservoir-learning"):
        make_rule(folder, "delta" if learning == "frozen" else "frozen")[1].load_state_dict(state)


def test_reservoir_paths_folder_and_list(tmp_path):
    assert reservoir_paths(str(tmp_path), 2) == [tmp_path / "layer0.pt", tmp_path / "layer1.pt"]
    assert reservoir_paths("a.pt, b.pt", 2) == [tmp_path.__class__("a.pt"), tmp_path.__class__("b.pt")]
    with pytest.raises(ConfigError, match="names 1 file.* 2 hidden layer"):
        reservoir_paths("a.pt", 2)


@pytest.mark.parametrize("make,message", [
    (lambda p: save_reservoirs(p, window=5), "window N=5, this run needs N=4"),
    (lambda p: save_reservoirs(p, widths=(6, 7)), "sizes 5/3/7, this run needs 5/3/4"),
    (lambda p: save_reservoirs(p, d_x=2), "sizes 2/3/6, this run needs 5/3/6"),
    (lambda p: save_reservoirs(p, gamma=10.0), "γ=10"),
    (lambda p: p, "not found"),
])
def test_a_reservoir_that_does_not_fit_is_one_line_checkpoint_error(tmp_path, make, message):
    folder = tmp_path / "res"
    folder.mkdir()
    make(folder)
    with pytest.raises(CheckpointError, match=message) as info:
        make_rule(folder)
    assert "\n" not in str(info.value)


def test_online_modes_need_the_reservoir_modulator():
    with pytest.raises(ConfigError, match="--reservoir-learning delta needs --modulator reservoir"):
        TrainConfig(task="xor", reservoir_learning="delta").resolved()
    with pytest.raises(ConfigError, match="--reservoir-learning"):
        TrainConfig(task="xor", modulator="reservoir", reservoir="x.pt", reservoir_learning="paper").resolved()
    with pytest.raises(ConfigError, match="unknown --reservoir-learning"):
        ReservoirModulator([], None, learning="online")


REFIT = dict(reservoir_store=4, reservoir_refit_every=2, reservoir_sample_every=3, reservoir_refit_alpha=0.5)


def test_refit_reads_the_working_memory_on_sampled_steps_only_and_fits_each_model(folder):
    net, rule = make_rule(folder, "refit", **REFIT)
    rule.modulator.scores = None  # nothing measured: the exact signal is only the refit's target
    calls = []
    exact = rule.modulator.exact
    rule.modulator.exact = lambda *args: calls.append(1) or exact(*args)
    prior = [r.w_out.clone() for r in rule.modulator.reservoirs]
    x, y = stream(WINDOW + 20)
    for t in range(len(x)):
        rule.predict_and_write_grads(x[t], y[t])
    full_steps = len(x) - WINDOW + 1
    assert len(calls) == len(range(0, full_steps, 3))
    for before, reservoir, refit in zip(prior, rule.modulator.reservoirs, rule.modulator.refits):
        assert torch.equal(reservoir.w_out, before)  # the file's readout is the prior, never written
        assert refit.added == len(calls) and not torch.equal(refit.readouts[0], refit.readouts[1])
        assert not torch.equal(refit.readouts[0], before)


def test_refit_signal_is_each_models_readout_of_its_rates(folder):
    net, rule = make_rule(folder, "refit", **REFIT)
    x, y = stream(WINDOW + 12)
    for t in range(len(x) - 1):
        rule.predict_and_write_grads(x[t], y[t])
    with torch.no_grad():
        caches = net.hidden_caches(x[-1])
    rule.predict_and_write_grads(x[-1], y[-1])
    for layer, cache, reservoir, refit in zip(net.hidden, caches, rule.modulator.reservoirs, rule.modulator.refits):
        signal = torch.einsum("kom,km->ko", refit.readouts, reservoir.r)
        gw, gb = hidden_local_grad(cache, signal.unsqueeze(1))
        torch.testing.assert_close(layer.weight.grad, gw, rtol=1e-9, atol=1e-14)


def test_refit_checkpoint_continues_exactly(folder):
    x, y = stream(WINDOW + 16)
    (rule, rule2), _ = continue_from_a_checkpoint(folder, x, y, WINDOW + 5, "refit", **REFIT)
    assert rule.epoch_metrics() == rule2.epoch_metrics()


@pytest.mark.parametrize("setting, message", [
    (dict(reservoir_store=0), "--reservoir-store must be a positive number of rows, got 0"),
    (dict(reservoir_refit_every=-1), "--reservoir-refit-every must be a positive number of rows"),
    (dict(reservoir_sample_every=0), "--reservoir-sample-every must be a positive number of steps"),
    (dict(reservoir_refit_alpha=0.0), "--reservoir-refit-alpha must be positive"),
    (dict(optimizer="lbfgs"), "unknown --optimizer 'lbfgs'"),
    (dict(train_samples=0), "--train-samples must be a positive number of samples"),
])
def test_bad_circuit_settings_are_one_line_errors(folder, setting, message):
    with pytest.raises(ConfigError, match=message) as info:
        make_rule(folder, "refit", **setting)
    assert "\n" not in str(info.value)


def test_a_circuit_fitted_on_one_models_network_serves_that_model_only(folder):
    reservoir = Reservoir.load(layer_file(folder, 0))
    reservoir.info = {"layer": 0, "stream_kind": "task-gaussian", "stream_task": "xor", "stream_hidden": (6,),
                      "stream_fit_fraction": 0.1, "stream_fit_seed": 0, "stream_network_seed": 2}
    run = TrainConfig(task="xor", hidden=(6, 4), seed=2, seeds=1).resolved()
    check_stream(reservoir, "r.pt", 0, run)
    for other in (dict(seed=1), dict(seeds=3)):
        with pytest.raises(CheckpointError, match="initial network of model seed 2; run it with --seed 2 --seeds 1"):
            check_stream(reservoir, "r.pt", 0, TrainConfig(task="xor", hidden=(6, 4), **{"seed": 2, **other}).resolved())
