"""The compiled engine with frozen reservoirs (``--modulator reservoir --reservoir-learning
frozen``) against the eager closed loop: the step uncompiled (``compile=False``) for every
variant of the reservoirs' dynamics, the loop's scores, checkpoints either way, the naming
of a non-finite quantity, which runs stay eager; one test compiles (``slow``)."""
from __future__ import annotations

import math
import re
import warnings

import pytest
import torch
import torch.nn.functional as F

from biohsic.config import TrainConfig
from biohsic.engine import CompiledEngine, EagerEngine, compiled_engine, compiled_support, make_engine
from biohsic.errors import EngineWarning
from biohsic.network import Network
from biohsic.rules import build_rule
from biohsic.train import make_optimizer
from test_engine_compiled import assert_a_nan_input_is_named_alike, continued_across_engines, relative_error
from test_reservoir_loop import GAMMA, SIGMAS, SIZES, WINDOW, save_reservoirs

#: Variants of the reservoirs' dynamics, each away from the test files' (no noise, feedback, no projection).
DYNAMICS = {
    "plain": dict(),
    "noise": dict(rate_noise=0.05, output_noise=0.02),
    "noise without feedback": dict(rate_noise=0.05, output_noise=0.02, feedback_scale=0.0),
    "projection": dict(input_projection=3, gain=0.9),
}


def build(folder, kind: str, seeds: int, dtype=torch.float64, learning: str = "frozen", steps_per_call: int = 4,
          **settings):
    """A network, its rule with the reservoirs of ``folder`` and the engine ``kind`` (``eager``,
    ``step``: the compiled engine's chunk function uncompiled, ``compiled``)."""
    network = Network(SIZES, seeds=range(seeds), dtype=dtype)
    config = TrainConfig(task="xor", window=WINDOW, gamma=GAMMA, sigmas=SIGMAS, modulator="reservoir",
                         reservoir=str(folder), reservoir_learning=learning, lr=1e-2, weight_decay=0.01,
                         **settings).resolved()
    rule = build_rule(network, config)
    optimizer = make_optimizer(rule.trainable_parameters(), config)
    if kind == "eager":
        return network, EagerEngine(rule, optimizer)
    return network, compiled_engine(rule, optimizer, compile=kind == "compiled", steps_per_call=steps_per_call)


def stream(seeds: int, samples: int, dtype=torch.float64, seed: int = 3):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(seeds, samples, SIZES[0], generator=gen, dtype=dtype)
    y = F.one_hot(torch.randint(0, SIZES[-1], (seeds, samples), generator=gen), SIZES[-1]).to(dtype)
    return x, y


def trained(folder, kind: str, seeds: int, samples: int, chunk: int = 13, dtype=torch.float64, **options):
    """The logits of every sample, the parameters, the loop's scores after ``samples`` samples
    and the engine (``options``: those of :func:`build`)."""
    network, engine = build(folder, kind, seeds, dtype, **options)
    x, y = stream(seeds, samples, dtype)
    logits = []
    for start in range(0, samples, chunk):
        logits.append(engine.train_chunk(x[:, start:start + chunk], y[:, start:start + chunk]))
        assert engine.first_nonfinite() is None
    return torch.cat(logits, 1), [p.detach().clone() for p in network.parameters()], engine.epoch_metrics(), engine


def numbers(value):
    """Every number of a nested structure of lists and dicts (scores), in order; ``None`` as NaN."""
    if isinstance(value, dict):
        return [n for key in sorted(value) for n in numbers(value[key])]
    if isinstance(value, (list, tuple)):
        return [n for item in value for n in numbers(item)]
    return [math.nan if value is None else float(value)]


def assert_same_scores(got: dict, expected: dict, rtol: float) -> None:
    assert sorted(got) == sorted(expected) and "reservoir_update_cosine_100" in expected
    torch.testing.assert_close(torch.tensor(numbers(got), dtype=torch.float64),
                               torch.tensor(numbers(expected), dtype=torch.float64), rtol=rtol, atol=rtol,
                               equal_nan=True)


@pytest.fixture(params=list(DYNAMICS))
def dynamics(request, tmp_path):
    return save_reservoirs(tmp_path / "res", **DYNAMICS[request.param])


@pytest.mark.parametrize("seeds", [1, 3])
def test_step_equals_the_eager_loop_in_float64(dynamics, seeds):
    # 110 samples: the scores close a block of 100 full-window steps
    expected = trained(dynamics, "eager", seeds, 110)
    got = trained(dynamics, "step", seeds, 110)
    assert relative_error(got[:2], expected[:2]) <= 1e-10
    assert_same_scores(got[2], expected[2], rtol=1e-9)


