"""The interface every learning rule implements, and the registry that names them.

A rule turns a batch of samples into gradients written into ``.grad`` of the parameters
it trains; the trainer then calls any ``torch.optim`` optimiser. Streaming rules see one
sample per model per step (``batch_size`` = 1); minibatch rules see ``batch_size``.
"""
from __future__ import annotations

import abc
from typing import Any, ClassVar, Iterable, Sequence

import torch
from torch import Tensor, nn

from ..config import TrainConfig
from ..errors import ConfigError, require
from ..functional.layers import HiddenCache
from ..network import Network
from ..nonfinite import NonFiniteWatch


class Rule(abc.ABC):
    """A learning rule bound to one network (K models) and one configuration."""

    #: registry name, e.g. ``"biohsic"``
    name: ClassVar[str]
    #: True when the rule sees one sample at a time (batch size 1)
    streaming: ClassVar[bool] = False
    #: True for a three-factor rule whose hidden layers take the signal of ``config.modulator``
    #: from a working memory of ``config.window`` samples (its run records modulator and memory)
    modulated: ClassVar[bool] = False

    def __init__(self, network: Network, config: TrainConfig):
        self.network = network
        self.config = config
        #: where the rule records its learning signals, so that the engine can name the first
        #: non-finite one (see :mod:`biohsic.nonfinite`)
        self.watch = NonFiniteWatch()

    @classmethod
    def check_config(cls, config: TrainConfig) -> None:
        """Raise :class:`~biohsic.errors.ConfigError` for settings this rule cannot run
        (by default: leaky units, which only the three-factor rule simulates)."""
        require(config.neuron == "rate",
                "--neuron leaky is implemented for --rule biohsic with the exact or paper modulator only")

    @property
    def batch_size(self) -> int:
        return 1 if self.streaming else self.config.batch_size

    @property
    def substeps(self) -> int:
        """Updates per sample: the trainer calls :meth:`predict_and_write_grads` and the
        optimiser this many times with the same samples (time steps of leaky units; 1 otherwise)."""
        return 1

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimiser updates (all, unless the rule freezes some)."""
        return list(self.network.parameters())

    @abc.abstractmethod
    def predict_and_write_grads(self, x: Tensor, y: Tensor) -> Tensor:
        """Write this step's update into ``.grad`` of :meth:`trainable_parameters` and return
        the logits the network gave these samples *before* the update, ``(K, B, classes)``
        (for the online loss and accuracy; with :attr:`substeps` > 1, the last call's
        return value is the prediction).

        ``x`` is ``(K, B, d_in)``, ``y`` the one-hot labels ``(K, B, classes)``.
        """

    def reset(self) -> None:
        """Forget all state carried between steps (working memory, previous sample)."""

    def epoch_metrics(self) -> dict[str, Any]:
        """Rule-specific scores gathered since the last call, added to the epoch's metrics
        (e.g. how well a reservoir's signal matched the exact g_N). Called once per epoch."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """State carried between steps, for checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


def set_grad(param: nn.Parameter, value: Tensor) -> None:
    """Write ``value`` into ``param.grad``, allocated once with the parameter's own layout.

    The layout matters: autograd can return a weight's gradient as a transposed view, and
    the fused AdamW kernel reads ``.grad`` as if it had the parameter's strides.
    """
    if param.grad is None:
        param.grad = torch.empty_like(param)
    param.grad.copy_(value)


def write_grads(params: Iterable[nn.Parameter], grads: Iterable[Tensor]) -> None:
    """:func:`set_grad` of each parameter with its gradient, in order."""
    for param, grad in zip(params, grads, strict=True):
        set_grad(param, grad)


def write_hidden_grads(network: Network, caches: Sequence[HiddenCache], signals: Sequence[Tensor],
                       presynaptic: Sequence[Tensor] | None = None, bias_trace: Tensor | None = None,
                       watch: NonFiniteWatch | None = None) -> None:
    r"""Each hidden layer's local term :math:`\sum_n J_n^\top g_n` for its signal
    ``signals[l]`` ``(K, B, d_l)``, into its parameters' ``.grad``. ``presynaptic`` and
    ``bias_trace``: eligibility traces of leaky units (see
    :meth:`biohsic.network.HiddenLayer.local_grad`). ``watch``: where each signal is
    recorded (as ``"signal"`` of ``"hidden layer l"``, l from 1)."""
    traces = presynaptic if presynaptic is not None else [None] * len(caches)
    for index, (layer, cache, signal, trace) in enumerate(zip(network.hidden, caches, signals, traces, strict=True)):
        if watch is not None:
            watch.record("signal", hidden_layer_name(index), signal)
        write_grads((layer.weight, layer.bias), layer.local_grad(cache, signal, trace, bias_trace))


def hidden_layer_name(index: int) -> str:
    """How messages name hidden layer ``index`` (0-based): ``"hidden layer 1"`` for the first."""
    return f"hidden layer {index + 1}"


RULES: dict[str, type[Rule]] = {}


def register(cls: type[Rule]) -> type[Rule]:
    """Class decorator: add a rule to :data:`RULES` under ``cls.name``."""
    RULES[cls.name] = cls
    return cls


def check_config(config: TrainConfig) -> None:
    """Raise :class:`~biohsic.errors.ConfigError` unless ``config`` (resolved) names a
    registered rule that can run its settings."""
    if config.rule not in RULES:
        raise ConfigError(f"unknown rule {config.rule!r}; choose one of {', '.join(RULES)}")
    RULES[config.rule].check_config(config)


def build_rule(network: Network, config: TrainConfig) -> Rule:
    check_config(config)
    return RULES[config.rule](network, config)


__all__ = ["RULES", "Rule", "build_rule", "check_config", "hidden_layer_name", "register", "set_grad",
           "write_grads", "write_hidden_grads"]
