"""Builders and checkpoint helpers shared by train.py, train_ddp.py and inference.py (HEAL's import paths).

``create_model(hypes)``, ``create_loss(hypes)``, ``setup_optimizer``, ``setup_lr_schedular``,
``load_saved_model(saved_path, model)``, ``setup_train(hypes)``, ``to_device``.
"""
import ctypes
import logging
import multiprocessing
import os
import random
import shutil
import signal
import sys
import threading
import time
import uuid
from datetime import datetime

import numpy as np
import torch

from opencood.hypes_yaml.yaml_utils import SOURCE_KEY, require, save_yaml
from opencood.loss.base_loss import Criterion
from opencood.models.base_model import CooperativeModel
from opencood.utils import checkpoint as ckpt
from opencood.utils.atomic_io import pid_alive
from opencood.utils.errors import CheckpointError, ConfigError
from opencood.utils.registry import LOSSES, MODELS

logger = logging.getLogger("opencood.tools.train_utils")


def _src(hypes):
    return hypes.get(SOURCE_KEY, "config")


def create_model(hypes):
    """Build ``model.core_method`` with ``model.args`` through the MODELS registry."""
    name = require(hypes, "model.core_method")
    cls = MODELS.get(name, source=_src(hypes))
    args = require(hypes, "model.args", dict)
    extra = {key: hypes[key] for key in getattr(cls, "HYPES_SECTIONS", ()) if key in hypes}
    args = dict(args, **extra) if extra else args  # top-level sections a model declares (DiscoNet's kd_flag)
    model = _check_base(cls(args), CooperativeModel, f"model.core_method '{name}'", _src(hypes))
    if args.get("bn_momentum") is not None:
        set_bn_momentum(model, float(args["bn_momentum"]))
    return model


def set_bn_momentum(model, momentum):
    """Override the running-statistics momentum of every BatchNorm layer.

    The reference hard-codes 0.01 (PointPillars/SECOND style), which needs thousands of steps before
    the eval-mode statistics settle; short runs (CPU demos, smoke tests) set ``model.args.bn_momentum``.
    """
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum
    return model


def create_loss(hypes):
    """Build ``loss.core_method`` with ``loss.args`` through the LOSSES registry."""
    name = require(hypes, "loss.core_method")
    cls = LOSSES.get(name, source=_src(hypes))
    return _check_base(cls(require(hypes, "loss.args", dict)), Criterion, f"loss.core_method '{name}'", _src(hypes))


def _check_base(obj, base, what, source):
    """The tools call ``base``'s hooks directly: a registered class outside it is a config-time error."""
    if not isinstance(obj, base):
        raise ConfigError(f"{source}: {what} ({type(obj).__name__}) does not derive from "
                          f"{base.__module__}.{base.__name__}")
    return obj

def setup_optimizer(hypes, model):
    """Adam/AdamW/SGD over the parameters that require grad (frozen modules are skipped)."""
    cfg = require(hypes, "optimizer", dict)
    name = cfg.get("core_method", "Adam")
    optim_cls = getattr(torch.optim, name, None)
    if optim_cls is None or not isinstance(optim_cls, type):
        raise ConfigError(f"{_src(hypes)}: unknown optimizer.core_method '{name}'; known: Adam, AdamW, SGD")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(f"{_src(hypes)}: the model has no trainable parameter")
    args = dict(cfg.get("args") or {})
    if name in ("Adam", "AdamW") and all(p.is_cuda for p in params) and not {"fused", "foreach"} & set(args):
        args["fused"] = True  # one kernel per step instead of a few per parameter group; same state_dict
    return optim_cls(params, lr=float(require(hypes, "optimizer.lr")), **args)


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def add_compile_args(parser):
    """``--compile [MODE]`` and ``--compile_modules A,B`` (train.py, train_ddp.py, benchmark.py)."""
    parser.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE",
                        help="torch.compile the dense parts of the model (mode: default, reduce-overhead, ...)")
    parser.add_argument("--compile_modules", default=None, metavar="A,B",
                        help="with --compile: only these top-level modules (e.g. gencomm = the diffusion UNet)")


def compile_from_args(model, opt):
    """Apply ``opt.compile`` / ``opt.compile_modules`` to ``model``; returns the compiled names ([] if off)."""
    if not getattr(opt, "compile", None):
        return []
    modules = getattr(opt, "compile_modules", None)
    return compile_model(model, opt.compile, only=modules.split(",") if modules else None)


