"""Run folders: ``config.json``, ``metrics.jsonl``, ``summary.json``, ``curves.png``, the last
two checkpoints ``checkpoint.pt`` and ``checkpoint-previous.pt`` (and ``traceback.txt`` after
an internal error).

What this module guarantees (``docs/reliability.md`` names the test of each):

- **Atomic files.** Every file is written to a temporary file in the same folder, flushed to
  disk, then renamed over its name: a reader (or a resumed run) sees the old file or the new
  one, never half of one. Temporary files a killed process left behind are removed by the
  next writer of the folder.
- **One writer per folder.** :class:`RunFolderLock` (``with RunFolderLock(folder): …``) holds
  an exclusive advisory lock (``flock``) on ``folder/.lock`` for as long as the block runs.
  A second writer gets a one-line :class:`~biohsic.errors.RunFolderError` naming the folder
  and the process that holds it. The operating system releases the lock when its process
  dies, so the lock file a killed run leaves behind never blocks the next writer. Within
  one process the lock is re-entrant (a command holds it, the trainer it runs takes it
  again). :class:`OutputFileLock` does the same for a single output file. (POSIX only.)
- **Checked checkpoints.** :func:`save_checkpoint` stores a SHA-256 digest of the content in
  the checkpoint and keeps the one it replaces as ``checkpoint-previous.pt``;
  :func:`load_checkpoint` verifies the digest and falls back to the previous checkpoint,
  with a :class:`~biohsic.errors.CheckpointWarning`, when the latest is damaged. Checkpoints
  hold tensors and plain containers only (``torch.load(path, weights_only=True)`` reads them).
"""
from __future__ import annotations

import abc
import errno
import fcntl
import hashlib
import json
import os
import shlex
import signal
import sys
import tempfile
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from .errors import BiohsicError, CheckpointError, CheckpointWarning, RunFolderError

CONFIG = "config.json"
#: Where each setting of ``config.json`` came from (:mod:`biohsic.presets`).
CONFIG_SOURCES = "config_sources.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CURVES = "curves.png"
CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint-previous.pt"
TRACEBACK = "traceback.txt"
LOCK = ".lock"
#: The files of a run; a folder holding any of the first five holds a run.
RUN_FILES = (CONFIG, SUMMARY, METRICS, CHECKPOINT, PREVIOUS_CHECKPOINT, CURVES, TRACEBACK, CONFIG_SOURCES)
#: Version of the checkpoint layout; a checkpoint of another version is refused.
CHECKPOINT_FORMAT = 2
#: Names ``.<file>.<random>.tmp`` of the temporary files of atomic writes.
TEMPORARY_SUFFIX = ".tmp"
#: Test hook: ``BIOHSIC_FAULT=<point>:<n>`` stops the process (SIGSTOP) the n-th time it passes
#: :func:`fault_point` ``(<point>)``, so that a test can kill it there with SIGKILL.
FAULT_ENV = "BIOHSIC_FAULT"
_fault_counts: dict[str, int] = {}


def fault_point(name: str) -> None:
    """A named moment of a run at which the fault tests stop the process (see :data:`FAULT_ENV`);
    nothing happens unless that variable names this point."""
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    point, _, count = wanted.partition(":")
    if point != name:
        return
    _fault_counts[name] = _fault_counts.get(name, 0) + 1
    if _fault_counts[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGSTOP)


# --- atomic writes ------------------------------------------------------------------------
def _refusal(path: Path, err: OSError) -> RunFolderError:
    """The one-line error for a file system that refuses to create or write ``path``."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some space, then continue with --resume"
    elif err.errno in (errno.ENOTDIR, errno.EEXIST):
        fix = "a file stands where a folder is needed; choose another --out"
    else:
        fix = "choose another --out"
    return RunFolderError(f"cannot write {path} ({err.strerror or err}); {fix}")


def _sync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename) to disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temporary(path: Path, write: Callable[[Any], None]) -> Path:
    """A complete, flushed temporary file beside ``path``, filled by ``write(handle)``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
    except OSError as err:
        raise _refusal(path, err) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise _refusal(path, err) from None
        raise
    return Path(tmp)


def _replace(tmp: Path, path: Path) -> None:
    try:
        os.replace(tmp, path)
        _sync_folder(path.parent)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise _refusal(path, err) from None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    _replace(_write_temporary(path, lambda handle: handle.write(data)), path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist; check the path") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}); delete it or restore it") from None


def save_torch(path: Path, state: dict) -> None:
    """``torch.save`` to ``path`` atomically."""
    path = Path(path)
    _replace(_write_temporary(path, lambda handle: torch.save(state, handle)), path)


