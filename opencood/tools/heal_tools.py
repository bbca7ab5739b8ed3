"""Checkpoint surgery for the multi-stage heterogeneous pipeline (HEAL / GenComm).

``python opencood/tools/heal_tools.py merge_and_save DIR_1 ... DIR_K OUT_DIR``

For each folder in order, take its unique ``net_epoch_bestval_at*.pth`` or else its latest
``net_epoch{N}.pth``; fold the state_dicts so that **later folders override earlier ones** (the
second-to-last argument, the collaboration base / ego, wins for shared modules such as the generator,
enhancer, fusion and heads), and write ``OUT_DIR/net_epoch1.pth``. OUT_DIR must already hold the
``config.yaml`` of the next stage. Keys of earlier folders containing ``layers_m``, ``head_m`` or
``shrink_conv_m`` are dropped (HEAL's rule for per-agent pyramid pieces).
"""
import argparse
import os

import torch

from opencood.utils import checkpoint as ckpt
from opencood.utils.errors import CheckpointError, exit_on_error

_DROP_FROM_EARLIER = ("layers_m", "head_m", "shrink_conv_m")


def pick_checkpoint(model_dir):
    """Path of the checkpoint merge_and_save uses from ``model_dir`` (bestval, else latest)."""
    if not os.path.isdir(model_dir):
        raise CheckpointError(f"{model_dir}: folder not found")
    _, path = ckpt.find_checkpoint(model_dir, prefer_bestval=True)
    if path is None:
        raise CheckpointError(f"{model_dir}: no checkpoint (net_epoch*.pth) to merge")
    return path


def merge_dict(acc, new, verbose=True):
    """Fold ``new`` into ``acc``: keep acc's keys (minus per-agent pyramid pieces), then overwrite with new."""
    overlap = sorted({k.split(".")[0] for k in acc} & {k.split(".")[0] for k in new})
    if verbose and overlap:
        print(f"  overlapping modules (later wins): {', '.join(overlap)}")
        differ = [k for k in acc if k in new and (acc[k].shape != new[k].shape or not torch.equal(acc[k], new[k]))]
        if differ:
            print(f"  warning: {len(differ)} overlapping tensors differ, e.g. {differ[0]}")
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
    if os.path.exists(out_path) and not overwrite:
        raise CheckpointError(f"{out_path}: already exists; pass --overwrite to replace it")
    merged = {}
    for d in model_dirs:
        path = pick_checkpoint(d)
        print(f"merging {path}")
        merged = merge_dict(merged, ckpt.read_state_dict(path))
    ckpt.atomic_torch_save(merged, out_path)
    print(f"saved {out_path} ({len(merged)} tensors)")
    return out_path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("merge_and_save", help="merge checkpoints: DIR_1 ... DIR_K OUT_DIR")
    m.add_argument("dirs", nargs="+", help="model folders in override order, then the output folder")
    m.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR/net_epoch1.pth")
    opt = p.parse_args(argv)
    return exit_on_error(_merge_cli, opt)


def _merge_cli(opt):
    if len(opt.dirs) < 2:
        raise CheckpointError("merge_and_save: need at least one model folder and the output folder")
    return merge_and_save_final(opt.dirs[:-1], opt.dirs[-1], overwrite=opt.overwrite)


if __name__ == "__main__":
    main()
