"""Checkpoint files: atomic writes, HEAL naming, and loading that checks keys and shapes.

Layout in a run folder (HEAL-compatible):
- ``net_epoch{N}.pth``               plain model ``state_dict`` after N epochs;
- ``net_epoch_bestval_at{N}.pth``    plain ``state_dict`` of the best validation epoch (at most one);
- ``train_state_epoch{N}.pth``       optimizer, scheduler, epoch, RNG states and best val loss, so a
                                     resumed run continues exactly where it stopped.
"""
import glob
import os
import re

import torch

from opencood.utils.atomic_io import atomic_open
from opencood.utils.errors import CheckpointError

_EPOCH_RE = re.compile(r"net_epoch(\d+)\.pth$")
_BEST_RE = re.compile(r"net_epoch_bestval_at(\d+)\.pth$")


def atomic_torch_save(obj, path):
    """Save with torch.save to a temp file in the same folder, fsync, then rename over ``path``."""
    with atomic_open(path, "wb", fsync=True) as f:
        torch.save(obj, f)


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
