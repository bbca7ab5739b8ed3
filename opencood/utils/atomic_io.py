"""Atomic file writes: the data goes to a temp file in the target's folder, which then replaces the target.

Readers (a resumed run, another DataLoader worker, a crashed process's successor) see the old file or the new
one, never a partial one, and a failed write leaves the old file untouched. A write that fails because the
disk is full or failing (``ENOSPC``, ``EIO``, ...) raises a one-line :class:`~opencood.utils.errors.RunError`
naming the target file.

Temp files are named ``<target>.tmp-<pid>-<8 hex>``; :func:`remove_stale_temp_files` deletes those of
processes that no longer run (a killed trainer's), e.g. when a run folder is opened again.
"""
import contextlib
import os
import re
import uuid

from opencood.utils.errors import STORAGE_ERRNOS, storage_error

_TMP_RE = re.compile(r"\.tmp-(\d+)-[0-9a-f]{8}$")


@contextlib.contextmanager
def atomic_open(path, mode="wb", fsync=False):
    """Open a temp file next to ``path``; when the ``with`` block ends normally it replaces ``path``.

    The temp name is unique per process and call (pid + random suffix), so concurrent writers never share one,
    and it is created with ``open(..., 'x')``, so it honours the umask. On any exception the temp file is
    removed and the exception re-raised (an OSError of a full or failing disk as a one-line RunError).

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
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in STORAGE_ERRNOS:
            raise storage_error(path, e) from None
        raise


def atomic_write_bytes(path, data, fsync=False):
    """Write ``data`` (bytes-like) to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "wb", fsync=fsync) as f:
        f.write(data)


def pid_alive(pid):
    """True while a process ``pid`` exists on this machine (this process included)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temp_files(folder):
    """Delete the temp files of :func:`atomic_open` in ``folder`` (not recursive) whose writer process is gone.

    Only names of this module's exact pattern are touched. Returns the removed paths.
    """
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        m = _TMP_RE.search(name)
        if m and not pid_alive(int(m.group(1))):
            path = os.path.join(folder, name)
            with contextlib.suppress(OSError):
                os.unlink(path)
                removed.append(path)
    return removed
