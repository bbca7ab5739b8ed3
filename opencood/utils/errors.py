"""Exceptions that carry a one-line, user-facing message naming the file and the key at fault.

Command-line tools catch :class:`OpencoodError` and print ``error: <message>`` (one line) and exit 2,
so a researcher sees *what* is wrong and *where* instead of a traceback from deep inside training.

A DataLoader worker re-raises its exception in the main process as ``type(exc)(folded worker traceback)``;
an :class:`OpencoodError` built that way keeps only the original message, so the CLI line is the same
whatever the number of workers. A failed write for lack of space or an I/O error (``ENOSPC``, ``EIO``,
``EDQUOT``, ``EFBIG``, ``EROFS``) reaches the CLI as ``error: <file>: <reason>`` too.
"""
import errno
import sys

_WORKER_TRACEBACK = "Original Traceback (most recent call last):"

STORAGE_ERRNOS = frozenset(getattr(errno, n) for n in ("ENOSPC", "EIO", "EDQUOT", "EFBIG", "EROFS")
                           if hasattr(errno, n))
"""errno values of a write that failed because of the disk (not of the program)."""


class OpencoodError(Exception):
    """Base class of every error we raise on purpose for bad input."""

    def __init__(self, *args):
        if len(args) == 1 and isinstance(args[0], str) and _WORKER_TRACEBACK in args[0]:
            args = (_worker_message(type(self), args[0]),)
        super().__init__(*args)


def _worker_message(cls, text):
    """The original message inside a DataLoader worker's folded traceback of a ``cls`` exception."""
    for name in (f"{cls.__module__}.{cls.__qualname__}: ", f"{cls.__qualname__}: "):
        at = text.rfind("\n" + name)
        if at >= 0:
            return text[at + 1 + len(name):].strip()
    return text.strip().splitlines()[-1]


class ConfigError(OpencoodError):
    """A YAML file is malformed, misses a key, or names something unknown."""


class DataError(OpencoodError):
    """A dataset folder, agent file (PCD/YAML/PNG/JSON) is missing or corrupt."""


class CheckpointError(OpencoodError):
    """A checkpoint is missing, ambiguous, corrupt, or its keys/shapes do not fit the model."""


class RunError(OpencoodError):
    """The run folder cannot be used: another trainer holds its lock, or a file in it cannot be written."""


def storage_error(path, exc):
    """One-line :class:`RunError` for an OSError of writing ``path`` (``'<path>: no space left on device'``)."""
    reason = (exc.strerror or str(exc)).lower() if isinstance(exc, OSError) else str(exc)
    return RunError(f"{path}: cannot write ({reason})")


def one_line(exc: BaseException) -> str:
    """Render an exception as a single line (newlines folded) for CLI output."""
    return " ".join(str(exc).split())


def exit_on_error(fn, *args, **kwargs):
    """Run a CLI body: an OpencoodError, or a write that failed for lack of space / an I/O error, becomes one
    line ``error: <message>`` on stderr and exit status 2."""
    try:
        return fn(*args, **kwargs)
    except OpencoodError as e:
        message = one_line(e)
    except OSError as e:
        if e.errno not in STORAGE_ERRNOS:
            raise
        message = one_line(storage_error(e.filename or "a file", e))
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
