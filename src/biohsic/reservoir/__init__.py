r"""The working-memory circuit (SPEC §4): a rate reservoir that sees one sample at a time
and learns to output the modulatory signal :math:`g_N` of a layer.

- :mod:`~biohsic.reservoir.model`: :class:`Reservoir` (a thin ``nn.Module`` over
  :mod:`biohsic.functional.reservoir`), its :class:`ReservoirConfig` and file format;
- :mod:`~biohsic.reservoir.learners`: readout learners (delta rule, FORCE, ridge);
- :mod:`~biohsic.reservoir.closed_loop`: the reservoir as the rule's modulator while the
  network learns (registered as ``--modulator reservoir``);
- :mod:`~biohsic.reservoir.study`: training a priori, frozen evaluation, the capacity and
  memory-capacity studies.
"""
from .closed_loop import ReservoirModulator
from .learners import FORCE_ALPHA, LEARNERS, DeltaRule, Force, ReadoutLearner, Ridge
from .model import Reservoir, ReservoirConfig

__all__ = ["DeltaRule", "FORCE_ALPHA", "Force", "LEARNERS", "ReadoutLearner", "Reservoir", "ReservoirConfig",
           "ReservoirModulator", "Ridge"]
