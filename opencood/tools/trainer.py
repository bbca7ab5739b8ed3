"""The training loop behind ``train.py`` and ``train_ddp.py`` (and the training step ``benchmark.py`` times).

One loop for single-process and DistributedDataParallel runs, so a DDP run resumes single-process
and vice versa. Per epoch: reseed from (seed, epoch), re-draw the dataset's agent order/types,
train, save ``net_epoch{N}.pth`` (+ ``train_state_epoch{N}.pth``) every ``save_freq`` epochs and at
the end, validate every ``eval_freq`` epochs and keep a single ``net_epoch_bestval_at{N}.pth``.
Reseeding from the epoch number makes a resumed run continue exactly where it stopped. The console
lines also go to ``train.log`` in the run folder.

Building blocks: :func:`train_step` (one optimizer step), :func:`train_one_epoch`, :func:`validate`.
"""
import argparse
import contextlib
import dataclasses
import logging
import math
import os
import sys
import time
from typing import Callable

import torch
import torch.distributed as dist
from tqdm import tqdm

from opencood.data_utils.datasets import build_dataset
from opencood.hypes_yaml.yaml_utils import (BASE_KEY, IGNORED_KEY, SOURCE_KEY, add_config_args, load_yaml,
                                             read_yaml_file, require, save_yaml)
from opencood.tools import loaders, train_utils
from opencood.tools.inference import FUSION_METHODS, check_fusion_method
from opencood.utils import checkpoint as ckpt
from opencood.utils import input_stats
from opencood.utils.atomic_io import atomic_write_bytes, remove_stale_temp_files
from opencood.utils.errors import exit_on_error
from opencood.utils.log import FILE_ONLY, close_log_file, setup_logging

logger = logging.getLogger("opencood.tools.trainer")

# HEAL's curve name of the total; every other term's name comes from the loss's TB_NAMES
_TOTAL_TB_NAME = {"total_loss": "Total_loss"}


def build_parser(ddp=False):
    p = argparse.ArgumentParser(description="Train a cooperative perception model from a YAML config.")
    p.add_argument("-y", "--hypes_yaml", type=str, required=True,
                   help="config file; 'None' when --model_dir holds config.yaml")
    p.add_argument("--model_dir", default="", help="resume from (or continue training in) this run folder")
    p.add_argument("-f", "--fusion_method", default="intermediate", choices=FUSION_METHODS,
                   help="fusion method of the final test (checked against the config before training)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num_workers", type=int, default=None, help="DataLoader workers (default: min(4, cpus))")
    p.add_argument("--skip_test", action="store_true", help="do not run inference on the test split at the end")
    p.add_argument("--check_data", choices=("files", "full"), default="files",
                   help="up-front dataset check: 'files' (every file the run reads exists) or 'full' (also parse "
                        "every agent YAML and PCD header of the train, validate and test splits)")
    p.add_argument("--amp", action="store_true", help="mixed precision (bf16 where supported, else fp16+GradScaler)")
    train_utils.add_compile_args(p)
    p.add_argument("--log_root", default="opencood/logs", help="where new run folders are created")
    add_config_args(p)  # --set key.path=value
    if ddp:
        p.add_argument("--dist_url", default="env://", help="kept for HEAL compatibility; env:// is used")
        p.add_argument("--half", action="store_true", help="HEAL's name for --amp")
        p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return p


class _Dist:
    """Process-group bookkeeping; a no-op when not distributed."""

    def __init__(self, enabled):
        self.enabled = enabled and int(os.environ.get("WORLD_SIZE", "1")) >= 1 and "RANK" in os.environ
        self.rank, self.world, self.local_rank = 0, 1, 0
        if self.enabled:
            self.rank = int(os.environ["RANK"])
            self.world = int(os.environ["WORLD_SIZE"])
            self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            if torch.cuda.is_available():
                torch.cuda.set_device(self.local_rank)
            dist.init_process_group(backend=backend)

    @property
    def main(self):
        return self.rank == 0

    def barrier(self):
        if self.enabled:
            dist.barrier()

    def broadcast_object(self, obj):
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self):
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def _amp_dtype(device):
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


