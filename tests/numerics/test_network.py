"""network.Network: per-model seeding, broadcasting of a shared input, and the forward pass
equal to the functional layers chained by hand."""
from __future__ import annotations

import pytest
import torch

from biohsic.functional import dense, hidden_forward
from biohsic.network import Network

from ._helpers import F64, generator

SIZES = (6, 5, 4, 3)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_model_initialisation_depends_only_on_its_own_seed(k):
    together = Network(SIZES, seeds=(0, 1, 2), dtype=F64)
    alone = Network(SIZES, seeds=(k,), dtype=F64)
    for p_together, p_alone in zip(together.parameters(), alone.parameters(), strict=True):
        assert torch.equal(p_together[k], p_alone[0])


def test_models_and_layers_are_initialised_differently():
    net = Network(SIZES, seeds=(0, 1, 2), dtype=F64)
    weights = [layer.weight for layer in net.hidden]
    for w in weights:
        assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])
    # two layers of the same shape in one model still get different draws (a salt per layer)
    square = Network((4, 4, 4, 2), seeds=(0,), dtype=F64)
    assert not torch.equal(square.hidden[0].weight, square.hidden[1].weight)
    bound = 1 / SIZES[0] ** 0.5
    assert weights[0].abs().max() <= bound  # nn.Linear's U(-1/√in, 1/√in)


def test_shared_input_broadcasts_to_every_model():
    net = Network(SIZES, seeds=(0, 1, 2), dtype=F64)
    x = torch.randn(7, SIZES[0], generator=generator(0), dtype=F64)
    out = net(x)
    assert out.shape == (3, 7, SIZES[-1])
    torch.testing.assert_close(out, net(x.expand(3, 7, SIZES[0]).clone()), rtol=0, atol=0)
    for k in range(3):
        alone = Network(SIZES, seeds=(k,), dtype=F64)
        torch.testing.assert_close(out[k], alone(x)[0], rtol=1e-14, atol=1e-14)


def test_forward_equals_functional_layers_chained_by_hand():
    net = Network(SIZES, seeds=(3, 4), dtype=F64)
    x = torch.randn(2, 5, SIZES[0], generator=generator(1), dtype=F64)
    a, outs = x, []
    for layer in net.hidden:
        a = hidden_forward(a, layer.weight, layer.bias).out
        outs.append(a)
    logits = dense(a, net.readout.weight, net.readout.bias)
    with torch.no_grad():
        torch.testing.assert_close(net(x), logits, rtol=0, atol=0)
        for got, expected in zip(net.features(x), outs, strict=True):
            torch.testing.assert_close(got, expected, rtol=0, atol=0)
        caches = net.hidden_caches(x)
        assert torch.equal(caches[0].input, x) and torch.equal(caches[1].input, outs[0])


def test_forward_equals_explicit_layer_norm_network():
    """The same network written with torch.nn.functional only."""
    net = Network(SIZES, seeds=(5,), dtype=F64)
    x = torch.randn(4, SIZES[0], generator=generator(2), dtype=F64)
    a = x
    for layer in net.hidden:
        h = torch.relu(a @ layer.weight[0].T + layer.bias[0])
        a = torch.nn.functional.layer_norm(h, (h.shape[-1],), eps=1e-5)
    expected = a @ net.readout.weight[0].T + net.readout.bias[0]
    with torch.no_grad():
        torch.testing.assert_close(net(x)[0], expected, rtol=1e-12, atol=1e-12)


def test_dtype_is_respected():
    assert Network(SIZES, dtype=torch.float32).readout.weight.dtype == torch.float32
    assert Network(SIZES, dtype=F64).hidden[0].weight.dtype == F64
    # float32 weights are the float64 draw rounded: the same network at two precisions
    torch.testing.assert_close(Network(SIZES, dtype=torch.float32).hidden[0].weight,
                               Network(SIZES, dtype=F64).hidden[0].weight.float(), rtol=0, atol=0)


def test_rejects_too_few_sizes():
    with pytest.raises(ValueError):
        Network((4,))


def test_a_network_needs_a_seed_and_two_sizes():
    with pytest.raises(ValueError, match="at least one seed"):
        Network([3, 2], seeds=())
    with pytest.raises(ValueError, match="input and an output"):
        Network([3], seeds=(0,))
