"""Thin ``nn.Module`` wrappers over :mod:`biohsic.functional.layers` and
:mod:`biohsic.functional.conv`.

Every parameter carries a leading *model* dimension K: ``weight`` is ``(K, out, in)`` (or
``(K, out, in, k, k)`` for a convolution), so K independent networks (one per seed) train
as one batched computation. Model k is initialised from its own seed, so a network is the
same whether it is trained alone or beside others.

A network is an MLP of ``sizes`` or built from an ``--arch`` spec
(:mod:`biohsic.architecture`). Activities travel flattened, ``(K, B, d)``; a layer that
pools its input (the map of the layer below) does so itself, so each layer's z is its output
before pooling.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from .architecture import ConvSpec, plan_architecture
from .errors import ConfigError
from .functional.conv import ConvGeometry, avg_pool, avg_pool_transpose, conv_forward, conv_input_grad, conv_local_grad
from .functional.layers import (HiddenCache, dense, hidden_drive_grad, hidden_forward, hidden_local_grad, leaky_step,
                                prediction_steps, rectify_normalize)
from .seeding import seeded_generator


def init_uniform(seeds: Sequence[int], shape: Sequence[int], salt: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """PyTorch's default initialisation of ``nn.Linear`` and ``nn.Conv2d``, U(-1/√fan_in, 1/√fan_in)
    for a weight of ``shape`` = (out, …) (fan_in: the product of the rest) and its bias (out,),
    one generator per model: weights ``(K, *shape)``, biases ``(K, out)``."""
    bound = 1.0 / math.sqrt(math.prod(shape[1:]))
    weights, biases = [], []
    for seed in seeds:
        gen = seeded_generator(seed, salt)
        weights.append((torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound)
        biases.append((torch.rand(shape[0], generator=gen, dtype=torch.float64) * 2 - 1) * bound)
    return torch.stack(weights).to(dtype), torch.stack(biases).to(dtype)


class InputPooling(nn.Module):
    """The average pooling ``factor``×``factor`` a layer applies to the map ``shape`` (C, H, W) it
    receives (factor 1: none, the input passes unchanged)."""

    def __init__(self, shape: Sequence[int] = (), factor: int = 1):
        super().__init__()
        self.shape, self.factor = tuple(shape), int(factor)

    def forward(self, a: Tensor) -> Tensor:
        return a if self.factor == 1 else avg_pool(a, self.shape, self.factor)

    def transpose(self, g: Tensor) -> Tensor:
        """The gradient with respect to the unpooled input, from that of the pooled one."""
        return g if self.factor == 1 else avg_pool_transpose(g, self.shape, self.factor)


class Weighted(nn.Module):
    """A weight ``(K, *shape)`` and a bias ``(K, out)`` initialised by :func:`init_uniform`, on an
    input pooled by ``pooling`` (default: none)."""

    def __init__(self, shape: Sequence[int], seeds: Sequence[int], salt: int, dtype: torch.dtype,
                 pooling: InputPooling | None):
        super().__init__()
        weight, bias = init_uniform(seeds, shape, salt, dtype)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)
        self.pooling = pooling or InputPooling()


class Dense(Weighted):
    """A weight ``(K, out, in)`` and a bias ``(K, out)``, U(-1/√in, 1/√in) (:func:`init_uniform`),
    on an input pooled by ``pooling`` (default: none)."""

    def __init__(self, n_in: int, n_out: int, seeds: Sequence[int], salt: int, dtype: torch.dtype = torch.float32,
                 pooling: InputPooling | None = None):
        super().__init__((n_out, n_in), seeds, salt, dtype, pooling)

    def input_grad(self, delta: Tensor, weight: Tensor) -> Tensor:
        r"""The drive's error ``delta`` ``(K, B, out)`` sent back to the (unpooled) input through
        ``weight`` in place of W, :math:`\mathrm{pool}^\top(\delta\, W)` (feedback alignment's
        fixed ``weight``; back-propagation would use W)."""
        return self.pooling.transpose(delta @ weight)


class PostSynaptic:
    """What every hidden layer computes the same way from its cache: the post-synaptic factor
    and the output z."""

    def drive_grad(self, cache: HiddenCache, signal: Tensor) -> Tensor:
        """The post-synaptic factor δ = ∂L/∂u (:func:`~biohsic.functional.layers.hidden_drive_grad`)."""
        return hidden_drive_grad(cache, signal)

    def forward(self, a: Tensor) -> Tensor:
        return self.forward_cache(a).out


class HiddenLayer(PostSynaptic, Dense):
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
        """The forward pass with what the local update needs (``a`` is ``(K, B, in)``; the
        cache's input is ``a`` after the layer's pooling)."""
        return hidden_forward(self.pooling(a), self.weight, self.bias)

    def local_grad(self, cache: HiddenCache, signal: Tensor, presynaptic: Tensor | None = None,
                   bias_trace: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The gradients of ``(weight, bias)`` for the signal ``(K, B, width)`` of the samples of
        ``cache`` (:func:`~biohsic.functional.layers.hidden_local_grad`)."""
        return hidden_local_grad(cache, signal, presynaptic, bias_trace)

    def leaky_cache(self, a: Tensor, state: Tensor, *, dt: float, tau: float) -> HiddenCache:
        r"""One time step of a layer of leaky integrators (SPEC §5):
        :math:`u \leftarrow u + \frac{dt}{\tau}(W a + b - u)`, :math:`z = \mathrm{LN}(\mathrm{relu}(u))`."""
        a = self.pooling(a)
        u = leaky_step(state, dense(a, self.weight, self.bias), dt=dt, tau=tau)
        z, inv_std = rectify_normalize(u)
        return HiddenCache(a, u, z, inv_std)