def autocast_factory(device, enabled):
    """Zero-argument context factory: ``torch.autocast`` at the AMP dtype of ``device``, or a no-op."""
    if not enabled:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=_amp_dtype(device))


def tensorboard_names(criterion):
    """{loss term: tensorboard scalar name} from the loss's ``TB_NAMES`` (HEAL's curve names)."""
    return {**_TOTAL_TB_NAME, **criterion.TB_NAMES}


class _LossLog:
    """Per-step tensorboard scalars without a host-device sync per step.

    The loss terms of each step are kept as detached device tensors and copied to the host together
    every ``every`` steps (one sync instead of one per term and step); the curves are the same.

    Args:
        writer: tensorboardX SummaryWriter.
        bar: the tqdm bar whose postfix shows the last total loss.
        names: {term: scalar name} (:func:`tensorboard_names`); other terms keep their own name.
        every: steps per host copy.
    """

    def __init__(self, writer, bar, names, every=20):
        self.writer, self.bar, self.names, self.every = writer, bar, names, every
        self.pending = []  # (step, names, stacked 0-d tensors)

    def add(self, step, tensors):
        names = list(tensors)
        if self.pending and names != self.pending[-1][1]:
            self.flush()  # rows of one flush must stack
        self.pending.append((step, names, torch.stack([tensors[k].detach().float() for k in names])))
        if len(self.pending) >= self.every:
            self.flush()

    def flush(self):
        if not self.pending:
            return
        values = torch.stack([v for _, _, v in self.pending]).cpu().tolist()  # one sync
        for (step, names, _), row in zip(self.pending, values):
            for k, v in zip(names, row):
                self.writer.add_scalar(self.names.get(k, k), v, step)
        names, row = self.pending[-1][1], values[-1]
        total = row[names.index("total_loss")] if "total_loss" in names else row[0]
        self.bar.set_postfix(loss=f"{total:.3f}")
        self.pending = []


def _has_gt(batch):
    mask = batch["ego"].get("object_bbx_mask")
    return mask is None or bool(mask.sum() > 0)


# ---------------------------------------------------------------------------------------------------------
# one step, one epoch, validation
# ---------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class TrainContext:
    """What a training step needs.

    Attributes:
        net: the model, or its DistributedDataParallel wrapper (the forward runs through it).
        criterion: the loss (:class:`opencood.loss.base_loss.Criterion`).
        optimizer: over the model's trainable parameters.
        scaler: ``torch.amp.GradScaler`` (enabled for fp16 autocast only).
        autocast: zero-argument context factory (:func:`autocast_factory`).
    """
    net: torch.nn.Module
    criterion: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    autocast: Callable = contextlib.nullcontext


def make_train_context(hypes, model, criterion, device, amp=False):
    """Optimizer (``hypes['optimizer']``), GradScaler and autocast of ``model`` on ``device``; net = model."""
    use_scaler = amp and device.type == "cuda" and _amp_dtype(device) == torch.float16
    return TrainContext(model, criterion, train_utils.setup_optimizer(hypes, model),
                        torch.amp.GradScaler("cuda", enabled=use_scaler), autocast_factory(device, amp))


def unwrap(net):
    """The model inside a DistributedDataParallel wrapper (or ``net`` itself)."""
    return net.module if isinstance(net, torch.nn.parallel.DistributedDataParallel) else net


def forward_loss(net, criterion, batch):
    """Forward and loss of one collated batch (on the model's device): ``(total, terms)``.

    The model's :meth:`CooperativeModel.training_step` is called with ``forward=net``: the forward runs
    through ``net``, because a DDP wrapper only synchronises gradients when its own forward is called.

    Returns:
        total loss (scalar tensor) and an ordered dict of detached 0-d tensors (``total_loss`` + terms).
    """
    return unwrap(net).training_step(batch, criterion, forward=net)


