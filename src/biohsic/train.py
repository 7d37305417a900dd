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
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import DTYPES, TrainConfig, saved_default
from .data import Dataset, load_task, split_validation
from .engine import EagerEngine, Engine
from .errors import CheckpointError, ConfigError, DivergenceError
from .functional.hsic import hsic
from .functional.kernels import gaussian_kernel
from .network import Network
from .plots import plot_curves
from .presets import config_sources
from .rules import Rule, build_rule, check_config
from .runs import load_torch, read_json, save_torch, write_json, write_jsonl
from .seeding import seeded_generator

#: How many evaluation windows the per-layer HSIC is averaged over.
EVAL_WINDOWS = 32
#: Steps (updates) per chunk handed to the engine; the online loss is checked for
#: non-finite values once per chunk.
CHUNK_STEPS = 128


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
    """AdamW (as the paper) with the run's learning rate and weight decay.

    ``fused``: one kernel per parameter instead of about ten passes. With one update per
    sample and K models, the optimiser step is most of a step's cost (11.5 → 6.8 ms per
    step at K = 30, 784-128-64-10).
    """
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
    training set carved out as the validation set (seeded by ``config.data_seed``)."""
    task = load_task(config.task, data_dir=config.data_dir, data_seed=config.data_seed, download=download)
    return split_validation(task, config.val_fraction, config.data_seed)


def _progress(total: int, description: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=description, unit="sample", leave=False, dynamic_ncols=True, mininterval=0.5)


class Trainer:
    """One training run of ``config.seeds`` models on one dataset.

    ``dataset``: the task's data, when the caller has loaded it already; its validation set
    is carved here unless it has one (:func:`load_dataset`). ``sources``: where each setting
    came from (:func:`biohsic.presets.layered_config`), written to ``config_sources.json``;
    by default, worked out from ``config`` (:func:`biohsic.presets.config_sources`).

    >>> trainer = Trainer(TrainConfig(task="xor", epochs=2))          # doctest: +SKIP
    >>> summary = trainer.run()                                       # doctest: +SKIP
    """

    def __init__(self, config: TrainConfig, *, run_dir: str | Path | None = None,
                 dataset: Dataset | None = None, progress: bool = False, download: bool = False,
                 threads: int | None = None, sources: dict[str, str] | None = None):
        self.sources = sources if sources is not None else config_sources(config)
        self.config = config.resolved()
        cfg = self.config
        check_config(cfg)
        self.device = torch.device(cfg.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but no CUDA device is available; use --device cpu")
        self.dtype = DTYPES[cfg.dtype]
        if dataset is None:
            self.data = load_dataset(cfg, download=download)
        else:
            self.data = dataset if dataset.has_validation else split_validation(dataset, cfg.val_fraction,
                                                                                 cfg.data_seed)
        self.x_train, self.y_train = self._tensors(self.data.x_train, self.data.y_train)
        self.x_val, self.y_val = self._tensors(self.data.x_val, self.data.y_val)
        self.x_test, self.y_test = self._tensors(self.data.x_test, self.data.y_test)
        self.onehot_train = F.one_hot(self.y_train, self.data.n_classes).to(self.dtype)
        self.onehot_test = F.one_hot(self.y_test, self.data.n_classes).to(self.dtype)
        self.seeds = [cfg.seed + k for k in range(cfg.seeds)]
        sizes = [self.data.n_features, *cfg.hidden, self.data.n_classes]
        self.network = Network(sizes, self.seeds, dtype=self.dtype).to(self.device)
        self.rule: Rule = build_rule(self.network, cfg)
        self.optimizer = make_optimizer(self.rule.trainable_parameters(), cfg)
        self.engine: Engine = EagerEngine(self.rule, self.optimizer)
        self.windows = evaluation_windows(len(self.x_test), cfg.window).to(self.device)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        if threads is not None and threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {threads}")
        # One sample per update is many tiny tensor operations: extra threads only add
        # synchronisation (2.1× slower wall time with 2 threads on 2 cores, digits).
        self.threads = threads if threads is not None else (1 if self.rule.streaming else None)
        self.progress = progress
        self.history: list[dict[str, Any]] = []
        self.epoch = 0
        self.train_seconds = 0.0
        self.samples_seen = 0

    def predict(self, x: Tensor) -> Tensor:
        """The network's logits: the rate forward pass, or the leaky network simulated in time."""
        cfg = self.config
        if cfg.neuron == "leaky":
            return self.network.simulate(x, steps=cfg.steps_per_sample, dt=cfg.dt, tau=cfg.tau)
        return self.network(x)

    def _tensors(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return x.to(self.device, self.dtype), y.to(self.device, torch.long)

    # --- one epoch -------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training set; returns the online loss and accuracy
        (each sample scored once, by the weights it met, before its update)."""
        n, k = len(self.x_train), self.network.n_models
        batch = self.rule.batch_size
        steps = n // batch
        order = torch.stack([sample_order(s, epoch, n, self.device) for s in self.seeds])[:, :steps * batch]
        loss_sum = torch.zeros(k, device=self.device, dtype=torch.float64)
        correct = torch.zeros(k, device=self.device)
        bar = _progress(steps * batch, f"epoch {epoch + 1}/{self.config.epochs}", self.progress)
        start = time.perf_counter()
        for first in range(0, steps, CHUNK_STEPS):
            last = min(first + CHUNK_STEPS, steps)
            idx = order[:, first * batch:last * batch]
            labels = self.y_train[idx]
            logits = self.engine.train_chunk(self.x_train[idx], self.onehot_train[idx])
            losses = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
            loss_sum += losses.view(k, -1, batch).sum(-1).double().sum(-1)  # each batch's sum, then over batches
            correct += (logits.argmax(-1) == labels).sum(-1)
            self._check_finite(loss_sum, epoch, last - 1)
            if bar is not None:
                bar.update(last * batch - bar.n)
        if bar is not None:
            bar.close()
        self.train_seconds += time.perf_counter() - start
        self.samples_seen += steps * batch * k
        count = steps * batch
        return {"online_loss": (loss_sum / count).tolist(), "online_accuracy": (correct / count).tolist()}

    def _check_finite(self, loss_sum: Tensor, epoch: int, step: int) -> None:
        if torch.isfinite(loss_sum).all() and all(torch.isfinite(p).all() for p in self.network.parameters()):
            return
        raise DivergenceError(
            f"training diverged (non-finite loss or weights) in epoch {epoch + 1} at step {step + 1}; "
            f"lower --lr (now {self.config.lr:g}) or widen --sigmas; metrics up to epoch {epoch} are kept")

    def evaluate_epoch(self, epoch: int, online: dict[str, list[float]]) -> dict[str, Any]:
        """The epoch's metrics row: accuracy and loss on the test, training and (when there is
        one) validation sets, per model and averaged, and each layer's HSIC."""
        cfg = self.config
        splits = {"test": (self.x_test, self.y_test), "train": (self.x_train, self.y_train)}
        if len(self.x_val):
            splits["val"] = (self.x_val, self.y_val)
        per_model: dict[str, list[float]] = {}
        for split, (x, labels) in splits.items():
            accuracy, loss = evaluate(self.network, x, labels, predict=self.predict)
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
    def _checkpoint_path(self) -> Path | None:
        return self.run_dir / "checkpoint.pt" if self.run_dir else None

    def save_checkpoint(self) -> None:
        save_torch(self._checkpoint_path(), {
            "epoch": self.epoch, "network": self.network.state_dict(), **self.engine.state_dict(),
            "train_seconds": self.train_seconds, "samples_seen": self.samples_seen,
        })

    def resume(self) -> bool:
        """Continue from the run folder's checkpoint; False when there is none."""
        path = self._checkpoint_path()
        if path is None or not path.exists():
            return False
        differing = differing_settings(self.config, self.run_dir)
        if differing:
            raise CheckpointError(f"{self.run_dir} holds a run with other settings ({', '.join(differing)}); "
                                  "resume with the same options or choose another --out")
        state = load_torch(path, self.device)
        try:
            self.network.load_state_dict(state["network"])
            self.engine.load_state_dict(state)
        except (KeyError, RuntimeError, ValueError) as err:
            raise CheckpointError(f"{path} does not fit this run ({type(err).__name__}); "
                                  "start a new run with another --out") from None
        self.epoch, self.train_seconds = int(state["epoch"]), float(state["train_seconds"])
        self.samples_seen = int(state["samples_seen"])
        metrics = self.run_dir / "metrics.jsonl"
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
            "modulator": cfg.modulator if self.rule.modulated else None,
            "memory": cfg.memory if self.rule.modulated else None,
            "config": cfg.to_dict(),
        }
        if self.run_dir:
            write_jsonl(self.run_dir / "metrics.jsonl", self.history)
            write_json(self.run_dir / "summary.json", summary)
            if self.history:
                self._plot()
        return summary

    def _plot(self) -> None:
        """``curves.png``, when matplotlib (the ``cli`` extra) is installed."""
        cfg = self.config
        try:
            plot_curves(self.history, self.run_dir / "curves.png",
                        title=f"{cfg.rule} on {cfg.task} (N={cfg.window}, seeds {self.seeds[0]}..{self.seeds[-1]})")
        except ImportError:
            return

    # --- the whole run -----------------------------------------------------------------
    def run(self, on_epoch: Callable[[dict], None] | None = None) -> dict[str, Any]:
        """Train for ``config.epochs`` epochs (from the checkpoint's epoch when resumed)."""
        if self.run_dir:
            write_json(self.run_dir / "config.json", self.config.to_dict())
            write_json(self.run_dir / "config_sources.json", self.sources)
        try:
            while self.epoch < self.config.epochs:
                with intra_op_threads(self.threads):
                    online = self.train_epoch(self.epoch)
                row = self.evaluate_epoch(self.epoch, online)
                self.epoch += 1
                self.history.append(row)
                if self.run_dir:
                    write_jsonl(self.run_dir / "metrics.jsonl", self.history)
                    self.save_checkpoint()
                if on_epoch is not None:
                    on_epoch(row)
        except DivergenceError:
            self._write_outputs("diverged")
            raise
        return self._write_outputs("completed")


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


def differing_settings(config: TrainConfig, run_dir: Path) -> list[str]:
    """The settings, other than ``epochs``, in which the run saved in ``run_dir`` (its
    ``config.json``) differs from ``config``: a run may be continued for more epochs only."""
    wanted = saved_form(config)
    saved = read_json(run_dir / "config.json")
    # a setting added to the library after the run was saved counts as the value it had before
    return sorted(key for key in wanted if key != "epochs" and wanted[key] != saved.get(key, saved_default(key)))


def train(config: TrainConfig | None = None, **overrides: Any) -> dict[str, Any]:
    """Train with ``config`` (fields replaced by ``overrides``) and return the summary; no run folder."""
    config = dataclasses.replace(config or TrainConfig(), **overrides)
    return Trainer(config).run()


__all__ = ["Trainer", "evaluate", "evaluation_windows", "hsic_probe", "load_dataset", "make_optimizer", "sample_order",
           "train"]