def load_torch(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a file written by :func:`save_torch` (tensors and plain containers only)."""
    try:
        with warnings.catch_warnings():  # the error below says all there is to say
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist; check the path") from None
    except Exception as err:  # torch raises many types for a corrupt file
        raise CheckpointError(f"{path} is not a readable biohsic file ({type(err).__name__}); "
                              "delete it or start a new run") from None


# --- checkpoints --------------------------------------------------------------------------
def _feed(digest: "hashlib._Hash", value: Any) -> None:
    """Feed a canonical encoding of ``value`` (tensors, numbers, strings, None and nested
    lists, tuples and dicts of them) into ``digest``."""
    if isinstance(value, Tensor):
        flat = value.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"T{flat.dtype}{tuple(value.shape)}:".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        digest.update(f"D{len(value)}:".encode())
        for key in sorted(value, key=lambda k: (type(k).__name__, repr(k))):
            _feed(digest, key)
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"L{len(value)}:".encode())
        for item in value:
            _feed(digest, item)
    elif isinstance(value, float):
        digest.update(f"F{value.hex()};".encode())
    elif value is None or isinstance(value, (bool, int, str)):
        digest.update(f"{type(value).__name__}{value!r};".encode())
    else:
        raise TypeError(f"a checkpoint cannot hold a {type(value).__name__}")


def state_digest(state: dict[str, Any]) -> str:
    """SHA-256 of the content of ``state`` (every tensor's dtype, shape and bytes, every value)."""
    digest = hashlib.sha256()
    _feed(digest, state)
    return digest.hexdigest()


def save_checkpoint(folder: Path, state: dict[str, Any]) -> None:
    """Write ``state`` as ``folder/checkpoint.pt`` with its digest (key ``sha256``); the
    checkpoint it replaces becomes ``checkpoint-previous.pt``. Each file is complete or absent."""
    folder = Path(folder)
    latest, previous = folder / CHECKPOINT, folder / PREVIOUS_CHECKPOINT
    payload = {**state, "format": CHECKPOINT_FORMAT}
    payload["sha256"] = state_digest(payload)
    tmp = _write_temporary(latest, lambda handle: torch.save(payload, handle))
    fault_point("checkpoint-written")
    if latest.exists():
        _replace(latest, previous)
    fault_point("checkpoint-rotated")
    _replace(tmp, latest)


def _verified(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    """The checkpoint at ``path``, checked against its digest; CheckpointError saying why not."""
    state = load_torch(path, map_location)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or "sha256" not in state:
        raise CheckpointError(f"{path} is not a checkpoint of this biohsic version (format "
                              f"{state.get('format') if isinstance(state, dict) else None}, expected "
                              f"{CHECKPOINT_FORMAT}); continue the run with the version that started it, "
                              "or start a new run")
    saved = state.pop("sha256")
    if state_digest(state) != saved:
        raise CheckpointError(f"{path} is damaged (its content does not match its SHA-256 digest)")
    return state


def checkpoint_paths(folder: Path) -> list[Path]:
    """The checkpoints in ``folder``, newest first."""
    return [p for p in (Path(folder) / CHECKPOINT, Path(folder) / PREVIOUS_CHECKPOINT) if p.exists()]


def load_checkpoint(folder: Path, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The newest intact checkpoint of ``folder``, or ``None`` when it has none. A damaged or
    missing latest checkpoint is passed over for the previous one with a
    :class:`~biohsic.errors.CheckpointWarning`; :class:`~biohsic.errors.CheckpointError` when
    checkpoints exist but none is intact."""
    paths = checkpoint_paths(folder)
    problems = []
    for path in paths:
        try:
            state = _verified(path, map_location)
        except CheckpointError as err:
            problems.append(str(err))
            continue
        if path.name != CHECKPOINT:
            why = problems[0] if problems else f"{Path(folder) / CHECKPOINT} is missing"
            warnings.warn(f"{why}; continuing from {path.name} (epoch {state['epoch']}, step {state['step']})",
                          CheckpointWarning, stacklevel=2)
        return state
    if problems:
        raise CheckpointError(f"no intact checkpoint in {folder}: {'; '.join(problems)}; "
                              "start again with --overwrite")
    return None


# --- run folders --------------------------------------------------------------------------
def run_status(folder: Path) -> str | None:
    """What ``folder`` holds: ``None`` (no run), or the status of its run — ``"completed"``,
    ``"diverged"``, or ``"interrupted"`` (stopped or killed before the end)."""
    folder = Path(folder)
    if not any((folder / name).exists() for name in RUN_FILES[:5]):
        return None
    try:
        status = json.loads((folder / SUMMARY).read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        status = None
    return status if status in ("completed", "diverged") else "interrupted"


def clear_run(folder: Path) -> None:
    """Delete the files of the run in ``folder`` (for ``--overwrite``); other files stay."""
    for name in RUN_FILES:
        (Path(folder) / name).unlink(missing_ok=True)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation that failed (host or device memory): something a
    user fixes with smaller settings, not a bug."""
    return isinstance(error, (MemoryError, torch.cuda.OutOfMemoryError)) or (
        isinstance(error, RuntimeError) and "can't allocate memory" in str(error))


def traceback_text(error: BaseException) -> str:
    """``error``'s full traceback, as Python prints it."""
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


def save_traceback(folder: Path, error: BaseException) -> Path:
    """Write ``error``'s full traceback to ``folder/traceback.txt``; returns the path."""
    path = Path(folder) / TRACEBACK
    atomic_write_text(path, traceback_text(error))
    return path


def _command_line() -> str:
    """This process's command line, as a person would type it."""
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if program == "__main__.py":
        program = f"python -m {Path(sys.argv[0]).parent.name}"
    return " ".join([program, *map(shlex.quote, sys.argv[1:])])


#: The lock files this process holds, with how many ``with`` blocks hold each.
_held: dict[Path, int] = {}


class _WriterLock(abc.ABC):
    """An exclusive ``flock`` on :attr:`lock_path`, held by a ``with`` block (see the module
    docstring); subclasses name the lock file and what it protects. ``option``: how error
    messages name the target (the command-line option that chose it)."""

    def __init__(self, target: str | os.PathLike, option: str = "--out"):
        self.target = Path(target)
        self.option = option
        self._fd: int | None = None
        self._created: Path | None = None
        self._key: Path | None = None   # the lock file, resolved when the lock is taken
        self._nested = False

    @property
    @abc.abstractmethod
    def lock_path(self) -> Path:
        """The file whose lock stands for the target."""

    def _make_folder(self, folder: Path) -> None:
        """Create ``folder`` (and its parents); remember the topmost folder created."""
        missing = [p for p in (folder, *folder.parents) if not p.exists()]
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise RunFolderError(f"{self.option} {self.target}: {folder} is a file, not a folder; "
                                 f"choose another {self.option}") from None
        except NotADirectoryError:
            blocker = next((p for p in folder.parents if p.exists() and not p.is_dir()), folder)
            raise RunFolderError(f"{self.option} {self.target}: {blocker} is a file, not a folder; "
                                 f"choose another {self.option}") from None
        except OSError as err:
            raise _refusal(folder, err) from None
        self._created = missing[-1] if missing else None

    def __enter__(self) -> "_WriterLock":
        path = self._key = self.lock_path.resolve()
        if path in _held:  # this process holds it already (a trainer inside a command): nothing to do
            _held[path] += 1
            self._nested = True
            return self
        self._make_folder(path.parent)
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise _refusal(path, err) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 4096).decode(errors="replace").strip().splitlines()
                os.close(fd)
                self._remove_created()
                who = f"process {holder[0]} ({holder[1]})" if len(holder) >= 2 else "another process"
                raise RunFolderError(f"{self.target} is being written by {who}; wait for it to finish "
                                     f"or choose another {self.option}") from None
            try:  # the holder before us removes the file as it leaves: lock the file that is there now
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n{_command_line()}\n".encode())
        self._fd = fd
        _held[path] = 1
        return self

    def _remove_created(self) -> None:
        """Remove the folders :meth:`_make_folder` created, if they are empty."""
        if self._created is None:
            return
        for folder in (self._key.parent, *self._key.parent.parents):
            try:
                folder.rmdir()
            except OSError:
                return
            if folder == self._created:
                return

    def __exit__(self, kind, error, trace) -> None:
        _held[self._key] -= 1
        if self._nested:
            self._nested = False
            return
        del _held[self._key]
        self._key.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None
        self._remove_created()


class RunFolderLock(_WriterLock):
    """``with RunFolderLock(folder):`` — the calling process is the only writer of ``folder``
    until the block ends (see the module docstring). On entry the folder is created if
    needed and temporary files a killed writer left are removed; on exit the lock file is
    removed, and the folder too if this lock created it and it is still empty. When an
    unexpected exception (not a :class:`~biohsic.errors.BiohsicError`, nor an allocation that
    failed) leaves the block, its traceback is saved as ``folder/traceback.txt`` and the path
    set as the exception's ``traceback_path`` attribute (the CLI prints it)."""

    @property
    def lock_path(self) -> Path:
        return self.target / LOCK

    def __enter__(self) -> "RunFolderLock":
        super().__enter__()
        for leftover in self.target.glob(f".*{TEMPORARY_SUFFIX}"):
            leftover.unlink(missing_ok=True)
        return self

    def __exit__(self, kind, error, trace) -> None:
        expected = isinstance(error, BiohsicError) or is_out_of_memory(error)
        unexpected = isinstance(error, Exception) and not expected
        if unexpected and getattr(error, "traceback_path", None) is None:
            try:
                error.traceback_path = save_traceback(self.target, error)
            except BiohsicError:  # the folder cannot be written: the CLI saves it elsewhere
                pass
        super().__exit__(kind, error, trace)


class OutputFileLock(_WriterLock):
    """``with OutputFileLock(path):`` — the calling process is the only writer of the file
    ``path`` until the block ends; the lock file is ``.<name>.lock`` beside it."""

    @property
    def lock_path(self) -> Path:
        return self.target.parent / f".{self.target.name}.lock"

    def __enter__(self) -> "OutputFileLock":
        if self.target.is_dir():
            raise RunFolderError(f"{self.option} {self.target} is a folder; name a file to write")
        super().__enter__()
        return self
