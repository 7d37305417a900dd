"""The streaming rule's step against autograd of the layer objective on the same window."""
import pytest
import torch
import torch.nn.functional as F

from biohsic.config import TrainConfig
from biohsic.functional import gaussian_kernel, hsic
from biohsic.network import Network
from biohsic.rules import build_rule

SIGMAS = (0.8, 0.4, 1.5)
GAMMA = 3.0


def stream(n, d=5, classes=3, k=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, k, 1, d, generator=gen, dtype=torch.float64)
    y = F.one_hot(torch.randint(0, classes, (n, k, 1), generator=gen), classes).double()
    return x, y


def make_rule(window=4, k=2, **fields):
    net = Network([5, 6, 4, 3], seeds=range(k), dtype=torch.float64)
    cfg = TrainConfig(task="xor", window=window, gamma=GAMMA, sigmas=SIGMAS, **fields).resolved()
    return net, build_rule(net, cfg)


def reference_layer_grads(net, memory, x_new):
    """Autograd of L = HSIC(X,Z) − γ HSIC(Y,Z) w.r.t. each layer, with the stored window
    outputs held fixed and only the newest sample's output live (its own layer only)."""
    grads = []
    a = x_new
    for l, layer in enumerate(net.hidden):
        w = layer.weight.detach().clone().requires_grad_(True)
        b = layer.bias.detach().clone().requires_grad_(True)
        u = a @ w.transpose(-1, -2) + b.unsqueeze(-2)
        z_new = F.layer_norm(torch.relu(u), u.shape[-1:])[:, 0]
        z = memory.layers[l].values.clone()
        z[:, memory.newest] = z_new
        kx, ky = memory.inputs.kernel, memory.labels.kernel
        kz = gaussian_kernel(z, sigma=SIGMAS[2])
        (hsic(kx, kz) - GAMMA * hsic(ky, kz)).sum().backward()
        grads.append((w.grad, b.grad))
        a = z_new.detach().unsqueeze(1)
    return grads


@pytest.mark.parametrize("window", [2, 4, 7])
def test_hidden_updates_equal_autograd_of_the_window_objective(window):
    net, rule = make_rule(window)
    x, y = stream(window + 5)
    for t in range(len(x)):
        rule.predict_and_write_grads(x[t], y[t])
        if not rule.memory.full:
            assert net.hidden[0].weight.grad is None
            continue
        for layer, (gw, gb) in zip(net.hidden, reference_layer_grads(net, rule.memory, x[t])):
            assert torch.allclose(layer.weight.grad, gw, rtol=1e-9, atol=1e-13)
            assert torch.allclose(layer.bias.grad, gb, rtol=1e-9, atol=1e-13)
        with torch.no_grad():  # move the weights so stored and current activities differ
            for p in net.parameters():
                p.add_(0.05 * torch.randn_like(p))


@pytest.mark.parametrize("mode", ["window", "newest"])
def test_readout_update_is_the_cross_entropy_gradient(mode):
    net, rule = make_rule(window=3, readout_update=mode)
    x, y = stream(5)
    for t in range(len(x)):
        logits = rule.predict_and_write_grads(x[t], y[t])
    w = net.readout.weight.detach().clone().requires_grad_(True)
    b = net.readout.bias.detach().clone().requires_grad_(True)
    if mode == "window":
        feats, targets = rule.memory.layers[1].values, rule.memory.labels.values
    else:
        feats, targets = net.features(x[-1])[-1], y[-1]
    out = feats @ w.transpose(-1, -2) + b.unsqueeze(-2)
    F.cross_entropy(out.transpose(1, 2), targets.argmax(-1), reduction="none").mean(-1).sum().backward()
    assert torch.allclose(net.readout.weight.grad, w.grad, atol=1e-12)
    assert torch.allclose(net.readout.bias.grad, b.grad, atol=1e-12)
    assert torch.allclose(logits, net(x[-1]))


