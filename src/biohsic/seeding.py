"""One rule for deriving the seeds of the library's random streams.

Every random quantity of a run (a model's initial weights, its sample order in each epoch, a
baseline's feedback matrices, a synthetic data stream) is drawn from its own
``torch.Generator``, seeded from a base seed (a model's seed, a data seed) and a *salt* that
names the stream. A model's draws therefore do not depend on which other models are trained
beside it, and two streams of one model never share a seed.
"""
from __future__ import annotations

import torch

#: A prime stride: the streams of consecutive base seeds (salts below it) never collide.
SEED_STRIDE = 1_000_003


def derive_seed(seed: int, salt: int) -> int:
    r"""The seed of stream ``salt`` of base seed ``seed``: :math:`\text{seed} \cdot 1\,000\,003 + \text{salt}`."""
    return int(seed) * SEED_STRIDE + int(salt)


def seeded_generator(seed: int, salt: int) -> torch.Generator:
    """A CPU generator seeded with :func:`derive_seed` ``(seed, salt)``."""
    return torch.Generator().manual_seed(derive_seed(seed, salt))
