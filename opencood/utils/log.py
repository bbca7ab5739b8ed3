"""Logging of the tools: console lines as plain messages, plus a text log file in the run folder.

Every module logs through ``logging.getLogger(__name__)`` (a child of the ``opencood`` logger) or
:data:`logger`. :func:`setup_logging` gives the ``opencood`` logger one console handler (messages as they
are, INFO and WARNING on stdout where the progress bars are, ERROR on stderr) and, with a folder, one file
handler writing ``<run_dir>/<filename>`` with a time stamp and level per line. Calling it again replaces
the file handler (no duplicate lines when a process trains, then runs inference, or in tests).
"""
import logging
import os
import sys

logger = logging.getLogger("opencood")

FILE_ONLY = {"file_only": True}
"""``logger.info(msg, extra=FILE_ONLY)`` writes ``msg`` into the log file but not on the console (a line
the console has already shown, e.g. logged before the run folder existed)."""

_FILE_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"


class _ConsoleHandler(logging.Handler):
    """Plain messages on the process's current stdout (stderr for ERROR and above).

    The stream is looked up at each record, so a redirected ``sys.stdout`` (pytest's capsys,
    ``contextlib.redirect_stdout``) gets the lines, as it would get ``print``'s.
    """

    def __init__(self):
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))
        self.addFilter(lambda record: not getattr(record, "file_only", False))

    def emit(self, record):
        try:
            stream = sys.stderr if record.levelno >= logging.ERROR else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # logging's contract: a failing handler reports and never raises
            self.handleError(record)


class _RunFileHandler(logging.FileHandler):
    """The run folder's text log (appended to, so a resumed run continues the same file)."""


def setup_logging(run_dir=None, filename=None):
    """Configure the ``opencood`` logger; idempotent.

    Args:
        run_dir: folder of the log file (must exist); None: console only (an earlier log file is closed).
        filename: log file name inside ``run_dir`` (``train.log``, ``inference.log``).

    Returns:
        the ``opencood`` logger.
    """
    logger.setLevel(logging.INFO)
    if not any(isinstance(h, _ConsoleHandler) for h in logger.handlers):
        logger.addHandler(_ConsoleHandler())
    close_log_file()
    if run_dir is not None:
        handler = _RunFileHandler(os.path.join(run_dir, filename or "run.log"), mode="a", encoding="utf-8")
        handler.setFormatter(logging.Formatter(_FILE_FORMAT))
        logger.addHandler(handler)
    return logger


def close_log_file():
    """Detach and close the log file handler, if any (console output stays)."""
    for h in [h for h in logger.handlers if isinstance(h, _RunFileHandler)]:
        logger.removeHandler(h)
        h.close()

