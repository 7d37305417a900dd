r"""One step of the streaming three-factor rule, written out top to bottom (SPEC §3, §5).

:func:`streaming_step` advances *all* the state of a run by one sample (one time step for
leaky units), K models side by side, in the order of the rule:

1. **forward** — each hidden layer :math:`z_l = \mathrm{LN}(\mathrm{relu}(W_l a_l + b_l))`
   (leaky units: the membrane :math:`u_l` integrates :math:`W_l a_l + b_l`, the eligibility
   traces integrate each layer's input), then the readout;
2. **working memory** — the sample's x, y and every :math:`z_l` go into slot ``slot``
   (a tensor, so one compiled graph serves every slot) and that slot's row and column of
   each kernel matrix are updated, O(N·d); ``recompute`` re-runs the remembered inputs;
3. **modulatory signal** — :math:`g_N` of each layer from row N of
   :math:`M = H(K_X - \gamma K_Y)H` and of :math:`K_Z` (``exact``), or the authors' signal,
   or (``reservoir``) the readout of the layer's frozen reservoir after T Euler steps on
   (x, y, z) (SPEC §4; at every sample, the window full or not);
4. **local updates** — :math:`J_N^\top g_N` per hidden layer, the readout's delta rule;
5. **optimiser** — AdamW or SGD written out, the bias corrections passed in as tensors
   (computing :math:`\beta^t` inside a compiled graph costs a ``pow`` per element).

Every tensor of :class:`StepState` is updated in place, so the same tensors can be those
of the eager reference (the network's parameters, ``torch.optim``'s moments, the
:class:`~biohsic.memory.WorkingMemory`'s buffers): checkpoints are the same for both engines.
The eager rule classes (:class:`biohsic.rules.biohsic.BioHSIC` with a ``torch.optim``
optimiser) are the reference this function is tested against.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from ..functional.kernels import gaussian_kernel
from ..functional.layers import (HiddenCache, cross_entropy_grad, dense, hidden_forward, hidden_local_grad,
                                 leaky_step, rectify_normalize)
from ..functional.modulator import _exact_signal_from_row, _modulation_row, _signal_from_kernels
from ..functional.reservoir import input_current, reservoir_output, reservoir_rates_step
from ..memory import write_slot
from ..reservoir.model import ReservoirConfig


class CircuitState(NamedTuple):
    """A hidden layer's frozen reservoir's state: ``u``, ``r`` ``(K, M)`` and ``o`` ``(K, n_out)``,
    updated in place."""

    u: Tensor
    r: Tensor
    o: Tensor


class CircuitWiring(NamedTuple):
    """A hidden layer's frozen reservoir's fixed matrices: ``w_in``, ``w_rec`` (dense), ``w_fb``,
    ``w_out`` and the input projection ``proj`` (``None`` without one)."""

    w_in: Tensor
    w_rec: Tensor
    w_fb: Tensor
    w_out: Tensor
    proj: Tensor | None


class StepState(NamedTuple):
    """Every tensor a streaming run changes, each with a leading model dimension K.

    ``params``: ``[W_1, b_1, …, W_L, b_L]`` (the readout last); ``exp_avg``, ``exp_avg_sq``:
    AdamW's moments in the same order (empty for SGD); ``values``, ``kernels``: the working
    memory's streams ``[x, y, z_1, …, z_{L-1}]``, ``(K, N, d)`` and ``(K, N, N)``;
    ``membranes`` ``[u_1, …, u_{L-1}, o]`` and ``traces`` ``[ā_1, …, ā_{L-1}, z̄_{L-1}, 1̄]``,
    each ``(K, 1, d)``: leaky units only (empty for rate units); ``circuits``: each hidden
    layer's reservoir state (modulator ``reservoir`` only; its fixed matrices, a
    :class:`CircuitWiring`, are passed to :func:`streaming_step` beside the state).
    """

    params: list[Tensor]
    exp_avg: list[Tensor]
    exp_avg_sq: list[Tensor]
    values: list[Tensor]
    kernels: list[Tensor]
    membranes: list[Tensor]
    traces: list[Tensor]
    circuits: list[CircuitState] = []


class OptimiserState(Protocol):
    """What the optimiser updates: the parameters and AdamW's moments, in the same order
    (:class:`StepState` and :class:`~biohsic.engine.pair_step.PairState` both are)."""

    params: list[Tensor]
    exp_avg: list[Tensor]
    exp_avg_sq: list[Tensor]


@dataclass(frozen=True)
class OptimizerSettings:
    """The optimiser a compiled step writes out: ``name`` (``adamw`` or ``sgd``), the learning
    rate, the weight decay and AdamW's β₁, β₂ and ε."""

    name: str
    lr: float
    weight_decay: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8


