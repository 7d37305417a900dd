"""The training loop: samples (or minibatches) in a seeded order, a rule that writes
``.grad``, a ``torch.optim`` optimiser, evaluation after every epoch, and a run folder.

K models (seeds ``seed, seed+1, …``) train side by side as one batched computation: each
has its own initialisation and its own sample order.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from .architecture import parameter_count, plan_architecture
from .config import DTYPES, TrainConfig, require_memory, saved_default
from .data import Dataset, load_task, split_validation
from .data.augment import Augmentation, crop_and_flip, draw_augmentation
from .engine import Engine, make_engine
from .errors import CheckpointError, DataError, DivergenceError, require
from .functional.hsic import hsic
from .functional.kernels import gaussian_kernel
from .network import Network
from .nonfinite import NonFinite
from .plots import plot_curves
from .presets import config_sources
from .rules import RULES, Rule, build_rule, check_config
from .runs import (CONFIG, CONFIG_SOURCES, CURVES, METRICS, SUMMARY, RunFolderLock, fault_point, load_checkpoint, read_json,
                   save_checkpoint, write_json, write_jsonl)
from .seeding import seeded_generator

#: How many evaluation windows the per-layer HSIC is averaged over.
EVAL_WINDOWS = 32
#: Steps (updates) per chunk handed to the engine; the engine reports the first non-finite
#: quantity of a chunk once, at its end (see :mod:`biohsic.nonfinite`).
CHUNK_STEPS = 128
#: Without ``checkpoint_every``, a checkpoint is also written inside an epoch once this many
#: seconds of training have passed since the last one.
CHECKPOINT_SECONDS = 600.0


def sample_order(seed: int, epoch: int, n: int, device: torch.device) -> Tensor:
    """The order in which one model sees the training set in one epoch (seeded by both)."""
    gen = seeded_generator(seed, 7919 * int(epoch) + 17)
    return torch.randperm(n, generator=gen).to(device)


def evaluation_windows(n_test: int, window: int, count: int = EVAL_WINDOWS) -> Tensor:
    """Fixed ``(count, window)`` test-sample indices on which each layer's HSIC is measured."""
    gen = torch.Generator().manual_seed(20240117)
    size = min(window, n_test)
    return torch.stack([torch.randperm(n_test, generator=gen)[:size] for _ in range(count)])


def make_optimizer(parameters: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    r"""AdamW (as the paper; ``config.optimizer == "adamw"``) or plain SGD (``"sgd"``:
    :math:`w \leftarrow w - \eta\,(\nabla + \lambda w)`, no momentum) with the run's learning
    rate and weight decay.

    ``fused``: one kernel per parameter instead of about ten passes. With one update per
    sample and K models, the optimiser step is most of a step's cost (11.5 → 6.8 ms per
    step at K = 30, 784-128-64-10).
    """
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay, fused=True)


