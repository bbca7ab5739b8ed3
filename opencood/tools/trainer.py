"""The training loop behind ``train.py`` and ``train_ddp.py``.

One loop for single-process and DistributedDataParallel runs, so a DDP run resumes single-process
and vice versa. Per epoch: reseed from (seed, epoch), re-draw the dataset's agent order/types,
train, save ``net_epoch{N}.pth`` (+ ``train_state_epoch{N}.pth``) every ``save_freq`` epochs and at
the end, validate every ``eval_freq`` epochs and keep a single ``net_epoch_bestval_at{N}.pth``.
Reseeding from the epoch number makes a resumed run continue exactly where it stopped.
"""
import argparse
import contextlib
import math
import os
import sys
import time

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from opencood.data_utils.datasets import build_dataset
from opencood.hypes_yaml.yaml_utils import load_yaml, require
from opencood.tools import train_utils
from opencood.utils import checkpoint as ckpt
from opencood.utils.errors import CheckpointError, exit_on_error


# tensorboard scalar names the HEAL curves used
_TB_NAMES = {"reg_loss": "Regression_loss", "cls_loss": "Confidence_loss", "dir_loss": "Dir_loss",
             "depth_loss": "Depth_loss", "gen_loss": "Gen_loss", "total_loss": "Total_loss"}


def build_parser(ddp=False):
    p = argparse.ArgumentParser(description="Train a cooperative perception model from a YAML config.")
    p.add_argument("-y", "--hypes_yaml", type=str, required=True,
                   help="config file; 'None' when --model_dir holds config.yaml")
    p.add_argument("--model_dir", default="", help="resume from (or continue training in) this run folder")
    p.add_argument("-f", "--fusion_method", default="intermediate", help="fusion method of the final test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num_workers", type=int, default=None, help="DataLoader workers (default: min(4, cpus))")
    p.add_argument("--skip_test", action="store_true", help="do not run inference on the test split at the end")
    p.add_argument("--amp", action="store_true", help="mixed precision (bf16 where supported, else fp16+GradScaler)")
    train_utils.add_compile_args(p)
    p.add_argument("--log_root", default="opencood/logs", help="where new run folders are created")
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


class _LossLog:
    """Per-step tensorboard scalars without a host-device sync per step.

    The loss terms of each step are kept as detached device tensors and copied to the host together
    every ``every`` steps (one sync instead of one per term and step); the curves are the same.
    """

    def __init__(self, writer, bar, every=20):
        self.writer, self.bar, self.every = writer, bar, every
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
                self.writer.add_scalar(_TB_NAMES.get(k, k), v, step)
        names, row = self.pending[-1][1], values[-1]
        total = row[names.index("total_loss")] if "total_loss" in names else row[0]
        self.bar.set_postfix(loss=f"{total:.3f}")
        self.pending = []


def _has_gt(batch):
    mask = batch["ego"].get("object_bbx_mask")
    return mask is None or bool(mask.sum() > 0)


def compute_loss(model, criterion, batch, hypes):
    """Forward + loss on one collated batch (HEAL: ego label_dict, optional single supervision)."""
    out = model(batch["ego"])
    loss = criterion(out, batch["ego"]["label_dict"])
    if hypes.get("model", {}).get("args", {}).get("supervise_single") and "label_dict_single" in batch["ego"] \
            and any(k.endswith("_single") for k in out):
        w = float(hypes["train_params"].get("single_weight", 1.0))
        loss = loss + w * criterion(out, batch["ego"]["label_dict_single"], suffix="_single")
    return loss


def run(opt, ddp=False):
    """Train according to ``opt`` (see build_parser). Returns the run folder."""
    dd = _Dist(ddp)
    try:
        return _run(opt, dd)
    finally:
        dd.close()


