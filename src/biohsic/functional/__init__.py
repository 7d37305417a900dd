"""Pure functions on tensors: kernels, HSIC, the modulatory signal, layers and neuron
dynamics. No state; every docstring states the equation it implements."""
from .hsic import center, hsic, layer_objective
from .kernels import gaussian_kernel, gaussian_kernel_row, squared_distances
from .layers import (HiddenCache, cross_entropy_grad, dense, hidden_forward, hidden_local_grad,
                     leaky_step)
from .modulator import KINDS, modulatory_signal

__all__ = [
    "KINDS", "HiddenCache", "center", "cross_entropy_grad", "dense",
    "gaussian_kernel", "gaussian_kernel_row", "hidden_forward", "hidden_local_grad", "hsic",
    "layer_objective", "leaky_step", "modulatory_signal",
    "squared_distances",
]
