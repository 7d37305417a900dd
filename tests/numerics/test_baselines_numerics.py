"""The baseline rules against autograd in float64 (SPEC §6).

Every reference below is written independently of the library: kernels from their
definitions, objectives with explicit centring matrices, back-propagation through an
``nn.Sequential``, feedback alignment through autograd with the feedback matrix swapped
into the backward pass.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from biohsic.config import TrainConfig
from biohsic.functional import gaussian_kernel, hidden_forward, squared_distances
from biohsic.functional.bottleneck import normalized_hsic, normalized_kernel_grad, normalized_signal
from biohsic.functional.modulator import _exact_signals
from biohsic.functional.kernels import gaussian_gram, gram_squared_distances
from biohsic.functional.phsic import (cosine_kernel, cosine_kernel_vjp, gaussian_kernel_vjp, label_kernel,
                                      pair_factor, pair_signal, phsic, phsic_kernel_grad, phsic_objective,
                                      phsic_signal, running_mean, z_kernel)
from biohsic.network import Network
from biohsic.rules import RULES

from ._helpers import F64, centering_matrix, generator, one_hot_labels, reference_objective, rel_err

TOL = 1e-8
SIZES = (6, 5, 4, 3)


# ---------------------------------------------------------------- independent references

def ref_gaussian(z: Tensor, sigma: float, scale_by_dim: bool) -> Tensor:
    """exp(-|z_i - z_j|² / (2σ²[d])) from explicit differences."""
    d = z.shape[-1] if scale_by_dim else 1
    diff = z.unsqueeze(-2) - z.unsqueeze(-3)
    return torch.exp(-(diff * diff).sum(-1) / (2 * sigma**2 * d))


def ref_cosine(z: Tensor) -> Tensor:
    """Cosine similarity; a vector shorter than 1e-6 is divided by 1e-6 (a zero vector is
    similar to nothing)."""
    unit = z / torch.sqrt((z * z).sum(-1, keepdim=True)).clamp_min(1e-6)
    return unit @ unit.transpose(-1, -2)


def ref_phsic(ka: Tensor, kb: Tensor) -> Tensor:
    """(1/m²) tr((K_A - mean K_A)ᵀ K_B)."""
    m = ka.shape[-1]
    centred = ka - ka.sum((-1, -2), keepdim=True) / m**2
    return torch.diagonal(centred.transpose(-1, -2) @ kb, dim1=-2, dim2=-1).sum(-1) / m**2


def ref_label_kernel(y: Tensor) -> Tensor:
    c = y.shape[-1]
    return ref_cosine(y - 1.0 / c)


def ref_normalized_hsic(ka: Tensor, kb: Tensor, eps: float = 1e-5) -> Tensor:
    m = ka.shape[-1]
    h = centering_matrix(m)
    eye = torch.eye(m, dtype=F64)

    def r(k: Tensor) -> Tensor:
        kc = h @ k @ h
        return kc @ torch.linalg.inv(kc + eps * m * eye)

    return torch.diagonal(r(ka) @ r(kb), dim1=-2, dim2=-1).sum(-1)


def config(rule: str, batch_size: int = 8, gamma: float = 2.0, sigmas=(0.7, 0.4, 1.1), **extra) -> TrainConfig:
    return TrainConfig(rule=rule, hidden=SIZES[1:-1], window=4, gamma=gamma, sigmas=sigmas, lr=1e-2,
                       epochs=1, batch_size=batch_size, **extra)


def batch(seeds: int, b: int, seed: int, sizes=SIZES) -> tuple[Tensor, Tensor]:
    gen = generator(seed)
    x = torch.randn(seeds, b, sizes[0], generator=gen, dtype=F64)
    return x, one_hot_labels(b, sizes[-1], gen, seeds)


def layer_autograd(net: Network, x: Tensor, layer: int, objective) -> tuple[Tensor, Tensor]:
    """Gradient of ``objective(z)`` w.r.t. hidden layer ``layer``'s (W, b), its input detached."""
    with torch.no_grad():
        a = net.expand(x)
        for hidden in net.hidden[:layer]:
            a = hidden(a)
    w = net.hidden[layer].weight.detach().clone().requires_grad_()
    b = net.hidden[layer].bias.detach().clone().requires_grad_()
    z = hidden_forward(a, w, b).out
    return torch.autograd.grad(objective(z).sum(), (w, b))


