"""biohsic — training neural networks without back-propagation, with the
information-bottleneck three-factor Hebbian rule of Daruwalla & Lipasti (2024)."""
__version__ = "0.2.0"

from .config import TrainConfig
from .errors import (BiohsicError, CheckpointError, CheckpointWarning, ConfigError, DataError, DivergenceError,
                     RunFolderError)
from .functional.modulator import modulatory_signal
from .memory import WorkingMemory
from .modulators import MODULATORS, KernelModulator, Modulator, register_modulator
from .network import Network
from .reservoir import Reservoir, ReservoirConfig, ReservoirModulator
from .rules import RULES, Rule, register
from .runs import RunFolderLock
from .train import Trainer

__all__ = ["BiohsicError", "CheckpointError", "CheckpointWarning", "ConfigError", "DataError", "DivergenceError",
           "KernelModulator", "MODULATORS", "Modulator", "Network", "RULES", "Reservoir", "ReservoirConfig",
           "ReservoirModulator", "Rule", "RunFolderError", "RunFolderLock", "TrainConfig", "Trainer", "WorkingMemory",
           "__version__", "modulatory_signal", "register", "register_modulator"]
