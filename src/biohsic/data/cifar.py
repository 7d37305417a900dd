"""CIFAR-10 from its python batches: a ``cifar-10-batches-py`` folder (or its parent) or the
``cifar-10-python.tar.gz`` archive, read without unpacking.

Each batch is a pickled dict with ``data`` (uint8, ``(n, 3072)``, channel-first rows) and
``labels``. Pixels are standardised per channel as the authors do (x/255, then minus the
channel's mean over the training set, over its standard deviation: :data:`CHANNEL_MEAN`,
:data:`CHANNEL_STD`); training images are augmented by the trainer, not here
(:mod:`biohsic.data.augment`). The pickles are read by an unpickler that only builds numpy arrays, so a
malicious file cannot run code.
"""
from __future__ import annotations

import codecs
import io
import math
import os
import pickle
import tarfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch import Tensor

from . import Dataset, check_labels, labels_tensor, locate, read_bytes
from ..errors import DataError

try:
    from numpy._core import multiarray, numeric
except ImportError:  # numpy < 2
    from numpy.core import multiarray, numeric

FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
BATCHES = (*TRAIN_BATCHES, TEST_BATCH)
INPUT_SHAPE = (3, 32, 32)
N_CLASSES = 10
#: The authors' per-channel (R, G, B) mean and standard deviation of CIFAR-10's training
#: pixels in [0, 1] (their ``Standardize`` step).
CHANNEL_MEAN = (0.4914, 0.4822, 0.4465)
CHANNEL_STD = (0.247, 0.243, 0.261)
HOW_TO_GET = (f"pass --data-dir DIR holding {FOLDER}/ ({', '.join(TRAIN_BATCHES)}, {TEST_BATCH}) "
              f"or {ARCHIVE}, or add --download")

_REBUILDERS = {("multiarray", "_reconstruct"): multiarray._reconstruct, ("multiarray", "scalar"): multiarray.scalar,
               ("numeric", "_frombuffer"): numeric._frombuffer}
#: The only globals a batch may name: numpy's array, dtype and scalar rebuilders under their numpy 1
#: and numpy 2 module names, and the str→bytes encoder that Python 3 pickles of protocol < 3 use.
SAFE_GLOBALS = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): codecs.encode,
                **{(f"{package}.{module}", name): rebuild for package in ("numpy.core", "numpy._core")
                   for (module, name), rebuild in _REBUILDERS.items()}}


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global outside :data:`SAFE_GLOBALS`."""

    def find_class(self, module: str, name: str):
        if (module, name) not in SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}")
        return SAFE_GLOBALS[(module, name)]


def batch_entry(batch: dict, key: str, where: str) -> np.ndarray:
    """Entry ``key`` of a batch dict as an array (keys are bytes in the original Python 2 pickles)."""
    value = batch.get(key.encode(), batch.get(key))
    if value is None:
        raise DataError(f"{where}: no {key!r} entry, so not a CIFAR-10 python batch; replace it")
    try:
        return np.asarray(value)
    except ValueError:
        raise DataError(f"{where}: {key!r} is not an array; replace it with a fresh copy") from None


def parse_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, 3072)`` and labels ``(n,)`` of one pickled batch, checked."""
    try:
        batch = ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as err:  # a damaged pickle fails in many ways; every one means "not a batch"
        raise DataError(f"{where}: not a CIFAR-10 python batch ({err}); replace it with a fresh copy") from None
    if not isinstance(batch, dict):
        raise DataError(f"{where}: holds a {type(batch).__name__}, not a CIFAR-10 batch dict; replace it")
    data, labels = batch_entry(batch, "data", where), batch_entry(batch, "labels", where)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != math.prod(INPUT_SHAPE):
        raise DataError(f"{where}: 'data' is {data.dtype} of shape {data.shape}, expected uint8 (n, 3072); replace it")
    if not len(data):
        raise DataError(f"{where}: holds 0 images; replace it with a fresh copy")
    check_labels(labels, len(data), N_CLASSES, where)
    return data, labels


def find_batches(folder: Path) -> Path | None:
    """The batches folder or archive in ``folder`` (itself, its ``cifar-10-batches-py``, or the archive)."""
    for candidate in (folder, folder / FOLDER):
        if all((candidate / name).is_file() for name in BATCHES):
            return candidate
    return folder / ARCHIVE if (folder / ARCHIVE).is_file() else None


def read_archive(path: Path) -> dict[str, bytes]:
    """The batch files inside the ``.tar.gz`` archive, by name."""
    wanted = {f"{FOLDER}/{name}" for name in BATCHES}
    try:
        with tarfile.open(path, "r:gz") as tar:
            found = {PurePosixPath(member.name).name: tar.extractfile(member).read()
                     for member in tar if member.name in wanted and member.isfile()}
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise DataError(f"cannot read {path} ({err}); replace it with a fresh copy") from None
    missing = [name for name in BATCHES if name not in found]
    if missing:
        raise DataError(f"{path} lacks {', '.join(missing)}; replace it with a fresh copy of {ARCHIVE}")
    return found


def standardize(pixels: np.ndarray) -> Tensor:
    r"""Flattened float32 images ``(n, 3072)``, channel-first, each channel c standardised:
    :math:`x \mapsto (x/255 - \mu_c)/s_c` (:data:`CHANNEL_MEAN`, :data:`CHANNEL_STD`)."""
    x = torch.from_numpy(pixels.reshape(len(pixels), 3, -1).astype(np.float32)).div_(255.0)
    mean = torch.tensor(CHANNEL_MEAN, dtype=torch.float32).view(1, 3, 1)
    std = torch.tensor(CHANNEL_STD, dtype=torch.float32).view(1, 3, 1)
    return x.sub_(mean).div_(std).reshape(len(pixels), -1)


def load_cifar10(data_dir: str | os.PathLike | None, download: bool) -> Dataset:
    """CIFAR-10: pixels standardised per channel (:func:`standardize`), flattened channel-first,
    the official split."""
    source = locate("cifar10", data_dir, download, find_batches, HOW_TO_GET)
    if source.is_dir():
        raws = {name: read_bytes(source / name) for name in BATCHES}
        where = {name: str(source / name) for name in raws}
    else:
        raws = read_archive(source)
        where = {name: f"{source}:{FOLDER}/{name}" for name in raws}
    train = [parse_batch(raws[name], where[name]) for name in TRAIN_BATCHES]
    x_test, y_test = parse_batch(raws[TEST_BATCH], where[TEST_BATCH])
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return Dataset("cifar10", standardize(x_train), labels_tensor(y_train), standardize(x_test),
                   labels_tensor(y_test), n_classes=N_CLASSES, input_shape=INPUT_SHAPE)