@torch.no_grad()
def evaluate(network: Network, x: Tensor, labels: Tensor, batch: int = 8192,
             predict: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Accuracy and mean cross-entropy of every model on ``(x, labels)``: two ``(K,)`` tensors.
    ``predict`` maps inputs to logits (default: the network's rate forward pass)."""
    predict = predict or network
    correct = torch.zeros(network.n_models, device=x.device)
    loss = torch.zeros(network.n_models, device=x.device, dtype=torch.float64)
    for start in range(0, len(x), batch):
        logits = predict(x[start:start + batch])
        target = labels[start:start + batch].expand(network.n_models, -1)
        correct += (logits.argmax(-1) == target).sum(-1)
        loss += F.cross_entropy(logits.transpose(1, 2), target, reduction="none").sum(-1).double()
    return correct / len(x), loss / len(x)


@torch.no_grad()
def hsic_probe(network: Network, x: Tensor, y: Tensor, windows: Tensor,
               sigmas: tuple[float, float, float]) -> tuple[Tensor, Tensor]:
    """Each hidden layer's HSIC(X, Z) and HSIC(Y, Z), averaged over fixed windows: ``(K, L-1)`` each."""
    xw, yw = x[windows], y[windows]                       # (W, N, d)
    kx, ky = gaussian_kernel(xw, sigma=sigmas[0]), gaussian_kernel(yw, sigma=sigmas[1])
    w, n = windows.shape
    hx, hy = [], []
    for z in network.features(xw.reshape(w * n, -1)):     # (K, W·N, d_l)
        kz = gaussian_kernel(z.reshape(network.n_models, w, n, -1), sigma=sigmas[2])
        hx.append(hsic(kx, kz).mean(-1))
        hy.append(hsic(ky, kz).mean(-1))
    empty = torch.zeros(network.n_models, 0, device=x.device)
    return (torch.stack(hx, -1), torch.stack(hy, -1)) if hx else (empty, empty)


def load_dataset(config: TrainConfig, *, download: bool = False) -> Dataset:
    """The data of a run: the task's train and test sets, with ``config.val_fraction`` of the
    training set carved out as the validation set (seeded by ``config.data_seed``), and the
    training set cut to its first ``config.train_samples`` samples when that is set."""
    task = load_task(config.task, data_dir=config.data_dir, data_seed=config.data_seed, download=download)
    data = split_validation(task, config.val_fraction, config.data_seed)
    if config.train_samples is not None:
        data = dataclasses.replace(data, x_train=data.x_train[:config.train_samples],
                                   y_train=data.y_train[:config.train_samples])
    return data


def _progress(total: int, description: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=description, unit="sample", leave=False, dynamic_ncols=True, mininterval=0.5)


def layer_widths(config: TrainConfig, data: Dataset) -> tuple[list[int], int]:
    """The size of each hidden layer's z and the number of parameters of one model, for the
    network of ``config`` (``--arch`` or the MLP of ``--hidden``) on ``data``; a one-line
    :class:`~biohsic.errors.ConfigError` when the architecture does not fit the inputs."""
    if config.arch is not None:
        planned = plan_architecture(config.arch, data.input_shape, data.n_classes)
        return [layer.width for layer in planned[:-1]], parameter_count(planned)
    sizes = [data.n_features, *config.hidden, data.n_classes]
    return list(config.hidden), sum((n_in + 1) * n_out for n_in, n_out in zip(sizes, sizes[1:]))


def build_network(config: TrainConfig, data: Dataset, seeds: list[int], dtype: torch.dtype) -> Network:
    """The network of ``config`` for ``data``: the ``--arch`` network on its images, or the MLP of ``--hidden``."""
    if config.arch is not None:
        return Network((data.n_features, data.n_classes), seeds, dtype=dtype, architecture=config.arch,
                       input_shape=data.input_shape)
    return Network([data.n_features, *config.hidden, data.n_classes], seeds, dtype=dtype)


def memory_needed(config: TrainConfig, data: Dataset) -> int:
    """Bytes of the run's large allocations, roughly: the parameters with their gradients and
    AdamW's two moments, the working memory of a modulated rule (K·(2 + L) kernel matrices
    N×N and the remembered samples) and the HSIC probe (``EVAL_WINDOWS`` windows of N test
    samples, their kernels and every model's layer outputs)."""
    widths, parameters = layer_widths(config, data)
    k, n, layers = config.seeds, config.window, len(widths)
    elements = 4 * k * parameters
    if RULES[config.rule].modulated:
        elements += k * (n * (data.n_features + data.n_classes + sum(widths)) + (2 + layers) * n * n)
    probe = min(n, len(data.x_test))
    elements += EVAL_WINDOWS * probe * (data.n_features + data.n_classes + k * sum(widths) + (2 + 3 * k) * probe)
    return elements * DTYPES[config.dtype].itemsize


def evaluation_batch(network: Network, limit: int = 8192, budget: int = 2**25) -> int:
    """Samples per forward pass when scoring a data set: at most ``limit``, and few enough that
    the K models' hidden activities (drive, rectified and normalised maps) stay within about
    ``budget`` elements."""
    return max(1, min(limit, budget // (3 * network.n_models * max(1, sum(network.sizes[1:-1])))))


def check_run_fits(config: TrainConfig, data: Dataset) -> None:
    """Raise a one-line error unless the resolved ``config`` can run on ``data``: the training
    and test sets hold samples, every input (validation included) is finite, the window and a minibatch rule's batch fit in the
    training set, and the run fits in the device's free memory."""
    n_train, n_test = len(data.x_train), len(data.x_test)
    if not n_train or not n_test:
        raise DataError(f"the {data.name} data hold {n_train} training and {n_test} test samples; a run needs "
                        "both, replace the files with a complete set")
    for split, x in {"training": data.x_train, "validation": data.x_val, "test": data.x_test}.items():
        if x is not None and not torch.isfinite(x).all():
            raise DataError(f"the {data.name} {split} inputs hold non-finite values; replace or clean the data")
    require(not config.augment or len(data.input_shape) == 3,
            f"--augment crops and flips images, but the {data.name} inputs are not images; use --no-augment")
    require(config.window <= n_train, f"--window {config.window} is larger than the {data.name} training set "
            f"({n_train} samples); choose at most {n_train}")
    if not RULES[config.rule].streaming:
        require(config.batch_size <= n_train, f"--batch-size {config.batch_size} is larger than the {data.name} "
                f"training set ({n_train} samples), so an epoch would have no step; choose at most {n_train}")
    require_memory(memory_needed(config, data), config.device,
                   f"this run (--window {config.window}, --seeds {config.seeds}, --{config.network_label()})",
                   "lower --window, --seeds, --hidden or the channels of --arch")


@dataclass
class EpochTally:
    """The online scores of the epoch in progress: each step's summed loss per model
    (``losses`` ``(K, steps)``, float64), each model's correct predictions (``correct``), and
    the logits of the steps since the last scored block (``pending`` ``(K, P·B, classes)``).

    Logits are scored in blocks of :data:`CHUNK_STEPS` steps counted from the epoch's start,
    whatever the chunks the engine trained them in: the same block of logits gives the same
    losses to the last bit, so where the checkpoints fall changes no number.
    """

    losses: Tensor
    correct: Tensor
    pending: Tensor

    @classmethod
    def zeros(cls, n_models: int, steps: int, classes: int, dtype: torch.dtype, device: torch.device) -> "EpochTally":
        return cls(torch.zeros(n_models, steps, dtype=torch.float64, device=device),
                   torch.zeros(n_models, dtype=torch.long, device=device),
                   torch.zeros(n_models, 0, classes, dtype=dtype, device=device))

    def score(self, first: int, labels: Tensor, batch: int) -> None:
        """Score the pending logits — those of the steps from ``first`` on, ``batch`` samples
        each — against their labels ``(K, P·batch)``."""
        k, samples, _ = self.pending.shape
        losses = F.cross_entropy(self.pending.transpose(1, 2), labels, reduction="none")
        self.losses[:, first:first + samples // batch] = losses.view(k, -1, batch).sum(-1)
        self.correct += (self.pending.argmax(-1) == labels).sum(-1)
        self.pending = self.pending[:, :0]

    def state_dict(self) -> dict[str, Tensor]:
        return {"losses": self.losses, "correct": self.correct, "pending": self.pending}

    @classmethod
    def from_state(cls, state: dict[str, Tensor], device: torch.device) -> "EpochTally":
        return cls(state["losses"].to(device), state["correct"].to(device), state["pending"].to(device))


class Trainer:
    """One training run of ``config.seeds`` models on one dataset.

    ``dataset``: the task's data, when the caller has loaded it already; its validation set
    is carved here unless it has one (:func:`load_dataset`). ``sources``: where each setting
    came from (:func:`biohsic.presets.layered_config`), written to ``config_sources.json``;
    by default, worked out from ``config`` (:func:`biohsic.presets.config_sources`).

    With a ``run_dir``, the run writes its folder (see :mod:`biohsic.runs`) and a checkpoint
    at the end of every epoch, and inside an epoch every ``checkpoint_every`` steps (default:
    once :data:`CHECKPOINT_SECONDS` have passed since the last one). :meth:`resume` continues
    from the newest intact checkpoint, exactly: the run ends with the same numbers as one
    that was never interrupted.

    >>> trainer = Trainer(TrainConfig(task="xor", epochs=2))          # doctest: +SKIP
    >>> summary = trainer.run()                                       # doctest: +SKIP
    """

    def __init__(self, config: TrainConfig, *, run_dir: str | Path | None = None,
                 dataset: Dataset | None = None, progress: bool = False, download: bool = False,
                 threads: int | None = None, checkpoint_every: int | None = None,
                 sources: dict[str, str] | None = None):
        self.sources = sources if sources is not None else config_sources(config)
        self.config = config.resolved()
        cfg = self.config
        check_config(cfg)
        require(threads is None or threads >= 1, f"--threads must be at least 1, got {threads}")
        require(checkpoint_every is None or checkpoint_every >= 1,
                f"--checkpoint-every must be at least 1 step, got {checkpoint_every}")
        self.device = torch.device(cfg.device)
        self.dtype = DTYPES[cfg.dtype]
        if dataset is None:
            self.data = load_dataset(cfg, download=download)
        else:
            self.data = dataset if dataset.has_validation else split_validation(dataset, cfg.val_fraction,
                                                                                 cfg.data_seed)
        check_run_fits(cfg, self.data)
        self.x_train, self.y_train = self._tensors(self.data.x_train, self.data.y_train)
        self.x_val, self.y_val = self._tensors(self.data.x_val, self.data.y_val)
        self.x_test, self.y_test = self._tensors(self.data.x_test, self.data.y_test)
        self.onehot_train = F.one_hot(self.y_train, self.data.n_classes).to(self.dtype)
        self.onehot_test = F.one_hot(self.y_test, self.data.n_classes).to(self.dtype)
        self.seeds = [cfg.seed + k for k in range(cfg.seeds)]
        self.network = build_network(cfg, self.data, self.seeds, self.dtype).to(self.device)
        self.eval_batch = evaluation_batch(self.network)
        self.rule: Rule = build_rule(self.network, cfg)
        self.optimizer = make_optimizer(self.rule.trainable_parameters(), cfg)
        updates = cfg.epochs * self.steps_per_epoch * self.rule.substeps
        self.engine: Engine = make_engine(self.rule, self.optimizer, cfg.engine, updates)
        self.windows = evaluation_windows(len(self.x_test), cfg.window).to(self.device)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        # One sample per update is many tiny tensor operations: extra threads only add
        # synchronisation (2.1× slower wall time with 2 threads on 2 cores, digits).
        self.threads = threads if threads is not None else (1 if self.rule.streaming else None)
        self.progress = progress
        self.checkpoint_every = checkpoint_every
        self.history: list[dict[str, Any]] = []
        self.epoch = 0                     # epochs completed
        self.step = 0                      # steps completed in the epoch in progress
        self.tally: EpochTally | None = None
        self.train_seconds = 0.0
        self.samples_seen = 0
        self.checkpoint: dict[str, int] | None = None   # the position of the newest checkpoint
        self.divergence: dict[str, Any] | None = None
        self._last_save = time.monotonic()

    @property
    def steps_per_epoch(self) -> int:
        return len(self.x_train) // self.rule.batch_size

    def predict(self, x: Tensor) -> Tensor:
        """The network's logits: the rate forward pass, or the leaky network simulated in time."""
        cfg = self.config
        if cfg.neuron == "leaky":
            return self.network.simulate(x, steps=cfg.steps_per_sample, dt=cfg.dt, tau=cfg.tau)
        return self.network(x)

    def _tensors(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return x.to(self.device, self.dtype), y.to(self.device, torch.long)

    # --- one epoch -------------------------------------------------------------------
    def _chunk_end(self, first: int) -> int:
        """Where the chunk starting at step ``first`` ends: at the end of its block of
        CHUNK_STEPS steps (see :class:`EpochTally`), at the epoch's end, or at the next
        multiple of ``checkpoint_every``."""
        last = min((first // CHUNK_STEPS + 1) * CHUNK_STEPS, self.steps_per_epoch)
        if self.checkpoint_every:
            last = min(last, (first // self.checkpoint_every + 1) * self.checkpoint_every)
        return last

    def _checkpoint_due(self) -> bool:
        if self.run_dir is None:
            return False
        if self.checkpoint_every:
            return self.step % self.checkpoint_every == 0
        return time.monotonic() - self._last_save >= CHECKPOINT_SECONDS

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training set (from step :attr:`step` when resumed inside it);
        returns the online loss and accuracy (each sample scored once, by the weights it met,
        before its update)."""
        n, k = len(self.x_train), self.network.n_models
        batch, steps = self.rule.batch_size, self.steps_per_epoch
        order = torch.stack([sample_order(s, epoch, n, self.device) for s in self.seeds])[:, :steps * batch]
        augmentation = draw_augmentation(self.seeds, epoch, steps * batch) if self.config.augment else None
        if self.tally is None:
            self.tally = EpochTally.zeros(k, steps, self.data.n_classes, self.dtype, self.device)
        tally = self.tally
        bar = _progress(steps * batch, f"epoch {epoch + 1}/{self.config.epochs}", self.progress)
        if bar is not None:
            bar.update(self.step * batch)
        while self.step < steps:
            first, last = self.step, self._chunk_end(self.step)
            start = time.perf_counter()
            idx = order[:, first * batch:last * batch]
            x = self.x_train[idx]
            if augmentation is not None:
                x = crop_and_flip(x, self.data.input_shape, Augmentation(*(draw[:, first * batch:last * batch]
                                                                           for draw in augmentation)))
            logits = self.engine.train_chunk(x, self.onehot_train[idx])
            tally.pending = torch.cat([tally.pending, logits], 1)
            if last % CHUNK_STEPS == 0 or last == steps:
                scored = last - tally.pending.shape[1] // batch
                tally.score(scored, self.y_train[order[:, scored * batch:last * batch]], batch)
            problem = self.engine.first_nonfinite()
            self.train_seconds += time.perf_counter() - start
            if problem is not None:
                if bar is not None:
                    bar.close()
                raise self._diverged(problem, epoch, first)
            self.samples_seen += (last - first) * batch * k
            self.step = last
            if bar is not None:
                bar.update(last * batch - bar.n)
            if self.step < steps and self._checkpoint_due():
                self.save_checkpoint()
            fault_point("chunk")
        if bar is not None:
            bar.close()
        count = steps * batch
        return {"online_loss": (tally.losses.sum(-1) / count).tolist(),
                "online_accuracy": (tally.correct / count).tolist()}

    def _diverged(self, problem: NonFinite, epoch: int, first: int) -> DivergenceError:
        """Record where the run diverged (for ``summary.json``) and the error that says so."""
        cfg, substeps = self.config, self.rule.substeps
        step = first + problem.step + 1
        seeds = [self.seeds[m] for m in problem.models]
        self.divergence = {"epoch": epoch + 1, "step": step, "time_step": problem.substep + 1 if substeps > 1 else None,
                           "quantity": problem.quantity, "where": problem.where, "seeds": seeds}
        what = {"input": "the training input", "logits": "the network's output (logits)",
                "signal": f"the learning signal of {problem.where}",
                "parameter": f"parameter {problem.where} (after its update)"}[problem.quantity]
        when = f"step {step} of {self.steps_per_epoch}"
        if substeps > 1:
            when += f", time step {problem.substep + 1} of {substeps}"
        seed_text = f"seed{'s' if len(seeds) > 1 else ''} {','.join(map(str, seeds))}"
        if self.checkpoint is not None:
            kept = (f"the last good checkpoint (epoch {self.checkpoint['epoch']}, step {self.checkpoint['step']}) "
                    f"is kept in {self.run_dir}")
        elif epoch:
            kept = f"metrics up to epoch {epoch} are kept"
        else:
            kept = "no epoch had finished"
        return DivergenceError(f"training diverged in epoch {epoch + 1} at {when}: {what} became non-finite first "
                               f"({seed_text}); {divergence_advice(problem, cfg)}; {kept}")

    def evaluate_epoch(self, epoch: int, online: dict[str, list[float]]) -> dict[str, Any]:
        """The epoch's metrics row: accuracy and loss on the test, training and (when there is
        one) validation sets, per model and averaged, and each layer's HSIC."""
        cfg = self.config
        splits = {"test": (self.x_test, self.y_test), "train": (self.x_train, self.y_train)}
        if len(self.x_val):
            splits["val"] = (self.x_val, self.y_val)
        per_model: dict[str, list[float]] = {}
        for split, (x, labels) in splits.items():
            accuracy, loss = evaluate(self.network, x, labels, batch=self.eval_batch, predict=self.predict)
            per_model.update({f"{split}_accuracy": accuracy.tolist(), f"{split}_loss": loss.tolist()})
        per_model.update(online)
        hx, hy = hsic_probe(self.network, self.x_test, self.onehot_test, self.windows, cfg.sigmas)
        row: dict[str, Any] = {name: sum(values) / len(values) for name, values in per_model.items()}
        row.update(self.engine.epoch_metrics())
        row.update(epoch=epoch + 1, hsic_xz=hx.mean(0).tolist(), hsic_yz=hy.mean(0).tolist(),
                   per_model=per_model, wall_seconds=self.train_seconds,
                   samples_per_second=self.samples_seen / max(self.train_seconds, 1e-9))
        return row

    # --- run folder ------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Write the run's exact position (epoch, step, every state, the epoch's tally so far)."""
        save_checkpoint(self.run_dir, {
            "epoch": self.epoch, "step": self.step, "network": self.network.state_dict(),
            **self.engine.state_dict(), "train_seconds": self.train_seconds, "samples_seen": self.samples_seen,
            "tally": self.tally.state_dict() if self.step else None,
        })
        self.checkpoint = {"epoch": self.epoch, "step": self.step}
        self._last_save = time.monotonic()

    def resume(self) -> bool:
        """Continue the run saved in the run folder from its newest intact checkpoint; False
        when it has none yet (the run then starts from the beginning). Refuses a folder whose
        run has other settings, naming them."""
        mismatch = settings_mismatch(self.config, self.run_dir)
        if mismatch:
            raise CheckpointError(f"{self.run_dir} holds a run with other settings ({mismatch}); resume with "
                                  "the same options, or start another run with --overwrite or another --out")
        state = load_checkpoint(self.run_dir, self.device)
        if state is None:
            return False
        try:
            self.network.load_state_dict(state["network"])
            self.engine.load_state_dict(state)
            self.epoch, self.step = int(state["epoch"]), int(state["step"])
            self.train_seconds, self.samples_seen = float(state["train_seconds"]), int(state["samples_seen"])
            self.tally = EpochTally.from_state(state["tally"], self.device) if self.step else None
        except (KeyError, RuntimeError, ValueError, TypeError) as err:
            raise CheckpointError(f"the checkpoint in {self.run_dir} does not fit this run ({type(err).__name__}); "
                                  "start a new run with --overwrite or another --out") from None
        self.checkpoint = {"epoch": self.epoch, "step": self.step}
        metrics = self.run_dir / METRICS
        rows = metrics.read_text().splitlines() if metrics.exists() else []
        self.history = [json.loads(line) for line in rows][: self.epoch]
        return True

    def _write_outputs(self, status: str) -> dict[str, Any]:
        cfg, last = self.config, (self.history[-1] if self.history else {})
        summary = {
            "status": status, "epochs_completed": self.epoch,
            "test_accuracy": last.get("test_accuracy"), "train_accuracy": last.get("train_accuracy"),
            "test_loss": last.get("test_loss"), "online_accuracy": last.get("online_accuracy"),
            "val_accuracy": last.get("val_accuracy"), "val_loss": last.get("val_loss"),
            "n_train": len(self.x_train), "n_val": len(self.x_val), "n_test": len(self.x_test),
            "per_model": last.get("per_model"), "seeds": self.seeds,
            "samples_per_second": self.samples_seen / max(self.train_seconds, 1e-9),
            "wall_seconds": self.train_seconds, "device": str(self.device),
            "engine": type(self.engine).__name__, "compile_seconds": self.engine.compile_seconds,
            "modulator": cfg.modulator if self.rule.modulated else None,
            "memory": cfg.memory if self.rule.modulated else None,
            "checkpoint": self.checkpoint, "divergence": self.divergence,
            "config": cfg.to_dict(),
        }
        if self.run_dir:
            write_jsonl(self.run_dir / METRICS, self.history)
            write_json(self.run_dir / SUMMARY, summary)
            if self.history and status != "running":
                self._plot()
        return summary

    def _plot(self) -> None:
        """``curves.png``, when matplotlib (the ``cli`` extra) is installed."""
        cfg = self.config
        try:
            plot_curves(self.history, self.run_dir / CURVES,
                        title=f"{cfg.rule} on {cfg.task} (N={cfg.window}, seeds {self.seeds[0]}..{self.seeds[-1]})")
        except ImportError:
            return

    # --- the whole run -----------------------------------------------------------------
    def run(self, on_epoch: Callable[[dict], None] | None = None) -> dict[str, Any]:
        """Train for ``config.epochs`` epochs (from the checkpoint's position when resumed).
        ``summary.json`` says ``running`` meanwhile, then ``completed``, ``diverged`` (with
        where and why) or ``interrupted``. The run folder is locked meanwhile
        (:class:`~biohsic.runs.RunFolderLock`): a second writer is refused."""
        with RunFolderLock(self.run_dir) if self.run_dir else contextlib.nullcontext():
            return self._run(on_epoch)

    def _run(self, on_epoch: Callable[[dict], None] | None) -> dict[str, Any]:
        if self.run_dir:
            write_json(self.run_dir / CONFIG, self.config.to_dict())
            write_json(self.run_dir / CONFIG_SOURCES, self.sources)
            self._write_outputs("running")
            fault_point("started")
        self._last_save = time.monotonic()
        try:
            while self.epoch < self.config.epochs:
                with intra_op_threads(self.threads):
                    online = self.train_epoch(self.epoch)
                row = self.evaluate_epoch(self.epoch, online)
                self.epoch, self.step, self.tally = self.epoch + 1, 0, None
                self.history.append(row)
                if self.run_dir:
                    write_jsonl(self.run_dir / METRICS, self.history)
                    fault_point("epoch-end")
                    self.save_checkpoint()
                if on_epoch is not None:
                    on_epoch(row)
        except DivergenceError:
            self._write_outputs("diverged")
            raise
        except KeyboardInterrupt:
            self._write_outputs("interrupted")
            raise
        return self._write_outputs("completed")


def divergence_advice(problem: NonFinite, config: TrainConfig) -> str:
    """What to change when ``problem`` was the first non-finite quantity of a run."""
    if problem.quantity == "input":
        return "the data hold non-finite values; check the dataset"
    if problem.quantity == "signal":
        if config.modulator == "reservoir" and RULES[config.rule].modulated:
            return "the reservoir's output is not finite; check --reservoir and its training"
        widths = f"--phsic-sigma (now {config.phsic_sigma:g})" if config.rule.startswith("phsic") else \
            f"--sigmas (now {','.join(f'{s:g}' for s in config.sigmas)})"
        return (f"the kernels underflow or the signal overflows: widen {widths} or lower --gamma "
                f"(now {config.gamma:g})")
    decay = f" or --weight-decay (now {config.weight_decay:g})" if config.weight_decay else ""
    if problem.quantity == "parameter":
        return f"the weights exploded: lower --lr (now {config.lr:g}){decay}"
    return f"the forward pass overflowed with finite weights: lower --lr (now {config.lr:g}){decay}"


@contextlib.contextmanager
def intra_op_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)`` (unchanged for ``None``), then restore."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def saved_form(config: TrainConfig) -> dict[str, Any]:
    """The configuration as ``config.json`` holds it (tuples read back as lists)."""
    return json.loads(json.dumps(config.to_dict()))


#: Settings a resumed run may change: more epochs, and the engine (both engines advance the
#: same state, and a checkpoint of either continues on the other).
RESUMABLE_CHANGES = ("epochs", "engine")


def differing_settings(config: TrainConfig, run_dir: Path) -> list[str]:
    """The settings, other than :data:`RESUMABLE_CHANGES`, in which the run saved in ``run_dir``
    (its ``config.json``) differs from ``config``: a run may be continued for more epochs only."""
    return sorted(_differences(config, run_dir))


def settings_mismatch(config: TrainConfig, run_dir: Path) -> str:
    """The settings in which the run saved in ``run_dir`` differs from ``config``, each named
    as its option with both values, e.g. ``"--gamma: 10.0 saved, 1.0 given"`` (empty when
    none differ)."""
    return "; ".join(f"--{key.replace('_', '-')}: {saved!r} saved, {wanted!r} given"
                     for key, (saved, wanted) in sorted(_differences(config, run_dir).items()))


def _differences(config: TrainConfig, run_dir: Path) -> dict[str, tuple[Any, Any]]:
    wanted = saved_form(config)
    saved = read_json(Path(run_dir) / CONFIG)
    # a setting added to the library after the run was saved counts as the value it had before
    before = {key: saved.get(key, saved_default(key)) for key in wanted}
    return {key: (before[key], wanted[key]) for key in wanted
            if key not in RESUMABLE_CHANGES and wanted[key] != before[key]}


def train(config: TrainConfig | None = None, **overrides: Any) -> dict[str, Any]:
    """Train with ``config`` (fields replaced by ``overrides``) and return the summary; no run folder."""
    config = dataclasses.replace(config or TrainConfig(), **overrides)
    return Trainer(config).run()


__all__ = ["EpochTally", "Trainer", "build_network", "check_run_fits", "differing_settings", "evaluate", "evaluation_windows", "hsic_probe",
           "load_dataset", "make_optimizer", "sample_order", "settings_mismatch", "train"]
