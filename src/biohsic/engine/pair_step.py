r"""One step of the two-sample streaming pHSIC rule (``phsic-stream``), written out top to
bottom (SPEC §6; the eager reference is :class:`biohsic.rules.phsic.PlausiblePHSIC`).

:func:`phsic_stream_step` advances *all* the state of a run by one sample t, K models side
by side, in the order of the rule:

1. **forward** — each hidden layer :math:`z_l = \mathrm{LN}(\mathrm{relu}(W_l a_l + b_l))`,
   the readout's logits and its delta rule on the sample;
2. **previous sample** — the pair (t, t-1): the previous sample's layer caches as stored,
   or re-run through the current weights (``recompute``);
3. **third factor** — the label kernel :math:`k^Y_t` and each layer's :math:`k^Z_t` of the
   pair, their running means (the span :math:`\min(t, T)` passed in as a tensor, so one
   compiled graph serves every t), :math:`\delta_t = 2(k^Z_t - \bar k^Z) - \gamma(k^Y_t - \bar k^Y)`;
4. **local updates** — each hidden layer's :math:`J_t^\top g_t + J_{t-1}^\top g_{t-1}`;
   the sample becomes the previous one;
5. **optimiser** — AdamW or SGD written out (:mod:`biohsic.engine.step`), with the bias
   corrections of the hidden layers and of the readout passed in apart: the eager rule's
   hidden layers skip the first sample of a stream (no pair yet), so their AdamW step count
   trails the readout's.

The first sample of a stream has no previous sample: the engine runs it through the eager
rule (:class:`~biohsic.engine.compiled.PairEngine`). Every tensor of :class:`PairState` is
updated in place and is the eager rule's own (its ``previous``, ``mean_y``, ``mean_z``), so
checkpoints are the same for both engines.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from ..functional.layers import HiddenCache, cross_entropy_grad, dense, hidden_forward, hidden_local_grad
from ..functional.phsic import label_kernel, mean_update, pair_factor, pair_signal, z_kernel
from .step import OptimizerSettings, layer_params, optimise


class PairState(NamedTuple):
    """Every tensor a ``phsic-stream`` run changes, each with a leading model dimension K.

    ``params``: ``[W_1, b_1, …, W_L, b_L]`` (the readout last); ``exp_avg``, ``exp_avg_sq``:
    AdamW's moments in the same order (empty for SGD); ``previous_x`` ``(K, 1, d_in)``,
    ``previous_y`` ``(K, 1, classes)`` and ``previous`` (each hidden layer's
    :class:`~biohsic.functional.layers.HiddenCache`, ``(K, 1, ·)``): the previous sample;
    ``mean_y`` and ``mean_z`` (one per hidden layer), ``(K,)``: the running kernel means.
    """

    params: list[Tensor]
    exp_avg: list[Tensor]
    exp_avg_sq: list[Tensor]
    previous_x: Tensor
    previous_y: Tensor
    previous: list[HiddenCache]
    mean_y: Tensor
    mean_z: list[Tensor]


@dataclass(frozen=True)
class PairSettings:
    """The constants of a ``phsic-stream`` step: the z-kernel (``gaussian`` or ``cosine``) and
    its bandwidth, γ, the memory mode, and the optimiser (``adamw`` or ``sgd``) with its
    hyper-parameters."""

    kernel: str
    sigma: float
    gamma: float
    recompute: bool
    optimizer: OptimizerSettings


def phsic_stream_step(state: PairState, settings: PairSettings, x: Tensor, y: Tensor, span: Tensor,
                      bias_correction1: Tensor, bias_correction2: Tensor) -> tuple[Tensor, list[Tensor]]:
    """Advance every tensor of ``state`` by one sample ``x`` ``(K, d_in)`` with one-hot label
    ``y`` ``(K, classes)``, which has a previous sample. ``span``: :math:`\\min(t, T)` of the
    running means for this pair; ``bias_correction1/2`` ``(2,)``: :math:`1 - \\beta_i^t` of the
    hidden layers' update and of the readout's. Returns the logits ``(K, classes)`` and each
    hidden layer's signal for the pair, ``(K, 2, d_l)``."""
    x, y = x.unsqueeze(1), y.unsqueeze(1)
    *hidden, (w_out, b_out) = layer_params(state.params)
    # 1. forward, and the readout's delta rule
    caches, a = [], x
    for weight, bias in hidden:
        caches.append(hidden_forward(a, weight, bias))
        a = caches[-1].out
    logits = dense(a, w_out, b_out)
    readout_grads = cross_entropy_grad(a, logits, y)
    # 2. the previous sample, as stored or re-run through the current weights
    previous, a = [], state.previous_x
    for (weight, bias), stored in zip(hidden, state.previous):
        previous.append(hidden_forward(a, weight, bias) if settings.recompute else stored)
        a = previous[-1].out
    # 3. the third factor of each layer, from the pair's kernels and their running means
    k_y = label_kernel(y, state.previous_y)[..., 0, 0]
    state.mean_y.copy_(mean_update(state.mean_y, k_y, span))
    grads, signals = [], []
    for cache, then, mean_z in zip(caches, previous, state.mean_z):
        z_pair = torch.cat([cache.out, then.out], -2)
        kernel = z_kernel(z_pair, kind=settings.kernel, sigma=settings.sigma)
        k_z = kernel[..., 0, 1]
        mean_z.copy_(mean_update(mean_z, k_z, span))
        factor = pair_factor(k_z, k_y, mean_z, state.mean_y, settings.gamma)
        signals.append(pair_signal(z_pair, kernel, factor, kind=settings.kernel, sigma=settings.sigma))
        # 4. the local update of the pair
        pair_cache = HiddenCache(*(torch.cat([now, before], -2) for now, before in zip(cache, then)))
        grads.extend(hidden_local_grad(pair_cache, signals[-1]))
    grads.extend(readout_grads)
    state.previous_x.copy_(x)
    state.previous_y.copy_(y)
    for stored, cache in zip(state.previous, caches):
        for old, new in zip(stored, cache):
            old.copy_(new)
    # 5. the optimiser: the hidden layers' bias corrections first, the readout's second
    groups = [int(index >= len(state.params) - 2) for index in range(len(state.params))]
    optimise(state, settings.optimizer, grads, [bias_correction1[group] for group in groups],
             [bias_correction2[group] for group in groups])
    return logits[:, 0], signals
