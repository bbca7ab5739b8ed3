"""Checkpoint surgery for the multi-stage heterogeneous pipeline (HEAL / GenComm).

``python opencood/tools/heal_tools.py merge_and_save DIR_1 ... DIR_K OUT_DIR``
``python opencood/tools/heal_tools.py rename_keys CHECKPOINT.pth 'encoder_m1.*=encoder_m3.*' [OLD=NEW ...]``

merge_and_save: for each folder in order, take its unique ``net_epoch_bestval_at*.pth`` or else its latest
``net_epoch{N}.pth``; fold the state_dicts so that **later folders override earlier ones** (the
second-to-last argument, the collaboration base / ego, wins for shared modules such as the generator,
enhancer, fusion and heads), and write ``OUT_DIR/net_epoch1.pth``. OUT_DIR must already hold the
``config.yaml`` of the next stage and no checkpoint (any ``net_epoch*.pth``, bestval or training-state file
there would be preferred by resume and inference; ``--overwrite`` removes them). Keys of earlier folders containing ``layers_m``, ``head_m`` or
``shrink_conv_m`` are dropped (HEAL's rule for per-agent pyramid pieces).

rename_keys: rewrite a checkpoint in place (atomically) with its keys renamed, e.g. to reuse a stage-1 run
trained as ``m1`` for agent type ``m3`` (same structure, other prefixes); see
:func:`opencood.utils.model_utils.rename_model_dict_keys`. An empty NEW drops the key(s).
"""
import argparse
import logging
import os

import torch

from opencood.utils import checkpoint as ckpt
from opencood.utils.errors import CheckpointError, exit_on_error
from opencood.utils.log import setup_logging
from opencood.utils.model_utils import rename_model_dict_keys

logger = logging.getLogger("opencood.tools.heal_tools")

_DROP_FROM_EARLIER = ("layers_m", "head_m", "shrink_conv_m")


def pick_checkpoint(model_dir):
    """Path of the checkpoint merge_and_save uses from ``model_dir`` (bestval, else latest)."""
    if not os.path.isdir(model_dir):
        raise CheckpointError(f"{model_dir}: folder not found")
    _, path = ckpt.find_checkpoint(model_dir, prefer_bestval=True)
    if path is None:
        raise CheckpointError(f"{model_dir}: no checkpoint (net_epoch*.pth) to merge")
    return path


def existing_checkpoints(model_dir):
    """Names of the checkpoint files in ``model_dir`` (epoch, bestval and training-state files), sorted."""
    found = [*ckpt.epoch_checkpoints(model_dir).values(), *ckpt.bestval_checkpoints(model_dir).values()]
    names = {os.path.basename(p) for p in found}
    names |= {f for f in os.listdir(model_dir) if f.startswith("train_state_epoch") and f.endswith(".pth")}
    return sorted(names)


def merge_dict(acc, new, verbose=True):
    """Fold ``new`` into ``acc``: keep acc's keys (minus per-agent pyramid pieces), then overwrite with new."""
    overlap = sorted({k.split(".")[0] for k in acc} & {k.split(".")[0] for k in new})
    if verbose and overlap:
        logger.info(f"  overlapping modules (later wins): {', '.join(overlap)}")
        differ = [k for k in acc if k in new and (acc[k].shape != new[k].shape or not torch.equal(acc[k], new[k]))]
        if differ:
            logger.warning(f"  warning: {len(differ)} overlapping tensors differ, e.g. {differ[0]}")
    out = {k: v for k, v in acc.items() if not any(s in k for s in _DROP_FROM_EARLIER)}
    out.update(new)
    return out


def merge_and_save_final(model_dirs, output_dir, overwrite=False):
    """Merge the checkpoints of ``model_dirs`` (in order) into ``output_dir/net_epoch1.pth``."""
    if not model_dirs:
        raise CheckpointError("merge_and_save: give at least one model folder and the output folder")
    if not os.path.isfile(os.path.join(output_dir, "config.yaml")):
        raise CheckpointError(f"{output_dir}: missing config.yaml (copy the next stage's YAML there first)")
    out_path = os.path.join(output_dir, "net_epoch1.pth")
    existing = existing_checkpoints(output_dir)
    if existing and not overwrite:
        raise CheckpointError(f"{output_dir}: already holds {', '.join(existing)} (resume and inference would "
                              f"use it instead of the merge); pass --overwrite to replace them")
    merged = {}
    for d in model_dirs:
        path = pick_checkpoint(d)
        logger.info(f"merging {path}")
        merged = merge_dict(merged, ckpt.read_state_dict(path))
    for name in existing:  # --overwrite: the merged file must be the only checkpoint left
        if name != os.path.basename(out_path):
            os.remove(os.path.join(output_dir, name))
            logger.info(f"removed {os.path.join(output_dir, name)} (--overwrite)")
    ckpt.atomic_torch_save(merged, out_path)
    logger.info(f"saved {out_path} ({len(merged)} tensors)")
    return out_path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("merge_and_save", help="merge checkpoints: DIR_1 ... DIR_K OUT_DIR")
    m.add_argument("dirs", nargs="+", help="model folders in override order, then the output folder")
    m.add_argument("--overwrite", action="store_true",
                   help="replace the checkpoints OUT_DIR holds (they are removed; the merge is net_epoch1.pth)")
    m.set_defaults(fn=_merge_cli)
    r = sub.add_parser("rename_keys", help="rename checkpoint keys in place: CHECKPOINT OLD=NEW ...")
    r.add_argument("checkpoint", help="a plain state_dict file (net_epoch*.pth)")
    r.add_argument("renames", nargs="+", metavar="OLD=NEW", help="'encoder_m1.*=encoder_m3.*' renames a prefix")
    r.set_defaults(fn=_rename_cli)
    opt = p.parse_args(argv)
    setup_logging()
    return exit_on_error(opt.fn, opt)


def _merge_cli(opt):
    if len(opt.dirs) < 2:
        raise CheckpointError("merge_and_save: need at least one model folder and the output folder")
    return merge_and_save_final(opt.dirs[:-1], opt.dirs[-1], overwrite=opt.overwrite)


def _rename_cli(opt):
    bad = [r for r in opt.renames if "=" not in r]
    if bad:
        raise CheckpointError(f"rename_keys: expected OLD=NEW, got '{bad[0]}'")
    state = rename_model_dict_keys(opt.checkpoint, dict(r.split("=", 1) for r in opt.renames))
    logger.info(f"renamed keys of {opt.checkpoint} ({len(state)} tensors)")
    return state


if __name__ == "__main__":
    main()
