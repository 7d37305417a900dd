"""Every rule on a tiny convolutional network (K = 2 models, float64): gradients of the right
shapes, finite, parameters that move (only the trained ones); back-propagation equal to
autograd of an independent reference network; feedback alignment with its feedback kernels
set to the forward ones equal to back-propagation; the settings a conv network refuses."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from biohsic.architecture import NAMED_ARCHITECTURES, parse_architecture, plan_architecture
from biohsic.config import TrainConfig
from biohsic.errors import CheckpointError, ConfigError
from biohsic.functional.layers import LAYER_NORM_EPS
from biohsic.network import Network
from biohsic.reservoir import Reservoir, ReservoirConfig
from biohsic.reservoir.closed_loop import layer_file
from biohsic.rules import RULES

F64 = torch.float64
SHAPE = (2, 8, 8)
ARCH = "conv3-pool-conv4s2-pool-fc"
CLASSES = 3
SEEDS = (0, 1)


def net() -> Network:
    return Network((math.prod(SHAPE), CLASSES), SEEDS, dtype=F64, architecture=ARCH, input_shape=SHAPE)


def batch(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(len(SEEDS), n, math.prod(SHAPE), generator=gen, dtype=F64)
    labels = torch.randint(CLASSES, (len(SEEDS), n), generator=gen)
    return x, F.one_hot(labels, CLASSES).to(F64)


def config(rule: str, **fields) -> TrainConfig:
    values = dict(rule=rule, arch=ARCH, window=4, gamma=2.0, sigmas=(0.5, 0.25, 1.0), lr=1e-2, epochs=1,
                  batch_size=6, seeds=len(SEEDS))
    values.update(fields)
    return TrainConfig(**values).resolved()


def reference_logits(network: Network, x: torch.Tensor) -> torch.Tensor:
    """The network's forward pass model by model with torch's conv2d, layer_norm, avg_pool2d and
    linear (``ARCH``: conv3 → pool → conv4 stride 2 → pool → readout)."""
    outs = []
    for k in range(len(SEEDS)):
        a = x[k].reshape(-1, *SHAPE)
        conv1, conv2 = network.hidden
        u = F.conv2d(a, conv1.weight[k], conv1.bias[k], padding=1)
        a = F.avg_pool2d(F.layer_norm(torch.relu(u), u.shape[1:], eps=LAYER_NORM_EPS), 2)
        u = F.conv2d(a, conv2.weight[k], conv2.bias[k], stride=2, padding=1)
        a = F.avg_pool2d(F.layer_norm(torch.relu(u), u.shape[1:], eps=LAYER_NORM_EPS), 2)
        outs.append(F.linear(a.flatten(1), network.readout.weight[k], network.readout.bias[k]))
    return torch.stack(outs)


def test_network_matches_the_reference_forward_pass():
    network = net()
    x, _ = batch(5, 0)
    assert network.sizes == (128, 3 * 64, 4 * 2 * 2, CLASSES)
    torch.testing.assert_close(network(x), reference_logits(network, x), rtol=1e-12, atol=1e-12)


RULE_SETTINGS = [("biohsic", {}), ("biohsic", {"modulator": "paper"}), ("biohsic", {"memory": "recompute"}),
                 ("bp", {}), ("fa", {}), ("dfa", {}), ("hsic", {}), ("hsic", {"hsic_normalized": True}),
                 ("phsic", {}), ("phsic-stream", {}), ("readout", {})]


@pytest.mark.parametrize("rule_name,fields", RULE_SETTINGS, ids=lambda v: str(v))
def test_every_rule_trains_a_conv_network(rule_name, fields):
    network = net()
    rule = RULES[rule_name](network, config(rule_name, **fields))
    before = {name: p.detach().clone() for name, p in network.named_parameters()}
    trained = {id(p) for p in rule.trainable_parameters()}
    optimizer = torch.optim.AdamW(rule.trainable_parameters(), lr=1e-2)
    x, y = batch(40, 1)
    for start in range(0, 36, rule.batch_size):
        logits = rule.predict_and_write_grads(x[:, start:start + rule.batch_size], y[:, start:start + rule.batch_size])
        assert logits.shape == (len(SEEDS), rule.batch_size, CLASSES)
        assert torch.isfinite(logits).all()
        optimizer.step()
    for name, param in network.named_parameters():
        if id(param) in trained:
            assert param.grad is not None and param.grad.shape == param.shape, name
            assert torch.isfinite(param.grad).all(), name
            assert not torch.equal(param, before[name]), f"{name} did not move"
        else:
            assert torch.equal(param, before[name]), f"{name} is frozen but moved"
    assert rule_name != "readout" or len(trained) == 2


def test_backprop_equals_autograd_of_the_reference_network():
    network = net()
    rule = RULES["bp"](network, config("bp"))
    x, y = batch(6, 2)
    rule.predict_and_write_grads(x, y)
    params = list(network.parameters())
    loss = -(y * torch.log_softmax(reference_logits(network, x), -1)).sum(-1).mean(-1).sum()
    expected = torch.autograd.grad(loss, params)
    for param, grad in zip(params, expected):
        torch.testing.assert_close(param.grad, grad, rtol=1e-10, atol=1e-12)


def test_feedback_alignment_with_the_forward_weights_is_backprop():
    """With each feedback matrix set to the forward weight it stands for, feedback alignment
    sends exactly back-propagation's ∂L/∂z down (through the transposed convolution and the
    transposed pooling), so every hidden gradient equals autograd's."""
    network = net()
    fa = RULES["fa"](network, config("fa"))
    for l, above in enumerate([*network.hidden[1:], network.readout]):
        fa.feedback.get_buffer(f"b{l}").copy_(above.weight.detach())
    x, y = batch(6, 3)
    fa.predict_and_write_grads(x, y)
    loss = -(y * torch.log_softmax(reference_logits(network, x), -1)).sum(-1).mean(-1).sum()
    params = list(network.parameters())
    for param, grad in zip(params, torch.autograd.grad(loss, params)):
        torch.testing.assert_close(param.grad, grad, rtol=1e-9, atol=1e-12)


