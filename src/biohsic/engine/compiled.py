"""The compiled engine: chunks of :func:`~biohsic.engine.step.streaming_step` as one
``torch.compile``\\d graph (full graph, static shapes).

The graph advances a run by ``steps_per_call`` updates — samples of rate units, time steps
of leaky units (a sample's T time steps are T updates with the same input, in the same
memory slot) — optimiser included: on the CPU as one loop over the updates (``scan``; by
default those of :data:`SCAN_SAMPLES` samples, so a leaky sample's T time steps are always in
one call), on CUDA unrolled and replayed as a CUDA graph. The memory slots and the bias corrections of
the chunk's updates come in as tensors, so one graph serves every position of a run; the
run's tensors are those of the eager reference — the network's parameters, the ``torch.optim``
optimiser's moments and step count, the rule's working memory and leaky state — updated in
place, so a checkpoint is the same whichever engine wrote it and either engine resumes it.

Covered (:func:`compiled_support` says why a run is not): the three-factor rule ``biohsic``
with the ``exact``, ``paper`` and ``paper-jan2024`` modulators, rate or leaky units, stored
or recomputed memory, either readout update, or with frozen reservoirs (modulator
``reservoir``, ``--reservoir-learning frozen``: their state in the step's state, their noise
drawn from each reservoir's generator before the chunk and passed in, the loop's scores fed
after the chunk with what the step returned, as the eager loop feeds them); the two-sample rule ``phsic-stream``
(:class:`PairEngine`, the step of :mod:`biohsic.engine.pair_step`) with either z-kernel and
memory mode; dense hidden layers, AdamW (no amsgrad) or SGD without momentum, K models side
by side. The samples that fill the working memory at the start of a run (no update yet) go
through the same step function uncompiled; the first sample of a ``phsic-stream`` stream (no
pair yet) through the eager rule.
"""
from __future__ import annotations

import os
import shutil
import time
import types
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor
from torch._higher_order_ops.scan import scan
from torch.utils import _pytree as pytree

from ..functional.layers import HiddenCache, prediction_steps
from ..modulators import KernelModulator
from ..network import HiddenLayer, Readout
from ..nonfinite import NonFinite, NonFiniteWatch
from ..rules import Rule, hidden_layer_name
from ..rules.biohsic import BioHSIC
from ..reservoir import Reservoir
from ..reservoir.closed_loop import ReservoirModulator
from ..rules.phsic import PlausiblePHSIC
from .eager import RuleEngine
from .pair_step import PairSettings, PairState, phsic_stream_step
from .step import CircuitState, CircuitWiring, OptimizerSettings, StepOutput, StepSettings, StepState, streaming_step

#: Samples per compiled call on the CPU, whose updates (T per sample for leaky units) the graph
#: runs as one loop (``scan``, compiled once whatever its length): more per call save the
#: call's overhead (guards, wrapper, the state copied back), at no cost in compile time.
SCAN_SAMPLES = 32

#: Updates per compiled call on CUDA, where the graph is unrolled (a loop would wait on the
#: host at every iteration) and replayed as a CUDA graph: more per call lengthen the compile
#: about linearly.
STEPS_PER_CALL = 4


def cache_dir() -> Path:
    """Where compiled graphs are kept between runs: ``$BIOHSIC_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/biohsic`` (``~/.cache/biohsic``), subfolder ``inductor``."""
    home_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    root = os.environ.get("BIOHSIC_CACHE_DIR") or home_cache / "biohsic"
    return Path(root) / "inductor"


def compiler_available() -> bool:
    """True when a C++ compiler (``$CXX``, else g++, c++ or clang++) is on the path: the CPU
    backend of ``torch.compile`` needs one."""
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
    return any(shutil.which(name) for name in names)


