"""Networks as data: the ``--arch`` spec of a convolutional network, parsed and checked.

Grammar (items joined by ``-``, read from the input up)::

    arch   := item ("-" item)* "-" "fc"
    item   := "conv" C ["k" K] ["s" S] ["p" P]     a convolutional hidden layer: C kernels K×K
                                                  (default 3), stride S (default 1), zero padding
                                                  P on each side (default K // 2: "same" at stride 1)
            | "pool" [F]                          average pooling F×F, stride F (default 2), of the
                                                  input of the next layer
            | "fc" N                              a dense hidden layer of N units (on the flattened map)

The last item, a bare ``fc``, is the readout (one unit per class). Every hidden layer is
its map → ReLU → LayerNorm over the whole output; its z (in the working memory and the
kernels) is that output flattened, before pooling. Named architectures
(:data:`NAMED_ARCHITECTURES`) stand for their spec: ``paper-cnn`` is the paper's CIFAR-10
network (SPEC §7), ``small-cnn`` one sized to train on a laptop's CPU.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Union

from .errors import ConfigError

#: Architectures by name, each the spec it stands for.
NAMED_ARCHITECTURES: dict[str, str] = {
    "paper-cnn": "conv128-pool-conv256-pool-fc",
    "small-cnn": "conv8-pool-conv16-pool-fc",
}

GRAMMAR = ("items joined by '-' ending in the readout 'fc': convC[kK][sS][pP], pool[F], fcN "
           "(e.g. conv32-pool-conv64-pool-fc)")

_CONV = re.compile(r"conv(\d+)(?:k(\d+))?(?:s(\d+))?(?:p(\d+))?")
_POOL = re.compile(r"pool(\d*)")
_DENSE = re.compile(r"fc(\d+)")


@dataclass(frozen=True)
class ConvSpec:
    """A convolutional hidden layer: ``channels`` kernels of ``kernel``×``kernel``, ``stride``, ``padding``."""

    channels: int
    kernel: int = 3
    stride: int = 1
    padding: int = 1


@dataclass(frozen=True)
class DenseSpec:
    """A dense hidden layer of ``width`` units."""

    width: int


@dataclass(frozen=True)
class PoolSpec:
    """Average pooling ``factor``×``factor`` of the next layer's input."""

    factor: int = 2


LayerSpec = Union[ConvSpec, DenseSpec, PoolSpec]


def _positive(text: str, what: str, spec: str) -> int:
    value = int(text)
    if value < 1:
        raise ConfigError(f"--arch {spec!r}: {what} must be at least 1, got {value}")
    return value


def _parse_item(item: str, spec: str) -> LayerSpec:
    conv = _CONV.fullmatch(item)
    if conv:
        channels, kernel, stride, padding = conv.groups()
        kernel_size = _positive(kernel, "a kernel size", spec) if kernel else 3
        return ConvSpec(_positive(channels, "a number of channels", spec), kernel_size,
                        _positive(stride, "a stride", spec) if stride else 1,
                        int(padding) if padding else kernel_size // 2)
    pool = _POOL.fullmatch(item)
    if pool:
        return PoolSpec(_positive(pool.group(1), "a pooling factor", spec) if pool.group(1) else 2)
    dense = _DENSE.fullmatch(item)
    if dense:
        return DenseSpec(_positive(dense.group(1), "a layer width", spec))
    raise ConfigError(f"--arch {spec!r}: cannot read {item!r}; {GRAMMAR}, or a name: {', '.join(NAMED_ARCHITECTURES)}")


def parse_architecture(spec: str) -> tuple[LayerSpec, ...]:
    """The layers of ``spec`` (a name of :data:`NAMED_ARCHITECTURES` or a spec string, see the
    module docstring), without the readout; a one-line :class:`ConfigError` when it cannot be read."""
    text = NAMED_ARCHITECTURES.get(spec, spec)
    items = text.strip().lower().split("-")
    if items[-1] != "fc":
        raise ConfigError(f"--arch {spec!r} must end with the readout 'fc'; {GRAMMAR}")
    layers = tuple(_parse_item(item, spec) for item in items[:-1])
    if not any(isinstance(layer, (ConvSpec, DenseSpec)) for layer in layers):
        raise ConfigError(f"--arch {spec!r} has no hidden layer; use --hidden for a network without one")
    return layers


@dataclass(frozen=True)
class PlannedLayer:
    """One layer of a network built on an input: its spec (``None``: the readout), the shape
    of the map it receives before pooling, its input pooling factor (1: none), the shape of
    its input after pooling and the shape of its output z."""

    spec: ConvSpec | DenseSpec | None
    in_shape: tuple[int, ...]
    pool: int
    pooled_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    @property
    def width(self) -> int:
        """The size of the layer's z, flattened."""
        return math.prod(self.out_shape)


def plan_architecture(spec: str, input_shape: tuple[int, ...], n_classes: int) -> list[PlannedLayer]:
    """Every layer of ``spec`` on inputs of ``input_shape`` (``(C, H, W)``), the readout last,
    with the shapes each one sees; a one-line :class:`ConfigError` when the input is not an
    image or a map shrinks to nothing."""
    layers = parse_architecture(spec)
    if any(isinstance(layer, ConvSpec) for layer in layers) and len(input_shape) != 3:
        raise ConfigError(f"--arch {spec!r} has convolutional layers, which need image inputs (C, H, W), but this "
                          f"task's inputs have shape {tuple(input_shape)}; use --hidden for an MLP")
    shape, pool, planned = tuple(input_shape), 1, []
    for layer in (*layers, None):
        if isinstance(layer, PoolSpec):
            if len(shape) != 3:
                raise ConfigError(f"--arch {spec!r}: pool after a dense layer; pool only maps")
            pool *= layer.factor
            continue
        pooled = shape if pool == 1 else (shape[0], shape[1] // pool, shape[2] // pool)
        if isinstance(layer, ConvSpec):
            if len(shape) != 3:
                raise ConfigError(f"--arch {spec!r}: a conv layer after a dense layer; put every conv first")
            out = (layer.channels, (pooled[1] + 2 * layer.padding - layer.kernel) // layer.stride + 1,
                   (pooled[2] + 2 * layer.padding - layer.kernel) // layer.stride + 1)
        else:
            out = (n_classes if layer is None else layer.width,)
        if min(pooled + out) < 1:
            raise ConfigError(f"--arch {spec!r} shrinks the {'x'.join(map(str, input_shape))} input to nothing "
                              f"(a map of {'x'.join(map(str, min(pooled, out, key=min)))}); pool less or use "
                              "smaller strides")
        planned.append(PlannedLayer(layer, shape, pool, pooled, out))
        shape, pool = out, 1
    return planned


def parameter_count(planned: list[PlannedLayer]) -> int:
    """The number of parameters (weights and biases) of one model of the planned network."""
    total = 0
    for layer in planned:
        if isinstance(layer.spec, ConvSpec):
            total += layer.spec.channels * (layer.in_shape[0] * layer.spec.kernel**2 + 1)
        else:
            total += layer.out_shape[0] * (math.prod(layer.pooled_shape) + 1)
    return total


__all__ = ["ConvSpec", "DenseSpec", "GRAMMAR", "LayerSpec", "NAMED_ARCHITECTURES", "PlannedLayer", "PoolSpec",
           "parameter_count", "parse_architecture", "plan_architecture"]