def compile_model(model, mode="default", backend="inductor", only=None):
    """``torch.compile`` the dense, fixed-shape parts of a model, in place.

    Every top-level child except the point/sparse encoders (``encoder_*``: pillar/voxel counts change every
    sample, spconv cannot be traced) is compiled with :meth:`torch.nn.Module.compile`, which keeps the
    parameter names, so checkpoints are the same as without compiling. The number of agents changes from
    batch to batch: after the first change PyTorch recompiles once with a dynamic batch dimension.

    Args:
        model: the nn.Module from :func:`create_model` (already on its device).
        mode: one of ``COMPILE_MODES`` (``reduce-overhead`` adds CUDA graphs).
        backend: torch.compile backend (``inductor``; tests use ``aot_eager``).
        only: optional list of child names to compile instead (e.g. ``["gencomm"]``: the diffusion UNet,
            the part with the most small kernels per step, compiles in a fraction of the time).

    Returns:
        the names of the compiled children.
    """
    if mode not in COMPILE_MODES:
        raise ConfigError(f"--compile: unknown mode '{mode}'; known: {', '.join(COMPILE_MODES)}")
    children = dict(model.named_children())
    unknown = sorted(set(only or ()) - set(children))
    if unknown:
        raise ConfigError(f"--compile_modules: no module '{unknown[0]}'; known: {', '.join(children)}")
    names = []
    for name, child in children.items():
        skip = name not in only if only else (name.startswith("encoder_") or isinstance(child, torch.nn.Identity))
        if skip:
            continue
        child.compile(backend=backend, **({} if backend != "inductor" else {"mode": mode}))
        names.append(name)
    return names


def setup_lr_schedular(hypes, optimizer, init_epoch=0):
    """MultiStepLR / StepLR / ExponentialLR stepped once per epoch, pre-stepped to ``init_epoch``."""
    cfg = hypes.get("lr_scheduler") or {"core_method": "multistep", "gamma": 1.0, "step_size": [10 ** 9]}
    name = str(cfg.get("core_method", "multistep")).lower()
    gamma = float(cfg.get("gamma", 0.1))
    if name == "multistep":
        steps = cfg.get("step_size", [])
        steps = steps if isinstance(steps, list) else [steps]
        bad = [s for s in steps if isinstance(s, bool) or not isinstance(s, int) or s < 0]
        if bad:
            raise ConfigError(f"{_src(hypes)}: lr_scheduler.step_size must list epochs (integers >= 0); got {bad!r}")
        sched = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[int(s) for s in steps], gamma=gamma)
    elif name == "step":
        sched = torch.optim.lr_scheduler.StepLR(optimizer, step_size=int(cfg["step_size"]), gamma=gamma)
    elif name == "exponential":
        sched = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)
    else:
        raise ConfigError(f"{_src(hypes)}: unknown lr_scheduler.core_method '{name}'; known: exponential, multistep, step")
    for _ in range(init_epoch):
        sched.step()
    return sched


def dataloader_worker_init(worker_id):
    """DataLoader ``worker_init_fn``: one thread per worker for every thread pool a worker may touch.

    A worker inherits the parent's pools (numpy's OpenBLAS, OpenCV) sized for the whole machine; with W
    workers on C cores that is up to W x C threads competing for C cores (on a 16-core GPU host, 8 workers
    gave 6.5 samples/s with the inherited pools and 7.1 with this). PyTorch already sets its own pool to
    one thread in workers; it is set again here so the function is complete on its own.

    The worker also dies with the process that started it (:func:`exit_with_parent`): a trainer killed with
    SIGKILL leaves no worker behind.
    """
    torch.set_num_threads(1)
    exit_with_parent()
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
    except ImportError:  # optional: without it numpy's BLAS keeps its default pool
        pass
    try:
        import cv2
        cv2.setNumThreads(1)
    except ImportError:
        pass


_PR_SET_PDEATHSIG = 1


