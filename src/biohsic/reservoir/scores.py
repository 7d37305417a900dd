r"""How well a circuit's signal stands in for the exact :math:`g_N` while the network learns,
next to the best any memoryless circuit could do (the ceiling).

On every step with a full window, for each hidden layer ℓ, with :math:`\delta(s)` the
post-synaptic factor of a signal s (:meth:`biohsic.network.HiddenLayer.drive_grad`) and
:math:`J_N^\top s = \delta(s)\,[a, 1]^\top` the layer's update (a its input):

- ``signal_cosine``: :math:`\cos(o, g_N)`; ``update_cosine``: :math:`\cos(J_N^\top o, J_N^\top g_N)`,
  the per-sample cosines (means over steps and models);
- ``update_cosine_100``: the cosine of the updates summed over blocks of
  :data:`~biohsic.reservoir.study.AGGREGATE_BLOCK` consecutive steps, what a small learning
  rate applies (mean over blocks and models; ``update_cosine_100_series`` each block's);
- the ceiling :math:`E[g_N \mid \text{current sample}]`, estimated on one block in every
  :data:`CEILING_EVERY` by averaging :math:`g_N` over
  :data:`~biohsic.reservoir.study.CEILING_HISTORIES` random histories drawn from the last
  :data:`POOL` samples (their z as the layer gave them, as the working memory holds them;
  :func:`biohsic.functional.reservoir.expected_signal`): ``ceiling_update_cosine``,
  ``ceiling_update_cosine_100`` (and its series, ``None`` on blocks without it), and
  ``fraction_of_ceiling_100_min``, the smallest ratio of the circuit's block cosine to the
  ceiling's over the blocks where both were measured.

The pool is a measuring device, not part of any circuit.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from ..functional.layers import HiddenCache
from ..functional.reservoir import expected_signal, row_cosines
from ..network import HiddenLayer
from ..seeding import seeded_generator
from .study import AGGREGATE_BLOCK, CEILING_HISTORIES

#: Samples of the recent stream the ceiling's histories are drawn from.
POOL = 512
#: The ceiling is estimated on one block of steps in this many.
CEILING_EVERY = 10
_SALT = 505


def _summed_update(deltas: list[Tensor], pres: list[Tensor]) -> Tensor:
    r"""The summed updates :math:`\sum_t \delta_t\,[a_t, 1]^\top` of each model over the
    steps of a block (``deltas`` ``(K, d_out)`` and ``pres`` ``(K, d_in)`` per step),
    flattened ``(K, d_out · (d_in + 1))``, in float64."""
    pre = torch.stack(pres, 1).double()
    pre = torch.cat([pre, torch.ones_like(pre[..., :1])], -1)
    return (torch.stack(deltas, 1).double().transpose(1, 2) @ pre).flatten(1)


class LoopScores:
    """The scores of the module docstring for the hidden ``layers`` of a run (window
    ``window``, target γ and σ); :meth:`record` once per step with a full window."""

    def __init__(self, layers: Sequence[HiddenLayer], *, window: int, gamma: float, sigmas: Sequence[float],
                 seed: int = 0, block: int = AGGREGATE_BLOCK):
        self.layers = list(layers)
        self.window, self.gamma, self.sigmas, self.block = window, gamma, tuple(sigmas), block
        self.generator = seeded_generator(seed, _SALT)
        self.pool: list[Tensor] | None = None  # x, y, z_1 … z_L, each (K, POOL, d)
        self.pooled = 0
        self._reset_epoch()
        self._reset_block()

    def _reset_epoch(self) -> None:
        self.sums = torch.zeros(len(self.layers), 3, dtype=torch.float64)  # signal, update, ceiling cosines
        self.steps = self.ceiling_steps = 0
        self.series: list[list[Any]] = []  # [step, circuit cosines, ceiling cosines or None]
        self.step = 0

    def _reset_block(self) -> None:
        # per layer: the post-synaptic factors of the circuit, the exact signal and the ceiling
        # (on a ceiling block), and the layer's inputs, one entry per step of the block
        self.block_rows: list[list[list[Tensor]]] = [[[], [], [], []] for _ in self.layers]
        self.block_steps = 0

    def _in_ceiling_block(self) -> bool:
        return (self.step // self.block) % CEILING_EVERY == 0 and self.pooled >= self.window

    def remember(self, x: Tensor, y: Tensor, caches: list[HiddenCache]) -> None:
        """Put the newest sample of each model into the pool (``x`` ``(K, d_x)``, ``y`` ``(K, d_y)``)."""
        values = [x, y, *(cache.out[:, 0] for cache in caches)]
        if self.pool is None:
            self.pool = [torch.zeros(v.shape[0], POOL, v.shape[-1], dtype=v.dtype, device=v.device) for v in values]
        slot = self.pooled % POOL
        for stored, value in zip(self.pool, values):
            stored[:, slot] = value
        self.pooled += 1

    def _ceiling(self, x: Tensor, y: Tensor, layer: int, caches: list[HiddenCache]) -> Tensor:
        filled = min(self.pooled, POOL)
        pool_x, pool_y, pool_z = (v[:, :filled] for v in (self.pool[0], self.pool[1], self.pool[2 + layer]))
        return expected_signal(x, y, caches[layer].out[:, 0], pool_x, pool_y, pool_z, window=self.window,
                               histories=CEILING_HISTORIES, gamma=self.gamma, sigmas=self.sigmas,
                               generator=self.generator).to(x.dtype)

    @torch.no_grad()
    def record(self, x: Tensor, y: Tensor, caches: list[HiddenCache], signals: list[Tensor],
               exact: list[Tensor]) -> None:
        """Score this step's ``signals`` against the ``exact`` ones (one ``(K, d_l)`` each)."""
        ceiling = self._in_ceiling_block()
        for l, (layer, cache, signal, target) in enumerate(zip(self.layers, caches, signals, exact)):
            deltas = [layer.drive_grad(cache, g.unsqueeze(1))[:, 0] for g in (signal, target)]
            row = [row_cosines(signal, target).sum(), row_cosines(*deltas).sum(), 0.0]
            if ceiling:
                deltas.append(layer.drive_grad(cache, self._ceiling(x, y, l, caches).unsqueeze(1))[:, 0])
                row[2] = row_cosines(deltas[2], deltas[1]).sum()
            self.sums[l] += torch.tensor([float(v) for v in row], dtype=torch.float64)
            for rows, value in zip(self.block_rows[l], [*deltas, None][:3] + [cache.input[:, 0]]):
                if value is not None:
                    rows.append(value)
        self.steps += x.shape[0]
        self.ceiling_steps += x.shape[0] if ceiling else 0
        self.block_steps += 1
        self.step += 1
        if self.block_steps == self.block:
            self._close_block()

    def _close_block(self) -> None:
        circuit, best = [], []
        for circ, exact, bound, pres in self.block_rows:
            target = _summed_update(exact, pres)
            circuit.append(float(row_cosines(_summed_update(circ, pres), target).mean()))
            if len(bound) == len(pres):
                best.append(float(row_cosines(_summed_update(bound, pres), target).mean()))
        self.series.append([self.step, circuit, best or None])
        self._reset_block()

    def metrics(self) -> dict[str, Any]:
        """The means (per hidden layer) since the last call, then starts afresh (the pool is
        kept). Empty before the first scored step."""
        if not self.steps:
            return {}
        out: dict[str, Any] = {"reservoir_signal_cosine": (self.sums[:, 0] / self.steps).tolist(),
                               "reservoir_update_cosine": (self.sums[:, 1] / self.steps).tolist()}
        if self.ceiling_steps:
            out["reservoir_ceiling_update_cosine"] = (self.sums[:, 2] / self.ceiling_steps).tolist()
        if self.series:
            circuit = torch.tensor([row[1] for row in self.series], dtype=torch.float64)
            out["reservoir_update_cosine_100"] = circuit.mean(0).tolist()
            out["reservoir_update_cosine_100_series"] = [[row[0], row[1], row[2]] for row in self.series]
            paired = [(row[1], row[2]) for row in self.series if row[2] is not None]
            if paired:
                circ, best = (torch.tensor(v, dtype=torch.float64) for v in zip(*paired))
                out["reservoir_ceiling_update_cosine_100"] = best.mean(0).tolist()
                out["reservoir_fraction_of_ceiling_100_min"] = (circ / best).min(0).values.tolist()
        self._reset_epoch()
        self._reset_block()
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"pool": self.pool, "pooled": self.pooled, "sums": self.sums, "steps": self.steps,
                "ceiling_steps": self.ceiling_steps, "series": self.series, "step": self.step,
                "block_rows": self.block_rows, "block_steps": self.block_steps,
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pool, self.pooled = state["pool"], int(state["pooled"])
        self.sums, self.steps, self.ceiling_steps = state["sums"], int(state["steps"]), int(state["ceiling_steps"])
        self.series, self.step = [list(row) for row in state["series"]], int(state["step"])
        self.block_rows, self.block_steps = state["block_rows"], int(state["block_steps"])
        self.generator.set_state(state["generator"])
