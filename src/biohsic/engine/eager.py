"""The reference engine: a rule's eager step and a ``torch.optim`` optimiser, one step at a time.

This is the readable path every faster engine is tested against: the rule writes its update
into ``.grad`` (:meth:`biohsic.rules.Rule.predict_and_write_grads`) and the optimiser applies it,
``rule.substeps`` times per batch (the time steps of leaky units).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..nonfinite import NonFinite
from ..rules import Rule


class RuleEngine:
    """What every engine of a rule and a ``torch.optim`` optimiser shares: forgetting the
    rule's state, the rule's scores, and checkpoints in one format (a run may resume on
    another engine)."""

    rule: Rule
    optimizer: torch.optim.Optimizer

    def reset(self) -> None:
        """Forget the state the rule carries between steps (the optimiser's moments are kept)."""
        self.rule.reset()

    def epoch_metrics(self) -> dict[str, Any]:
        """The rule's own scores since the last call (see :meth:`biohsic.rules.Rule.epoch_metrics`)."""
        return self.rule.epoch_metrics()

    def state_dict(self) -> dict[str, Any]:
        """The optimiser's and the rule's state, as a checkpoint holds them."""
        return {"optimizer": self.optimizer.state_dict(), "rule": self.rule.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.rule.load_state_dict(state["rule"])
        self.after_load()

    def after_load(self) -> None:
        """Drop what the engine recorded before a checkpoint was loaded."""


class EagerEngine(RuleEngine):
    """Advances a run through ``rule`` and ``optimizer``, batch by batch."""

    def __init__(self, rule: Rule, optimizer: torch.optim.Optimizer):
        self.rule = rule
        self.optimizer = optimizer
        trained = {id(p) for p in rule.trainable_parameters()}
        self.trained = [(name, p) for name, p in rule.network.named_parameters() if id(p) in trained]
        self.compile_seconds = 0.0

    def train_chunk(self, x: Tensor, y: Tensor) -> Tensor:
        """Train on the consecutive samples ``x`` ``(K, S·B, d_in)`` with one-hot labels ``y``
        ``(K, S·B, classes)``, B = ``rule.batch_size`` at a time; return the logits each sample
        met before its update (the prediction, for leaky units), ``(K, S·B, classes)``."""
        batch, watch = self.rule.batch_size, self.rule.watch
        logits = []
        for step, start in enumerate(range(0, x.shape[1], batch)):
            xb, yb = x[:, start:start + batch], y[:, start:start + batch]
            for substep in range(self.rule.substeps):
                watch.start_step(step, substep)
                if substep == 0:
                    watch.record("input", "input", xb)
                step_logits = self.rule.predict_and_write_grads(xb, yb)
                watch.record("logits", "output", step_logits)
                self.optimizer.step()
            logits.append(step_logits)
        return torch.cat(logits, 1)

    def first_nonfinite(self) -> NonFinite | None:
        """The first non-finite input, logits or signal of the steps since the last call, or
        parameter at the end of them (see :mod:`biohsic.nonfinite`); ``None`` when everything
        stayed finite."""
        for name, param in self.trained:
            self.rule.watch.record("parameter", name, param)
        return self.rule.watch.first()

    def after_load(self) -> None:
        self.rule.watch.clear()
