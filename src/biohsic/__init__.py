"""biohsic — training neural networks without back-propagation, with the
information-bottleneck three-factor Hebbian rule of Daruwalla & Lipasti (2024)."""
from .config import TrainConfig
from .errors import BiohsicError, CheckpointError, ConfigError, DataError, DivergenceError
from .functional.modulator import modulatory_signal
from .memory import WorkingMemory
from .network import Network
from .reservoir import Reservoir, ReservoirConfig

__version__ = "0.1.0"

__all__ = ["BiohsicError", "CheckpointError", "ConfigError", "DataError", "DivergenceError", "Network",
           "Reservoir", "ReservoirConfig", "TrainConfig", "WorkingMemory", "modulatory_signal", "__version__"]
