"""Leaky-integrator units (SPEC §5): traces against autograd through the unrolled dynamics,
and the limits in which the leaky network is the rate network."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from biohsic.config import TrainConfig
from biohsic.data import load_task
from biohsic.errors import ConfigError
from biohsic.functional import HiddenCache, hidden_local_grad, leaky_step
from biohsic.network import Network
from biohsic.rules import build_rule, check_config
from biohsic.train import Trainer

F64 = torch.float64


@pytest.mark.parametrize("steps", [1, 3, 20])
def test_eligibility_traces_give_the_exact_gradient_of_the_unrolled_membrane(steps):
    gen = torch.Generator().manual_seed(1)
    dt, tau = 1.0, 5.0
    w = torch.randn(4, 3, generator=gen, dtype=F64, requires_grad=True)
    b = torch.randn(4, generator=gen, dtype=F64, requires_grad=True)
    inputs = torch.randn(steps, 2, 3, generator=gen, dtype=F64)   # a changing input, 2 samples
    signal = torch.randn(2, 4, generator=gen, dtype=F64)
    u = torch.zeros(2, 4, dtype=F64)
    trace, bias_trace = torch.zeros(2, 3, dtype=F64), torch.zeros(2, 1, dtype=F64)
    for a in inputs:
        u = leaky_step(u, a @ w.T + b, dt=dt, tau=tau)
        trace = leaky_step(trace, a, dt=dt, tau=tau)
        bias_trace = leaky_step(bias_trace, torch.ones(2, 1, dtype=F64), dt=dt, tau=tau)
    z = F.layer_norm(torch.relu(u), (4,))
    (signal * z).sum().backward()
    h = torch.relu(u.detach())
    inv_std = torch.rsqrt(h.var(-1, unbiased=False, keepdim=True) + 1e-5)
    # each sample is its own batch of one, as in the streaming rule
    caches = [HiddenCache(inputs[-1, i:i + 1], u.detach()[i:i + 1], z.detach()[i:i + 1], inv_std[i:i + 1])
              for i in range(2)]
    grads = [hidden_local_grad(c, signal[i:i + 1], presynaptic=trace[i:i + 1], bias_trace=bias_trace[i:i + 1])
             for i, c in enumerate(caches)]
    grad_w = sum(g[0] for g in grads)
    grad_b = sum(g[1] for g in grads)
    assert torch.allclose(grad_w, w.grad, rtol=1e-10, atol=1e-12)
    assert torch.allclose(grad_b, b.grad, rtol=1e-10, atol=1e-12)


def test_simulation_converges_to_the_rate_network():
    net = Network([3, 5, 4, 2], seeds=[0, 1], dtype=F64)
    x = torch.randn(7, 3, dtype=F64)
    assert torch.allclose(net.simulate(x, steps=400, dt=1.0, tau=5.0), net(x), atol=1e-8)
    assert torch.allclose(net.simulate(x, steps=1, dt=1.0, tau=1.0), net(x), atol=1e-12)
    far = net.simulate(x, steps=4, dt=1.0, tau=5.0)
    assert not torch.allclose(far, net(x), atol=1e-3)


def test_leaky_rule_with_dt_equal_tau_and_one_step_is_the_rate_rule():
    base = TrainConfig(task="xor", hidden=(5, 4), window=3, gamma=2.0, sigmas=(0.5, 0.3, 1.0), lr=1e-2, epochs=1)
    leaky = dataclasses.replace(base, neuron="leaky", steps_per_sample=1, dt=5.0, tau=5.0)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 2, 1, 2, generator=gen, dtype=F64)
    y = F.one_hot(torch.randint(0, 2, (6, 2, 1), generator=gen), 2).to(F64)
    grads = []
    for cfg in (base, leaky):
        net = Network([2, 5, 4, 2], seeds=[0, 1], dtype=F64)
        rule = build_rule(net, cfg.resolved())
        outs = [rule.predict_and_write_grads(x[t], y[t]) for t in range(6)]
        grads.append(([p.grad.clone() for p in net.parameters()], outs))
    for g_rate, g_leaky in zip(grads[0][0], grads[1][0]):
        assert torch.allclose(g_rate, g_leaky, atol=1e-12)
    for o_rate, o_leaky in zip(grads[0][1], grads[1][1]):
        assert torch.allclose(o_rate, o_leaky, atol=1e-12)


def test_leaky_rule_presents_each_sample_for_t_steps_and_refreshes_the_newest_slot():
    cfg = TrainConfig(task="xor", hidden=(5, 4), window=3, neuron="leaky", steps_per_sample=4).resolved()
    net = Network([2, 5, 4, 2], seeds=[0], dtype=F64)
    rule = build_rule(net, cfg)
    assert rule.substeps == 4
    x = torch.randn(1, 1, 2, dtype=F64)
    y = F.one_hot(torch.tensor([[1]]), 2).to(F64)
    for step in range(4):
        rule.predict_and_write_grads(x, y)
        assert rule.memory.count == 1
        current_output = F.layer_norm(torch.relu(rule.state[1]), (4,))[:, 0]   # state = [u_1, u_2, o]
        assert torch.allclose(rule.memory.layers[1].values[:, rule.memory.newest], current_output)
    rule.predict_and_write_grads(x, y)
    assert rule.memory.count == 2


@pytest.mark.slow
def test_leaky_training_runs_and_is_reproducible():
    cfg = TrainConfig(task="xor", hidden=(6, 4), epochs=1, neuron="leaky", steps_per_sample=4)
    data = load_task("xor")
    data = data.first_training_samples(80)
    a = Trainer(cfg, dataset=data).run()
    b = Trainer(cfg, dataset=data).run()
    assert a["per_model"] == b["per_model"]


@pytest.mark.parametrize("rule", ["bp", "fa", "dfa", "hsic", "phsic", "phsic-stream", "readout"])
def test_leaky_units_are_refused_for_other_rules(rule):
    with pytest.raises(ConfigError, match="--neuron leaky"):
        check_config(TrainConfig(task="xor", rule=rule, neuron="leaky").resolved())
    check_config(TrainConfig(task="xor", rule=rule).resolved())
