"""Thin ``nn.Module`` wrappers over :mod:`biohsic.functional.layers`.

Every parameter carries a leading *model* dimension K: ``weight`` is ``(K, out, in)``,
so K independent networks (one per seed) train as one batched computation. Model k is
initialised from its own seed, so a network is the same whether it is trained alone or
beside others.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from .functional.layers import (HiddenCache, dense, hidden_drive_grad, hidden_forward, hidden_local_grad, leaky_step,
                                prediction_steps, rectify_normalize)
from .seeding import seeded_generator


def init_dense(seeds: Sequence[int], n_in: int, n_out: int, salt: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """PyTorch's default ``nn.Linear`` initialisation, U(-1/√in, 1/√in), one generator per model."""
    bound = 1.0 / math.sqrt(n_in)
    weights, biases = [], []
    for seed in seeds:
        gen = seeded_generator(seed, salt)
        weights.append((torch.rand(n_out, n_in, generator=gen, dtype=torch.float64) * 2 - 1) * bound)
        biases.append((torch.rand(n_out, generator=gen, dtype=torch.float64) * 2 - 1) * bound)
    return torch.stack(weights).to(dtype), torch.stack(biases).to(dtype)


class Dense(nn.Module):
    """A weight ``(K, out, in)`` and a bias ``(K, out)``, initialised by :func:`init_dense`."""

    def __init__(self, n_in: int, n_out: int, seeds: Sequence[int], salt: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        weight, bias = init_dense(seeds, n_in, n_out, salt, dtype)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)


