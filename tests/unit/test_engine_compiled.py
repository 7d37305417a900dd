"""The explicit streaming step and the compiled engine against the eager reference (the rule
classes with ``torch.optim``), the engine's choice and fallback, and resuming a compiled run.

Every combination the compiled engine serves, with K = 1 and K = 3 models, is run three ways
against the eager engine:

- float64, the chunk function captured by ``torch.compile`` (backend ``eager``: the graph
  TorchDynamo records, run op by op): ≤ 1e-10 relative after 1,000 updates;
- float32, the chunk function uncompiled (``CompiledEngine(compile=False)``): ≤ 1e-4 (100 updates);
- ``slow``: compiled by inductor (generated code), 1,000 updates, in five runs that between them
  take every setting (rule, modulator or kernel, memory, readout, units, optimiser, K, dtype) at least once.

``make test`` runs the float32 grid with K = 3 for every combination, the float64 one with K = 3
for one combination per rule and units (:data:`COVERING`), and three of the inductor runs
(rate and phsic-stream with K = 3, leaky units with K = 1, float32 and float64); the grids' K = 1
cases, the other float64 K = 3 cases and the other two inductor runs are marked ``exhaustive`` and run in ``make test-all``.

A cold inductor compile takes tens of seconds on 2 cores: graphs are cached on disk per test
session (``graph_cache``), and the tiny shapes keep each graph small.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import json
import warnings

import pytest
import torch

import biohsic.engine as engine_module
import biohsic.engine.compiled as compiled_module
from biohsic.config import TrainConfig
from biohsic.data import load_task
from biohsic.engine import (AUTO_MIN_UPDATES, CompiledEngine, EagerEngine, PairEngine, compiled_engine,
                            compiled_support, make_engine)
from biohsic.errors import EngineWarning
from biohsic.network import Network
from biohsic.rules import build_rule
from biohsic.train import Trainer, make_optimizer, settings_mismatch
from test_resume import assert_same_run, stopped_and_resumed

D_IN, CLASSES = 2, 2   # the shapes of XOR, the data of the resume test
BASE = TrainConfig(task="xor", hidden=(6, 4), window=4, dtype="float64", lr=3e-4, weight_decay=0.01,
                   steps_per_sample=4)
UPDATES = 1000      # of each float64 comparison
F32_UPDATES = 100   # of each float32 one (phsic-stream's cosine kernel turns chaotic in float32 after ~150)

#: Every setting the compiled step serves, each away from the base run (rate, exact, stored, window, AdamW).
COMBINATIONS = {
    "rate exact": dict(),
    "rate paper": dict(modulator="paper"),
    "rate paper-jan2024": dict(modulator="paper-jan2024"),
    "rate recompute": dict(memory="recompute"),
    "rate newest": dict(readout_update="newest"),
    "rate sgd": dict(optimizer="sgd", lr=0.003),
    "leaky exact": dict(neuron="leaky"),
    "leaky paper": dict(neuron="leaky", modulator="paper"),
    "leaky paper-jan2024": dict(neuron="leaky", modulator="paper-jan2024"),
    "leaky recompute": dict(neuron="leaky", memory="recompute"),
    "leaky newest": dict(neuron="leaky", readout_update="newest"),
    "leaky sgd": dict(neuron="leaky", optimizer="sgd", lr=0.003),
    "phsic-stream gaussian": dict(rule="phsic-stream", phsic_sigma=2.0),
    "phsic-stream cosine": dict(rule="phsic-stream", phsic_kernel="cosine"),
    "phsic-stream gaussian recompute": dict(rule="phsic-stream", phsic_sigma=2.0, memory="recompute", phsic_horizon=7),
    "phsic-stream cosine recompute": dict(rule="phsic-stream", phsic_kernel="cosine", memory="recompute"),
    "phsic-stream sgd": dict(rule="phsic-stream", phsic_sigma=2.0, optimizer="sgd", lr=3e-4),
}
#: The float64 captured-graph cases ``make test`` runs (K = 3): one per rule and units.
COVERING = ("rate exact", "leaky paper", "phsic-stream gaussian recompute")


def grid(combinations, covering=None) -> list:
    """Each combination with K = 3, and with K = 1 (``exhaustive``; ``make test`` has K = 1 in
    the leaky inductor run below); with ``covering``, K = 3 of the others is ``exhaustive`` too."""
    def exhaustive(case: str, seeds: int) -> bool:
        return seeds == 1 or (covering is not None and case not in covering)

    return [pytest.param(case, seeds, id=f"{case}-{seeds}", marks=[pytest.mark.exhaustive] if exhaustive(case, seeds) else [])
            for case in combinations for seeds in (3, 1)]


CASES = grid(COMBINATIONS, COVERING)
F32_CASES = grid(COMBINATIONS)
# The learning rates keep 1,000 updates of these tiny networks out of the chaotic regime, where
# rounding differences grow to order one whatever the formula (seen in float32 at AdamW lr 1e-3,
# K = 1, and even in float64 for phsic-stream at SGD lr 3e-3).

#: Runs compiled by inductor: between them every value of every setting above.
INDUCTOR_RUNS = {
    "rate exact stored window adamw K=3 float64": dict(seeds=3),
    "leaky paper recompute newest adamw K=1 float64": dict(neuron="leaky", modulator="paper", memory="recompute",
                                                           readout_update="newest"),
    "rate paper-jan2024 recompute newest sgd K=1 float32": dict(modulator="paper-jan2024", memory="recompute",
                                                                readout_update="newest", optimizer="sgd", lr=0.003,
                                                                dtype="float32"),
    "phsic-stream gaussian recompute adamw K=3 float32": dict(seeds=3, dtype="float32",
                                                              **COMBINATIONS["phsic-stream gaussian recompute"]),
    "phsic-stream cosine stored sgd K=1 float64": dict(rule="phsic-stream", phsic_kernel="cosine", optimizer="sgd",
                                                       lr=3e-4),
}


def build(config: TrainConfig, kind: str, **options):
    """A network, rule and optimiser for ``config`` and the engine ``kind`` (``eager``; ``step``:
    the compiled engine's chunk functions, uncompiled; ``compiled``)."""
    cfg = config.resolved()
    network = Network([D_IN, *cfg.hidden, CLASSES], seeds=range(cfg.seeds), dtype=getattr(torch, cfg.dtype))
    rule = build_rule(network, cfg)
    optimizer = make_optimizer(rule.trainable_parameters(), cfg)
    if kind == "eager":
        return network, EagerEngine(rule, optimizer)
    return network, compiled_engine(rule, optimizer, compile=kind == "compiled", **options)


def stream(config: TrainConfig, samples: int, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    dtype = getattr(torch, config.dtype)
    x = torch.randn(config.seeds, samples, D_IN, generator=gen, dtype=dtype)
    y = torch.nn.functional.one_hot(torch.randint(CLASSES, (config.seeds, samples), generator=gen), CLASSES)
    return x, y.to(dtype)


def trained(config: TrainConfig, kind: str, samples: int, chunk: int = 37, **options):
    """The logits of every sample and the parameters after ``samples`` samples in chunks of ``chunk``."""
    network, engine = build(config, kind, **options)
    x, y = stream(config, samples)
    logits = []
    for start in range(0, samples, chunk):
        logits.append(engine.train_chunk(x[:, start:start + chunk], y[:, start:start + chunk]))
        assert engine.first_nonfinite() is None
    return torch.cat(logits, 1), [p.detach().clone() for p in network.parameters()], engine


def eager_reference(config: TrainConfig, updates: int = UPDATES):
    """The eager engine's logits and final parameters after ``updates`` updates (computed once per config)."""
    return _eager_reference(json.dumps(config.to_dict(), sort_keys=True), updates)


@functools.cache
def _eager_reference(config_json: str, updates: int):
    config = TrainConfig(**json.loads(config_json))
    return trained(config, "eager", samples_for(config, updates), chunk=128)[:2]


def relative_error(got, expected) -> float:
    (logits, params), (ref_logits, ref_params) = got, expected
    return max(float((a - b).norm() / b.norm()) for a, b in zip([logits, *params], [ref_logits, *ref_params]))


def samples_for(config: TrainConfig, updates: int) -> int:
    return updates // (config.steps_per_sample if config.neuron == "leaky" else 1)


@pytest.mark.parametrize("case, seeds", CASES)
def test_the_captured_graph_equals_the_eager_rule_in_float64(case, seeds):
    config = dataclasses.replace(BASE, seeds=seeds, **COMBINATIONS[case])
    *got, engine = trained(config, "compiled", samples_for(config, UPDATES), chunk=128, backend="eager")
    assert engine.graph is not None
    assert relative_error(got, eager_reference(config)) <= 1e-10


@pytest.mark.parametrize("case, seeds", F32_CASES)
def test_the_step_equals_the_eager_rule_in_float32(case, seeds):
    config = dataclasses.replace(BASE, seeds=seeds, dtype="float32", **COMBINATIONS[case])
    got = trained(config, "step", samples_for(config, F32_UPDATES), chunk=128)[:2]
    assert relative_error(got, eager_reference(config, F32_UPDATES)) <= 1e-4


@pytest.mark.parametrize("case", ["rate exact", "phsic-stream gaussian"])
def test_a_checkpoint_of_either_engine_continues_on_the_other(case):
    config = dataclasses.replace(BASE, seeds=2, **COMBINATIONS[case])
    x, y = stream(config, 90)
    whole_network, whole = build(config, "eager")
    whole.train_chunk(x, y)
    for network, _ in continued_across_engines(lambda kind: build(config, kind), x, y, 50):
        for a, b in zip(network.parameters(), whole_network.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


def continued_across_engines(build_engine, x, y, split: int) -> list:
    """A run of each engine (``build_engine(kind)`` → network and engine, kind ``eager`` or
    ``step``) checkpointed after ``split`` samples of ``x`` and continued from its checkpoint on
    each engine: the four (network, engine) after the rest of ``x``."""
    continued = []
    for source in ("eager", "step"):
        first_network, first = build_engine(source)
        first.train_chunk(x[:, :split], y[:, :split])
        state = copy.deepcopy({"network": first_network.state_dict(), **first.state_dict()})   # as a checkpoint file
        for kind in ("eager", "step"):
            network, engine = build_engine(kind)
            network.load_state_dict(state["network"])
            engine.load_state_dict(copy.deepcopy(state))
            engine.train_chunk(x[:, split:], y[:, split:])
            continued.append((network, engine))
    return continued


@pytest.mark.parametrize("case, step", [("rate exact", 17), ("leaky exact", 17), ("phsic-stream gaussian", 17),
                                        ("phsic-stream cosine", 0)])
def test_the_first_non_finite_quantity_is_named_as_the_eager_engine_names_it(case, step):
    config = dataclasses.replace(BASE, seeds=3, **COMBINATIONS[case])
    assert_a_nan_input_is_named_alike([build(config, kind)[1] for kind in ("eager", "step")], *stream(config, 30), step)


def assert_a_nan_input_is_named_alike(engines, x, y, step: int) -> None:
    """Each engine (the eager one first) trained on ``x`` with a NaN in model 1's input at ``step``
    names it as the first non-finite quantity, as the eager engine does."""
    x = x.clone()
    x[1, step, 1] = float("nan")
    reports = []
    for engine in engines:
        engine.train_chunk(x, y)
        reports.append(engine.first_nonfinite())
    assert reports[0] is not None and all(report == reports[0] for report in reports)
    assert (reports[0].step, reports[0].quantity, reports[0].models) == (step, "input", (1,))


def test_phsic_stream_restarts_its_stream_after_a_reset_as_the_eager_rule_does():
    """After a reset the first sample has no pair: the hidden layers skip it, so their AdamW
    step count trails the readout's by one per stream; every parameter learns."""
    config = dataclasses.replace(BASE, seeds=2, **COMBINATIONS["phsic-stream gaussian"])
    results = []
    for kind in ("eager", "step"):
        network, engine = build(config, kind)
        initial = [p.detach().clone() for p in network.parameters()]
        x, y = stream(config, 60)
        logits = [engine.train_chunk(x[:, :30], y[:, :30])]
        engine.reset()
        logits.append(engine.train_chunk(x[:, 30:], y[:, 30:]))
        results.append((torch.cat(logits, 1), [p.detach().clone() for p in network.parameters()]))
        assert [int(engine.optimizer.state[p]["step"]) for p in network.parameters()] == [58] * 4 + [60] * 2
        assert all(float((p.detach() - before).abs().max()) > 1e-3 for p, before in zip(network.parameters(), initial))
    assert relative_error(results[1], results[0]) <= 1e-10


@pytest.mark.parametrize("case", ["rate exact", "leaky paper"])
def test_biohsic_refills_its_window_after_a_reset_as_the_eager_rule_does(case):
    """After a reset nothing learns until the window is full again (no stale gradient is applied)."""
    config = dataclasses.replace(BASE, seeds=2, **COMBINATIONS[case])
    results = []
    for kind in ("eager", "step"):
        network, engine = build(config, kind)
        x, y = stream(config, 60)
        logits = [engine.train_chunk(x[:, :30], y[:, :30])]
        engine.reset()
        logits.append(engine.train_chunk(x[:, 30:], y[:, 30:]))
        results.append((torch.cat(logits, 1), [p.detach().clone() for p in network.parameters()]))
    assert relative_error(results[1], results[0]) <= 1e-10


def test_the_engine_is_chosen_by_the_setting_and_the_length_of_the_run(monkeypatch):
    _, eager = build(BASE, "eager")
    rule, optimizer = eager.rule, eager.optimizer
    assert type(make_engine(rule, optimizer, "eager", 10**9)) is EagerEngine
    assert type(make_engine(rule, optimizer, "auto", AUTO_MIN_UPDATES - 1)) is EagerEngine
    assert type(make_engine(rule, optimizer, "auto", AUTO_MIN_UPDATES)) is CompiledEngine
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert type(make_engine(rule, optimizer, "compiled", 1)) is CompiledEngine
    monkeypatch.setattr(engine_module, "compiler_available", lambda: False)
    assert type(make_engine(rule, optimizer, "auto", 10**9)) is EagerEngine
    with pytest.warns(EngineWarning, match="no C.. compiler") as caught:
        assert type(make_engine(rule, optimizer, "compiled", 1)) is EagerEngine
    assert len(caught) == 1


def test_the_compiled_engine_of_phsic_stream_is_the_pair_engine():
    _, eager = build(dataclasses.replace(BASE, **COMBINATIONS["phsic-stream gaussian"]), "eager")
    assert compiled_support(eager.rule, eager.optimizer) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert type(make_engine(eager.rule, eager.optimizer, "compiled", 1)) is PairEngine
    assert type(make_engine(eager.rule, eager.optimizer, "auto", AUTO_MIN_UPDATES)) is PairEngine
    with pytest.raises(ValueError, match="runs rule biohsic, not phsic-stream"):
        CompiledEngine(eager.rule, eager.optimizer)


@pytest.mark.parametrize("settings, reason", [
    (dict(rule="phsic", batch_size=4), "rule phsic has no compiled step"),
    (dict(rule="bp", batch_size=4), "rule bp has no compiled step"),
    (dict(hidden=()), "dense hidden layers"),
])
def test_runs_the_compiled_step_cannot_serve_run_eagerly_with_one_warning(settings, reason):
    _, eager = build(dataclasses.replace(BASE, **settings), "eager")
    assert reason in compiled_support(eager.rule, eager.optimizer)
    expected = f"--engine compiled: .*{reason}.*; this run uses the eager engine"
    with pytest.warns(EngineWarning, match=expected) as caught:
        assert type(make_engine(eager.rule, eager.optimizer, "compiled", 10**9)) is EagerEngine
    assert len(caught) == 1
    assert type(make_engine(eager.rule, eager.optimizer, "auto", 10**9)) is EagerEngine


def test_an_unknown_layer_type_runs_eagerly():
    _, eager = build(BASE, "eager")

    class OtherLayer(type(eager.rule.network.hidden[0])):
        """Stands for a layer type the compiled step does not know (a convolution)."""

    eager.rule.network.hidden[0].__class__ = OtherLayer
    assert "dense hidden layers" in compiled_support(eager.rule, eager.optimizer)


def test_the_engine_may_change_when_a_run_is_resumed(tmp_path):
    config = TrainConfig(**{**dataclasses.asdict(BASE), "engine": "eager"}).resolved()
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    assert settings_mismatch(dataclasses.replace(config, engine="compiled"), tmp_path) == ""
    assert "--lr" in settings_mismatch(dataclasses.replace(config, lr=0.5), tmp_path)


# --- compiled (slow: each test compiles its graphs once; they are cached on disk) -------------

#: Inductor runs only in ``make test-all`` (their settings' other values are in the other runs).
EXHAUSTIVE_RUNS = ("rate paper-jan2024 recompute newest sgd K=1 float32", "phsic-stream cosine stored sgd K=1 float64")

#: The inductor run compiled with the C++ wrapper the engine uses on the CPU.
CPP_WRAPPER_RUN = "leaky paper recompute newest adamw K=1 float64"


#: The run of the resume test below.
RESUMED = TrainConfig(task="xor", epochs=2, hidden=(6, 4), window=4, val_fraction=0.0, seeds=2)


@pytest.mark.slow
@pytest.mark.parametrize("run", [pytest.param(run, marks=[pytest.mark.exhaustive] if run in EXHAUSTIVE_RUNS else [])
                                 for run in INDUCTOR_RUNS])
def test_compiled_equals_the_eager_rule(run, graph_cache, monkeypatch):
    config = dataclasses.replace(BASE, **INDUCTOR_RUNS[run])
    # the graph's wrapper in C++ (as in production) for the leaky run, whose loop gains most from
    # it; in Python for the others, sparing a cold C++ compile each (the kernels are the same)
    monkeypatch.setattr(CompiledEngine, "cpp_wrapper", run == CPP_WRAPPER_RUN)
    # the engine's default call: the updates of SCAN_SAMPLES samples as one loop in the graph
    *got, engine = trained(config, "compiled", samples_for(config, UPDATES), chunk=128)
    assert engine.compile_seconds > 0 and engine.graph is not None
    assert relative_error(got, eager_reference(config)) <= (1e-10 if config.dtype == "float64" else 1e-4)


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("run", ["rate exact stored window adamw K=3 float64",
                                 "leaky paper recompute newest adamw K=1 float64",
                                 "phsic-stream cosine stored sgd K=1 float64"])
def test_compiled_under_cuda_graphs_equals_the_eager_rule_on_the_cpu(run, graph_cache):
    config = dataclasses.replace(BASE, **INDUCTOR_RUNS[run])
    cfg = config.resolved()
    network = Network([D_IN, *cfg.hidden, CLASSES], seeds=range(cfg.seeds), dtype=torch.float64).to("cuda")
    rule = build_rule(network, cfg)
    engine = compiled_engine(rule, make_optimizer(rule.trainable_parameters(), cfg))
    x, y = stream(config, samples_for(config, UPDATES))
    logits = torch.cat([engine.train_chunk(x[:, i:i + 128].cuda(), y[:, i:i + 128].cuda()).cpu()
                        for i in range(0, x.shape[1], 128)], 1)
    got = logits, [p.detach().cpu() for p in network.parameters()]
    assert relative_error(got, eager_reference(config)) <= 1e-10


@pytest.mark.slow
def test_a_resumed_compiled_run_equals_an_uninterrupted_one(tmp_path, monkeypatch, graph_cache):
    data = load_task("xor")
    data = dataclasses.replace(data, x_train=data.x_train[:120], y_train=data.y_train[:120])
    config = dataclasses.replace(RESUMED, engine="compiled")
    monkeypatch.setattr(compiled_module, "SCAN_SAMPLES", 2)   # the run's chunks are 7 samples
    # the three trainers' graphs captured (backend eager) rather than compiled by inductor: what
    # is checked is what a checkpoint keeps and a resumed engine reads (inductor's code is
    # checked above); three inductor compiles would cost half a minute
    capture = compiled_module.compile_chunk
    monkeypatch.setattr(compiled_module, "compile_chunk",
                        lambda function, device, backend, **options: capture(function, device, "eager"))
    whole = Trainer(config, run_dir=tmp_path / "whole", dataset=data, checkpoint_every=7)
    assert type(whole.engine) is CompiledEngine
    whole.run()
    assert stopped_and_resumed(config, data, tmp_path / "split", monkeypatch, "chunk", 4, 7)
    assert_same_run(tmp_path / "whole", tmp_path / "split")
    summary = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert summary["engine"] == "CompiledEngine" and summary["compile_seconds"] > 0