def compiled_support(rule: Rule, optimizer: torch.optim.Optimizer) -> str | None:
    """Why the compiled engine cannot run ``rule`` with ``optimizer`` (one phrase), or ``None``
    when it can."""
    if type(rule) is BioHSIC:
        if isinstance(rule.modulator, ReservoirModulator):
            if rule.modulator.learning != "frozen":
                return f"reservoir learning {rule.modulator.learning} has no compiled step (only frozen reservoirs)"
        elif not isinstance(rule.modulator, KernelModulator):
            return (f"modulator {rule.config.modulator} has no compiled step (only the kernel modulators and "
                    f"frozen reservoirs)")
    elif type(rule) is not PlausiblePHSIC:
        return f"rule {rule.name} has no compiled step (only biohsic and phsic-stream)"
    network = rule.network
    if not len(network.hidden) or any(type(layer) is not HiddenLayer for layer in network.hidden):
        return "the compiled step needs dense hidden layers (at least one)"
    if type(network.readout) is not Readout:
        return "the compiled step needs the dense readout"
    if len(optimizer.param_groups) != 1:
        return "the compiled step takes one parameter group"
    group = optimizer.param_groups[0]
    if type(optimizer) is torch.optim.AdamW:
        if group["amsgrad"] or group["maximize"]:
            return "the compiled AdamW has no amsgrad or maximize"
    elif type(optimizer) is torch.optim.SGD:
        if group["momentum"] or group["maximize"]:
            return "the compiled SGD has no momentum or maximize"
    else:
        return f"optimizer {type(optimizer).__name__} has no compiled step (AdamW or SGD)"
    return None


def optimizer_settings(optimizer: torch.optim.Optimizer) -> OptimizerSettings:
    """The optimiser's part of a step's settings: its kind (``adamw`` or ``sgd``) and hyper-parameters."""
    group = optimizer.param_groups[0]
    if type(optimizer) is torch.optim.AdamW:
        return OptimizerSettings("adamw", lr=float(group["lr"]), weight_decay=float(group["weight_decay"]),
                                 betas=tuple(map(float, group["betas"])), eps=float(group["eps"]))
    return OptimizerSettings("sgd", lr=float(group["lr"]), weight_decay=float(group["weight_decay"]))


def step_settings(rule: BioHSIC, optimizer: torch.optim.Optimizer) -> StepSettings:
    """The constants of ``rule``'s step with ``optimizer``."""
    cfg = rule.config
    reservoirs = rule_reservoirs(rule)
    return StepSettings(kind="reservoir" if reservoirs else rule.modulator.kind, gamma=float(cfg.gamma),
                        sigmas=tuple(map(float, cfg.sigmas)), recompute=rule.recompute,
                        readout_window=rule.readout_window, leaky=rule.leaky, dt=float(cfg.dt), tau=float(cfg.tau),
                        circuits=tuple(reservoir.config for reservoir in reservoirs), optimizer=optimizer_settings(optimizer))


def rule_reservoirs(rule: Rule) -> list[Reservoir]:
    """The reservoirs of a rule whose modulator is :class:`~biohsic.reservoir.closed_loop.ReservoirModulator`
    (one per hidden layer), else none."""
    modulator = getattr(rule, "modulator", None)
    return list(modulator.reservoirs) if isinstance(modulator, ReservoirModulator) else []


