r"""The modulatory-signal seam of the three-factor rule (SPEC §3, §3.1, §4).

A :class:`Modulator` gives each hidden layer its global signal for the newest sample, one
value per neuron. The rule (:class:`biohsic.rules.biohsic.BioHSIC`) asks the registry
:data:`MODULATORS` for the one named by ``config.modulator`` and knows nothing else about it.

Here: the kernel modulators, which read the working memory's kernel matrices — ``exact``
(:math:`g_N = \partial L_\ell/\partial z_N`, the library's default), and the authors'
published signals ``paper`` and ``paper-jan2024``. Other modulators register themselves with
:func:`register_modulator` from their own package: the working-memory circuit
(:mod:`biohsic.reservoir`) registers ``reservoir``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

from torch import Tensor

from .config import TrainConfig
from .errors import ConfigError
from .functional.layers import HiddenCache
from .functional.modulator import KINDS, _exact_signal_from_row, _modulation_row, _signal_from_kernels
from .memory import WorkingMemory
from .network import Network


class Modulator(Protocol):
    """Produces each hidden layer's modulatory signal for the newest sample."""

    def __call__(self, memory: WorkingMemory, x: Tensor, y: Tensor, caches: list[HiddenCache]) -> list[Tensor]:
        """``memory`` holds the window, the newest sample included; ``x`` ``(K, d_x)`` and ``y``
        ``(K, classes)`` are the newest sample's, ``caches`` its hidden layers' forward passes
        (outputs ``(K, 1, d_l)``). Returns one ``(K, d_l)`` signal per hidden layer."""

    def reset(self) -> None:
        """Forget the stream seen so far."""

    def state_dict(self) -> dict[str, Any]:
        """State carried between steps, for checkpoints."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def epoch_metrics(self) -> dict[str, Any]:
        """Scores of the signal gathered since the last call (e.g. a reservoir's fit)."""


class KernelModulator:
    """:math:`g_N` from the working memory's kernel matrices, of one ``kind`` of
    :data:`biohsic.functional.modulator.KINDS` (``exact``, ``paper``, ``paper-jan2024``)."""

    def __init__(self, kind: str, gamma: float, sigma_z: float):
        if kind not in KINDS:
            raise ConfigError(f"unknown kernel modulator {kind!r}; choose one of {', '.join(KINDS)}")
        self.kind, self.gamma, self.sigma_z = kind, gamma, sigma_z

    def __call__(self, memory: WorkingMemory, x: Tensor, y: Tensor, caches: list[HiddenCache]) -> list[Tensor]:
        kx, ky, newest = memory.inputs.kernel, memory.labels.kernel, memory.newest
        if self.kind == "exact":  # row N of M is the same for every layer: compute it once
            m_row = _modulation_row(kx, ky, newest, gamma=self.gamma)
            return [_exact_signal_from_row(m_row, layer.kernel[:, newest], layer.values, newest, sigma_z=self.sigma_z)
                    for layer in memory.layers]
        return [_signal_from_kernels(kx, ky, layer.kernel, layer.values, newest, gamma=self.gamma,
                                     sigma_z=self.sigma_z, kind=self.kind)
                for layer in memory.layers]

    def reset(self) -> None:
        """A kernel modulator has no state of its own."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore."""

    def epoch_metrics(self) -> dict[str, Any]:
        """A kernel modulator measures nothing."""
        return {}


def no_check(config: TrainConfig) -> None:
    """A modulator that works with every setting of the rule."""


@dataclass(frozen=True)
class ModulatorSpec:
    """How to build a modulator for a run (``build(network, config)``) and which settings it
    cannot serve (``check(config)`` raises :class:`~biohsic.errors.ConfigError`)."""

    build: Callable[[Network, TrainConfig], Modulator]
    check: Callable[[TrainConfig], None] = no_check


#: The modulators by name (``config.modulator``).
MODULATORS: dict[str, ModulatorSpec] = {}


def register_modulator(name: str, spec: ModulatorSpec) -> None:
    """Make ``spec`` available as ``config.modulator = name`` (and ``--modulator name``)."""
    MODULATORS[name] = spec


def check_modulator(config: TrainConfig) -> None:
    """Raise :class:`~biohsic.errors.ConfigError` unless ``config.modulator`` is registered and
    serves the run's settings."""
    spec = MODULATORS.get(config.modulator)
    if spec is None:
        raise ConfigError(f"unknown --modulator {config.modulator!r}; choose one of {', '.join(MODULATORS)}")
    spec.check(config)


def build_modulator(network: Network, config: TrainConfig) -> Modulator:
    """The modulator ``config.modulator`` for ``network``."""
    check_modulator(config)
    return MODULATORS[config.modulator].build(network, config)


def _kernel_spec(kind: str) -> ModulatorSpec:
    return ModulatorSpec(lambda network, config: KernelModulator(kind, config.gamma, config.sigmas[2]))


for _kind in KINDS:
    register_modulator(_kind, _kernel_spec(_kind))

__all__ = ["KernelModulator", "MODULATORS", "Modulator", "ModulatorSpec", "build_modulator", "check_modulator",
           "register_modulator"]
