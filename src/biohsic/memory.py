"""The working memory: the last N samples of every stream and their kernel matrices.

A ring buffer per stream (network input ``x``, label ``y``, each hidden layer's output
``z0``, ``z1``, …) holds ``(K, N, d)`` values; beside it, the stream's ``(K, N, N)``
Gaussian kernel matrix is kept up to date in O(N·d) per sample: when a sample takes the
slot of the oldest one, only that slot's row and column change
(:func:`biohsic.functional.replace_kernel_slot`). Slots are in ring order, not time
order; HSIC and the modulatory signal do not depend on the order of the window.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from .functional.kernels import gaussian_kernel, gaussian_kernel_row


class WorkingMemory:
    """Ring buffers of capacity N for named streams, each with its sliding kernel matrix.

    ``streams`` maps a name to ``(dimension, sigma)``. All models (leading dimension K)
    share the slot positions, so the newest sample sits in :attr:`newest` for every model.
    """

    def __init__(self, capacity: int, streams: Mapping[str, tuple[int, float]], n_models: int = 1,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        if capacity < 2:
            raise ValueError(f"the working memory needs a capacity of at least 2, got {capacity}")
        self.capacity = capacity
        self.sigmas = {name: float(sigma) for name, (_, sigma) in streams.items()}
        self.values = {name: torch.zeros(n_models, capacity, dim, dtype=dtype, device=device)
                       for name, (dim, _) in streams.items()}
        self.kernels = {name: torch.zeros(n_models, capacity, capacity, dtype=dtype, device=device)
                        for name in streams}
        self.count = 0

    @property
    def full(self) -> bool:
        """True once N samples have been seen: the window is complete."""
        return self.count >= self.capacity

    @property
    def newest(self) -> int:
        """Slot of the most recent sample."""
        return (self.count - 1) % self.capacity

    def push(self, samples: Mapping[str, Tensor]) -> None:
        """Store one new sample per model (``(K, d)`` per stream) in the oldest slot and
        update each kernel matrix's row and column of that slot, O(N·d)."""
        self.count += 1
        self.refresh_newest(samples)

    def refresh_newest(self, samples: Mapping[str, Tensor]) -> None:
        """Overwrite the newest sample's values (e.g. a leaky layer's output, which changes
        while the sample is presented) and update that slot's kernel row and column, O(N·d)."""
        slot = self.newest
        for name, value in samples.items():
            buffer = self.values[name]
            buffer[:, slot] = value
            row = gaussian_kernel_row(value, buffer, sigma=self.sigmas[name])
            kernel = self.kernels[name]
            kernel[:, slot, :] = row
            kernel[:, :, slot] = row

    def replace(self, name: str, values: Tensor) -> None:
        """Overwrite a whole stream ``(K, N, d)`` and recompute its kernel, O(N²·d)
        (the authors' ``recompute`` mode: the window re-run through the current weights)."""
        self.values[name].copy_(values)
        self.kernels[name].copy_(gaussian_kernel(values, sigma=self.sigmas[name]))

    def reset(self) -> None:
        """Forget every sample."""
        for tensor in (*self.values.values(), *self.kernels.values()):
            tensor.zero_()
        self.count = 0

    def state_dict(self) -> dict:
        return {"count": self.count, "values": dict(self.values), "kernels": dict(self.kernels)}

    def load_state_dict(self, state: Mapping) -> None:
        self.count = int(state["count"])
        for name in self.values:
            self.values[name].copy_(state["values"][name])
            self.kernels[name].copy_(state["kernels"][name])