def test_feedback_kernels_have_the_forward_shapes_and_their_own_seed():
    network = net()
    fa = RULES["fa"](network, config("fa"))
    assert fa.feedback[0].shape == network.hidden[1].weight.shape
    assert fa.feedback[1].shape == network.readout.weight.shape
    assert not torch.equal(fa.feedback[0][0], fa.feedback[0][1])
    dfa = RULES["dfa"](network, config("dfa"))
    assert [dfa.feedback[l].shape for l in range(2)] == [(2, CLASSES, 192), (2, CLASSES, 16)]


def test_a_conv_network_refuses_leaky_units_in_one_line():
    with pytest.raises(ConfigError, match="--neuron leaky needs an MLP"):
        config("biohsic", neuron="leaky")


@pytest.mark.parametrize("spec,message", [
    ("conv32-pool-conv64-pool", "must end with the readout 'fc'"),
    ("conv32-maxpool-fc", "cannot read 'maxpool'"),
    ("pool-fc", "has no hidden layer"),
    ("conv0-fc", "number of channels must be at least 1"),
    ("fc16-conv8-fc", "a conv layer after a dense layer"),
    ("conv8-pool8-pool8-fc", "shrinks the 2x8x8 input to nothing"),
])
def test_a_bad_arch_is_one_line_naming_the_problem(spec, message):
    with pytest.raises(ConfigError, match=message) as err:
        plan_architecture(spec, SHAPE, CLASSES)
    assert "\n" not in str(err.value)


def test_conv_layers_need_image_inputs():
    with pytest.raises(ConfigError, match="need image inputs"):
        plan_architecture("conv8-fc", (2,), 2)


def test_the_named_architectures_and_the_grammar():
    assert parse_architecture("paper-cnn") == parse_architecture(NAMED_ARCHITECTURES["paper-cnn"])
    conv, pool, dense = parse_architecture("conv5k5s2p0-pool3-fc7-fc")
    assert (conv.channels, conv.kernel, conv.stride, conv.padding) == (5, 5, 2, 0)
    assert pool.factor == 3 and dense.width == 7
    planned = plan_architecture("paper-cnn", (3, 32, 32), 10)
    assert [layer.out_shape for layer in planned] == [(128, 32, 32), (256, 16, 16), (10,)]
    assert [layer.pooled_shape for layer in planned] == [(3, 32, 32), (128, 16, 16), (256, 8, 8)]


def test_a_dense_hidden_layer_on_a_pooled_map():
    network = Network((math.prod(SHAPE), CLASSES), SEEDS, dtype=F64, architecture="conv3-pool-fc5-fc",
                      input_shape=SHAPE)
    assert network.sizes == (128, 192, 5, CLASSES)
    assert network.hidden[1].weight.shape == (2, 5, 48)
    x, _ = batch(4, 4)
    assert network(x).shape == (2, 4, CLASSES)


@pytest.mark.parametrize("learning", ["frozen", "delta"])
def test_reservoirs_give_each_conv_layer_its_whole_map_signal(tmp_path, learning):
    """The closed loop on a conv network: one reservoir per layer, its output the layer's
    flattened map; each layer's update is J_Nᵀ of its reservoir's signal through its own
    Jacobian, computed by the layer."""
    network = net()
    for layer, width in enumerate(network.sizes[1:-1]):
        res_config = ReservoirConfig(d_x=network.sizes[0], d_y=CLASSES, d_z=width, units=12, window=4, gamma=2.0,
                                     sigmas=(0.5, 0.25, 1.0), steps_per_sample=2, seed=layer)
        reservoir = Reservoir(res_config, dtype=F64)
        reservoir.w_out.copy_(0.1 * torch.randn(reservoir.w_out.shape, generator=torch.Generator().manual_seed(layer),
                                                dtype=F64))
        reservoir.save(layer_file(tmp_path, layer), info={"alpha": 0.5})
    rule = RULES["biohsic"](network, config("biohsic", modulator="reservoir", reservoir=str(tmp_path),
                                            reservoir_learning=learning))
    optimizer = torch.optim.AdamW(rule.trainable_parameters(), lr=1e-2)
    before = [p.detach().clone() for p in network.hidden.parameters()]
    x, y = batch(12, 6)
    for t in range(12):
        rule.predict_and_write_grads(x[:, t:t + 1], y[:, t:t + 1])
        optimizer.step()
    assert all(torch.isfinite(p.grad).all() for p in network.hidden.parameters())
    assert all(not torch.equal(p, b) for p, b in zip(network.hidden.parameters(), before))


def test_a_reservoir_of_another_size_is_refused_in_one_line(tmp_path):
    for layer in range(2):
        res_config = ReservoirConfig(d_x=128, d_y=CLASSES, d_z=7, units=12, window=4, gamma=2.0,
                                     sigmas=(0.5, 0.25, 1.0), seed=layer)
        Reservoir(res_config, dtype=F64).save(layer_file(tmp_path, layer), info={"alpha": 0.5})
    with pytest.raises(CheckpointError, match="this run needs 128/3/192") as err:
        RULES["biohsic"](net(), config("biohsic", modulator="reservoir", reservoir=str(tmp_path)))
    assert "\n" not in str(err.value)
