"""Engines: what advances a training run by a chunk of samples.

The trainer (:class:`biohsic.train.Trainer`) hands an engine consecutive samples and scores
the logits it returns; an engine owns the rule's state between steps and the optimiser.
:class:`EagerEngine` is the reference (a rule's eager step and a ``torch.optim`` optimiser);
:class:`CompiledEngine` runs the rule's explicit step (:mod:`biohsic.engine.step`) compiled,
:class:`PairEngine` that of ``phsic-stream`` (:mod:`biohsic.engine.pair_step`);
:func:`make_engine` chooses between them (``--engine``).
"""
import warnings
from typing import Any, Protocol

import torch
from torch import Tensor

from ..errors import EngineWarning
from ..nonfinite import NonFinite
from ..rules import Rule
from .compiled import CompiledEngine, PairEngine, compiled_engine, compiled_support, compiler_available
from .eager import EagerEngine

#: ``--engine auto`` compiles a run of at least this many updates (samples × time steps ×
#: epochs): below it, compiling (tens of seconds cold) costs more than it saves.
AUTO_MIN_UPDATES = 50_000


class Engine(Protocol):
    """Advances a run by chunks of consecutive samples."""

    #: seconds spent compiling so far (0 for an engine that compiles nothing)
    compile_seconds: float

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


def make_engine(rule: Rule, optimizer: torch.optim.Optimizer, choice: str, updates: int) -> "Engine":
    """The engine ``choice`` (``eager``, ``compiled`` or ``auto``) for a run of ``updates``
    updates. ``compiled`` where the compiled step cannot serve the run (another rule or
    modulator, another kind of layer, no C++ compiler) is the eager engine, with one
    :class:`~biohsic.errors.EngineWarning` saying why; ``auto`` compiles when the compiled step
    serves the run, a compiler is there and ``updates`` ≥ :data:`AUTO_MIN_UPDATES`, silently."""
    if choice == "eager":
        return EagerEngine(rule, optimizer)
    reason = compiled_support(rule, optimizer)
    if reason is None and rule.network.readout.weight.device.type == "cpu" and not compiler_available():
        reason = "no C++ compiler found (install g++ or set CXX)"
    if choice == "auto" and (reason is not None or updates < AUTO_MIN_UPDATES):
        return EagerEngine(rule, optimizer)
    if reason is not None:
        warnings.warn(f"--engine compiled: {reason}; this run uses the eager engine", EngineWarning, stacklevel=2)
        return EagerEngine(rule, optimizer)
    return compiled_engine(rule, optimizer)


__all__ = ["AUTO_MIN_UPDATES", "CompiledEngine", "EagerEngine", "Engine", "NonFinite", "PairEngine", "compiled_engine",
           "compiled_support", "make_engine"]
