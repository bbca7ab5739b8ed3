"""Checkpoint files: atomic writes, HEAL naming, and loading that checks keys and shapes.

Layout in a run folder (HEAL-compatible):
- ``net_epoch{N}.pth``               plain model ``state_dict`` after N epochs;
- ``net_epoch_bestval_at{N}.pth``    plain ``state_dict`` of the best validation epoch (at most one);
- ``train_state_epoch{N}.pth``       optimizer, scheduler, GradScaler, epoch, RNG states and best val
                                     loss, so a resumed run continues exactly where it stopped. Only
                                     tensors, numbers, strings and containers of them: it loads with
                                     ``torch.load(weights_only=True)``, so a planted file cannot run code;
- ``run.lock``                       held by the trainer writing the folder (:class:`RunLock`).

:class:`Checkpointer` owns these files for the trainer.
"""
import contextlib
import errno
import glob
import io
import math
import os
import random
import re
import socket

import numpy as np
import torch

from opencood.utils.atomic_io import atomic_write_bytes, pid_alive
from opencood.utils.errors import CheckpointError, RunError

_EPOCH_RE = re.compile(r"net_epoch(\d+)\.pth$")
_BEST_RE = re.compile(r"net_epoch_bestval_at(\d+)\.pth$")


def atomic_torch_save(obj, path):
    """Save with torch.save to a temp file in the same folder, fsync, then rename over ``path``.

    The file is serialised in memory first and then written with plain writes, so a full disk is an
    ``ENOSPC`` OSError (a one-line RunError naming ``path``, see :mod:`opencood.utils.atomic_io`) instead of
    torch's ``inline_container ... unexpected pos``; nothing partial is left.
    """
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getbuffer(), fsync=True)


def _scan(model_dir, pattern, regex):
    out = {}
    for p in glob.glob(os.path.join(model_dir, pattern)):
        m = regex.search(os.path.basename(p))
        if m:
            out[int(m.group(1))] = p
    return out


def epoch_checkpoints(model_dir):
    """Return {epoch: path} of ``net_epoch{N}.pth`` files in ``model_dir``."""
    return _scan(model_dir, "net_epoch*.pth", _EPOCH_RE)


def bestval_checkpoints(model_dir):
    """Return {epoch: path} of ``net_epoch_bestval_at{N}.pth`` files in ``model_dir``."""
    return _scan(model_dir, "net_epoch_bestval_at*.pth", _BEST_RE)


def find_checkpoint(model_dir, prefer_bestval=True):
    """Pick the checkpoint HEAL would: the unique bestval file if any, else the latest epoch.

    Returns:
        (epoch, path), or (0, None) when the folder holds no checkpoint.

    Raises:
        CheckpointError: two or more bestval files (ambiguous).
    """
    best = bestval_checkpoints(model_dir)
    if prefer_bestval and best:
        if len(best) > 1:
            names = ", ".join(os.path.basename(p) for p in sorted(best.values()))
            raise CheckpointError(f"{model_dir}: ambiguous, {len(best)} bestval checkpoints ({names}); keep one")
        epoch, path = next(iter(best.items()))
        return epoch, path
    epochs = epoch_checkpoints(model_dir)
    if not epochs:
        return 0, None
    last = max(epochs)
    return last, epochs[last]


