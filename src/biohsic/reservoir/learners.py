r"""Readout learners of the working-memory circuit: rules that change a reservoir's readout
:math:`W_o` from its rates, its output and a target (SPEC §4).

:class:`DeltaRule` is the paper's online rule; :class:`Force` (recursive least squares) the
standard stronger one; :class:`Ridge` the batch least-squares solution FORCE converges to when
the readout does not feed back. A learner is handed to
:meth:`biohsic.reservoir.Reservoir.step_sample` with each target; a reservoir presented with
no learner (and no target) is frozen: its readout never changes.
"""
from __future__ import annotations

import abc
from typing import Callable

import torch
from torch import Tensor

from ..errors import ConfigError
from ..functional.reservoir import delta_rule_increment, ridge_readout, ridge_readout_towards, rls_step

#: FORCE's prior :math:`P_0 = I/\alpha` where none is given: what validation picks with SPEC §4's
#: dynamics (the classic α = 1 over-fits g_N: a negative R² on unseen windows).
FORCE_ALPHA = 1e4


class ReadoutLearner(abc.ABC):
    """A rule that changes a reservoir's readout ``W_o`` from its rates, output and target.

    ``every_step``: learn at each of the T steps of a sample (the paper's rule) instead of
    once, at the last step (the default).
    """

    name: str

    def __init__(self, every_step: bool = False):
        self.every_step = every_step

    @abc.abstractmethod
    def update(self, w_out: Tensor, rates: Tensor, output: Tensor, target: Tensor) -> None:
        """Change ``w_out`` ``(n_out, M)`` in place; ``rates`` ``(K, M)``, ``output`` and
        ``target`` ``(K, n_out)``."""

    def finish(self, w_out: Tensor) -> None:
        """Called once when training ends (a batch learner writes its readout here)."""


class DeltaRule(ReadoutLearner):
    r"""The paper's online delta rule :math:`W_o \leftarrow W_o - \eta\,(o - \mathrm{target})\,r^\top`
    (averaged over the K copies), η = 5e-4 by default."""

    name = "delta"

    def __init__(self, lr: float = 5e-4, every_step: bool = False):
        super().__init__(every_step)
        if lr <= 0:
            raise ConfigError(f"--lr must be positive, got {lr}")
        self.lr = lr

    @torch.no_grad()
    def update(self, w_out: Tensor, rates: Tensor, output: Tensor, target: Tensor) -> None:
        w_out.sub_(delta_rule_increment(rates, output - target, lr=self.lr).to(w_out.dtype))


class RegularizedLearner(ReadoutLearner):
    """A least-squares readout learner with ridge penalty (or RLS prior) ``alpha`` and
    statistics kept in ``dtype``."""

    def __init__(self, alpha: float = 1.0, every_step: bool = False, dtype: torch.dtype = torch.float64):
        super().__init__(every_step)
        if alpha <= 0:
            raise ConfigError(f"--alpha must be positive, got {alpha}")
        self.alpha = alpha
        self.dtype = dtype


class Force(RegularizedLearner):
    r"""FORCE learning: recursive least squares with :math:`P_0 = I/\alpha`
    (:func:`~biohsic.functional.reservoir.rls_step`).

    ``P`` (M×M) is kept in ``dtype`` (float64 by default: over thousands of updates a
    float32 P loses its symmetry and positive definiteness) and is allocated at the first
    update, on the rates' device. Its cost is O(M²·K) per update.
    """

    name = "force"

    def __init__(self, alpha: float = 1.0, every_step: bool = False, dtype: torch.dtype = torch.float64):
        super().__init__(alpha, every_step, dtype)
        self.p: Tensor | None = None

    @torch.no_grad()
    def update(self, w_out: Tensor, rates: Tensor, output: Tensor, target: Tensor) -> None:
        if self.p is None:
            self.p = torch.eye(rates.shape[-1], dtype=self.dtype, device=rates.device) / self.alpha
        step = rls_step(self.p, rates)
        self.p.addmm_(step.gain, step.p_rates.transpose(0, 1), alpha=-1.0)
        error = (output - target).to(self.dtype)
        w_out.sub_((error.transpose(0, 1) @ step.gain.transpose(0, 1)).to(w_out.dtype))


