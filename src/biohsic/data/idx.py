"""MNIST and Fashion-MNIST from their four IDX files, raw or gzipped.

An IDX file is a big-endian header — magic number (2051 for 3-D ubyte images, 2049 for 1-D
ubyte labels) then one uint32 per dimension — followed by the ubyte array itself. Every
header is checked against the file's size, so a truncated or over-long file is reported,
never trained on.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from . import Dataset, check_labels, labels_tensor, locate, read_bytes, scale_pixels
from ..errors import DataError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
IMAGE_SIZE = (28, 28)
N_CLASSES = 10
#: The four files, by their standard names; ``train-images.idx3-ubyte`` and ``.gz`` variants are accepted too.
STEMS = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
_FOUR_FILES = f"{', '.join(STEMS.values())} (each raw or .gz)"
HOW_TO_GET = {
    "mnist": f"pass --data-dir DIR holding {_FOUR_FILES}, or add --download",
    "fashion-mnist": f"run `apt-get install dataset-fashion-mnist` or pass --data-dir DIR holding {_FOUR_FILES}",
}


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The ubyte array of IDX file ``path``; :class:`DataError` unless its header has ``magic`` and fits its size."""
    raw = read_bytes(path)
    n_dims = magic & 0xFF
    header = 4 + 4 * n_dims
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(f"{path}: magic number {found}, expected {magic}; this is not an IDX "
                        f"{'image' if magic == IMAGES_MAGIC else 'label'} file, replace it")
    dims = [int(n) for n in np.frombuffer(raw, dtype=">u4", count=n_dims, offset=4)] if len(raw) >= header else []
    expected = header + (math.prod(dims) if dims else 0)
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "over-long"
        raise DataError(f"{path}: {state}, {len(raw)} bytes where its header promises {expected}; "
                        "replace the file with a fresh copy")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def find_idx_files(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in ``folder``, or ``None`` unless all four are there."""
    found = {}
    for key, stem in STEMS.items():
        names = [name + gz for name in (stem, stem.replace("-idx", ".idx")) for gz in ("", ".gz")]
        found[key] = next((folder / n for n in names if (folder / n).is_file()), None)
    return found if all(found.values()) else None


def read_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, 28, 28)`` and labels ``(n,)`` of one split, checked against each other."""
    images = read_idx(images_path, IMAGES_MAGIC)
    if not len(images):
        raise DataError(f"{images_path}: its header says 0 images; replace the file with a fresh copy")
    if images.shape[1:] != IMAGE_SIZE:
        raise DataError(f"{images_path}: images of {images.shape[1:]} pixels, expected {IMAGE_SIZE}; "
                        "pass the MNIST-format files")
    labels = read_idx(labels_path, LABELS_MAGIC)
    check_labels(labels, len(images), N_CLASSES, str(labels_path))
    return images, labels


def load_idx_task(task: str, data_dir: str | os.PathLike | None, download: bool) -> Dataset:
    """Task ``"mnist"`` or ``"fashion-mnist"``: pixels 0..255 mapped to [-1, 1], the official split."""
    files = locate(task, data_dir, download, find_idx_files, HOW_TO_GET[task])
    x_train, y_train = read_split(files["train_images"], files["train_labels"])
    x_test, y_test = read_split(files["test_images"], files["test_labels"])
    return Dataset(task, scale_pixels(x_train, 255.0), labels_tensor(y_train), scale_pixels(x_test, 255.0),
                   labels_tensor(y_test), n_classes=N_CLASSES, input_shape=(1, *IMAGE_SIZE))