@dataclass(frozen=True)
class StepSettings:
    """The constants of a run's step: the modulator ``kind`` (``exact``, ``paper``,
    ``paper-jan2024``, ``reservoir``), γ and the kernel widths, the memory mode and readout
    update, the neuron model, the optimiser (``adamw`` or ``sgd``) with its hyper-parameters,
    and for ``reservoir`` each hidden layer's :class:`~biohsic.reservoir.ReservoirConfig`."""

    kind: str
    gamma: float
    sigmas: tuple[float, float, float]
    recompute: bool
    readout_window: bool
    leaky: bool
    dt: float
    tau: float
    optimizer: OptimizerSettings
    circuits: tuple[ReservoirConfig, ...] = ()


class StepOutput(NamedTuple):
    """What one step gives back: the readout's ``output`` ``(K, classes)``, each hidden layer's
    ``signals`` ``(K, d_l)`` that its update used (empty before the window is full), its
    forward ``caches``, and (modulator ``reservoir``, a full window) the ``exact`` :math:`g_N`
    of the working memory, which the loop's scores compare the reservoir's signal with
    (empty otherwise)."""

    output: Tensor
    signals: list[Tensor]
    caches: list[HiddenCache]
    exact: list[Tensor]


def adamw_update(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, bias_correction1: Tensor,
                 bias_correction2: Tensor, settings: OptimizerSettings) -> None:
    r"""AdamW (Loshchilov & Hutter), in place, as ``torch.optim.AdamW``:
    :math:`\theta \leftarrow \theta(1 - \eta\lambda)`, :math:`m \leftarrow \beta_1 m + (1-\beta_1) g`,
    :math:`v \leftarrow \beta_2 v + (1-\beta_2) g^2`,
    :math:`\theta \leftarrow \theta - \frac{\eta}{c_1}\, m / (\sqrt{v / c_2} + \epsilon)`
    with the bias corrections :math:`c_i = 1 - \beta_i^t` given as tensors."""
    beta1, beta2 = settings.betas
    param.mul_(1 - settings.lr * settings.weight_decay)
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    denominator = exp_avg_sq.sqrt() / bias_correction2.sqrt() + settings.eps
    param.sub_(settings.lr * exp_avg / (bias_correction1 * denominator))


def sgd_update(param: Tensor, grad: Tensor, settings: OptimizerSettings) -> None:
    r"""Plain SGD with weight decay, in place, as ``torch.optim.SGD`` without momentum:
    :math:`\theta \leftarrow \theta - \eta (g + \lambda\theta)`."""
    param.sub_(settings.lr * (grad + settings.weight_decay * param))