def _run(opt, dd):
    hypes = load_yaml(None if opt.model_dir else opt.hypes_yaml, opt)
    tp = require(hypes, "train_params", dict)
    epochs = int(require(hypes, "train_params.epoches"))
    save_freq = int(tp.get("save_freq", 1)) or 1
    eval_freq = int(tp.get("eval_freq", 1)) or 1
    amp = bool(getattr(opt, "amp", False) or getattr(opt, "half", False))

    device = torch.device(f"cuda:{dd.local_rank}" if torch.cuda.is_available() else "cpu")
    train_utils.seed_everything(opt.seed)

    train_set = build_dataset(hypes, visualize=False, train=True)
    val_set = build_dataset(hypes, visualize=False, train=False)
    workers = opt.num_workers if opt.num_workers is not None else min(4, os.cpu_count() or 1)
    bs = int(require(hypes, "train_params.batch_size"))
    # The shuffle order of epoch e depends only on (seed, e): DistributedSampler via set_epoch, else a sampler
    # with its own generator reseeded every epoch (drawing from the global RNG would tie the order to whatever
    # else used it, e.g. persistent workers draw their base seed only once, so a resumed run would differ).
    shuffle_gen = torch.Generator()
    sampler = DistributedSampler(train_set, num_replicas=dd.world, rank=dd.rank, shuffle=True,
                                 seed=opt.seed, drop_last=True) if dd.enabled else \
        RandomSampler(train_set, generator=shuffle_gen)
    loader_kw = dict(num_workers=workers, pin_memory=device.type == "cuda",
                     persistent_workers=workers > 0, prefetch_factor=2 if workers > 0 else None,
                     worker_init_fn=train_utils.dataloader_worker_init)
    train_loader = DataLoader(train_set, batch_size=bs, sampler=sampler,
                              collate_fn=train_set.collate_batch_train, drop_last=True, **loader_kw)
    val_loader = DataLoader(val_set, batch_size=bs, shuffle=False, collate_fn=train_set.collate_batch_train,
                            drop_last=False, **loader_kw)

    model = train_utils.create_model(hypes)
    criterion = train_utils.create_loss(hypes)

    # ---- where to write, where to resume from -------------------------------------------------
    init_epoch, state = 0, None
    if opt.model_dir:
        saved_path = opt.model_dir
        init_epoch, path = _resume_point(saved_path)
        if path is not None:
            required = tuple(model.required_prefixes()) if hasattr(model, "required_prefixes") else ()
            train_utils.load_state_into(model, path, strict=not required, required_prefixes=required)
            sp = ckpt.train_state_path(saved_path, init_epoch)
            if os.path.isfile(sp):
                try:
                    state = torch.load(sp, map_location="cpu", weights_only=False)
                except Exception as e:
                    raise CheckpointError(f"{sp}: cannot read training state ({type(e).__name__})") from None
            if dd.main:
                print(f"resuming from {path} at epoch {init_epoch}" + (" with optimizer state" if state else ""))
    else:
        saved_path = train_utils.setup_train(hypes, opt.log_root) if dd.main else None
        saved_path = dd.broadcast_object(saved_path)

    model.to(device)
    compiled = train_utils.compile_from_args(model, opt)
    if compiled and dd.main:
        print(f"torch.compile ({opt.compile}): {', '.join(compiled)}")
    optimizer = train_utils.setup_optimizer(hypes, model)
    scheduler = train_utils.setup_lr_schedular(hypes, optimizer, init_epoch if state is None else 0)
    use_scaler = amp and device.type == "cuda" and _amp_dtype(device) == torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    best_val = math.inf
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler") and use_scaler:
            scaler.load_state_dict(state["scaler"])
        best_val = state.get("best_val", math.inf)

    net = model
    if dd.enabled:
        find_unused = bool(getattr(model, "has_unused_parameters", False))
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dd.local_rank] if device.type == "cuda" else None,
            find_unused_parameters=find_unused)

    writer = None
    if dd.main:
        from tensorboardX import SummaryWriter
        writer = SummaryWriter(saved_path)

    autocast = (lambda: torch.autocast(device.type, dtype=_amp_dtype(device))) if amp else contextlib.nullcontext
    for epoch in range(init_epoch, max(epochs, init_epoch)):
        train_utils.seed_everything(opt.seed * 100003 + epoch * 1009 + dd.rank)
        if hasattr(train_set, "reseed"):
            train_set.reseed(opt.seed * 100003 + epoch)
        train_set.reinitialize()
        if dd.enabled:
            sampler.set_epoch(epoch)
        else:
            shuffle_gen.manual_seed(opt.seed * 100003 + epoch)
        net.train()
        if hasattr(model, "model_train_init"):
            model.model_train_init()
        bar = tqdm(train_loader, desc=f"epoch {epoch}", disable=not dd.main, leave=False, file=sys.stdout)
        t0, loss = time.time(), None
        log = _LossLog(writer, bar) if dd.main else None
        for i, batch in enumerate(bar):
            if batch is None or (not dd.enabled and not _has_gt(batch)):  # checked on the host copy: no sync
                continue
            batch = train_set.device_preprocess(train_utils.to_device(batch, device))
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = compute_loss(net, criterion, batch, hypes)
            if loss.requires_grad:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            if log is not None:
                log.add(epoch * len(train_loader) + i, getattr(criterion, "loss_tensors", {"total_loss": loss}))
        if log is not None:
            log.flush()
        if dd.main and loss is not None:
            print(f"epoch {epoch}: last loss {float(loss):.4f}, {time.time() - t0:.1f} s, "
                  f"lr {optimizer.param_groups[0]['lr']:.2e}")
        scheduler.step()

        last = epoch + 1 == max(epochs, init_epoch)
        if dd.main and (epoch % save_freq == 0 or last):
            _save(saved_path, epoch + 1, model, optimizer, scheduler, scaler, best_val)
        if epoch % eval_freq == 0 or last:
            # rank 0 validates on the unwrapped module: DDP forward would start collectives the other ranks never join
            val_loss = _validate(model, criterion, val_loader, val_set, hypes, device, autocast) \
                if dd.main else None
            val_loss = dd.broadcast_object(val_loss)
            if dd.main:
                print(f"epoch {epoch}: validation loss {val_loss:.4f}")
                writer.add_scalar("Validate_Loss", val_loss, epoch)
                if val_loss < best_val:
                    best_val = val_loss
                    for p in ckpt.bestval_checkpoints(saved_path).values():
                        os.remove(p)
                    ckpt.atomic_torch_save(model.state_dict(),
                                           os.path.join(saved_path, f"net_epoch_bestval_at{epoch + 1}.pth"))
                    _save_state(saved_path, epoch + 1, optimizer, scheduler, scaler, best_val)
        dd.barrier()
    if dd.enabled:
        _check_ranks_in_sync(model, dd)
    if writer is not None:
        writer.close()
    if dd.main and not opt.skip_test:
        from opencood.tools import inference
        inference.main(["--model_dir", saved_path, "--fusion_method", opt.fusion_method])
    return saved_path


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
        print(f"DDP: weights {'identical' if same else 'DIFFER'} on {dd.world} ranks "
              f"(checksum {float(gathered[0].sum()):.6f})")
    if not same:
        raise RuntimeError("DDP ranks ended with different weights")