def exit_with_parent(poll_s=1.0):
    """Make this process exit when the process that started it dies (a DataLoader worker of a killed trainer).

    On Linux the kernel sends SIGKILL on the parent's death (``prctl(PR_SET_PDEATHSIG)``); where that is not
    available, or the OS parent is not the starter (a forkserver), a daemon thread checks every ``poll_s``
    seconds that the starter still runs. A starter already gone is noticed at once. A process not started by
    ``multiprocessing`` (the trainer itself) is left alone.
    """
    started_by = multiprocessing.parent_process()
    if started_by is None:  # a main process: nothing to follow
        return
    parent = started_by.pid
    armed = False
    if sys.platform.startswith("linux"):
        try:
            armed = ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) == 0
        except (OSError, AttributeError):
            armed = False
    if not pid_alive(parent):
        os._exit(1)
    if armed and os.getppid() == parent:
        return

    def watch():
        while pid_alive(parent):
            time.sleep(poll_s)
        os._exit(1)
    threading.Thread(target=watch, daemon=True, name="exit_with_parent").start()


def to_device(inputs, device):
    """Move nested dicts/lists of tensors to ``device`` (non_blocking for pinned memory)."""
    if isinstance(inputs, dict):
        return {k: to_device(v, device) for k, v in inputs.items()}
    if isinstance(inputs, list):
        return [to_device(v, device) for v in inputs]
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device, non_blocking=True)
    return inputs


def setup_train(hypes, root="opencood/logs"):
    """Create ``<root>/<name>_<YYYY_MM_DD_HH_MM_SS>/`` with ``config.yaml`` and a copy of the code.

    The folder appears with its ``config.yaml`` or not at all: it is built under a hidden temp name
    (``.<name>_<stamp>.tmp-<pid>-<hex>``) holding the config and renamed into place, so a killed start
    never leaves a run folder that cannot be resumed. The code copy follows (it is not needed to resume).
    """
    name = hypes.get("name", "run")
    stamp = datetime.now().strftime("%Y_%m_%d_%H_%M_%S")
    os.makedirs(root, exist_ok=True)
    tmp = os.path.join(root, f".{name}_{stamp}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    try:
        save_yaml(hypes, os.path.join(tmp, "config.yaml"))
        full = _rename_to_free_name(tmp, os.path.join(root, f"{name}_{stamp}"))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for sub in ("models", "data_utils", "utils", "loss"):
        shutil.copytree(os.path.join(pkg, sub), os.path.join(full, "scripts", sub),
                        ignore=shutil.ignore_patterns("__pycache__"))
    return full


def _rename_to_free_name(src, dst):
    """Rename the folder ``src`` to ``dst``, or ``dst_1``, ``dst_2``, ... when taken; returns the name used."""
    k, full = 0, dst
    while True:
        try:
            os.rename(src, full)  # fails on an existing non-empty folder; an empty one is checked first
            return full
        except OSError:
            if not os.path.exists(full):
                raise
        k += 1
        full = f"{dst}_{k}"


def load_state_into(model, path, strict=True, required_prefixes=()):
    """Check then load a state_dict file into ``model`` (CheckpointError on any mismatch).

    The model's own ``check_state_dict`` runs first (its message says what a partial file lacks), then the
    generic key and shape check.
    """
    state = ckpt.read_state_dict(path)
    model.check_state_dict(state, path)
    ckpt.check_state_dict(model, state, path, strict=strict, required_prefixes=required_prefixes)
    model.load_state_dict(state, strict=False)
    return model


def load_saved_model(saved_path, model, prefer_bestval=True, strict=None):
    """Load the checkpoint HEAL would pick from a run folder.

    The unique ``net_epoch_bestval_at{N}.pth`` if present (``prefer_bestval``), else the latest
    ``net_epoch{N}.pth``. Keys and shapes are checked first; a model that declares
    ``required_prefixes()`` (e.g. GenComm stage 2 from a merged checkpoint) may load a partial dict
    as long as those prefixes are complete.

    Returns:
        (epoch N, model).

    Raises:
        CheckpointError: no such folder, or it holds no checkpoint (evaluating random weights would give
            a number that looks like a result).
    """
    if not os.path.isdir(saved_path):
        raise CheckpointError(f"{saved_path}: model folder not found")
    epoch, path = ckpt.find_checkpoint(saved_path, prefer_bestval=prefer_bestval)
    if path is None:
        raise CheckpointError(f"{saved_path}: no checkpoint (net_epoch*.pth or net_epoch_bestval_at*.pth) "
                              f"to load; train first or point --model_dir at a trained run")
    required = tuple(model.required_prefixes())
    if strict is None:
        strict = not required
    load_state_into(model, path, strict=strict, required_prefixes=required)
    logger.info(f"loaded {path} (epoch {epoch})")
    return epoch, model


def seed_everything(seed):
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)

