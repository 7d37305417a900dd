"""Where a training run first produced a non-finite number, found without a host sync per step.

An engine advances a run by a chunk of steps. During the chunk, every quantity of interest
is *recorded*: one reduction per model, kept on the device (no ``.item()``, so no sync).
Once per chunk, :meth:`NonFiniteWatch.first` stacks the records, reduces them in one
operation, and — only when something went non-finite — names the first culprit: the step,
the quantity and the layer, and the models (by index) in which it happened.

The quantities, in the order in which a step computes them (a step's records are ranked in
this order, so the first cause wins over its consequences):

``input``      the samples of the step (a damaged dataset);
``logits``     the network's output (the forward pass);
``signal``     a hidden layer's modulatory or feedback signal (a rule's learning signal);
``parameter``  a parameter after the optimiser's step (a non-finite gradient makes it so).

Parameters are recorded once, at the end of the chunk (reading every weight at every step
would cost as much as the optimiser). A parameter that went non-finite in step s makes the
forward pass of step s + 1 non-finite, so :meth:`NonFiniteWatch.first` reports non-finite
logits of a finite input, with a non-finite parameter at the end of the chunk, as that
parameter going non-finite in step s.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

#: The recorded quantities, in the order a step computes them.
QUANTITIES = ("input", "logits", "signal", "parameter")
_RANK = {quantity: rank for rank, quantity in enumerate(QUANTITIES)}


@dataclass(frozen=True)
class NonFinite:
    """The first non-finite quantity of a chunk.

    ``step``: the index of the batch within the chunk (0-based); ``substep``: the time step
    within the batch's presentation (leaky units; 0 otherwise); ``quantity``: one of
    :data:`QUANTITIES`; ``where``: what it belongs to (``"hidden layer 2"``, a parameter's
    name such as ``"hidden.0.weight"``, ``"output"``); ``models``: the indices (0..K-1) of
    the models in which it was non-finite.
    """

    step: int
    substep: int
    quantity: str
    where: str
    models: tuple[int, ...]


def _per_model(value: Tensor) -> Tensor:
    """A ``(K,)`` sum per model of ``value`` ``(K, ...)``: NaN and ±inf propagate into it, so
    it is finite when every element is — unless the elements are so large that their sum
    overflows (beyond 1e38 in float32), which a run only reaches once it has diverged too."""
    return value.sum(dim=tuple(range(1, value.dim()))) if value.dim() > 1 else value.clone()


class NonFiniteWatch:
    """Records of one chunk (see the module docstring). The engine calls :meth:`start_step`
    before each update and :meth:`first` once per chunk; rules and engines call :meth:`record`."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Forget the records."""
        self._values: list[Tensor] = []
        self._labels: list[tuple[int, int, str]] = []  # (update, quantity rank, where)
        self._updates: list[tuple[int, int]] = []  # (step, substep) of each update

    def start_step(self, step: int, substep: int = 0) -> None:
        """The records that follow belong to a new update: batch ``step`` of the chunk, time
        step ``substep`` of its presentation."""
        self._updates.append((step, substep))

    def record(self, quantity: str, where: str, value: Tensor) -> None:
        """Note ``value`` ``(K, ...)`` (one leading entry per model) as ``quantity`` of ``where``
        (of the latest update; of a first update ``(0, 0)`` when none was started)."""
        if not self._updates:
            self._updates.append((0, 0))
        self._labels.append((len(self._updates) - 1, _RANK[quantity], where))
        self._values.append(_per_model(value.detach()))

    def first(self) -> NonFinite | None:
        """The first non-finite record since the last call, or ``None``; forgets the records.
        One reduction and one host sync, whatever the number of records."""
        values, labels, updates = self._values, self._labels, self._updates
        self.clear()
        if not values:
            return None
        bad = ~torch.isfinite(torch.stack(values))         # (records, K)
        rows = bad.any(1).nonzero().flatten().tolist()     # the sync
        if not rows:
            return None

        def report(row: int, quantity: str, update: int) -> NonFinite:
            models = tuple(bad[row].nonzero().flatten().tolist())
            return NonFinite(*updates[update], quantity, labels[row][2], models)

        first = min(rows, key=lambda r: (labels[r][:2], r))
        update, rank, _ = labels[first]
        weights = [r for r in rows if QUANTITIES[labels[r][1]] == "parameter"]
        if QUANTITIES[rank] == "logits" and weights:
            # the forward pass met weights that the previous update had made non-finite
            return report(weights[0], "parameter", max(update - 1, 0))
        return report(first, QUANTITIES[rank], update)


__all__ = ["NonFinite", "NonFiniteWatch", "QUANTITIES"]
