"""Opt-in download (``--download``) of MNIST's IDX files and CIFAR-10's archive.

:func:`fetch` is the library's only network access. Each file goes to a temporary name in
the target folder, is checked against its published MD5, and only then takes its final
name (``os.replace``), so an interrupted download never leaves a file that looks complete.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

from . import DATA_ENV, SYSTEM_DIRS, search_dirs
from ..errors import DataError

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/"
#: Per task: (base URL, file name, MD5 of the file).
SOURCES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "mnist": ((MNIST_URL, "train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
              (MNIST_URL, "train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
              (MNIST_URL, "t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
              (MNIST_URL, "t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c")),
    "cifar10": ((CIFAR10_URL, "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
}
TIMEOUT_S = 60


def fetch(url: str, dest: Path) -> None:
    """Write the bytes at ``url`` into the file ``dest``."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(dest, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except (OSError, http.client.HTTPException) as err:
        raise DataError(f"cannot download {url} ({err}); check the network, or fetch the file yourself "
                        "and pass --data-dir DIR") from None


def md5_of(path: Path) -> str:
    """The hexadecimal MD5 digest of a file."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_task(task: str, data_dir: str | os.PathLike | None) -> None:
    """Fetch the files of ``task`` that its download folder (``data_dir``, else ``$BIOHSIC_DATA/<task>``) lacks."""
    if task not in SOURCES:
        raise DataError(f"--download fetches only {', '.join(SOURCES)}; get {task} yourself and pass --data-dir DIR")
    folders = [d for d in search_dirs(task, data_dir) if d != SYSTEM_DIRS.get(task)]
    if not folders:
        raise DataError(f"--download needs a folder to write {task} into; pass --data-dir DIR or set {DATA_ENV}")
    folder = folders[0]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create {folder} ({err}); pass a writable --data-dir") from None
    for base, name, md5 in SOURCES[task]:
        if not (folder / name).is_file():
            fetch_checked(base + name, md5, folder / name)


def fetch_checked(url: str, md5: str, dest: Path) -> None:
    """:func:`fetch` into a temporary file beside ``dest``; rename it to ``dest`` once its MD5 matches."""
    print(f"biohsic: downloading {url} into {dest.parent}", file=sys.stderr, flush=True)
    try:
        handle, part = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as err:
        raise DataError(f"cannot write into {dest.parent} ({err}); pass a writable --data-dir") from None
    os.close(handle)
    try:
        fetch(url, Path(part))
        found = md5_of(Path(part))
        if found != md5:
            raise DataError(f"{url} arrived with MD5 {found}, expected {md5}; run --download again")
        os.replace(part, dest)
    finally:
        Path(part).unlink(missing_ok=True)
