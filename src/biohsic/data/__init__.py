"""The tasks of SPEC §7: two synthetic 2-D problems, scikit-learn's digits, MNIST,
Fashion-MNIST and CIFAR-10, each as one :class:`Dataset` of flattened, preprocessed tensors.

A loader returns the task's train and test sets; :func:`split_validation` then carves a
validation set out of the training set (stratified by class, seeded by the data seed), the
set every choice of a setting is made on: the test set is only ever reported.

File-based tasks look for their files, first match wins, in ``data_dir`` and
``data_dir/<task>`` when ``data_dir`` is given; otherwise in ``$BIOHSIC_DATA/<task>`` and then
in the task's system directory (Fashion-MNIST: where Debian's ``dataset-fashion-mnist``
package installs it).
"""
from __future__ import annotations

import dataclasses
import gzip
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, DataError
from ..seeding import seeded_generator

T = TypeVar("T")

TASKS: tuple[str, ...] = ("linear", "xor", "digits", "mnist", "fashion-mnist", "cifar10")

#: Environment variable naming a root folder with ``mnist/``, ``fashion-mnist/``, ``cifar10/``.
DATA_ENV = "BIOHSIC_DATA"
#: Where a task's files are found when neither ``data_dir`` nor ``$BIOHSIC_DATA`` is set.
SYSTEM_DIRS: dict[str, Path] = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}
#: Salt of the validation split's random stream (:mod:`biohsic.seeding`), under the data seed.
VALIDATION_SALT = 4241


@dataclass(frozen=True)
class Dataset:
    """A train/test split of flattened inputs ``(n, d)`` (float32) and class indices ``(n,)`` (int64),
    and, once :func:`split_validation` has carved it, a validation set (``None`` until then)."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    n_classes: int
    input_shape: tuple[int, ...]
    x_val: Tensor | None = None
    y_val: Tensor | None = None

    @property
    def n_features(self) -> int:
        """d, the length of one flattened input."""
        return self.x_train.shape[1]

    def first_training_samples(self, n: int) -> "Dataset":
        """The same dataset with only its first ``n`` training samples (a quick run)."""
        return dataclasses.replace(self, x_train=self.x_train[:n], y_train=self.y_train[:n])

    @property
    def has_validation(self) -> bool:
        """True once a validation set has been carved (it may be empty: fraction 0)."""
        return self.x_val is not None


def validation_indices(labels: Tensor, fraction: float, seed: int) -> Tensor:
    r"""The sorted indices of a stratified validation set of ``round(fraction · n)`` samples
    (at least one when ``fraction > 0``), drawn with the data seed ``seed``.

    Class c, with :math:`n_c` samples, gives :math:`\lfloor f n_c \rfloor` of them, and the
    samples left over go to the classes with the largest remainders :math:`f n_c - \lfloor f n_c \rfloor`
    (ties: the smaller class index), so every class is represented in proportion. Within a
    class the samples are the first ones of one seeded permutation of the whole set.
    """
    n = len(labels)
    if fraction <= 0 or n == 0:
        return torch.zeros(0, dtype=torch.long)
    total = min(n, max(1, round(fraction * n)))
    classes, counts = torch.unique(labels, return_counts=True)
    exact = counts.double() * total / n
    quota = exact.floor().long()
    leftover = total - int(quota.sum())
    by_remainder = sorted(range(len(classes)), key=lambda c: (-(exact[c] - quota[c]).item(), c))
    quota[by_remainder[:leftover]] += 1
    order = torch.randperm(n, generator=seeded_generator(seed, VALIDATION_SALT))
    ordered_labels = labels[order]
    chosen = [order[ordered_labels == c][:q] for c, q in zip(classes.tolist(), quota.tolist())]
    return torch.cat(chosen).sort().values


def split_validation(dataset: Dataset, fraction: float, seed: int) -> Dataset:
    """``dataset`` with ``fraction`` of its training set moved to a validation set
    (:func:`validation_indices`); the training samples left keep their order, so with
    ``fraction = 0`` the training set is exactly the task's (and the validation set is empty)."""
    if dataset.has_validation:
        raise ConfigError(f"the {dataset.name} dataset already has a validation set; split the task's data once")
    if not 0 <= fraction < 1:
        raise ConfigError(f"--val-fraction must be in [0, 1), got {fraction}")
    val = validation_indices(dataset.y_train, fraction, seed)
    keep = torch.ones(len(dataset.y_train), dtype=torch.bool)
    keep[val] = False
    if len(val) and not keep.any():
        raise ConfigError(f"--val-fraction {fraction} leaves no {dataset.name} training sample; choose a smaller one")
    return dataclasses.replace(dataset, x_train=dataset.x_train[keep], y_train=dataset.y_train[keep],
                               x_val=dataset.x_train[val], y_val=dataset.y_train[val])


