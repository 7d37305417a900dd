"""The two synthetic 2-D tasks of SPEC §7: a linearly separable problem and noisy XOR.

Each has 1000 points, shuffled with the data seed, the first 900 for training and the last
100 for testing.
"""
from __future__ import annotations

import numpy as np
import torch

from . import Dataset, labels_tensor

N_POINTS = 1000
N_TRAIN = 900
XOR_NOISE = 0.1


def linear_points(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x ~ U([-1, 1]²), y = [x·w > 0] for a direction w ~ N(0, I₂); returns (x, y, w)."""
    w = rng.standard_normal(2)
    x = rng.uniform(-1.0, 1.0, size=(N_POINTS, 2))
    return x, (x @ w > 0).astype(np.int64), w


def xor_points(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A quarter of the points at each corner c ∈ {0,1}² plus N(0, 0.1²) noise, y = c₁ XOR c₂."""
    corners = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    which = np.repeat(np.arange(4), N_POINTS // 4)
    x = corners[which] + XOR_NOISE * rng.standard_normal((N_POINTS, 2))
    return x, corners[which, 0] ^ corners[which, 1]


def make_synthetic(name: str, data_seed: int) -> Dataset:
    """Task ``"linear"`` or ``"xor"``, a deterministic function of ``data_seed``."""
    rng = np.random.default_rng(data_seed)
    if name == "linear":
        x, y, _ = linear_points(rng)
    else:
        x, y = xor_points(rng)
    order = rng.permutation(N_POINTS)
    x = torch.from_numpy(x[order].astype(np.float32))
    y = labels_tensor(y[order])
    return Dataset(name, x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:], n_classes=2, input_shape=(2,))
