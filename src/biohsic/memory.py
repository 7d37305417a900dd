"""The working memory: the last N samples of every stream and their kernel matrices.

A ring buffer per stream — the network's inputs :attr:`WorkingMemory.inputs`, the labels
:attr:`WorkingMemory.labels` and each hidden layer's outputs :attr:`WorkingMemory.layers` —
holds ``(K, N, d)`` values; beside it, the stream's ``(K, N, N)`` Gaussian kernel matrix is kept
up to date in O(N·d) per sample: when a sample takes the slot of the oldest one, only that
slot's row and column change. Slots are in ring order, not time order; HSIC and the
modulatory signal do not depend on the order of the window.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import Tensor

from .functional.kernels import gaussian_kernel, gaussian_kernel_row


def write_slot(values: Tensor, kernel: Tensor, slot: Tensor, value: Tensor, sigma: float) -> None:
    r"""Put ``value`` ``(K, d)`` in ``slot`` (a 1-element index tensor, so that a compiled graph
    takes it as data) of a stream's ``values`` ``(K, N, d)`` and update that slot's row and
    column of its ``kernel`` ``(K, N, N)``, :math:`K_{s,j} = K_{j,s} = k(v, w_j)`, O(N·d)."""
    values.index_copy_(1, slot, value.unsqueeze(1))
    row = gaussian_kernel_row(value, values, sigma=sigma)
    kernel.index_copy_(1, slot, row.unsqueeze(1))
    kernel.index_copy_(2, slot, row.unsqueeze(2))


@dataclass
class Stream:
    """One stream of the working memory: ``values`` ``(K, N, d)``, their kernel matrix
    ``kernel`` ``(K, N, N)`` and the kernel's width ``sigma``."""

    values: Tensor
    kernel: Tensor
    sigma: float

    @classmethod
    def empty(cls, n_models: int, capacity: int, dim: int, sigma: float, dtype: torch.dtype,
              device: torch.device | str) -> "Stream":
        return cls(torch.zeros(n_models, capacity, dim, dtype=dtype, device=device),
                   torch.zeros(n_models, capacity, capacity, dtype=dtype, device=device), float(sigma))

    def write(self, slot: int, value: Tensor) -> None:
        """Put one sample per model (``(K, d)``) in ``slot`` (:func:`write_slot`), O(N·d)."""
        write_slot(self.values, self.kernel, torch.tensor([slot], device=self.values.device), value, self.sigma)

    def replace(self, values: Tensor) -> None:
        """Overwrite every slot (``(K, N, d)``) and recompute the kernel matrix, O(N²·d)."""
        self.values.copy_(values)
        self.kernel.copy_(gaussian_kernel(values, sigma=self.sigma))


class WorkingMemory:
    """Ring buffers of capacity N for the inputs, the labels and each hidden layer's outputs,
    each with its sliding kernel matrix (widths ``sigmas`` = (σx, σy, σz)).

    All models (leading dimension K) share the slot positions, so the newest sample sits in
    :attr:`newest` for every model.
    """

    def __init__(self, capacity: int, *, input_dim: int, label_dim: int, layer_dims: Sequence[int],
                 sigmas: Sequence[float], n_models: int = 1, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu"):
        if capacity < 2:
            raise ValueError(f"the working memory needs a capacity of at least 2, got {capacity}")
        sigma_x, sigma_y, sigma_z = sigmas
        self.capacity = capacity
        self.inputs = Stream.empty(n_models, capacity, input_dim, sigma_x, dtype, device)
        self.labels = Stream.empty(n_models, capacity, label_dim, sigma_y, dtype, device)
        self.layers = [Stream.empty(n_models, capacity, dim, sigma_z, dtype, device) for dim in layer_dims]
        self.count = 0

    @property
    def full(self) -> bool:
        """True once N samples have been seen: the window is complete."""
        return self.count >= self.capacity

    @property
    def newest(self) -> int:
        """Slot of the most recent sample."""
        return (self.count - 1) % self.capacity

    def streams(self) -> dict[str, Stream]:
        """Every stream by its name in checkpoints: ``x``, ``y``, ``z0``, ``z1``, …"""
        return {"x": self.inputs, "y": self.labels, **{f"z{l}": s for l, s in enumerate(self.layers)}}

    def push(self, x: Tensor, y: Tensor, zs: Sequence[Tensor]) -> None:
        """Store one new sample per model — input ``x`` ``(K, d_x)``, label ``y`` ``(K, classes)``
        and each hidden layer's output ``zs[l]`` ``(K, d_l)`` — in the oldest slot, O(N·d)."""
        self.count += 1
        self.inputs.write(self.newest, x)
        self.labels.write(self.newest, y)
        self.refresh_layers(zs)

    def refresh_layers(self, zs: Sequence[Tensor]) -> None:
        """Overwrite the newest sample's layer outputs (a leaky layer's output changes while the
        sample is presented) and update their kernel rows, O(N·d)."""
        for stream, z in zip(self.layers, zs, strict=True):
            stream.write(self.newest, z)

    def reset(self) -> None:
        """Forget every sample."""
        for stream in self.streams().values():
            stream.values.zero_()
            stream.kernel.zero_()
        self.count = 0

    def state_dict(self) -> dict:
        streams = self.streams()
        return {"count": self.count, "values": {name: s.values for name, s in streams.items()},
                "kernels": {name: s.kernel for name, s in streams.items()}}

    def load_state_dict(self, state: Mapping) -> None:
        self.count = int(state["count"])
        for name, stream in self.streams().items():
            stream.values.copy_(state["values"][name])
            stream.kernel.copy_(state["kernels"][name])