class HiddenLayer(Dense):
    r"""Dense → ReLU → LayerNorm (no affine parameters): :math:`z = \mathrm{LN}(\mathrm{relu}(W a + b))`.

    The interface every hidden layer offers the learning rules: :meth:`forward_cache` (the
    forward pass and what the local update needs), :meth:`local_grad` (the local term
    :math:`\sum_n J_n^\top g_n` for this layer's own parameters) and :meth:`drive_grad` (the
    post-synaptic factor, for rules that pass a signal on to the layer below).
    """

    @property
    def width(self) -> int:
        """The size of the layer's output z (one sample, flattened)."""
        return self.weight.shape[-2]

    def forward_cache(self, a: Tensor) -> HiddenCache:
        """The forward pass with what the local update needs (``a`` is ``(K, B, in)``)."""
        return hidden_forward(a, self.weight, self.bias)

    def local_grad(self, cache: HiddenCache, signal: Tensor, presynaptic: Tensor | None = None,
                   bias_trace: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The gradients of ``(weight, bias)`` for the signal ``(K, B, width)`` of the samples of
        ``cache`` (:func:`~biohsic.functional.layers.hidden_local_grad`)."""
        return hidden_local_grad(cache, signal, presynaptic, bias_trace)

    def drive_grad(self, cache: HiddenCache, signal: Tensor) -> Tensor:
        """The post-synaptic factor δ = ∂L/∂u (:func:`~biohsic.functional.layers.hidden_drive_grad`)."""
        return hidden_drive_grad(cache, signal)

    def forward(self, a: Tensor) -> Tensor:
        return self.forward_cache(a).out

    def leaky_cache(self, a: Tensor, state: Tensor, *, dt: float, tau: float) -> HiddenCache:
        r"""One time step of a layer of leaky integrators (SPEC §5):
        :math:`u \leftarrow u + \frac{dt}{\tau}(W a + b - u)`, :math:`z = \mathrm{LN}(\mathrm{relu}(u))`."""
        u = leaky_step(state, dense(a, self.weight, self.bias), dt=dt, tau=tau)
        z, inv_std = rectify_normalize(u)
        return HiddenCache(a, u, z, inv_std)


class Readout(Dense):
    r"""The linear readout :math:`o = W z + b` (logits)."""

    def forward(self, z: Tensor) -> Tensor:
        return dense(z, self.weight, self.bias)


class Network(nn.Module):
    """A feed-forward network of hidden layers and a readout, K models side by side.

    ``sizes = (d_in, h_1, ..., h_{L-1}, classes)``; ``seeds`` has one entry per model.
    Inputs are ``(K, B, d_in)`` (or ``(B, d_in)``, shared by all models); outputs ``(K, B, classes)``.
    """

    def __init__(self, sizes: Sequence[int], seeds: Sequence[int] = (0,), dtype: torch.dtype = torch.float32):
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"a network needs at least an input and an output size, got {list(sizes)}")
        if not seeds:
            raise ValueError("a network needs at least one seed (one model)")
        self.sizes = tuple(int(s) for s in sizes)
        self.seeds = tuple(int(s) for s in seeds)
        self.hidden = nn.ModuleList(
            HiddenLayer(n_in, n_out, self.seeds, salt=i, dtype=dtype)
            for i, (n_in, n_out) in enumerate(zip(self.sizes[:-2], self.sizes[1:-1])))
        self.readout = Readout(self.sizes[-2], self.sizes[-1], self.seeds, salt=len(self.hidden), dtype=dtype)

    @property
    def n_models(self) -> int:
        return len(self.seeds)

    def expand(self, x: Tensor) -> Tensor:
        return x.expand(self.n_models, *x.shape) if x.dim() == 2 else x

    def hidden_caches(self, x: Tensor) -> list[HiddenCache]:
        """Forward through the hidden layers, keeping each layer's cache."""
        caches, a = [], self.expand(x)
        for layer in self.hidden:
            caches.append(layer.forward_cache(a))
            a = caches[-1].out
        return caches

    def readout_input(self, x: Tensor, caches: list[HiddenCache]) -> Tensor:
        """What the readout sees: the last hidden layer's output, or the input itself when
        the network has no hidden layer."""
        return caches[-1].out if caches else self.expand(x)

    def features(self, x: Tensor) -> list[Tensor]:
        """Each hidden layer's output z_1 … z_{L-1} for a batch."""
        return [cache.out for cache in self.hidden_caches(x)]

    def forward(self, x: Tensor) -> Tensor:
        a = self.expand(x)
        for layer in self.hidden:
            a = layer(a)
        return self.readout(a)

    def leaky_step(self, x: Tensor, state: list[Tensor] | None, *, dt: float,
                   tau: float) -> tuple[list[HiddenCache], list[Tensor]]:
        r"""One time step of the network of leaky integrators: each hidden layer's membrane
        :math:`u_l \leftarrow u_l + \frac{dt}{\tau}(W_l a_l + b_l - u_l)` with
        :math:`a_{l+1} = \mathrm{LN}(\mathrm{relu}(u_l))`, and the readout
        :math:`o \leftarrow o + \frac{dt}{\tau}(W z_{L-1} + b - o)`.

        ``state`` = ``[u_1, …, u_{L-1}, o]`` (``None``: at rest). Returns the hidden layers'
        caches (``input`` = each layer's instantaneous input) and the new state.
        """
        a = self.expand(x)
        if state is None:
            shape = a.shape[:-1]
            state = [a.new_zeros(*shape, size) for size in self.sizes[1:]]
        caches = []
        for layer, u in zip(self.hidden, state):
            caches.append(layer.leaky_cache(a, u, dt=dt, tau=tau))
            a = caches[-1].out
        output = leaky_step(state[-1], self.readout(a), dt=dt, tau=tau)
        return caches, [cache.drive for cache in caches] + [output]

    def simulate(self, x: Tensor, *, steps: int, dt: float, tau: float) -> Tensor:
        """The leaky network's prediction: each input presented for ``steps`` time steps
        from rest, the readout averaged over the last :func:`~biohsic.functional.layers.prediction_steps`."""
        state, total = None, 0.0
        averaged = prediction_steps(steps)
        for step in range(steps):
            _, state = self.leaky_step(x, state, dt=dt, tau=tau)
            if step >= steps - averaged:
                total = total + state[-1]
        return total / averaged