def assert_layer_grads(net: Network, x: Tensor, objective) -> None:
    for l, layer in enumerate(net.hidden):
        gw, gb = layer_autograd(net, x, l, objective)
        assert rel_err(layer.weight.grad, gw) < TOL
        assert rel_err(layer.bias.grad, gb) < TOL


# ---------------------------------------------------------------- functional: pHSIC

def test_phsic_equals_definition_and_is_symmetric():
    gen = generator(0)
    ka, kb = torch.rand(3, 7, 7, generator=gen, dtype=F64), torch.rand(3, 7, 7, generator=gen, dtype=F64)
    ka, kb = ka + ka.transpose(-1, -2), kb + kb.transpose(-1, -2)
    torch.testing.assert_close(phsic(ka, kb), ref_phsic(ka, kb), rtol=1e-12, atol=0)
    torch.testing.assert_close(phsic(ka, kb), phsic(kb, ka), rtol=1e-12, atol=0)


def test_kernels_equal_definitions():
    gen = generator(1)
    z = torch.randn(2, 6, 5, generator=gen, dtype=F64)
    torch.testing.assert_close(z_kernel(z, kind="gaussian", sigma=1.7), ref_gaussian(z, 1.7, False),
                               rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(cosine_kernel(z), ref_cosine(z), rtol=1e-12, atol=1e-15)
    y = one_hot_labels(9, 4, gen)
    k = label_kernel(y)
    torch.testing.assert_close(k, ref_label_kernel(y), rtol=1e-12, atol=1e-15)
    same = (y @ y.T).bool()
    assert torch.allclose(k[same], torch.ones((), dtype=F64), atol=1e-12)
    assert torch.allclose(k[~same], torch.full((), -1 / 3, dtype=F64), atol=1e-12)


def test_gram_fast_path_equals_the_reference_kernels():
    gen = generator(9)
    a = 3.0 + torch.randn(2, 40, 30, generator=gen, dtype=F64)  # offset: the Gram form cancels
    dist = gram_squared_distances(a)
    torch.testing.assert_close(dist, squared_distances(a, a), rtol=1e-10, atol=1e-10)
    assert torch.all(torch.diagonal(dist, dim1=-2, dim2=-1) == 0) and torch.all(dist >= 0)
    torch.testing.assert_close(gaussian_gram(a, s2=0.8**2 * 30), gaussian_kernel(a, sigma=0.8), rtol=1e-10, atol=0)


def test_phsic_kernel_grad_equals_autograd():
    gen = generator(2)
    kz = torch.rand(2, 6, 6, generator=gen, dtype=F64, requires_grad=True)
    ky = torch.rand(2, 6, 6, generator=gen, dtype=F64)
    expected, = torch.autograd.grad(phsic_objective(kz, ky, 1.7).sum(), kz)
    assert rel_err(phsic_kernel_grad(kz.detach(), ky, 1.7), expected) < TOL


@pytest.mark.parametrize("kind", ["gaussian", "cosine"])
def test_phsic_signal_equals_autograd(kind):
    gen = generator(3)
    z = torch.randn(2, 8, 5, generator=gen, dtype=F64, requires_grad=True)
    y = one_hot_labels(8, 3, gen, 2)
    kz = ref_gaussian(z, 2.0, False) if kind == "gaussian" else ref_cosine(z)
    objective = ref_phsic(kz, kz) - 2.5 * ref_phsic(ref_label_kernel(y), kz)
    expected, = torch.autograd.grad(objective.sum(), z)
    assert rel_err(phsic_signal(z.detach(), y, gamma=2.5, kind=kind, sigma=2.0), expected) < TOL


def test_cosine_vjp_at_vectors_shorter_than_eps_equals_autograd():
    gen = generator(4)
    z = torch.randn(5, 4, generator=gen, dtype=F64)
    z[2] = 0.0
    z[3] = 1e-7 * torch.randn(4, generator=gen, dtype=F64)  # divided by ε, not by its norm
    z.requires_grad_()
    grad_k = torch.randn(5, 5, generator=gen, dtype=F64)
    expected, = torch.autograd.grad((cosine_kernel(z) * grad_k).sum(), z)
    got = cosine_kernel_vjp(grad_k, z.detach())
    for row in range(5):
        assert rel_err(got[row], expected[row]) < TOL
    assert got[2].abs().max() > 0  # the zero vector's row is v/ε, not dropped


def test_gaussian_vjp_reproduces_the_hsic_signal():
    """With s² = σ²d and ∂L/∂K_Z = HAH/(N-1)², the generic vjp is the three-factor signal."""
    gen = generator(5)
    x, z = torch.randn(7, 4, generator=gen, dtype=F64), torch.randn(7, 3, generator=gen, dtype=F64)
    y = one_hot_labels(7, 3, gen)
    kx, ky, kz = (gaussian_kernel(v, sigma=s) for v, s in ((x, 0.5), (y, 0.3), (z, 1.2)))
    h = centering_matrix(7)
    grad = h @ (kx - 4.0 * ky) @ h / 36
    expected = _exact_signals(kx, ky, kz, z, gamma=4.0, sigma_z=1.2)
    assert rel_err(gaussian_kernel_vjp(grad, kz, z, s2=1.2**2 * 3), expected) < TOL


@pytest.mark.parametrize("kind", ["gaussian", "cosine"])
def test_pair_signal_is_the_gradient_of_the_single_pair_estimate(kind):
    gen = generator(6)
    z = torch.randn(3, 2, 5, generator=gen, dtype=F64, requires_grad=True)
    y = one_hot_labels(2, 4, gen, 3)
    mean_z, mean_y = torch.rand(3, generator=gen, dtype=F64), torch.rand(3, generator=gen, dtype=F64)
    kz = (ref_gaussian(z, 3.0, False) if kind == "gaussian" else ref_cosine(z))[:, 0, 1]
    ky = ref_label_kernel(y)[:, 0, 1]
    estimate = (kz - mean_z) ** 2 - 1.5 * (ky - mean_y) * kz
    expected, = torch.autograd.grad(estimate.sum(), z)
    factor = pair_factor(kz.detach(), ky, mean_z, mean_y, 1.5)
    kernel = z_kernel(z.detach(), kind=kind, sigma=3.0)
    assert rel_err(pair_signal(z.detach(), kernel, factor, kind=kind, sigma=3.0), expected) < TOL


def test_running_mean_averages_then_forgets_at_rate_one_over_horizon():
    values = torch.arange(1.0, 9.0, dtype=F64)
    mean = torch.zeros((), dtype=F64)
    for t, v in enumerate(values, start=1):
        mean = running_mean(mean, v, t, horizon=4)
        if t <= 4:
            torch.testing.assert_close(mean, values[:t].mean(), rtol=1e-14, atol=0)
    expected = values[:4].mean()
    for v in values[4:]:
        expected = 0.75 * expected + 0.25 * v
    torch.testing.assert_close(mean, expected, rtol=1e-14, atol=0)


# ---------------------------------------------------------------- functional: normalised HSIC

def test_normalized_hsic_equals_definition():
    gen = generator(7)
    a, b = torch.randn(6, 3, generator=gen, dtype=F64), torch.randn(6, 2, generator=gen, dtype=F64)
    ka, kb = ref_gaussian(a, 1.0, True), ref_gaussian(b, 0.8, True)
    torch.testing.assert_close(normalized_hsic(ka, kb), ref_normalized_hsic(ka, kb), rtol=1e-9, atol=0)


def test_normalized_gradients_equal_autograd():
    gen = generator(8)
    x, z = torch.randn(2, 7, 4, generator=gen, dtype=F64), torch.randn(2, 7, 3, generator=gen, dtype=F64)
    y = one_hot_labels(7, 3, gen, 2)
    kx, ky = ref_gaussian(x, 1.0, True), ref_gaussian(y, 0.5, True)
    z.requires_grad_()
    kz = ref_gaussian(z, 0.9, True)
    objective = ref_normalized_hsic(kx, kz) - 3.0 * ref_normalized_hsic(ky, kz)
    grad_kz, grad_z = torch.autograd.grad(objective.sum(), (kz, z))
    kz = kz.detach()
    assert rel_err(normalized_kernel_grad(kx, ky, kz, 3.0), grad_kz) < 1e-7
    assert rel_err(normalized_signal(kx, ky, kz, z.detach(), beta=3.0, sigma_z=0.9), grad_z) < 1e-7


# ---------------------------------------------------------------- rules: layer objectives

@pytest.mark.parametrize("seeds", [(0,), (1, 2)])
def test_hsic_rule_is_each_layers_own_gradient(seeds):
    cfg = config("hsic", gamma=3.0)
    net = Network(SIZES, seeds, dtype=F64)
    x, y = batch(len(seeds), 8, seed=10)
    RULES["hsic"](net, cfg).predict_and_write_grads(x, y)
    sx, sy, sz = cfg.sigmas
    kx, ky = ref_gaussian(x, sx, True), ref_gaussian(y, sy, True)
    assert_layer_grads(net, x, lambda z: reference_objective(kx, ky, ref_gaussian(z, sz, True), 3.0))


def test_normalized_hsic_rule_is_each_layers_own_gradient():
    cfg = config("hsic", gamma=3.0, hsic_normalized=True)
    net = Network(SIZES, (0, 1), dtype=F64)
    x, y = batch(2, 8, seed=11)
    RULES["hsic"](net, cfg).predict_and_write_grads(x, y)
    sx, sy, sz = cfg.sigmas
    kx, ky = ref_gaussian(x, sx, True), ref_gaussian(y, sy, True)

    def objective(z: Tensor) -> Tensor:
        kz = ref_gaussian(z, sz, True)
        return ref_normalized_hsic(kx, kz) - 3.0 * ref_normalized_hsic(ky, kz)

    for l, layer in enumerate(net.hidden):
        gw, gb = layer_autograd(net, x, l, objective)
        assert rel_err(layer.weight.grad, gw) < 1e-7
        assert rel_err(layer.bias.grad, gb) < 1e-7


@pytest.mark.parametrize("kind", ["gaussian", "cosine"])
def test_phsic_rule_is_each_layers_own_gradient(kind):
    cfg = config("phsic", gamma=2.0, phsic_kernel=kind, phsic_sigma=1.5)
    net = Network(SIZES, (3, 4), dtype=F64)
    x, y = batch(2, 8, seed=12)
    RULES["phsic"](net, cfg).predict_and_write_grads(x, y)
    ky = ref_label_kernel(y)

    def objective(z: Tensor) -> Tensor:
        kz = ref_gaussian(z, 1.5, False) if kind == "gaussian" else ref_cosine(z)
        return ref_phsic(kz, kz) - 2.0 * ref_phsic(ky, kz)

    assert_layer_grads(net, x, objective)


@pytest.mark.parametrize("kind", ["gaussian", "cosine"])
def test_phsic_stream_is_the_gradient_of_the_pair_estimate(kind):
    """Three samples, no optimiser step: step 3's update is the gradient of
    (k_z - k̄_z)² - γ (k_y - k̄_y) k_z over the pair (3, 2), both outputs under the current
    weights, with k̄ the mean over the pairs (2, 1) and (3, 2)."""
    cfg = config("phsic-stream", gamma=2.0, phsic_kernel=kind, phsic_sigma=2.0)
    net = Network(SIZES, (5, 6), dtype=F64)
    x, y = batch(2, 3, seed=13)
    rule = RULES["phsic-stream"](net, cfg)
    for t in range(3):
        rule.predict_and_write_grads(x[:, t:t + 1], y[:, t:t + 1])
    ky = ref_label_kernel(y)
    mean_y = (ky[:, 0, 1] + ky[:, 1, 2]) / 2

    def kernel(z: Tensor) -> Tensor:
        return ref_gaussian(z, 2.0, False) if kind == "gaussian" else ref_cosine(z)

    for l, layer in enumerate(net.hidden):
        with torch.no_grad():
            kz_all = kernel(net.features(x)[l])
        mean_z = (kz_all[:, 0, 1] + kz_all[:, 1, 2]) / 2

        def estimate(z: Tensor) -> Tensor:
            kz = kernel(z[:, 1:])[:, 0, 1]
            return (kz - mean_z) ** 2 - 2.0 * (ky[:, 1, 2] - mean_y) * kz

        gw, gb = layer_autograd(net, x, l, estimate)
        assert rel_err(layer.weight.grad, gw) < TOL
        assert rel_err(layer.bias.grad, gb) < TOL
    # the readout learns from the newest sample alone
    with torch.no_grad():
        features = net.features(x[:, 2:])[-1]
        error = torch.softmax(net.readout(features), -1) - y[:, 2:]
    assert rel_err(net.readout.weight.grad, error.transpose(-1, -2) @ features) < TOL


# ---------------------------------------------------------------- rules: back-propagation, FA, DFA

def sequential(net: Network, k: int) -> nn.Sequential:
    """Model k of ``net`` as an independently written nn.Sequential."""
    layers: list[nn.Module] = []
    for layer in net.hidden:
        linear = nn.Linear(layer.weight.shape[2], layer.weight.shape[1], dtype=F64)
        layers += [linear, nn.ReLU(), nn.LayerNorm(linear.out_features, eps=1e-5, elementwise_affine=False,
                                                    dtype=F64)]
    layers.append(nn.Linear(net.readout.weight.shape[2], net.readout.weight.shape[1], dtype=F64))
    linears = [m for m in layers if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for linear, source in zip(linears, [*net.hidden, net.readout]):
            linear.weight.copy_(source.weight[k])
            linear.bias.copy_(source.bias[k])
    return nn.Sequential(*layers)


def sequential_grads(net: Network, x: Tensor, y: Tensor) -> list[list[Tensor]]:
    """Per model: autograd gradients of nn.CrossEntropyLoss, ordered like net.parameters()."""
    grads = []
    for k in range(net.n_models):
        model = sequential(net, k)
        loss = nn.CrossEntropyLoss()(model(x[k]), y[k].argmax(-1))
        grads.append(list(torch.autograd.grad(loss, list(model.parameters()))))
    return grads


def assert_equal_to(net: Network, expected: list[list[Tensor]]) -> None:
    params = list(net.parameters())
    for k, model_grads in enumerate(expected):
        for param, grad in zip(params, model_grads, strict=True):
            assert rel_err(param.grad[k], grad) < 1e-10


def test_bp_equals_autograd_of_an_nn_sequential():
    net = Network(SIZES, (0, 7), dtype=F64)
    x, y = batch(2, 5, seed=20)
    logits = RULES["bp"](net, config("bp")).predict_and_write_grads(x, y)
    assert_equal_to(net, sequential_grads(net, x, y))
    torch.testing.assert_close(logits[1], sequential(net, 1)(x[1]), rtol=1e-12, atol=1e-14)


def test_fa_with_transposed_forward_weights_is_back_propagation():
    net = Network(SIZES, (0, 7), dtype=F64)
    x, y = batch(2, 5, seed=21)
    rule = RULES["fa"](net, config("fa"))
    expected = sequential_grads(net, x, y)
    rule.predict_and_write_grads(x, y)
    assert rel_err(net.hidden[0].weight.grad[0], expected[0][0]) > 1e-3  # random feedback ≠ bp
    with torch.no_grad():
        for l, above in enumerate([*net.hidden[1:], net.readout]):
            rule.feedback[l].copy_(above.weight)
    rule.predict_and_write_grads(x, y)
    assert_equal_to(net, expected)


def test_dfa_with_one_hidden_layer_and_transposed_readout_is_back_propagation():
    sizes = (6, 5, 3)
    net = Network(sizes, (0, 7), dtype=F64)
    x, y = batch(2, 5, seed=22, sizes=sizes)
    rule = RULES["dfa"](net, config("dfa"))
    with torch.no_grad():
        rule.feedback[0].copy_(net.readout.weight)
    rule.predict_and_write_grads(x, y)
    assert_equal_to(net, sequential_grads(net, x, y))


def feedback_autograd(net: Network, x: Tensor, y: Tensor, feedback: list[Tensor], direct: bool) -> list[Tensor]:
    """Hidden gradients of (D)FA by autograd: the backward pass of every forward matrix W above a
    hidden layer is replaced by its feedback matrix B (same forward value, gradient e B)."""
    a, outs = net.expand(x), []
    params = [p for layer in net.hidden for p in (layer.weight.detach().clone().requires_grad_(),
                                                  layer.bias.detach().clone().requires_grad_())]
    for l, layer in enumerate(net.hidden):
        w, b = params[2 * l], params[2 * l + 1]
        u = a.detach() @ w.transpose(-1, -2) + b.unsqueeze(-2) if direct or l == 0 else \
            a.detach() @ w.transpose(-1, -2) + b.unsqueeze(-2) + a @ feedback[l - 1].transpose(-1, -2) \
            - (a @ feedback[l - 1].transpose(-1, -2)).detach()
        a = nn.functional.layer_norm(torch.relu(u), (u.shape[-1],), eps=1e-5)
        outs.append(a)
    logits = a.detach() @ net.readout.weight.detach().transpose(-1, -2) + net.readout.bias.detach().unsqueeze(-2)
    error = (torch.softmax(logits, -1) - y) / y.shape[-2]
    if direct:
        surrogate = sum((z * (error @ fb)).sum() for z, fb in zip(outs, feedback))
    else:
        surrogate = (outs[-1] * (error @ feedback[-1])).sum()
    return list(torch.autograd.grad(surrogate, params))


@pytest.mark.parametrize("rule_name", ["fa", "dfa"])
def test_feedback_alignment_equals_autograd_with_swapped_backward(rule_name):
    sizes = (6, 5, 4, 4, 3)
    net = Network(sizes, (2, 9), dtype=F64)
    x, y = batch(2, 6, seed=23, sizes=sizes)
    rule = RULES[rule_name](net, config(rule_name))
    rule.predict_and_write_grads(x, y)
    n = len(net.hidden)
    expected = feedback_autograd(net, x, y, [rule.feedback[l] for l in range(n)], direct=rule_name == "dfa")
    for param, grad in zip([p for layer in net.hidden for p in layer.parameters()], expected):
        assert rel_err(param.grad, grad) < 1e-10


@pytest.mark.parametrize("rule_name", ["fa", "dfa"])
def test_forward_weights_never_enter_the_feedback_updates(rule_name, monkeypatch):
    """After the readout's forward pass every forward parameter is overwritten with NaN: the
    updates must come out finite and unchanged."""
    net = Network(SIZES, (0, 1), dtype=F64)
    x, y = batch(2, 5, seed=24)
    rule = RULES[rule_name](net, config(rule_name))
    rule.predict_and_write_grads(x, y)
    expected = [p.grad.clone() for p in net.parameters()]
    forward = net.readout.forward

    def forward_then_poison(z: Tensor) -> Tensor:
        out = forward(z)
        with torch.no_grad():
            for p in net.parameters():
                p.fill_(math.nan)
        return out

    monkeypatch.setattr(net.readout, "forward", forward_then_poison)
    rule.predict_and_write_grads(x, y)
    for param, grad in zip(net.parameters(), expected):
        torch.testing.assert_close(param.grad, grad, rtol=0, atol=0)


@pytest.mark.parametrize("rule_name", ["fa", "dfa"])
def test_changing_a_feedback_matrix_changes_the_update(rule_name):
    net = Network(SIZES, (0,), dtype=F64)
    x, y = batch(1, 5, seed=25)
    rule = RULES[rule_name](net, config(rule_name))
    rule.predict_and_write_grads(x, y)
    before = [layer.weight.grad.clone() for layer in net.hidden]
    with torch.no_grad():
        rule.feedback[1].mul_(-2.0)  # the top hidden layer's matrix
    rule.predict_and_write_grads(x, y)
    # FA: the change reaches every layer below; DFA: only the layer the matrix feeds
    assert rel_err(net.hidden[1].weight.grad, before[1]) > 1e-3
    if rule_name == "fa":
        assert rel_err(net.hidden[0].weight.grad, before[0]) > 1e-3
    else:
        assert torch.equal(net.hidden[0].weight.grad, before[0])


# ---------------------------------------------------------------- K models side by side

@pytest.mark.parametrize("rule_name", ["bp", "readout", "fa", "dfa", "hsic", "phsic", "phsic-stream"])
def test_k_models_side_by_side_equal_separate_runs(rule_name):
    seeds = (3, 8)
    extra = {"phsic_sigma": 2.0, "phsic_horizon": 2} if rule_name.startswith("phsic") else {}
    cfg = config(rule_name, batch_size=6, **extra)
    steps = 4
    x, y = batch(2, 6 * steps, seed=30)

    def run(models: tuple[int, ...], rows: slice) -> tuple[list[Tensor], list[Tensor]]:
        net = Network(SIZES, models, dtype=F64)
        rule = RULES[rule_name](net, cfg)
        opt = torch.optim.AdamW(rule.trainable_parameters(), lr=1e-2, weight_decay=1e-2)
        logits = []
        for t in range(steps):
            idx = slice(t * rule.batch_size, (t + 1) * rule.batch_size)
            logits.append(rule.predict_and_write_grads(x[rows, idx], y[rows, idx]))
            opt.step()
        return [p.detach() for p in net.parameters()], logits

    together, logits_together = run(seeds, slice(0, 2))
    for k, seed in enumerate(seeds):
        alone, logits_alone = run((seed,), slice(k, k + 1))
        for joint, single in zip(together, alone):
            torch.testing.assert_close(joint[k:k + 1], single, rtol=1e-10, atol=1e-12)
        for joint, single in zip(logits_together, logits_alone):
            torch.testing.assert_close(joint[k:k + 1], single, rtol=1e-10, atol=1e-12)