def train_step(ctx, batch):
    """One optimizer step: forward and loss under autocast, backward through the GradScaler, step.

    Args:
        ctx: :class:`TrainContext`.
        batch: collated batch already on the device (and device-preprocessed).

    Returns:
        (total loss, detached), terms ({name: detached 0-d tensor}); nothing here waits for the device.
    """
    ctx.optimizer.zero_grad(set_to_none=True)
    with ctx.autocast():
        total, terms = forward_loss(ctx.net, ctx.criterion, batch)
    if total.requires_grad:  # a batch can reach no trainable parameter (e.g. only frozen agent types)
        ctx.scaler.scale(total).backward()
        ctx.scaler.step(ctx.optimizer)
        ctx.scaler.update()
    return total.detach(), terms


def train_one_epoch(ctx, batches, dataset, device, first_step=0, loss_log=None, skip_no_gt=True):
    """Train over ``batches`` once (model in train mode, then the model's ``model_train_init`` hook).

    Args:
        ctx: :class:`TrainContext`.
        batches: the training loader (or a progress bar around it); None batches are skipped.
        dataset: its dataset (``device_preprocess``).
        device: the model's device.
        first_step: global step of the first batch (tensorboard x axis).
        loss_log: optional :class:`_LossLog`.
        skip_no_gt: skip batches without any ground-truth box (decided on the host copy, no sync). A DDP
            rank must not skip alone (its collectives would pair with another step), so DDP passes False.

    Returns:
        the last step's total loss (detached), or None when no batch was trained.
    """
    ctx.net.train()
    unwrap(ctx.net).model_train_init()
    loss = None
    for i, batch in enumerate(batches):
        if batch is None or (skip_no_gt and not _has_gt(batch)):
            continue
        batch = dataset.device_preprocess(train_utils.to_device(batch, device))
        loss, terms = train_step(ctx, batch)
        if loss_log is not None:
            loss_log.add(first_step + i, terms)
    if loss_log is not None:
        loss_log.flush()
    return loss


@torch.no_grad()
def validate(model, criterion, loader, dataset, device, autocast=contextlib.nullcontext):
    """Mean loss over the validation batches that hold ground truth (eval mode; back to train mode after).

    ``model`` is the unwrapped module: in a DDP run only rank 0 validates, and a DDP forward would start
    collectives the other ranks never join.
    """
    model.eval()
    total, n = torch.zeros((), dtype=torch.float64, device=device), 0
    for batch in tqdm(loader, desc="validate", leave=False, file=sys.stdout):
        if batch is None or not _has_gt(batch):
            continue
        batch = dataset.device_preprocess(train_utils.to_device(batch, device))
        with autocast():
            loss, _ = forward_loss(model, criterion, batch)
        total += loss.detach().double()  # summed on the device: no sync per batch
        n += 1
    model.train()
    return float(total) / max(n, 1)


# ---------------------------------------------------------------------------------------------------------
# a whole run
# ---------------------------------------------------------------------------------------------------------
def flatten_run_config(run_dir, hypes, overridden=False):
    """Keep a run folder self-contained: a ``config.yaml`` that inherits (``_base_``) or was overridden with
    ``--set`` is rewritten as the resolved, flattened config; the file as written is kept once as
    ``config_src.yaml``."""
    path = os.path.join(run_dir, "config.yaml")
    if not (overridden or BASE_KEY in read_yaml_file(path)):
        return
    src = os.path.join(run_dir, "config_src.yaml")
    if not os.path.exists(src):
        with open(path, "rb") as f:
            atomic_write_bytes(src, f.read())
    save_yaml(hypes, path)
    logger.info("%s: written as the resolved, flattened config (as given: %s)", path, src)