class ConvLayer(PostSynaptic, Weighted):
    r"""Convolution → ReLU → LayerNorm over the whole map (no affine parameters),
    :math:`z = \mathrm{LN}(\mathrm{relu}(W \ast \mathrm{pool}(a) + b))`, K models side by side: weight
    ``(K, O, C, k, k)``, bias ``(K, O)``, initialised as ``nn.Conv2d`` (:func:`init_uniform`).
    The same interface as :class:`HiddenLayer` (see there); its z is the flattened output map."""

    def __init__(self, geometry: ConvGeometry, seeds: Sequence[int], salt: int, dtype: torch.dtype = torch.float32,
                 pooling: InputPooling | None = None):
        super().__init__((geometry.out_channels, geometry.in_shape[0], geometry.kernel, geometry.kernel), seeds, salt,
                         dtype, pooling)
        self.geometry = geometry

    @property
    def width(self) -> int:
        """The size of the layer's output z (one sample's map, flattened)."""
        return math.prod(self.geometry.out_shape)

    def forward_cache(self, a: Tensor) -> HiddenCache:
        """The forward pass with what the local update needs (``a`` is ``(K, B, C·H·W)``
        before the layer's pooling)."""
        return conv_forward(self.pooling(a), self.weight, self.bias, self.geometry)

    def local_grad(self, cache: HiddenCache, signal: Tensor, presynaptic: Tensor | None = None,
                   bias_trace: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The gradients of ``(weight, bias)`` for the signal ``(K, B, width)``
        (:func:`~biohsic.functional.conv.conv_local_grad`); rate units only."""
        if presynaptic is not None or bias_trace is not None:
            raise ConfigError("convolutional layers are rate units; --neuron leaky needs an MLP (--hidden)")
        return conv_local_grad(cache, signal, self.geometry)

    def input_grad(self, delta: Tensor, weight: Tensor) -> Tensor:
        r"""The drive's error ``delta`` ``(K, B, width)`` sent back to the (unpooled) input map
        through the kernels ``weight`` in place of W: :math:`\mathrm{pool}^\top(W^\top \star \delta)`
        (:func:`~biohsic.functional.conv.conv_input_grad`)."""
        return self.pooling.transpose(conv_input_grad(delta, weight, self.geometry))


class Readout(Dense):
    r"""The linear readout :math:`o = W f + b` (logits) of its features :math:`f = \mathrm{pool}(z)`
    (:meth:`features`: the last hidden layer's z after the readout's pooling)."""

    def features(self, z: Tensor) -> Tensor:
        """What the readout's weights meet: the last hidden layer's z after the readout's pooling."""
        return self.pooling(z)

    def forward(self, features: Tensor) -> Tensor:
        return dense(features, self.weight, self.bias)


class Network(nn.Module):
    """A feed-forward network of hidden layers and a readout, K models side by side.

    An MLP: ``sizes = (d_in, h_1, ..., h_{L-1}, classes)``. With ``architecture`` (an
    ``--arch`` spec or name, :mod:`biohsic.architecture`): ``sizes = (d_in, classes)``, inputs
    are images of ``input_shape`` (C, H, W) flattened, and :attr:`sizes` becomes ``(d_in,
    width_1, …, classes)`` with each hidden layer's z size. ``seeds`` has one entry per model.
    Inputs are ``(K, B, d_in)`` (or ``(B, d_in)``, shared by all models); outputs ``(K, B, classes)``.
    Layer l (from 0) is initialised from salt l, the readout from salt L-1.
    """

    def __init__(self, sizes: Sequence[int], seeds: Sequence[int] = (0,), dtype: torch.dtype = torch.float32, *,
                 architecture: str | None = None, input_shape: Sequence[int] | None = None):
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"a network needs at least an input and an output size, got {list(sizes)}")
        if not seeds:
            raise ValueError("a network needs at least one seed (one model)")
        self.seeds = tuple(int(s) for s in seeds)
        self.architecture = architecture
        if architecture is None:
            sizes = tuple(int(s) for s in sizes)
            self.hidden = nn.ModuleList(
                HiddenLayer(n_in, n_out, self.seeds, salt=i, dtype=dtype)
                for i, (n_in, n_out) in enumerate(zip(sizes[:-2], sizes[1:-1])))
            self.readout = Readout(sizes[-2], sizes[-1], self.seeds, salt=len(self.hidden), dtype=dtype)
        else:
            if len(sizes) != 2 or input_shape is None or math.prod(input_shape) != sizes[0]:
                raise ValueError(f"a network of --arch {architecture} takes sizes (d_in, classes) and the input_shape "
                                 f"of d_in inputs, got sizes {list(sizes)} and input_shape {input_shape}")
            self.hidden, self.readout = architecture_layers(architecture, tuple(input_shape), int(sizes[-1]),
                                                            self.seeds, dtype)
        self.sizes = (int(sizes[0]), *(layer.width for layer in self.hidden), int(sizes[-1]))

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
        """What the readout's weights meet: the last hidden layer's output (after the
        readout's pooling), or the input itself when the network has no hidden layer."""
        return self.readout.features(caches[-1].out) if caches else self.expand(x)

    def features(self, x: Tensor) -> list[Tensor]:
        """Each hidden layer's output z_1 … z_{L-1} for a batch."""
        return [cache.out for cache in self.hidden_caches(x)]

    def forward(self, x: Tensor) -> Tensor:
        a = self.expand(x)
        for layer in self.hidden:
            a = layer(a)
        return self.readout(self.readout.features(a))

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
        output = leaky_step(state[-1], self.readout(self.readout.features(a)), dt=dt, tau=tau)
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


def architecture_layers(architecture: str, input_shape: tuple[int, ...], n_classes: int, seeds: Sequence[int],
                        dtype: torch.dtype) -> tuple[nn.ModuleList, Readout]:
    """The hidden layers and the readout of ``architecture`` on inputs of ``input_shape``
    (:func:`biohsic.architecture.plan_architecture`), layer l initialised from salt l."""
    *planned_hidden, planned_readout = plan_architecture(architecture, input_shape, n_classes)
    hidden = nn.ModuleList()
    for salt, planned in enumerate(planned_hidden):
        pooling = InputPooling(planned.in_shape, planned.pool)
        spec = planned.spec
        if isinstance(spec, ConvSpec):
            geometry = ConvGeometry(planned.pooled_shape, spec.channels, spec.kernel, spec.stride, spec.padding)
            hidden.append(ConvLayer(geometry, seeds, salt, dtype, pooling))
        else:
            hidden.append(HiddenLayer(math.prod(planned.pooled_shape), spec.width, seeds, salt, dtype, pooling))
    readout = Readout(math.prod(planned_readout.pooled_shape), n_classes, seeds, len(hidden), dtype,
                      InputPooling(planned_readout.in_shape, planned_readout.pool))
    return hidden, readout
