"""Atomic file writes: the data goes to a temp file in the target's folder, which then replaces the target.

Readers (a resumed run, another DataLoader worker, a crashed process's successor) see the old file or the new
one, never a partial one, and a failed write leaves the old file untouched.
"""
import contextlib
import os
import uuid


@contextlib.contextmanager
def atomic_open(path, mode="wb", fsync=False):
    """Open a temp file next to ``path``; when the ``with`` block ends normally it replaces ``path``.

    The temp name is unique per process and call (pid + random suffix), so concurrent writers never share one,
    and it is created with ``open(..., 'x')``, so it honours the umask. On any exception the temp file is
    removed and the exception re-raised.

    Args:
        path: target file; its folder must exist.
        mode: ``'wb'`` or ``'w'``.
        fsync: flush the file to disk before the rename (checkpoints: survive a power loss, not only a crash).

    Yields:
        the open temp file.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, mode.replace("w", "x")) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