class _Training:
    """One training run (a single process, or one rank of a DDP run): set up in ``__init__``, then ``fit``."""

    def __init__(self, opt, dd):
        self.opt, self.dd = opt, dd
        hypes = self.hypes = load_yaml(None if opt.model_dir else opt.hypes_yaml, opt)
        tp = require(hypes, "train_params", dict)
        self.epochs = int(require(hypes, "train_params.epoches"))
        self.save_freq = int(tp.get("save_freq", 1)) or 1
        self.eval_freq = int(tp.get("eval_freq", 1)) or 1
        self.device = torch.device(f"cuda:{dd.local_rank}" if torch.cuda.is_available() else "cpu")
        if not opt.skip_test:  # the final test's -f must fit the config: fail now, not after training
            check_fusion_method(hypes, opt.fusion_method)
        train_utils.seed_everything(opt.seed)
        # model and loss first: a config error of either surfaces before the datasets are read
        self.model = train_utils.create_model(hypes)
        self.criterion = train_utils.create_loss(hypes)
        if getattr(opt, "check_data", "files") == "full":
            self._check_data_full()
        self.train_set = build_dataset(hypes, visualize=False, train=True)
        self.val_set = build_dataset(hypes, visualize=False, train=False)
        self.input_stats = [s for s in map(_input_stats, (self.train_set, self.val_set)) if s is not None]
        for stats in self.input_stats:  # created here, in the main process: the workers share them
            stats.take()
        workers = opt.num_workers if opt.num_workers is not None else min(4, os.cpu_count() or 1)
        self.train_loader, self.val_loader = loaders.build_loaders(
            self.train_set, self.val_set, int(require(hypes, "train_params.batch_size")), workers, self.device,
            opt.seed, rank=dd.rank if dd.enabled else None, world=dd.world)
        self.lock, self.removed_temp_files = None, []
        self.run_dir = self._run_dir()
        try:
            self._open_run()
        except BaseException:
            self.close()
            raise

    def _open_run(self):
        """Log file, resume point, optimisation state and tensorboard writer of the (locked) run folder."""
        if self.dd.main:
            self._start_log_file()
            for path in self.removed_temp_files:
                logger.info(f"removed {path} (a temp file of a trainer that no longer runs)")
        self.checkpointer = ckpt.Checkpointer(self.run_dir)
        self.init_epoch, state = self._resume() if self.opt.model_dir else (0, None)
        self.ctx, self.scheduler, self.best_val = self._optimization(state)
        self.writer = None
        if self.dd.main:
            from tensorboardX import SummaryWriter
            self.writer = SummaryWriter(self.run_dir)

    def _check_data_full(self):
        """``--check_data full``: parse every agent file and PCD header of the splits this run reads."""
        from opencood.data_utils.datasets.basedataset.dataset_tree import check_split_contents
        from opencood.data_utils.datasets.basedataset.opv2v_basedataset import OPV2VBaseDataset, read_agent_params
        from opencood.utils.registry import BASE_DATASETS
        base = BASE_DATASETS.get(self.hypes["fusion"].get("dataset", "opv2v"), self.hypes.get(SOURCE_KEY, "config"))
        if not issubclass(base, OPV2VBaseDataset):
            logger.info("--check_data full: only OPV2V-format datasets are parsed up front; the file check ran")
            return
        keys = ("root_dir", "validate_dir") + (() if self.opt.skip_test else ("test_dir",))
        for split in dict.fromkeys(self.hypes[k] for k in keys if self.hypes.get(k)):
            t0 = time.time()
            n = check_split_contents(split, read_agent_params)
            if self.dd.main:
                logger.info(f"--check_data full: {split}: {n} files parsed, no problem ({time.time() - t0:.1f} s)")

    def _run_dir(self):
        """``--model_dir``, or a new ``<log_root>/<name>_<time>`` folder made by rank 0 (with its config.yaml).

        Rank 0 locks the folder (:class:`~opencood.utils.checkpoint.RunLock`) before writing anything in it and
        removes the temp files a killed trainer left there.
        """
        if self.opt.model_dir:
            if self.dd.main:
                if not os.path.isdir(self.opt.model_dir):
                    raise ckpt.CheckpointError(f"{self.opt.model_dir}: model folder not found")
                self._lock(self.opt.model_dir)
                flatten_run_config(self.opt.model_dir, self.hypes, bool(getattr(self.opt, "set", None)))
            return self.opt.model_dir
        run_dir = None
        if self.dd.main:
            run_dir = train_utils.setup_train(self.hypes, self.opt.log_root)
            self._lock(run_dir)
        return self.dd.broadcast_object(run_dir)

    def _lock(self, run_dir):
        self.lock = ckpt.RunLock(run_dir).acquire()
        self.removed_temp_files = remove_stale_temp_files(run_dir)  # logged once the log file is open

    def close(self):
        """Release the run folder's lock (idempotent)."""
        if self.lock is not None:
            self.lock.release()

    def _start_log_file(self):
        setup_logging(self.run_dir, "train.log")
        ignored = self.hypes.get(IGNORED_KEY)
        if ignored:  # load_yaml showed this line on the console before the run folder existed
            logger.info(f"config {self.hypes[SOURCE_KEY]}: keys without effect here (ignored): {', '.join(ignored)}",
                        extra=FILE_ONLY)

    def _resume(self):
        """Load the resume checkpoint into the model: ``(first epoch, training state or None)``."""
        epoch, path = self.checkpointer.resume_point()
        if path is None:
            return 0, None
        required = tuple(self.model.required_prefixes())
        train_utils.load_state_into(self.model, path, strict=not required, required_prefixes=required)
        state = self.checkpointer.load_train_state(epoch)
        if self.dd.main:
            logger.info(f"resuming from {path} at epoch {epoch}" + (" with optimizer state" if state else ""))
        return epoch, state

    def _optimization(self, state):
        """Model on the device (compiled, DDP-wrapped), optimizer, scheduler, scaler, best validation loss."""
        opt, model = self.opt, self.model
        model.to(self.device)
        compiled = train_utils.compile_from_args(model, opt)
        if compiled and self.dd.main:
            logger.info(f"torch.compile ({opt.compile}): {', '.join(compiled)}")
        amp = bool(getattr(opt, "amp", False) or getattr(opt, "half", False))
        ctx = make_train_context(self.hypes, model, self.criterion, self.device, amp)
        scheduler = train_utils.setup_lr_schedular(self.hypes, ctx.optimizer, self.init_epoch if state is None else 0)
        best_val = math.inf
        if state is not None:
            ctx.optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if state["scaler"] and ctx.scaler.is_enabled():
                ctx.scaler.load_state_dict(state["scaler"])
            best_val = state["best_val"]
            ckpt.set_rng_state(state["rng"])
        if self.dd.enabled:
            ctx.net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.dd.local_rank] if self.device.type == "cuda" else None,
                find_unused_parameters=bool(model.has_unused_parameters))
        return ctx, scheduler, best_val

    def _state(self, epoch):
        return ckpt.train_state(epoch, self.ctx.optimizer, self.scheduler, self.ctx.scaler, self.best_val)

    def fit(self):
        last = max(self.epochs, self.init_epoch)
        for epoch in range(self.init_epoch, last):
            self._train_epoch(epoch)
            final = epoch + 1 == last
            # validation first, then the epoch's checkpoint: a run killed during validation resumes before
            # this epoch and validates it again, so its bestval is the one of an uninterrupted run
            if epoch % self.eval_freq == 0 or final:
                self._validate(epoch)
            if self.dd.main and (epoch % self.save_freq == 0 or final):
                self.checkpointer.save(epoch + 1, self.model, self._state(epoch + 1))
            self._report_inputs(epoch)
            self.dd.barrier()
        if self.dd.enabled:
            _check_ranks_in_sync(self.model, self.dd)
        if self.writer is not None:
            self.writer.close()

    def _train_epoch(self, epoch):
        opt, dd = self.opt, self.dd
        train_utils.seed_everything(opt.seed * 100003 + epoch * 1009 + dd.rank)
        self.train_set.reseed(loaders.epoch_seed(opt.seed, epoch))
        self.train_set.reinitialize()
        self.train_loader.sampler.set_epoch(epoch)
        t0 = time.time()
        bar = tqdm(self.train_loader, desc=f"epoch {epoch}", disable=not dd.main, leave=False, file=sys.stdout)
        loss_log = _LossLog(self.writer, bar, tensorboard_names(self.criterion)) if dd.main else None
        loss = train_one_epoch(self.ctx, bar, self.train_set, self.device, epoch * len(self.train_loader),
                               loss_log, skip_no_gt=not dd.enabled)
        if dd.main and loss is not None:
            logger.info(f"epoch {epoch}: last loss {float(loss):.4f}, {time.time() - t0:.1f} s, "
                        f"lr {self.ctx.optimizer.param_groups[0]['lr']:.2e}")
        self.scheduler.step()

    def _report_inputs(self, epoch):
        """One ``inputs:`` line per epoch when the degenerate-input policy dropped, converted or met anything."""
        line = input_stats.summary_line(input_stats.merge(*(s.take() for s in self.input_stats)))
        if line and self.dd.main:
            logger.info(f"epoch {epoch}: {line}")

    def _validate(self, epoch):
        """Rank 0 validates, every rank gets the value; a new best replaces the bestval checkpoint."""
        val_loss = validate(self.model, self.criterion, self.val_loader, self.val_set, self.device,
                            self.ctx.autocast) if self.dd.main else None
        val_loss = self.dd.broadcast_object(val_loss)
        if not self.dd.main:
            return
        logger.info(f"epoch {epoch}: validation loss {val_loss:.4f}")
        self.writer.add_scalar("Validate_Loss", val_loss, epoch)
        if val_loss < self.best_val:
            self.best_val = val_loss
            self.checkpointer.save_bestval(epoch + 1, self.model, self._state(epoch + 1))