def layer_params(params: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
    """``(W, b)`` of each layer from ``[W_1, b_1, …, W_L, b_L]``, the readout last."""
    return list(zip(params[0::2], params[1::2]))


def forward(state: StepState, settings: StepSettings, x: Tensor) -> tuple[list[HiddenCache], Tensor]:
    """Step 1: the hidden layers' caches and the readout's output for ``x`` ``(K, 1, d_in)``;
    for leaky units one Euler step of every membrane (written into ``state.membranes``)."""
    *hidden, (w_out, b_out) = layer_params(state.params)
    caches, a = [], x
    for index, (weight, bias) in enumerate(hidden):
        if settings.leaky:
            u = leaky_step(state.membranes[index], dense(a, weight, bias), dt=settings.dt, tau=settings.tau)
            z, inv_std = rectify_normalize(u)
            caches.append(HiddenCache(a, u, z, inv_std))
            state.membranes[index].copy_(u)
        else:
            caches.append(hidden_forward(a, weight, bias))
        a = caches[-1].out
    output = dense(a, w_out, b_out)
    if settings.leaky:
        output = leaky_step(state.membranes[-1], output, dt=settings.dt, tau=settings.tau)
        state.membranes[-1].copy_(output)
    return caches, output


def remember(state: StepState, settings: StepSettings, x: Tensor, y: Tensor, zs: list[Tensor], slot: Tensor) -> None:
    """Step 2: the working memory takes the sample (its x, y and every layer's output z, into
    ``slot``; at every time step of a leaky sample's presentation, where writing the same x and
    y again changes nothing); with ``recompute``, the window's layer outputs are re-run through
    the current weights."""
    sigma_x, sigma_y, sigma_z = settings.sigmas
    streams = list(zip(state.values, state.kernels))
    write_slot(*streams[0], slot, x, sigma_x)
    write_slot(*streams[1], slot, y, sigma_y)
    for (values, kernel), z in zip(streams[2:], zs):
        write_slot(values, kernel, slot, z, sigma_z)
    if settings.recompute:
        a = state.values[0]
        for (weight, bias), (values, kernel) in zip(layer_params(state.params)[:-1], streams[2:]):
            a = hidden_forward(a, weight, bias).out
            values.copy_(a)
            kernel.copy_(gaussian_kernel(a, sigma=sigma_z))


def signals(state: StepState, settings: StepSettings, slot: Tensor) -> list[Tensor]:
    """Step 3: each hidden layer's modulatory signal :math:`g_N` ``(K, d_l)`` for the sample in
    ``slot``, from the working memory (``reservoir``: the exact one)."""
    kernel_x, kernel_y = state.kernels[0], state.kernels[1]
    layers = list(zip(state.values[2:], state.kernels[2:]))
    if settings.kind in ("exact", "reservoir"):
        m_row = _modulation_row(kernel_x, kernel_y, slot, gamma=settings.gamma)
        return [_exact_signal_from_row(m_row, kernel.index_select(1, slot).squeeze(1), values, slot,
                                       sigma_z=settings.sigmas[2]) for values, kernel in layers]
    return [_signal_from_kernels(kernel_x, kernel_y, kernel, values, slot, gamma=settings.gamma,
                                 sigma_z=settings.sigmas[2], kind=settings.kind) for values, kernel in layers]


def circuit_signals(state: StepState, settings: StepSettings, wiring: list[CircuitWiring], x: Tensor, y: Tensor,
                    zs: list[Tensor], noise: list[Tensor]) -> list[Tensor]:
    """Step 3 with frozen reservoirs: each hidden layer's reservoir sees (x, y, z_l) ``(K, ·)``
    through its ``wiring`` for T Euler steps (:func:`~biohsic.functional.reservoir.reservoir_rates_step`); its readout
    at the last step, cast to z's dtype, is the layer's signal ``(K, d_l)``. ``noise``: this
    sample's draws, layer by layer, the rate noise ``(T, K, M)`` of a reservoir that has it,
    then its output noise ``(T', K, n_out)`` (T' = T with feedback, else 1), as
    :meth:`biohsic.reservoir.Reservoir.draw_noise` draws them."""
    draws, out = iter(noise), []
    for circuit, wires, config, z in zip(state.circuits, wiring, settings.circuits, zs):
        steps = config.steps_per_sample
        rate_noise = next(draws) if config.rate_noise else None
        output_noise = next(draws) if config.output_noise else None
        w_fb = wires.w_fb if config.feedback_scale != 0 else None
        current = input_current(x, y, z, wires.w_in, wires.proj)
        u, r, o = circuit.u, circuit.r, circuit.o
        for step in range(steps):
            u, r = reservoir_rates_step(u, r, o, current, wires.w_rec, w_fb=w_fb, gain=config.gain, dt=config.dt,
                                        tau=config.tau, nonlinearity=config.nonlinearity,
                                        rate_noise=None if rate_noise is None else rate_noise[step])
            if w_fb is not None or step == steps - 1:
                o = reservoir_output(r, wires.w_out, None if output_noise is None else output_noise[step - steps])
        for held, new in zip(circuit, (u, r, o)):
            held.copy_(new)
        out.append(o.to(z.dtype))
    return out


def local_grads(state: StepState, settings: StepSettings, caches: list[HiddenCache], g: list[Tensor],
                output: Tensor, y: Tensor) -> list[Tensor]:
    """Step 4: every parameter's update direction, in the order of ``state.params`` (at least one
    hidden layer): each hidden
    layer's :math:`J_N^\\top g_N` (leaky units: with the traces of its input), the readout's
    delta rule on the window (``readout_window``) or on the newest sample."""
    grads: list[Tensor] = []
    traces = state.traces if settings.leaky else [None] * (len(caches) + 2)
    for cache, signal, trace in zip(caches, g, traces):
        grads.extend(hidden_local_grad(cache, signal.unsqueeze(1), trace, traces[-1]))
    w_out, b_out = state.params[-2], state.params[-1]
    if settings.readout_window:
        features = state.values[-1]
        grads.extend(cross_entropy_grad(features, dense(features, w_out, b_out), state.values[1]))
    else:
        features = traces[-2] if settings.leaky else caches[-1].out
        grads.extend(cross_entropy_grad(features, output, y.unsqueeze(1), traces[-1]))
    return grads


def optimise(state: OptimiserState, optimizer: OptimizerSettings, grads: list[Tensor],
             bias_corrections1: list[Tensor], bias_corrections2: list[Tensor]) -> None:
    """Step 5: the optimiser's update of every parameter of ``state.params`` (AdamW's moments in
    ``state.exp_avg``, ``state.exp_avg_sq``) with its gradient and, for AdamW, its own bias corrections."""
    for index, (param, grad) in enumerate(zip(state.params, grads)):
        if optimizer.name == "adamw":
            adamw_update(param, grad, state.exp_avg[index], state.exp_avg_sq[index], bias_corrections1[index],
                         bias_corrections2[index], optimizer)
        else:
            sgd_update(param, grad, optimizer)


def streaming_step(state: StepState, settings: StepSettings, x: Tensor, y: Tensor, slot: Tensor,
                   bias_correction1: Tensor, bias_correction2: Tensor, *, learn: bool = True,
                   noise: list[Tensor] | None = None, wiring: list[CircuitWiring] | None = None) -> StepOutput:
    """Advance every tensor of ``state`` by one sample ``x`` ``(K, d_in)`` with one-hot label
    ``y`` ``(K, classes)`` (leaky units: by one time step of its presentation). ``slot``: the
    memory slot of the sample, a 1-element index tensor;
    ``bias_correction1/2``: :math:`1 - \\beta_i^t` of this update. ``learn=False``: forward and
    memory only (the window is not full yet; the reservoirs still run). ``noise``: the
    reservoirs' noise of this sample and ``wiring``: their fixed matrices (:func:`circuit_signals`). Returns the output
    ``(K, classes)`` (logits, or the leaky readout's membrane), each hidden layer's signal
    (empty without ``learn``), caches, and exact signal (see :class:`StepOutput`).
    """
    caches, output = forward(state, settings, x.unsqueeze(1))
    if settings.leaky:
        inputs = [cache.input for cache in caches] + [caches[-1].out, torch.ones_like(output[..., :1])]
        for trace, value in zip(state.traces, inputs):
            trace.copy_(leaky_step(trace, value, dt=settings.dt, tau=settings.tau))
    zs = [cache.out[:, 0] for cache in caches]
    remember(state, settings, x, y, zs, slot)
    circuit = circuit_signals(state, settings, wiring or [], x, y, zs, noise or []) if settings.kind == "reservoir" else []
    if not learn:
        return StepOutput(output[:, 0], [], caches, [])
    exact = signals(state, settings, slot)
    g = circuit or exact
    grads = local_grads(state, settings, caches, g, output, y)
    optimise(state, settings.optimizer, grads, [bias_correction1] * len(grads), [bias_correction2] * len(grads))
    return StepOutput(output[:, 0], g, caches, exact if circuit else [])