class CompiledEngine(RuleEngine):
    """Advances a run of :class:`~biohsic.rules.biohsic.BioHSIC` through compiled chunks of its
    explicit step (see the module docstring): ``steps_per_call`` updates per call (default: the
    updates of :data:`SCAN_SAMPLES` samples on the CPU, :data:`STEPS_PER_CALL` on CUDA);
    ``compile=False`` runs the same step uncompiled;
    ``backend``: ``torch.compile``'s backend (``inductor``, generated code; the tests also use
    ``eager``, which captures the graph as ``inductor`` does but runs it op by op)."""

    #: the rule this engine's step is written for (:func:`compiled_engine` chooses by it)
    rule_type: type[Rule] = BioHSIC
    #: whether inductor writes the graph's wrapper in C++ on the CPU (see :func:`compile_chunk`)
    cpp_wrapper = True

    def __init__(self, rule: BioHSIC, optimizer: torch.optim.Optimizer, *, compile: bool = True,
                 steps_per_call: int | None = None, backend: str = "inductor"):
        reason = compiled_support(rule, optimizer)
        if reason is not None:
            raise ValueError(reason)
        if type(rule) is not self.rule_type:
            raise ValueError(f"{type(self).__name__} runs rule {self.rule_type.name}, not {rule.name}")
        self.rule, self.optimizer = rule, optimizer
        self.settings = self._settings()
        self.on_cuda = rule.network.readout.weight.device.type == "cuda"
        default = STEPS_PER_CALL if self.on_cuda else SCAN_SAMPLES * rule.substeps
        self.compile, self.steps_per_call, self.backend = compile, steps_per_call or default, backend
        self.params = list(optimizer.param_groups[0]["params"])
        if [id(p) for p in self.params] != [id(p) for p in rule.network.parameters()]:
            raise ValueError("the compiled step trains every parameter of the network, in its order")
        self.names = [name for name, _ in rule.network.named_parameters()]
        #: each reservoir's fixed matrices, the recurrent one dense (sparse CSR in the module): the graph multiplies by it
        self.wiring = [CircuitWiring(reservoir.w_in, reservoir.w_rec.to_dense(), reservoir.w_fb, reservoir.w_out,
                                     reservoir.proj if reservoir.config.input_projection else None)
                       for reservoir in rule_reservoirs(rule)]
        mark_static_on_cuda(self.wiring, rule.network.readout.weight.device)
        self.graph: Callable[..., Any] | None = None   # the compiled chunk function, built on first use
        #: seconds spent compiling (the first call of the graph)
        self.compile_seconds = 0.0
        self._records: list[tuple[int, Tensor]] = []   # (first update, per-model sums (updates, quantities, K))
        self._sync_updates()

    def _settings(self) -> StepSettings:
        return step_settings(self.rule, self.optimizer)

    # --- the state ------------------------------------------------------------------
    def _sync_updates(self) -> None:
        """Read the optimiser's update count (AdamW's ``step``; one count for all parameters)."""
        if type(self.optimizer) is not torch.optim.AdamW:
            self.updates = 0
            return
        steps = {float(self.optimizer.state[p]["step"]) for p in self.params if self.optimizer.state[p]}
        if len(steps) > 1:
            raise ValueError("the compiled step needs one AdamW step count for all parameters")
        self.updates = int(steps.pop()) if steps else 0

    def _adamw_state(self) -> tuple[list[Tensor], list[Tensor]]:
        """AdamW's moments, created as ``torch.optim.AdamW`` creates them (step 0, zeros) when absent."""
        if type(self.optimizer) is not torch.optim.AdamW:
            return [], []
        fused = bool(self.optimizer.param_groups[0]["fused"] or self.optimizer.param_groups[0]["capturable"])
        for p in self.params:
            state = self.optimizer.state[p]
            if not state:
                state["step"] = (torch.zeros((), dtype=torch.float32, device=p.device) if fused
                                 else torch.tensor(0.0, dtype=torch.float32))
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return ([self.optimizer.state[p]["exp_avg"] for p in self.params],
                [self.optimizer.state[p]["exp_avg_sq"] for p in self.params])

    def _leaky_state(self) -> tuple[list[Tensor], list[Tensor]]:
        """The rule's membranes and traces, at rest (zeros) when it has none yet."""
        rule, network = self.rule, self.rule.network
        if not rule.leaky:
            return [], []
        if not rule.state:
            weight = network.readout.weight
            zeros = [weight.new_zeros(network.n_models, 1, size) for size in network.sizes[1:]]
            inputs = [network.sizes[0], *network.sizes[1:-2], network.sizes[-2], 1]
            rule.state, rule.traces = zeros, [weight.new_zeros(network.n_models, 1, size) for size in inputs]
        return rule.state, rule.traces

    def _own_rule_state(self) -> None:
        """Begin each reservoir's state and give it tensors of its own (a loaded checkpoint's may
        be shared), which the step then updates in place; once per :meth:`train_chunk`, not per call."""
        for reservoir in rule_reservoirs(self.rule):
            reservoir.begin(self.rule.network.n_models)
            reservoir.u, reservoir.r, reservoir.o = (state.clone(memory_format=torch.contiguous_format)
                                                     for state in (reservoir.u, reservoir.r, reservoir.o))

    def _circuits(self) -> list[CircuitState]:
        """Each reservoir's state (begun by :meth:`_own_rule_state`)."""
        return [CircuitState(reservoir.u, reservoir.r, reservoir.o) for reservoir in rule_reservoirs(self.rule)]

    def state(self) -> StepState:
        """The run's tensors, as :func:`~biohsic.engine.step.streaming_step` updates them (on CUDA
        marked static addresses, :func:`mark_static_on_cuda`)."""
        streams = self.rule.memory.streams().values()
        state = StepState([p.detach() for p in self.params], *self._adamw_state(),
                          [s.values for s in streams], [s.kernel for s in streams], *self._leaky_state(),
                          self._circuits())
        mark_static_on_cuda(state, self.params[0].device)
        return state

    def _circuit_noise(self, samples: int) -> list[Tensor]:
        """The reservoirs' noise of the next ``samples`` samples, drawn from each one's generator
        in the eager order, ``(samples, ·)`` each (see :func:`~biohsic.engine.step.circuit_signals`);
        after :meth:`_own_rule_state`."""
        noise = []
        for reservoir in rule_reservoirs(self.rule):
            noise.extend(draw for draw in reservoir.draw_noise(samples) if draw is not None)
        return noise

    def _score(self, x: Tensor, y: Tensor, records: list[Tensor], *, learn: bool) -> None:
        """Hand the reservoir loop's scores (:class:`~biohsic.reservoir.scores.LoopScores`) each
        sample of ``x`` ``(K, S, d_in)`` as the eager loop does: every sample remembered, each
        with a full window (``learn``) counted and recorded, from the step's ``records``
        (:func:`score_record`, ``(S, ·)`` each)."""
        if not records:
            return
        modulator, layers = self.rule.modulator, len(self.rule.network.hidden)
        for u in range(x.shape[1]):
            row = [record[u] for record in records]
            caches = [HiddenCache(*row[4 * layer:4 * layer + 4]) for layer in range(layers)]
            if modulator.scores is not None:
                modulator.scores.remember(x[:, u], y[:, u], caches)
            if learn:
                modulator.full_steps += 1
                if modulator.scores is not None:
                    modulator.scores.record(x[:, u], y[:, u], caches, row[4 * layers:5 * layers], row[5 * layers:])

    def _bias_corrections(self, count: int, like: Tensor) -> tuple[Tensor, Tensor]:
        """:math:`1 - \\beta_i^t` of the next ``count`` updates, ``(count,)`` each, as tensors."""
        beta1, beta2 = self.settings.optimizer.betas
        steps = range(self.updates + 1, self.updates + count + 1)
        return (torch.tensor([1 - beta1**t for t in steps], dtype=like.dtype, device=like.device),
                torch.tensor([1 - beta2**t for t in steps], dtype=like.dtype, device=like.device))

    def _count_updates(self, count: int) -> None:
        self.updates += count
        if type(self.optimizer) is torch.optim.AdamW:
            for p in self.params:
                self.optimizer.state[p]["step"].add_(count)

    # --- the chunk functions ---------------------------------------------------------
    def _update(self, state: StepState, x: Tensor, y: Tensor, position: Tensor, bc1: Tensor, bc2: Tensor,
                noise: list[Tensor], learn: bool) -> tuple[Tensor, ...]:
        """One update — a sample of rate units, a time step of leaky units — with input ``x``
        ``(K, d_in)``, label ``y`` ``(K, classes)``, memory slot ``position`` ``()``, bias corrections
        ``()`` and the reservoirs' noise of the sample. Returns its output ``(K, classes)``, the
        per-model sums of its input, output and signals ``(2 + L, K)`` (for :meth:`first_nonfinite`)
        and, with reservoirs, what the loop's scores need (:func:`score_record`)."""
        step = streaming_step(state, self.settings, x, y, position.view(1), bc1, bc2, learn=learn, noise=noise,
                              wiring=self.wiring)
        record = score_record(step) if self.settings.kind == "reservoir" else []
        return step.output, update_sums(x, step.output, step.signals), *record

    def _chunk(self, state: Any, x: Tensor, y: Tensor, positions: Tensor, bc1: Tensor, bc2: Tensor,
               *noise: Tensor, learn: bool = True) -> tuple[Tensor, ...]:
        """U consecutive updates (:meth:`_update`), written out one after the other: inputs ``x``
        ``(K, U, d_in)``, labels ``y`` ``(K, U, classes)``, positions (memory slots) ``(U,)``, bias
        corrections ``(U, ·)`` and the reservoirs' noise ``(U, ·)`` each. Returns every update's
        output ``(K, U, classes)`` and its other results stacked ``(U, ·)``."""
        results = [self._update(state, x[:, u], y[:, u], positions[u], bc1[u], bc2[u], [draws[u] for draws in noise],
                                learn) for u in range(x.shape[1])]
        output, *rest = (torch.stack(result) for result in zip(*results))
        return output.transpose(0, 1), *rest

    def _scanned_chunk(self, state: Any, x: Tensor, y: Tensor, positions: Tensor, bc1: Tensor, bc2: Tensor,
                       *noise: Tensor) -> tuple[Tensor, ...]:
        """What :meth:`_chunk` does, as one loop (``scan``) over the U updates that a compiled
        graph holds once, not U times. ``scan``'s body takes the state as its carry and may
        not change it in place: it gives :meth:`_update` copies (which inductor fuses into the
        update's own kernels) and returns them; the last is copied into the state."""
        leaves, structure = pytree.tree_flatten(state)

        def one_update(carry: list[Tensor], inputs: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
            copies = [tensor.clone() for tensor in carry]
            x_u, y_u, position, bc1_u, bc2_u, *noise_u = inputs
            results = self._update(pytree.tree_unflatten(copies, structure), x_u, y_u, position, bc1_u, bc2_u,
                                   noise_u, True)
            return copies, [result.clone() for result in results]

        final, (output, *rest) = scan(one_update, leaves,
                                      [x.transpose(0, 1), y.transpose(0, 1), positions, bc1, bc2, *noise])
        for tensor, last in zip(leaves, final):
            tensor.copy_(last)
        return output.transpose(0, 1), *rest

    def _predictions(self, outputs: Tensor) -> Tensor:
        """What each sample's presentation predicts, ``(K, S, classes)``, from the outputs of its
        updates ``(K, S·T, classes)``: rate units, the output; leaky units, the readout averaged
        over the last :func:`~biohsic.functional.layers.prediction_steps` time steps, summed in
        time order as the eager rule sums them."""
        steps = self.rule.substeps
        if steps == 1:
            return outputs
        per_sample = outputs.unflatten(1, (-1, steps))
        averaged = prediction_steps(steps)
        total = per_sample[:, :, steps - averaged].clone()
        for t in range(steps - averaged + 1, steps):
            total = total + per_sample[:, :, t]
        return total / averaged

    def _run(self, x: Tensor, y: Tensor, positions: Tensor, *, learn: bool,
             noise: list[Tensor] | None = None) -> tuple[Tensor, ...]:
        """The updates of :meth:`_chunk`, ``steps_per_call`` per compiled call (the compiled
        graph built on first use; its wall time counts as :attr:`compile_seconds`); the few left
        over at the end, and the updates that only fill the memory, run uncompiled. ``noise``:
        the reservoirs' noise, ``(U, ·)`` each. Returns what :meth:`_chunk` returns, for all U updates."""
        if learn:
            bc1, bc2 = self._bias_corrections(x.shape[1], x)
        else:
            bc1 = bc2 = x.new_ones(x.shape[1])
        parts = []
        with torch.no_grad():
            for first in range(0, x.shape[1], self.steps_per_call):
                part = slice(first, first + self.steps_per_call)
                # fresh contiguous tensors: a view's strides and offset (which vary with K and the
                # chunk) are part of a static graph's guards, and a new one would recompile it
                args = (self.state(), *(t.clone(memory_format=torch.contiguous_format)
                                        for t in (x[:, part], y[:, part], positions[part], bc1[part], bc2[part],
                                                  *(draws[part] for draws in noise or []))))
                if learn and self.compile and args[1].shape[1] == self.steps_per_call:
                    parts.append(self._compiled(*args))
                else:
                    parts.append(self._chunk(*args, learn=learn))
        if learn:
            self._count_updates(x.shape[1])
        outputs, *rest = zip(*parts)
        return torch.cat(outputs, 1), *(torch.cat(pieces) for pieces in rest)

    def _compiled(self, *args: Any) -> tuple[Tensor, ...]:
        """:meth:`_scanned_chunk` (CUDA: :meth:`_chunk`) compiled; the first call compiles it
        (timed as :attr:`compile_seconds`)."""
        if self.graph is not None:
            return self.graph(*args)
        chunk = type(self)._chunk if self.on_cuda else type(self)._scanned_chunk
        self.graph = compile_chunk(types.MethodType(own_code(chunk), self), self.rule.network.readout.weight.device,
                                   self.backend, cpp_wrapper=self.cpp_wrapper)
        start = time.perf_counter()
        with warnings.catch_warnings():   # PyTorch's deprecation notices to itself, while it compiles
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            result = self.graph(*args)
        self.compile_seconds += time.perf_counter() - start
        return result

    # --- the engine protocol ------------------------------------------------------------
    def train_chunk(self, x: Tensor, y: Tensor) -> Tensor:
        """Train on the consecutive samples ``x`` ``(K, S, d_in)`` with one-hot labels ``y``
        ``(K, S, classes)``; return the logits (leaky units: the prediction) each met, ``(K, S, classes)``.

        Each sample is T updates (T time steps for leaky units, else 1) in one memory slot.
        The samples that fill the working memory at the start of a run (no update yet, as
        in the eager rule) run uncompiled."""
        memory, steps = self.rule.memory, self.rule.substeps
        self._own_rule_state()
        filling = min(max(memory.capacity - 1 - memory.count, 0), x.shape[1])
        predictions = []
        for part, learn in ((slice(0, filling), False), (slice(filling, x.shape[1]), True)):
            samples = x[:, part].shape[1]
            if not samples:
                continue
            slots = torch.tensor([(memory.count + i) % memory.capacity for i in range(samples)], device=x.device)
            outputs, checks, *records = self._run(x[:, part].repeat_interleave(steps, 1),
                                                  y[:, part].repeat_interleave(steps, 1),
                                                  slots.repeat_interleave(steps), learn=learn,
                                                  noise=self._circuit_noise(samples))
            memory.count += samples
            self._records.append((part.start * steps, checks))
            self._score(x[:, part], y[:, part], records, learn=learn)
            predictions.append(self._predictions(outputs))
        return torch.cat(predictions, 1)

    def first_nonfinite(self) -> NonFinite | None:
        """The first non-finite input, logits or signal of the steps since the last call, or
        parameter at the end of them (see :mod:`biohsic.nonfinite`); ``None`` when all stayed finite.
        One host sync; only when something is non-finite are the records replayed into a
        :class:`~biohsic.nonfinite.NonFiniteWatch`, which names the first."""
        records, self._records = self._records, []
        sums = [checks.sum() for _, checks in records] + [p.sum() for p in self.params]
        if bool(torch.isfinite(torch.stack(sums)).all()):
            return None
        watch, steps = NonFiniteWatch(), self.rule.substeps
        for first, checks in records:
            for index, row in enumerate(checks, start=first):
                watch.start_step(index // steps, index % steps)
                if index % steps == 0:
                    watch.record("input", "input", row[0])
                watch.record("logits", "output", row[1])
                for layer, signal in enumerate(row[2:]):
                    watch.record("signal", hidden_layer_name(layer), signal)
        for name, param in zip(self.names, self.params):
            watch.record("parameter", name, param)
        return watch.first()

    def after_load(self) -> None:
        self._records = []
        self._sync_updates()


class PairEngine(CompiledEngine):
    """Advances a run of :class:`~biohsic.rules.phsic.PlausiblePHSIC` (``phsic-stream``) through
    compiled chunks of :func:`~biohsic.engine.pair_step.phsic_stream_step`, one update per
    sample. The first sample of a stream (of a run, and after each :meth:`reset`) has no
    previous sample: it runs through the eager rule and ``torch.optim`` optimiser, which update
    the readout only (the rule leaves the hidden layers' ``.grad`` ``None`` and the optimiser
    skips them, so their AdamW step count trails the readout's; the step takes the bias
    corrections of both)."""

    rule: PlausiblePHSIC
    rule_type = PlausiblePHSIC
    #: the C++ wrapper of this step's loop crashes (a segmentation fault in PyTorch 2.13's
    #: generated code, K = 1 and 3, float32 and float64): the Python wrapper runs it
    cpp_wrapper = False

    def _settings(self) -> PairSettings:
        rule = self.rule
        return PairSettings(kernel=rule.kind, sigma=float(rule.sigma), gamma=float(rule.config.gamma),
                            recompute=rule.recompute, optimizer=optimizer_settings(self.optimizer))

    def _sync_updates(self) -> None:
        """Read the AdamW step counts of the hidden layers and of the readout (one each) into
        :attr:`steps`; :attr:`updates` is the readout's."""
        self.steps = [0, 0]
        if type(self.optimizer) is torch.optim.AdamW:
            for group, params in enumerate((self.params[:-2], self.params[-2:])):
                steps = {float(self.optimizer.state[p]["step"]) for p in params if self.optimizer.state[p]}
                if len(steps) > 1:
                    raise ValueError("the compiled phsic-stream step needs one AdamW step count for the hidden "
                                     "layers and one for the readout")
                self.steps[group] = int(steps.pop()) if steps else 0
        self.updates = self.steps[1]

    def _bias_corrections(self, count: int, like: Tensor) -> tuple[Tensor, Tensor]:
        """:math:`1 - \\beta_i^t` of the next ``count`` updates, ``(count, 2)`` each: the hidden layers'
        and the readout's."""
        self._sync_updates()
        def corrections(beta: float) -> Tensor:
            return torch.tensor([[1 - beta**(s + t) for s in self.steps] for t in range(1, count + 1)],
                                dtype=like.dtype, device=like.device)

        return corrections(self.settings.optimizer.betas[0]), corrections(self.settings.optimizer.betas[1])

    def state(self) -> PairState:
        """The run's tensors, as :func:`~biohsic.engine.pair_step.phsic_stream_step` updates them."""
        rule = self.rule
        previous_x, previous_y, previous = rule.previous
        state = PairState([p.detach() for p in self.params], *self._adamw_state(), previous_x, previous_y, previous,
                          rule.mean_y, rule.mean_z)
        mark_static_on_cuda(state, self.params[0].device)
        return state

    def _own_rule_state(self) -> None:
        """Give the rule's previous sample and running means contiguous tensors of their own
        (the eager rule keeps views of its input), which the step then updates in place."""
        rule = self.rule

        def own(tensor: Tensor) -> Tensor:
            return tensor.clone(memory_format=torch.contiguous_format)

        previous_x, previous_y, previous = rule.previous
        rule.previous = (own(previous_x), own(previous_y), [HiddenCache(*map(own, cache)) for cache in previous])
        rule.mean_y, rule.mean_z = own(rule.mean_y), [own(mean) for mean in rule.mean_z]

    def _update(self, state: PairState, x: Tensor, y: Tensor, position: Tensor, bc1: Tensor, bc2: Tensor,
                noise: list[Tensor], learn: bool) -> tuple[Tensor, Tensor]:
        """One sample with a previous one: input ``x`` ``(K, d_in)``, label ``y`` ``(K, classes)``,
        the running means' span :math:`\\min(t, T)` ``position`` ``()`` (a memory slot for
        ``biohsic``) and bias corrections ``(2,)`` each (no noise; always ``learn``). Returns
        the logits ``(K, classes)`` and the per-model sums of the input, logits and signals
        ``(2 + L, K)`` (for :meth:`first_nonfinite`)."""
        out, g = phsic_stream_step(state, self.settings, x, y, position, bc1, bc2)
        return out, update_sums(x, out, g)

    def _first_sample(self, x: Tensor, y: Tensor) -> Tensor:
        """The first sample ``(K, 1, ·)`` of a stream through the eager rule and optimiser; its logits."""
        logits = self.rule.predict_and_write_grads(x, y)
        self.optimizer.step()
        self._records.append((0, torch.stack([x[:, 0].sum(-1), logits[:, 0].sum(-1)])[None]))
        return logits

    def train_chunk(self, x: Tensor, y: Tensor) -> Tensor:
        """Train on the consecutive samples ``x`` ``(K, S, d_in)`` with one-hot labels ``y``
        ``(K, S, classes)``; return the logits each met before its update, ``(K, S, classes)``."""
        first = int(self.rule.previous is None)
        logits = [self._first_sample(x[:, :1], y[:, :1])] if first else []
        pairs = x.shape[1] - first
        if pairs:
            self._own_rule_state()
            spans = torch.tensor([min(self.rule.pairs + t, self.rule.horizon) for t in range(1, pairs + 1)],
                                 dtype=x.dtype, device=x.device)
            outputs, checks = self._run(x[:, first:], y[:, first:], spans, learn=True)
            self.rule.pairs += pairs
            self._records.append((first, checks))
            logits.append(outputs)
        return torch.cat(logits, 1)


def compiled_engine(rule: Rule, optimizer: torch.optim.Optimizer, **options: Any) -> CompiledEngine:
    """The compiled engine of ``rule`` (:class:`CompiledEngine` for ``biohsic``,
    :class:`PairEngine` for ``phsic-stream``); ``options`` as :class:`CompiledEngine` takes them."""
    engine = next((kind for kind in (CompiledEngine, PairEngine) if type(rule) is kind.rule_type), CompiledEngine)
    return engine(rule, optimizer, **options)


def score_record(step: StepOutput) -> list[Tensor]:
    """What the reservoir loop's scores need of one step: each hidden layer's cache (its four
    tensors), then the signals, then the exact signals (zeros before the window is full)."""
    zeros = [torch.zeros_like(cache.out[:, 0]) for cache in step.caches]
    return [*(tensor for cache in step.caches for tensor in cache), *(step.signals or zeros), *(step.exact or zeros)]


def update_sums(x: Tensor, output: Tensor, signals: list[Tensor]) -> Tensor:
    """The per-model sums ``(2 + L, K)`` of one update's input ``(K, d_in)``, output ``(K, classes)``
    and each hidden layer's signal ``(K, ...)``: one number per model and quantity, not finite
    when one of that quantity's entries is not."""
    return torch.stack([x.sum(-1), output.sum(-1), *(signal.flatten(1).sum(-1) for signal in signals)])


def mark_static_on_cuda(state: Any, device: torch.device) -> None:
    """On a CUDA ``device``, mark every tensor of ``state`` (nested tuples and lists) a static
    address: CUDA graphs replay only graphs whose mutated inputs stay where they were recorded
    (others run without CUDA graphs). On the CPU nothing (no walk over the state per call)."""
    if device.type != "cuda":
        return
    for tensor in torch.utils._pytree.tree_leaves(state):
        if isinstance(tensor, Tensor) and tensor.device.type == "cuda":
            torch._dynamo.mark_static_address(tensor)


def own_code(function: Callable[..., Any]) -> Callable[..., Any]:
    """A copy of ``function`` with a code object of its own. ``torch.compile`` keeps its graphs
    per code object: engines of different settings sharing one would recompile each other's
    graph at every switch, and past the recompile limit silently run uncompiled."""
    copy = types.FunctionType(function.__code__.replace(), function.__globals__, function.__name__,
                              function.__defaults__, function.__closure__)
    copy.__kwdefaults__ = function.__kwdefaults__
    return copy


def compile_chunk(function: Callable[..., Any], device: torch.device, backend: str = "inductor", *,
                  cpp_wrapper: bool = True) -> Callable[..., Any]:
    """``torch.compile`` of a chunk function: one full graph, static shapes. On CUDA with CUDA
    graphs (``mode="reduce-overhead"``); on the CPU (``cpp_wrapper``) with inductor's C++ wrapper, so that the
    loop of :meth:`CompiledEngine._scanned_chunk` runs in C++ (the Python wrapper costs a
    call per kernel per update: 1,080 against 354 leaky samples/s, K = 1, one measurement).
    Graphs are cached on disk in :func:`cache_dir` (unless ``$TORCHINDUCTOR_CACHE_DIR`` is set already)."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir()))
    if backend != "inductor":
        return torch.compile(function, fullgraph=True, dynamic=False, backend=backend)
    if device.type == "cuda":
        return torch.compile(function, fullgraph=True, dynamic=False, mode="reduce-overhead")
    return torch.compile(function, fullgraph=True, dynamic=False, options={"cpp_wrapper": cpp_wrapper})