def _resume_point(saved_path):
    """Latest ``net_epoch{N}.pth`` (a bestval file only when no regular checkpoint exists)."""
    if not os.path.isdir(saved_path):
        raise CheckpointError(f"{saved_path}: model folder not found")
    epochs = ckpt.epoch_checkpoints(saved_path)
    if epochs:
        last = max(epochs)
        return last, epochs[last]
    return ckpt.find_checkpoint(saved_path, prefer_bestval=True)


def _save_state(saved_path, epoch, optimizer, scheduler, scaler, best_val):
    state = {"epoch": epoch, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "scaler": scaler.state_dict(), "best_val": best_val, "rng": train_utils.rng_state()}
    ckpt.atomic_torch_save(state, ckpt.train_state_path(saved_path, epoch))


def _save(saved_path, epoch, model, optimizer, scheduler, scaler, best_val):
    # training state first: a model checkpoint on disk always has its state beside it
    _save_state(saved_path, epoch, optimizer, scheduler, scaler, best_val)
    ckpt.atomic_torch_save(model.state_dict(), os.path.join(saved_path, f"net_epoch{epoch}.pth"))
    for f in os.listdir(saved_path):
        if f.startswith("train_state_epoch") and f != os.path.basename(ckpt.train_state_path(saved_path, epoch)):
            keep = {os.path.basename(ckpt.train_state_path(saved_path, e))
                    for e in ckpt.bestval_checkpoints(saved_path)}
            if f not in keep:
                os.remove(os.path.join(saved_path, f))


@torch.no_grad()
def _validate(net, criterion, loader, dataset, hypes, device, autocast):
    net.eval()
    total, n = torch.zeros((), dtype=torch.float64, device=device), 0
    for batch in tqdm(loader, desc="validate", leave=False, file=sys.stdout):
        if batch is None or not _has_gt(batch):
            continue
        batch = dataset.device_preprocess(train_utils.to_device(batch, device))
        with autocast():
            loss = compute_loss(net, criterion, batch, hypes)
        total += loss.detach().double()  # summed on the device: no sync per batch
        n += 1
    net.train()
    return float(total) / max(n, 1)


def main(argv=None, ddp=False):
    return exit_on_error(run, build_parser(ddp).parse_args(argv), ddp=ddp)