@pytest.mark.parametrize("settings", [dict(memory="recompute"), dict(readout_update="newest")])
def test_step_equals_the_eager_loop_with_other_memory_and_readout_settings(tmp_path, settings):
    folder = save_reservoirs(tmp_path / "res", rate_noise=0.05)
    expected = trained(folder, "eager", 2, 80, **settings)
    got = trained(folder, "step", 2, 80, **settings)
    assert relative_error(got[:2], expected[:2]) <= 1e-10


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32 network", "float64 network"])
def test_step_equals_the_eager_loop_with_float32_reservoirs(tmp_path, dtype):
    folder = save_reservoirs(tmp_path / "res", dtype=torch.float32, rate_noise=0.05)
    expected = trained(folder, "eager", 3, 110, dtype=dtype)
    got = trained(folder, "step", 3, 110, dtype=dtype)
    assert relative_error(got[:2], expected[:2]) <= 1e-4
    assert_same_scores(got[2], expected[2], rtol=1e-4)


@pytest.mark.slow
def test_step_equals_the_eager_loop_after_a_thousand_updates(tmp_path):
    folder = save_reservoirs(tmp_path / "res", rate_noise=0.05, output_noise=0.02)
    expected = trained(folder, "eager", 3, 1000, chunk=128)
    got = trained(folder, "step", 3, 1000, chunk=128)
    assert relative_error(got[:2], expected[:2]) <= 1e-10
    assert_same_scores(got[2], expected[2], rtol=1e-9)


def test_the_signal_is_the_reservoirs(tmp_path):
    """The reservoirs' readouts scaled up change the updates: the step does use them."""
    folder = save_reservoirs(tmp_path / "res", rate_noise=0.05)
    runs = []
    for scale in (1, 2):
        network, engine = build(folder, "step", 2)
        for reservoir in engine.rule.modulator.reservoirs:
            reservoir.w_out.mul_(scale)
        engine.train_chunk(*stream(2, 40))
        runs.append([p.detach().clone() for p in network.parameters()])
    assert max(float((a - b).norm() / b.norm()) for a, b in zip(*runs)) > 1e-3


def test_a_checkpoint_of_either_engine_continues_on_the_other(tmp_path):
    folder = save_reservoirs(tmp_path / "res", rate_noise=0.05, output_noise=0.02)
    x, y = stream(2, 130)
    whole_network, whole = build(folder, "eager", 2)
    whole.train_chunk(x, y)
    expected = whole.epoch_metrics()
    for network, engine in continued_across_engines(lambda kind: build(folder, kind, 2), x, y, 50):
        for a, b in zip(network.parameters(), whole_network.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)
        assert_same_scores(engine.epoch_metrics(), expected, rtol=1e-9)


def test_the_first_non_finite_quantity_is_named_as_the_eager_engine_names_it(tmp_path):
    folder = save_reservoirs(tmp_path / "res")
    assert_a_nan_input_is_named_alike([build(folder, kind, 3)[1] for kind in ("eager", "step")], *stream(3, 30), 17)


@pytest.mark.parametrize("learning", ["delta", "force", "refit"])
def test_learning_reservoirs_run_eagerly_with_one_warning(tmp_path, learning):
    _, eager = build(save_reservoirs(tmp_path / "res"), "eager", 1, learning=learning)
    reason = f"reservoir learning {learning} has no compiled step (only frozen reservoirs)"
    assert compiled_support(eager.rule, eager.optimizer) == reason
    expected = re.escape(f"--engine compiled: {reason}; this run uses the eager engine")
    with pytest.warns(EngineWarning, match=expected) as caught:
        assert type(make_engine(eager.rule, eager.optimizer, "compiled", 10**9)) is EagerEngine
    assert len(caught) == 1


def test_frozen_reservoirs_are_compiled(tmp_path):
    _, eager = build(save_reservoirs(tmp_path / "res"), "eager", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert type(make_engine(eager.rule, eager.optimizer, "compiled", 1)) is CompiledEngine


@pytest.mark.slow
def test_compiled_equals_the_eager_loop(tmp_path, graph_cache, monkeypatch):
    # the graph's wrapper in Python: the C++ one (a cold compile of its own) is checked in
    # test_engine_compiled.py, and the kernels are the same either way
    monkeypatch.setattr(CompiledEngine, "cpp_wrapper", False)
    folder = save_reservoirs(tmp_path / "res", rate_noise=0.05, output_noise=0.02)
    expected = trained(folder, "eager", 2, 110)
    got = trained(folder, "compiled", 2, 110)
    assert got[3].compile_seconds > 0 and got[3].graph is not None
    assert relative_error(got[:2], expected[:2]) <= 1e-10
    assert_same_scores(got[2], expected[2], rtol=1e-9)
