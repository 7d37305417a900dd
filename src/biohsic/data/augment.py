"""Training-time augmentation of images: a random crop after zero padding and a random
horizontal flip, drawn per model and per epoch from the model's seed.

The draws of one epoch are made once, for every position of the epoch's sample order, so a
sample's augmentation depends only on (model seed, epoch, position): the same whatever the
chunks a run is trained in, and the same after a resume. Only training samples are
augmented; validation and test images never are.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..seeding import seeded_generator

#: Zero padding on each side before the random crop (the usual CIFAR-10 setting).
CROP_PADDING = 4
#: Salt of an epoch's augmentation stream, ``AUGMENT_SALT + 7919 · epoch`` (see :mod:`biohsic.seeding`).
AUGMENT_SALT = 23


class Augmentation(NamedTuple):
    """One epoch's draws for each position of the sample order: crop offsets ``(…, n, 2)``
    (row and column of the crop's corner in the padded image, in [0, 2·pad]) and flips ``(…, n)``."""

    offsets: Tensor
    flips: Tensor


def draw_augmentation(seeds: list[int], epoch: int, n: int, pad: int = CROP_PADDING) -> Augmentation:
    """The augmentation of ``n`` positions of ``epoch`` for each model seed: ``(K, n, 2)`` offsets
    and ``(K, n)`` flips, uniform, from the generator of (seed, ``AUGMENT_SALT + 7919·epoch``)."""
    offsets, flips = [], []
    for seed in seeds:
        gen = seeded_generator(seed, AUGMENT_SALT + 7919 * int(epoch))
        offsets.append(torch.randint(2 * pad + 1, (n, 2), generator=gen))
        flips.append(torch.rand(n, generator=gen) < 0.5)
    return Augmentation(torch.stack(offsets), torch.stack(flips))


def crop_and_flip(x: Tensor, shape: tuple[int, int, int], draws: Augmentation, pad: int = CROP_PADDING) -> Tensor:
    r"""Flattened images ``x`` ``(…, C·H·W)`` of ``shape``, each padded with ``pad`` zeros on every
    side, cropped back to H×W at its offset, :math:`x'_{c,i,j} = \tilde x_{c,\,r+i,\,s+j}`, and
    mirrored left-right where its flip is set, :math:`x''_{c,i,j} = x'_{c,i,W-1-j}`."""
    channels, height, width = shape
    lead = x.shape[:-1]
    maps = F.pad(x.reshape(-1, channels, height, width), (pad, pad, pad, pad))
    offsets, flips = draws.offsets.reshape(-1, 2).to(x.device), draws.flips.reshape(-1).to(x.device)
    rows = offsets[:, :1] + torch.arange(height, device=x.device)
    cols = offsets[:, 1:] + torch.arange(width, device=x.device)
    cols = torch.where(flips[:, None], cols.flip(-1), cols)
    image = torch.arange(len(maps), device=x.device)[:, None, None]
    cropped = maps[image, :, rows[:, :, None], cols[:, None, :]]      # (M, H, W, C)
    return cropped.permute(0, 3, 1, 2).reshape(*lead, -1)


__all__ = ["AUGMENT_SALT", "Augmentation", "CROP_PADDING", "crop_and_flip", "draw_augmentation"]
