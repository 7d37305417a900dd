"""Errors a user can fix. The CLI prints each as one line on stderr and exits with code 2."""


class BiohsicError(Exception):
    """Base class: the message names the problem and the fix, in one line."""


class ConfigError(BiohsicError, ValueError):
    """A configuration value is out of range or unknown."""


class DataError(BiohsicError):
    """A data file or directory is missing, truncated or of the wrong format."""


class DivergenceError(BiohsicError):
    """Training produced non-finite numbers."""


class CheckpointError(BiohsicError):
    """A saved file (checkpoint, reservoir) is missing, corrupt or does not fit the run."""


class RunFolderError(BiohsicError):
    """An output folder or file cannot be written: another process is writing it, it holds a
    run that would be overwritten, it holds no run to resume, or the file system refuses."""


class CheckpointWarning(UserWarning):
    """A damaged checkpoint was passed over for the one before it (the CLI prints one line)."""


class EngineWarning(UserWarning):
    """The compiled engine cannot serve a run, which runs on the eager engine (the CLI prints one line)."""


def require(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)
