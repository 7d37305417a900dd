"""The baseline rules behind the Rule interface: registry, frozen layers, state, errors and
a few optimiser steps on a separable problem."""
from __future__ import annotations

import pytest
import torch
from torch import Tensor

from biohsic.config import TrainConfig
from biohsic.errors import ConfigError
from biohsic.network import Network
from biohsic.rules import RULES

F64 = torch.float64
SIZES = (4, 8, 6, 2)
BASELINES = ("bp", "readout", "fa", "dfa", "hsic", "phsic", "phsic-stream")


def config(rule: str, batch_size: int = 16, **fields) -> TrainConfig:
    values = dict(rule=rule, hidden=SIZES[1:-1], window=4, gamma=2.0, sigmas=(0.5, 0.25, 1.0), lr=1e-2,
                  epochs=1, batch_size=batch_size)
    values.update(fields)
    return TrainConfig(**values)


def separable(n: int, seed: int, models: int = 1) -> tuple[Tensor, Tensor]:
    """Two Gaussian blobs at ±(1, 1, 0, 0): a linearly separable two-class problem."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(2, (models, n), generator=gen)
    centre = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=F64)
    x = (2.0 * labels.unsqueeze(-1) - 1.0) * centre + 0.3 * torch.randn(models, n, 4, generator=gen, dtype=F64)
    return x, torch.nn.functional.one_hot(labels, 2).to(F64)


def cross_entropy(net: Network, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float(-(y * torch.log_softmax(net(x), -1)).sum(-1).mean())


def train(rule_name: str, steps: int, seed: int = 0, **fields) -> tuple[Network, Tensor, Tensor, float]:
    """A few AdamW steps on the separable problem; returns the net, the data and the loss before."""
    net = Network(SIZES, (seed,), dtype=F64)
    rule = RULES[rule_name](net, config(rule_name, **fields))
    x, y = separable(256, seed)
    before = cross_entropy(net, x, y)
    opt = torch.optim.AdamW(rule.trainable_parameters(), lr=1e-2, weight_decay=1e-2)
    gen = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        idx = torch.randint(256, (rule.batch_size,), generator=gen)
        logits = rule.predict_and_write_grads(x[:, idx], y[:, idx])
        assert logits.shape == (1, rule.batch_size, 2)
        opt.step()
    return net, x, y, before


def test_every_baseline_is_registered_with_its_batch_mode():
    for name in BASELINES:
        assert RULES[name].name == name
    net = Network(SIZES, (0,), dtype=F64)
    for name in BASELINES:
        rule = RULES[name](net, config(name, batch_size=16))
        assert rule.batch_size == (1 if name == "phsic-stream" else 16)
        assert rule.streaming == (name == "phsic-stream")


@pytest.mark.parametrize("rule_name", ["bp", "readout", "fa", "dfa"])
def test_a_few_steps_reduce_the_loss_on_a_separable_problem(rule_name):
    net, x, y, before = train(rule_name, steps=100)  # (D)FA first align, then learn
    assert cross_entropy(net, x, y) < 0.5 * before


@pytest.mark.parametrize("rule_name,fields", [("hsic", {}), ("hsic", {"hsic_normalized": True}),
                                              ("phsic", {}), ("phsic", {"phsic_kernel": "cosine"}),
                                              ("phsic-stream", {}),
                                              ("phsic-stream", {"memory": "recompute"})])
def test_kernel_rules_change_the_hidden_weights_and_stay_finite(rule_name, fields):
    initial = [p.detach().clone() for p in Network(SIZES, (0,), dtype=F64).parameters()]
    net, *_ = train(rule_name, steps=10, **fields)
    for param, start in zip(net.parameters(), initial):
        assert torch.isfinite(param).all()
        assert not torch.equal(param, start)


def test_readout_rule_leaves_hidden_weights_bit_identical():
    initial = Network(SIZES, (0,), dtype=F64)
    net, *_ = train("readout", steps=10)  # AdamW with weight decay over the rule's parameters
    rule = RULES["readout"](net, config("readout"))
    assert [id(p) for p in rule.trainable_parameters()] == [id(p) for p in net.readout.parameters()]
    for layer, start in zip(net.hidden, initial.hidden):
        assert torch.equal(layer.weight, start.weight)
        assert torch.equal(layer.bias, start.bias)
        assert layer.weight.grad is None
    assert not torch.equal(net.readout.weight, initial.readout.weight)


@pytest.mark.parametrize("rule_name", ["hsic", "phsic"])
def test_minibatch_kernel_rules_refuse_a_batch_of_one(rule_name):
    with pytest.raises(ConfigError, match="--batch-size must be at least 2"):
        RULES[rule_name](Network(SIZES, (0,), dtype=F64), config(rule_name, batch_size=1))


@pytest.mark.parametrize("rule_name,fields,message", [
    ("phsic", {"phsic_kernel": "laplace"}, "unknown --phsic-kernel 'laplace'"),
    ("phsic", {"phsic_sigma": 0.0}, "--phsic-sigma must be positive"),
    ("phsic-stream", {"phsic_horizon": 0}, "--phsic-horizon must be at least 1"),
])
def test_bad_baseline_settings_raise_one_line_config_errors(rule_name, fields, message):
    with pytest.raises(ConfigError, match=message) as info:
        config(rule_name, task="xor", **fields).resolved()
    assert "\n" not in str(info.value)


def stream(rule, x: Tensor, y: Tensor, steps: range) -> None:
    for t in steps:
        rule.predict_and_write_grads(x[:, t:t + 1], y[:, t:t + 1])


def test_phsic_stream_waits_for_a_previous_sample_and_forgets_it_on_reset():
    net = Network(SIZES, (0, 1), dtype=F64)
    rule = RULES["phsic-stream"](net, config("phsic-stream"))
    x, y = separable(6, 2, models=2)
    stream(rule, x, y, range(1))
    assert all(p.grad is None for p in net.hidden.parameters())
    assert net.readout.weight.grad is not None
    stream(rule, x, y, range(1, 3))
    assert all(p.grad is not None for p in net.hidden.parameters())
    rule.reset()
    stream(rule, x, y, range(3, 4))
    assert all(p.grad is None for p in net.hidden.parameters())  # no stale update after a reset


def test_phsic_stream_state_round_trip_continues_identically():
    x, y = separable(8, 3, models=2)
    net = Network(SIZES, (0, 1), dtype=F64)
    rule = RULES["phsic-stream"](net, config("phsic-stream", phsic_horizon=3))
    stream(rule, x, y, range(5))
    saved = rule.state_dict()
    other = RULES["phsic-stream"](net, config("phsic-stream", phsic_horizon=3))
    other.load_state_dict(saved)
    stream(rule, x, y, range(5, 6))
    expected = [p.grad.clone() for p in net.hidden.parameters()]
    stream(other, x, y, range(5, 6))
    for param, grad in zip(net.hidden.parameters(), expected):
        torch.testing.assert_close(param.grad, grad, rtol=0, atol=0)


def test_phsic_stream_recompute_uses_the_current_weights_for_the_previous_sample():
    x, y = separable(4, 4)
    grads = {}
    for memory in ("stored", "recompute"):
        net = Network(SIZES, (0,), dtype=F64)
        rule = RULES["phsic-stream"](net, config("phsic-stream", memory=memory))
        stream(rule, x, y, range(2))
        with torch.no_grad():
            net.hidden[0].weight.mul_(1.5)
        stream(rule, x, y, range(2, 3))
        grads[memory] = net.hidden[0].weight.grad.clone()
    assert not torch.allclose(grads["stored"], grads["recompute"])


@pytest.mark.parametrize("rule_name", ["fa", "dfa"])
def test_feedback_matrices_are_seeded_per_model_and_restored_from_state(rule_name):
    joint = RULES[rule_name](Network(SIZES, (4, 5), dtype=F64), config(rule_name))
    alone = RULES[rule_name](Network(SIZES, (5,), dtype=F64), config(rule_name))
    for l in range(len(SIZES) - 2):
        torch.testing.assert_close(joint.feedback[l][1:], alone.feedback[l], rtol=0, atol=0)
        assert not torch.equal(joint.feedback[l][0], joint.feedback[l][1])
    state = joint.state_dict()
    other = RULES[rule_name](Network(SIZES, (7, 8), dtype=F64), config(rule_name))
    other.load_state_dict(state)
    for l in range(len(SIZES) - 2):
        torch.testing.assert_close(other.feedback[l], joint.feedback[l], rtol=0, atol=0)


def test_fa_and_dfa_draw_different_matrices_than_the_forward_weights():
    net = Network(SIZES, (0,), dtype=F64)
    fa = RULES["fa"](net, config("fa"))
    dfa = RULES["dfa"](net, config("dfa"))
    assert fa.feedback[0].shape == net.hidden[1].weight.shape
    assert fa.feedback[1].shape == net.readout.weight.shape
    assert dfa.feedback[0].shape == (1, SIZES[-1], SIZES[1])
    assert not torch.equal(fa.feedback[1], net.readout.weight)
    assert not torch.equal(dfa.feedback[1], fa.feedback[1])
    equal_widths = RULES["dfa"](Network((4, 6, 6, 2), (0,), dtype=F64), config("dfa"))
    assert not torch.equal(equal_widths.feedback[0], equal_widths.feedback[1])  # one stream per layer