def read_state_dict(path):
    """Load a plain state_dict (CPU); a truncated/corrupt file gives a one-line CheckpointError."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt zip/pickle data
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a model state_dict")
    # DDP checkpoints from other tools carry a 'module.' prefix
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def check_state_dict(model, state_dict, path, strict=True, required_prefixes=()):
    """Compare a state_dict with a model before loading anything.

    Args:
        model: the torch module.
        state_dict: dict of tensors.
        path: file name used in error messages.
        strict: missing model keys are an error (unexpected keys always are, shape mismatches always are).
        required_prefixes: key prefixes that must be present even when ``strict`` is False.

    Raises:
        CheckpointError naming the file and the first offending key.
    """
    own = model.state_dict()
    for k, v in state_dict.items():
        if k not in own:
            raise CheckpointError(f"{path}: unexpected key '{k}' (not in {type(model).__name__}); "
                                  f"{sum(1 for x in state_dict if x not in own)} such keys")
        if tuple(own[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{path}: key '{k}' has shape {tuple(v.shape)}, model expects {tuple(own[k].shape)}")
    missing = [k for k in own if k not in state_dict]
    if strict and missing:
        raise CheckpointError(f"{path}: missing key '{missing[0]}' ({len(missing)} model keys absent)")
    for prefix in required_prefixes:
        need = [k for k in own if k.startswith(prefix)]
        absent = [k for k in need if k not in state_dict]
        if absent:
            raise CheckpointError(f"{path}: missing key '{absent[0]}' (the model needs every '{prefix}*' key)")
    return missing


def train_state_path(model_dir, epoch):
    return os.path.join(model_dir, f"train_state_epoch{epoch}.pth")


def rng_state():
    """RNG states of python, numpy, torch and CUDA as tensors, lists and numbers (``weights_only``-safe)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"python": [version, list(internal), gauss_next],
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state):
    """Restore what :func:`rng_state` returned (CUDA states only on a machine with as many devices)."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)


_TRAIN_STATE_KEYS = ("epoch", "optimizer", "scheduler", "scaler", "best_val", "rng")


def load_train_state(path):
    """Read a ``train_state_epoch{N}.pth`` with ``weights_only=True``.

    Raises:
        CheckpointError: one line naming the file when it cannot be read (truncated, or holding anything
            but tensors/numbers/containers, e.g. pickled code) or lacks a key.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt zip, or an object the weights-only unpickler refuses
        raise CheckpointError(f"{path}: cannot read training state "
                              f"({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None
    missing = [k for k in _TRAIN_STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a training state (missing key '{missing[0]}')")
    return state


class Checkpointer:
    """The checkpoint files of one run folder (names and layout: see the module docstring).

    Args:
        run_dir: the run folder (must exist).
    """

    def __init__(self, run_dir):
        self.run_dir = run_dir

    def resume_point(self):
        """Where a run resumes: the latest ``net_epoch{N}.pth``, a bestval file only when there is none.

        Returns:
            (epoch, path), or (0, None) for an empty folder.

        Raises:
            CheckpointError: the folder does not exist, or several bestval files and no regular one.
        """
        if not os.path.isdir(self.run_dir):
            raise CheckpointError(f"{self.run_dir}: model folder not found")
        epochs = epoch_checkpoints(self.run_dir)
        if epochs:
            last = max(epochs)
            return last, epochs[last]
        return find_checkpoint(self.run_dir, prefer_bestval=True)

    def load_train_state(self, epoch):
        """The training state saved with epoch ``epoch``, or None when there is none (e.g. a merged file)."""
        path = train_state_path(self.run_dir, epoch)
        return load_train_state(path) if os.path.isfile(path) else None

    def save(self, epoch, model, state):
        """Write ``train_state_epoch{epoch}.pth`` then ``net_epoch{epoch}.pth`` (each atomically), then drop
        older training states except the bestval epoch's.

        The training state goes first: a model checkpoint on disk always has its state beside it.

        Args:
            epoch: number of finished epochs.
            model: the unwrapped module (plain state_dict keys).
            state: the training state (see :func:`train_state`).
        """
        atomic_torch_save(state, train_state_path(self.run_dir, epoch))
        atomic_torch_save(model.state_dict(), os.path.join(self.run_dir, f"net_epoch{epoch}.pth"))
        self.cleanup_train_states(keep_epoch=epoch)

    def save_bestval(self, epoch, model, state):
        """Replace the single ``net_epoch_bestval_at{N}.pth`` by ``..._at{epoch}.pth`` and save its state."""
        for path in bestval_checkpoints(self.run_dir).values():
            os.remove(path)
        atomic_torch_save(model.state_dict(), os.path.join(self.run_dir, f"net_epoch_bestval_at{epoch}.pth"))
        atomic_torch_save(state, train_state_path(self.run_dir, epoch))

    def cleanup_train_states(self, keep_epoch):
        """Remove every ``train_state_epoch*.pth`` but ``keep_epoch``'s and the bestval epochs'."""
        keep = {os.path.basename(train_state_path(self.run_dir, e))
                for e in [keep_epoch, *bestval_checkpoints(self.run_dir)]}
        for f in os.listdir(self.run_dir):
            if f.startswith("train_state_epoch") and f not in keep:
                os.remove(os.path.join(self.run_dir, f))


def train_state(epoch, optimizer, scheduler, scaler, best_val=math.inf):
    """The training state of a run after ``epoch`` epochs, as :class:`Checkpointer` saves it.

    Args:
        epoch: number of finished epochs.
        optimizer, scheduler, scaler: their ``state_dict()`` is stored (tensors, numbers, lists, Counter).
        best_val: best validation loss so far.
    """
    return {"epoch": epoch, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "best_val": float(best_val), "rng": rng_state()}


LOCK_NAME = "run.lock"


class RunLock:
    """Exclusive lock of a run folder: one trainer writes a folder at a time.

    ``run.lock`` holds ``<pid> <host>`` of the trainer. It is locked with ``flock``, which the kernel releases
    when the process dies (a trainer killed with SIGKILL leaves a stale file, never a stale lock). Where
    ``flock`` is not supported, a lock file is stale when its pid no longer runs on this host.

    Args:
        run_dir: the run folder (must exist).

    Raises (``acquire``):
        RunError: another live trainer holds the folder (one line with its pid and host).
    """

    def __init__(self, run_dir):
        self.path = os.path.join(run_dir, LOCK_NAME)
        self.fd = None

    def acquire(self):
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if not self._flock(fd):
                    owner = self._owner(fd)
                    raise RunError(f"{os.path.dirname(self.path)}: run folder in use by another trainer "
                                   f"({owner}; lock {self.path}); wait for it to end or give another --model_dir")
                if self._still_linked(fd):
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
                    self.fd = fd
                    return self
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # locked a file its owner removed on release: lock the current one

    def _still_linked(self, fd):
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def _flock(self, fd):
        """True when this process now holds the lock."""
        import fcntl
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
        pid, host = self._read(fd)  # no flock on this file system: stale when the pid is gone
        return pid is None or host != socket.gethostname() or not pid_alive(pid) or pid == os.getpid()

    @staticmethod
    def _read(fd):
        parts = os.pread(fd, 256, 0).decode(errors="replace").split()
        try:
            return int(parts[0]), (parts[1] if len(parts) > 1 else "")
        except (IndexError, ValueError):
            return None, ""

    def _owner(self, fd):
        pid, host = self._read(fd)
        return f"pid {pid} on {host}" if pid is not None else "pid unknown"

    def release(self):
        """Remove the lock file and release the lock (idempotent)."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self.fd)
        self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