class Ridge(RegularizedLearner):
    r"""Batch least squares: accumulates :math:`C = \sum r r^\top` and
    :math:`B = \sum \mathrm{target}\, r^\top` (in ``dtype``) and writes
    :math:`W_o = B (C + \alpha I)^{-1}` in :meth:`finish`
    (:func:`~biohsic.functional.reservoir.ridge_readout`); the readout is zero until then.
    For a reservoir whose readout does not feed back (``feedback_scale = 0``, which the
    study functions require for it) this is exactly the readout :class:`Force` reaches
    with the same α, at a fraction of the cost (one O(M²·K) accumulation per update
    instead of two, one O(M³) solve at the end). With feedback, learning offline from
    fed-back targets (teacher forcing) gives a loop that can run away once the readout
    feeds back its own errors; use :class:`Force`, which learns in the closed loop. It
    also keeps :math:`\sum \mathrm{target}^2`, so that its statistics can score other
    readouts (:func:`~biohsic.functional.reservoir.ridge_validation_sse`).
    """

    name = "ridge"

    def __init__(self, alpha: float = 1.0, every_step: bool = False, dtype: torch.dtype = torch.float64):
        super().__init__(alpha, every_step, dtype)
        self.cov: Tensor | None = None
        self.cross: Tensor | None = None
        self.target_sq: Tensor | None = None

    @torch.no_grad()
    def update(self, w_out: Tensor, rates: Tensor, output: Tensor, target: Tensor) -> None:
        r, f = rates.to(self.dtype), target.to(self.dtype)
        if self.cov is None:
            self.cov = torch.zeros(r.shape[-1], r.shape[-1], dtype=self.dtype, device=r.device)
            self.cross = torch.zeros(f.shape[-1], r.shape[-1], dtype=self.dtype, device=r.device)
            self.target_sq = torch.zeros(f.shape[-1], dtype=self.dtype, device=r.device)
        self.cov.addmm_(r.transpose(0, 1), r)
        self.cross.addmm_(f.transpose(0, 1), r)
        self.target_sq.add_(f.square().sum(0))

    @torch.no_grad()
    def finish(self, w_out: Tensor) -> None:
        if self.cov is not None:
            w_out.copy_(ridge_readout(self.cov, self.cross, alpha=self.alpha))


class StoreRefit:
    r"""Readouts re-fitted at intervals from a small store of exact targets, one per model.

    Each of the K models (networks trained side by side) has its own readout, starting at
    the ``prior`` readout (trained a priori), and its own ring of the last ``store``
    (rates, target) rows: ``store`` × (M + n_out) numbers per model, the memory this needs
    besides whatever supplies the targets. Each time ``refit_every`` new rows have arrived,
    every model's readout becomes the ridge solution over its stored rows pulled towards the
    prior, :math:`W_o = (B + \alpha W_0)(C + \alpha I)^{-1}`
    (:func:`~biohsic.functional.reservoir.ridge_readout_towards`); between refits it is fixed.
    Unlike the shared readout of the online learners, a model's readout learns only from
    its own network, whose signal it serves.
    """

    name = "refit"

    def __init__(self, prior: Tensor, *, store: int, refit_every: int, alpha: float = 1.0,
                 dtype: torch.dtype = torch.float64):
        if store < 1 or refit_every < 1 or not alpha > 0:
            raise ConfigError(f"--reservoir-store, --reservoir-refit-every and α must be positive, got {store}, "
                              f"{refit_every} and {alpha}")
        self.prior = prior.detach().clone()
        self.store, self.refit_every, self.alpha, self.dtype = store, refit_every, alpha, dtype
        self.readouts: Tensor | None = None  # (K, n_out, M)
        self.rates: Tensor | None = None     # (K, store, M)
        self.targets: Tensor | None = None   # (K, store, n_out)
        self.added = 0     # rows ever stored, per model
        self.pending = 0   # rows stored since the last refit

    def output(self, rates: Tensor) -> Tensor:
        """Each model's readout of its rates ``(K, M)`` → ``(K, n_out)``."""
        if self.readouts is None:
            self.readouts = self.prior.to(rates.dtype).expand(rates.shape[0], *self.prior.shape).clone()
        return (self.readouts @ rates.unsqueeze(-1)).squeeze(-1)

    @torch.no_grad()
    def add(self, rates: Tensor, target: Tensor) -> None:
        """Store one (rates, target) row per model (``(K, M)``, ``(K, n_out)``); re-fit when
        ``refit_every`` rows have arrived since the last refit."""
        k = rates.shape[0]
        if self.rates is None:
            self.rates = torch.zeros(k, self.store, rates.shape[-1], dtype=self.dtype, device=rates.device)
            self.targets = torch.zeros(k, self.store, target.shape[-1], dtype=self.dtype, device=rates.device)
        slot = self.added % self.store
        self.rates[:, slot] = rates.to(self.dtype)
        self.targets[:, slot] = target.to(self.dtype)
        self.added += 1
        self.pending += 1
        if self.pending >= self.refit_every:
            self.pending = 0
            r, f = self.rates[:, :min(self.added, self.store)], self.targets[:, :min(self.added, self.store)]
            fitted = ridge_readout_towards(r.transpose(1, 2) @ r, f.transpose(1, 2) @ r, self.prior.to(self.dtype),
                                           alpha=self.alpha)
            self.output(rates)  # the readouts exist
            self.readouts.copy_(fitted.to(self.readouts.dtype))

    def state_dict(self) -> dict:
        return {"readouts": self.readouts, "rates": self.rates, "targets": self.targets, "added": self.added,
                "pending": self.pending}

    def load_state_dict(self, state: dict) -> None:
        self.readouts, self.rates, self.targets = state["readouts"], state["rates"], state["targets"]
        self.added, self.pending = int(state["added"]), int(state["pending"])


LEARNERS: dict[str, Callable[..., ReadoutLearner]] = {"delta": DeltaRule, "force": Force, "ridge": Ridge}