def test_recompute_mode_rebuilds_the_window_with_current_weights():
    net, rule = make_rule(window=3, memory="recompute")
    x, y = stream(6)
    for t in range(len(x)):
        with torch.no_grad():
            net.hidden[0].weight.add_(0.1)
        rule.predict_and_write_grads(x[t], y[t])
    recomputed = net.features(rule.memory.inputs.values)[0]
    assert torch.allclose(rule.memory.layers[0].values, recomputed)
    assert torch.allclose(rule.memory.layers[0].kernel, gaussian_kernel(recomputed, sigma=SIGMAS[2]))


def loop_paper_signal(x, y, z, newest, *, jan2024):
    """The authors' ξ (SPEC §3.1) of one model's window by explicit loops over samples:
    α_i = 2 k_Z(z_N, z_i)(z_N − z_i)/s², HA = A − column means of A,
    ξ = (c/N)[Σ_{i≠N} (HA)_ii α_i + (HA)_NN Σ_{i≠N} α_i] (jan2024: the second term only)."""
    n, dz = z.shape

    def k(a, b, sigma):
        return torch.exp(-(a - b).square().sum() / (2 * sigma**2 * a.numel()))

    a = torch.tensor([[float(k(x[i], x[j], SIGMAS[0]) - GAMMA * k(y[i], y[j], SIGMAS[1])) for j in range(n)]
                      for i in range(n)], dtype=torch.float64)
    ha = a - a.mean(0, keepdim=True)
    others = [i for i in range(n) if i != newest]
    alpha = {i: 2 * k(z[newest], z[i], SIGMAS[2]) * (z[newest] - z[i]) / (SIGMAS[2] ** 2 * dz) for i in others}
    total = sum(alpha[i] for i in others)
    diagonal = 0.0 if jan2024 else sum(ha[i, i] * alpha[i] for i in others)
    return (diagonal + ha[newest, newest] * total) / ((n - 1) ** 2 * n)


@pytest.mark.parametrize("kind", ["paper", "paper-jan2024"])
def test_paper_modulator_updates_are_the_local_term_of_the_authors_signal(kind):
    net, rule = make_rule(window=4, modulator=kind)
    x, y = stream(7)
    for t in range(len(x)):
        rule.predict_and_write_grads(x[t], y[t])
        if not rule.memory.full:
            continue
        mem, a = rule.memory, x[t]
        for l, layer in enumerate(net.hidden):
            cache = layer.forward_cache(a)
            xi = torch.stack([loop_paper_signal(mem.inputs.values[m], mem.labels.values[m], mem.layers[l].values[m],
                                                mem.newest, jan2024=kind == "paper-jan2024")
                              for m in range(net.n_models)])
            grad_w, grad_b = layer.local_grad(cache, xi.unsqueeze(1))
            torch.testing.assert_close(layer.weight.grad, grad_w, rtol=1e-9, atol=1e-15)
            torch.testing.assert_close(layer.bias.grad, grad_b, rtol=1e-9, atol=1e-15)
            a = cache.out


def test_models_side_by_side_equal_models_alone():
    x, y = stream(9, k=2)
    net2, rule2 = make_rule(window=4, k=2)
    for t in range(len(x)):
        rule2.predict_and_write_grads(x[t], y[t])
    for k in range(2):
        net1 = Network([5, 6, 4, 3], seeds=[k], dtype=torch.float64)
        rule1 = build_rule(net1, rule2.config)
        for t in range(len(x)):
            rule1.predict_and_write_grads(x[t][k:k + 1], y[t][k:k + 1])
        for p1, p2 in zip(net1.parameters(), net2.parameters()):
            assert torch.allclose(p1.grad[0], p2.grad[k], atol=1e-13)


def test_state_round_trip_continues_identically():
    x, y = stream(8)
    net_a, rule_a = make_rule(window=4)
    for t in range(5):
        rule_a.predict_and_write_grads(x[t], y[t])
    net_b, rule_b = make_rule(window=4)
    rule_b.load_state_dict(rule_a.state_dict())
    for t in range(5, 8):
        rule_a.predict_and_write_grads(x[t], y[t])
        rule_b.predict_and_write_grads(x[t], y[t])
    assert torch.equal(net_a.hidden[1].weight.grad, net_b.hidden[1].weight.grad)