def _input_stats(dataset):
    """The degenerate-input counters of a fusion dataset's base loader (None when it keeps none)."""
    return getattr(getattr(dataset, "base", dataset), "input_stats", None)


@torch.no_grad()
def _check_ranks_in_sync(model, dd):
    """All ranks must end with bit-identical parameters; compare a float64 checksum of each one.

    Buffers are left out: BatchNorm running statistics are updated from each rank's own batch in the last
    forward (DDP re-broadcasts rank 0's at the next forward), and only rank 0's are saved.
    """
    sums = torch.stack([p.detach().double().sum() for p in model.parameters()])
    gathered = [torch.zeros_like(sums) for _ in range(dd.world)]
    dist.all_gather(gathered, sums)
    same = all(torch.equal(g, gathered[0]) for g in gathered)
    if dd.main:
        logger.info(f"DDP: weights {'identical' if same else 'DIFFER'} on {dd.world} ranks "
                    f"(checksum {float(gathered[0].sum()):.6f})")
    if not same:
        raise RuntimeError("DDP ranks ended with different weights")


def run(opt, ddp=False):
    """Train according to ``opt`` (see build_parser), then test unless ``--skip_test``. Returns the run folder."""
    dd = _Dist(ddp)
    setup_logging()
    training = None
    try:
        training = _Training(opt, dd)
        training.fit()
        training.close()
        if dd.main and not opt.skip_test:
            from opencood.tools import inference
            inference.main(["--model_dir", training.run_dir, "--fusion_method", opt.fusion_method])
        return training.run_dir
    finally:
        if training is not None:
            training.close()
        close_log_file()
        dd.close()


def main(argv=None, ddp=False):
    return exit_on_error(run, build_parser(ddp).parse_args(argv), ddp=ddp)
