"""The optimiser the trainer uses (fused AdamW) against the reference implementation, for
every rule: a fused kernel reads ``.grad`` with the parameter's layout, so each rule must
write its update in that layout."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from biohsic.config import TrainConfig
from biohsic.network import Network
from biohsic.rules import RULES, build_rule
from biohsic.train import make_optimizer

SIZES = [5, 6, 4, 3]


def config(rule):
    return TrainConfig(task="xor", rule=rule, hidden=tuple(SIZES[1:-1]), window=3, batch_size=4, lr=1e-2,
                       epochs=1, seeds=2).resolved()


def batches(rule, steps=5):
    gen = torch.Generator().manual_seed(3)
    b = 1 if RULES[rule].streaming else 4
    x = torch.randn(steps, 2, b, SIZES[0], generator=gen)
    y = F.one_hot(torch.randint(0, SIZES[-1], (steps, 2, b), generator=gen), SIZES[-1]).float()
    return x, y


@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_rule_writes_grads_in_the_parameters_layout(rule):
    net = Network(SIZES, seeds=(0, 1))
    instance = build_rule(net, config(rule))
    x, y = batches(rule)
    for t in range(len(x)):
        instance.predict_and_write_grads(x[t], y[t])
    for p in instance.trainable_parameters():
        assert p.grad is not None, f"{rule} wrote no gradient for a trainable parameter in {len(x)} steps"
        assert p.grad.stride() == p.stride()


@pytest.mark.parametrize("rule", sorted(RULES))
def test_fused_adamw_steps_equal_the_reference_adamw(rule):
    cfg = config(rule)
    results = []
    initial = [p.detach().clone() for p in Network(SIZES, seeds=(0, 1)).parameters()]
    for fused in (True, False):
        net = Network(SIZES, seeds=(0, 1))
        instance = build_rule(net, cfg)
        params = instance.trainable_parameters()
        optimizer = make_optimizer(params, cfg) if fused else torch.optim.AdamW(
            params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=False)
        x, y = batches(rule)
        for t in range(len(x)):
            instance.predict_and_write_grads(x[t], y[t])
            optimizer.step()
        results.append([p.detach().clone() for p in net.parameters()])
    trained = {id(p) for p in build_rule(net, cfg).trainable_parameters()}
    for start, param, fused, reference in zip(initial, net.parameters(), *results):
        assert torch.allclose(fused, reference, rtol=1e-5, atol=1e-6)
        assert torch.equal(fused, start) != (id(param) in trained), "trained parameters move, frozen ones do not"


def test_make_optimizer_is_adamw_with_the_runs_settings():
    cfg = dataclasses.replace(config("bp"), lr=3e-3, weight_decay=0.25)
    optimizer = make_optimizer(list(Network(SIZES).parameters()), cfg)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["lr"] == 3e-3 and optimizer.defaults["weight_decay"] == 0.25


def test_sgd_moves_each_weight_by_the_learning_rate_times_its_gradient():
    cfg = dataclasses.replace(config("biohsic"), optimizer="sgd", lr=0.3, weight_decay=0.1)
    net = Network(SIZES, seeds=(0, 1))
    optimizer = make_optimizer(list(net.parameters()), cfg)
    assert type(optimizer) is torch.optim.SGD
    before = [p.detach().clone() for p in net.parameters()]
    grads = [torch.randn(p.shape, generator=torch.Generator().manual_seed(i)) for i, p in enumerate(net.parameters())]
    for p, g in zip(net.parameters(), grads):
        p.grad = g.clone()
    optimizer.step()
    for p, w, g in zip(net.parameters(), before, grads):
        torch.testing.assert_close(p.detach(), w - 0.3 * (g + 0.1 * w))
