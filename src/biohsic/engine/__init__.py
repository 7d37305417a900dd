"""Engines: what advances a training run by a chunk of samples.

The trainer (:class:`biohsic.train.Trainer`) hands an engine consecutive samples and scores
the logits it returns; an engine owns the rule's state between steps and the optimiser.
:class:`EagerEngine` is the reference (a rule's eager step and a ``torch.optim`` optimiser).
"""
from typing import Any, Protocol

from torch import Tensor

from ..nonfinite import NonFinite
from .eager import EagerEngine


class Engine(Protocol):
    """Advances a run by chunks of consecutive samples."""

    def train_chunk(self, x: Tensor, y: Tensor) -> Tensor:
        """Train on ``x`` ``(K, S, d_in)`` with one-hot labels ``y`` ``(K, S, classes)``; return the
        logits each sample met before its update, ``(K, S, classes)``."""

    def reset(self) -> None:
        """Forget the state carried between steps."""

    def first_nonfinite(self) -> NonFinite | None:
        """The first non-finite quantity met since the last call — which step of the chunk,
        which quantity (input, logits, a hidden layer's signal, a parameter or its update; see
        :mod:`biohsic.nonfinite`), which layer or parameter, which models — or ``None`` when
        everything stayed finite. Called once per chunk: an engine keeps a running record on
        the device while it trains and reduces it here, with no host sync per step."""

    def epoch_metrics(self) -> dict[str, Any]:
        """Scores gathered since the last call, added to the epoch's metrics."""

    def state_dict(self) -> dict[str, Any]:
        """Everything a checkpoint needs to continue the run exactly."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


__all__ = ["EagerEngine", "Engine", "NonFinite"]
