"""Exceptions that carry a one-line, user-facing message naming the file and the key at fault.

Command-line tools catch :class:`OpencoodError` and print ``error: <message>`` (one line) and exit 2,
so a researcher sees *what* is wrong and *where* instead of a traceback from deep inside training.
"""


import sys


class OpencoodError(Exception):
    """Base class of every error we raise on purpose for bad input."""


class ConfigError(OpencoodError):
    """A YAML file is malformed, misses a key, or names something unknown."""


class DataError(OpencoodError):
    """A dataset folder, agent file (PCD/YAML/PNG/JSON) is missing or corrupt."""


class CheckpointError(OpencoodError):
    """A checkpoint is missing, ambiguous, corrupt, or its keys/shapes do not fit the model."""


def one_line(exc: BaseException) -> str:
    """Render an exception as a single line (newlines folded) for CLI output."""
    return " ".join(str(exc).split())


def exit_on_error(fn, *args, **kwargs):
    """Run a CLI body: an OpencoodError becomes one line ``error: <message>`` on stderr and exit status 2."""
    try:
        return fn(*args, **kwargs)
    except OpencoodError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)