def scale_pixels(pixels: np.ndarray, max_value: float) -> Tensor:
    r"""Flattened float32 inputs in [-1, 1]: :math:`x \mapsto (x / x_{max} - 0.5) / 0.5` (SPEC §7)."""
    x = torch.from_numpy(pixels.reshape(len(pixels), -1).astype(np.float32))
    return x.div_(max_value).sub_(0.5).div_(0.5)  # in place: no 200 MB temporaries for MNIST


def labels_tensor(labels: np.ndarray) -> Tensor:
    """Class indices as an int64 tensor."""
    return torch.from_numpy(np.asarray(labels, dtype=np.int64))


def search_dirs(task: str, data_dir: str | os.PathLike | None) -> list[Path]:
    """The folders where a file-based task's files are looked for, in order (see the module docstring)."""
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        return [root, root / task]
    env = os.environ.get(DATA_ENV)
    dirs = [Path(env).expanduser() / task] if env else []
    return dirs + ([SYSTEM_DIRS[task]] if task in SYSTEM_DIRS else [])


def locate(task: str, data_dir: str | os.PathLike | None, download: bool, find: Callable[[Path], T | None],
           how: str) -> T:
    """``find(folder)`` for the first of :func:`search_dirs` where it finds the task's files.

    When none has them, ``download`` fetches them first; otherwise the error says ``how`` to get them.
    """
    dirs = search_dirs(task, data_dir)
    for folder in dirs:
        found = find(folder)
        if found is not None:
            return found
    if download:
        from .download import download_task

        download_task(task, data_dir)
        return locate(task, data_dir, False, find, how)
    where = ", ".join(str(d) if d.is_dir() else f"{d} (no such folder)" for d in dirs) or "no folder (no --data-dir)"
    raise DataError(f"{task} files not found in {where}; {how}")


def read_bytes(path: Path) -> bytes:
    """The bytes of a file, gunzipped when they start with gzip's magic number."""
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"cannot read {path} ({err}); replace the file with a fresh copy") from None


def check_labels(labels: np.ndarray, n_images: int, n_classes: int, where: str) -> None:
    """Raise :class:`DataError` unless there is one label per image, each in 0..n_classes-1."""
    if labels.shape != (n_images,):
        raise DataError(f"{where}: {labels.size} labels for {n_images} images; the files do not belong together, "
                        "replace them with a matching set")
    if labels.dtype.kind not in "iu" or (labels.size and not 0 <= labels.min() <= labels.max() < n_classes):
        raise DataError(f"{where}: labels must be class indices 0..{n_classes - 1}; replace the file with a fresh copy")


def load_task(name: str, *, data_dir: str | os.PathLike | None = None, data_seed: int = 0,
              download: bool = False) -> Dataset:
    """The dataset of task ``name`` (one of :data:`TASKS`).

    ``data_seed`` seeds the synthetic tasks and the digits split; MNIST, Fashion-MNIST and
    CIFAR-10 use their official splits. ``download=True`` fetches MNIST or CIFAR-10 into
    ``data_dir`` (or ``$BIOHSIC_DATA/<task>``) when their files are not found.
    """
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    if not 0 <= data_seed < 2**32:
        raise ConfigError(f"--data-seed must be in [0, 2**32), got {data_seed}")
    if name in ("linear", "xor"):
        from .synthetic import make_synthetic

        return make_synthetic(name, data_seed)
    if name == "digits":
        from .digits import load_digits

        return load_digits(data_seed)
    if name == "cifar10":
        from .cifar import load_cifar10

        return load_cifar10(data_dir, download)
    from .idx import load_idx_task

    return load_idx_task(name, data_dir, download)
