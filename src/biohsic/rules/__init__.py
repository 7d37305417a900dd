"""Learning rules behind one interface (:class:`Rule`); :data:`RULES` names them.

A new rule is a new module here, decorated with :func:`register`, and one import line below.
"""
from .base import (RULES, Rule, build_rule, check_config, hidden_layer_name, register, set_grad, write_grads,
                   write_hidden_grads)
from . import biohsic  # noqa: F401  (registers the rule)
from . import bp  # noqa: F401
from . import fa  # noqa: F401
from . import hsic  # noqa: F401
from . import phsic  # noqa: F401
from . import readout  # noqa: F401

__all__ = ["RULES", "Rule", "build_rule", "check_config", "hidden_layer_name", "register", "set_grad", "write_grads",
           "write_hidden_grads"]
