"""Dynamic agent joining: evaluate a merged heterogeneous model while agents join one by one.

``python opencood/tools/inference_heter_in_order.py --model_dir FINAL_DIR --use_cav "[1,2,3,4]"``

Agents of each test scene get types in sorted-id order m1, m2, m3, m4 (the ``*_in_order.json``
assignment, identity mapping, ego m1, communication range 180 m). For each N in ``--use_cav`` only
the first N agents are encoded and fused, while the ground truth always holds the objects of every
agent in range, so AP(N) shows what each newly joined agent type adds. Results:
``eval_<info>_use_cavN.yaml`` and ``eval_global_sort_<info>_use_cavN.yaml`` (per class and mAP when the YAML's
``postprocess.anchor_args.classes`` lists several classes, e.g. V2X-Real; see ``inference.py``).
"""
import argparse
import ast
import logging
import os

import torch

from opencood.hypes_yaml.schema import TRAIN_PARAMS
from opencood.hypes_yaml.yaml_utils import add_config_args
from opencood.tools.inference import FUSION_METHODS, evaluate_run, prepare_hypes
from opencood.utils.errors import ConfigError, exit_on_error
from opencood.utils.log import setup_logging

logger = logging.getLogger("opencood.tools.inference_heter_in_order")

LIDAR_DEGRADE = {"m1": 32, "m3": 16}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_dir", required=True)
    p.add_argument("--use_cav", default="[1,2,3,4]", help="list of agent counts, e.g. '[2,3,4]'")
    p.add_argument("--fusion_method", "-f", default="intermediate", choices=FUSION_METHODS)
    p.add_argument("--range", default=None, help="'X,Y' evaluation range (rewrites the config's ranges)")
    p.add_argument("--lidar_degrade", action="store_true", help="m1 reads 32-beam and m3 16-beam clouds")
    p.add_argument("--note", default="")
    p.add_argument("--save_vis", action="store_true")
    p.add_argument("--save_vis_interval", type=int, default=40)
    p.add_argument("--save_npy", action="store_true")
    p.add_argument("--num_workers", type=int, default=2)
    p.add_argument("--max_frames", type=int, default=None)
    add_config_args(p)  # --set key.path=value
    return p


def in_order_hypes(hypes, degrade=False):
    """Apply the in-order overrides of the reference script to a loaded config."""
    heter = hypes.get("heter")
    if not isinstance(heter, dict):
        raise ConfigError(f"{hypes.get('_source', 'config')}: missing key 'heter' (in-order inference needs a "
                          f"heterogeneous config)")
    mods = sorted(heter.get("modality_setting", {}))
    heter["mapping_dict"] = {m: m for m in ("m1", "m2", "m3", "m4")}
    heter["ego_modality"] = "m1"
    if hypes.get("model", {}).get("args", {}).get("ego_modality") is not None:
        hypes["model"]["args"]["ego_modality"] = "m1"
    path = heter.get("assignment_path") or ""
    root, ext = os.path.splitext(path)
    heter["assignment_path"] = root if root.endswith("_in_order") else root + "_in_order" + (ext or ".json")
    heter["lidar_channels_dict"] = dict(LIDAR_DEGRADE) if degrade else {"m3": 32}
    hypes["ego_diff_cav"] = False
    hypes["comm_range"] = 180
    fusion = hypes["fusion"]["core_method"]
    if not fusion.endswith("infer"):
        hypes["fusion"]["core_method"] = fusion + "infer"
    if "m1" not in mods:
        raise ConfigError(f"{hypes.get('_source', 'config')}: heter.modality_setting must contain the ego type m1")
    return hypes


def parse_use_cav(text, max_cav):
    """``--use_cav '[1,2,3,4]'`` -> [1, 2, 3, 4]: distinct integers in 1..max_cav (agents per frame).

    Raises:
        ConfigError: not a list of integers, or a count outside 1..max_cav (0 agents, or more than a frame
            can hold, would silently evaluate something else).
    """
    try:
        counts = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        counts = None
    if isinstance(counts, int) and not isinstance(counts, bool):
        counts = [counts]
    if not (isinstance(counts, (list, tuple)) and counts
            and all(isinstance(n, int) and not isinstance(n, bool) for n in counts)):
        raise ConfigError(f"--use_cav: expected a list of integers like [1,2,3,4], got '{text}'")
    bad = [n for n in counts if not 1 <= n <= max_cav]
    if bad:
        raise ConfigError(f"--use_cav: {bad[0]} agents is outside 1..{max_cav} (train_params.max_cav)")
    if len(set(counts)) != len(counts):
        raise ConfigError(f"--use_cav: {text} lists a count twice")
    return list(counts)


def run(opt):
    setup_logging()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    first = prepare_hypes(opt)
    max_cav = first["train_params"].get("max_cav", TRAIN_PARAMS.keys["max_cav"].default)
    use_cav = parse_use_cav(opt.use_cav, int(max_cav))
    results = {}
    for n in use_cav:
        hypes = in_order_hypes(first if not results else prepare_hypes(opt), degrade=opt.lidar_degrade)
        if not results:  # the run folder's config loaded: the log file can live there
            setup_logging(opt.model_dir, "inference.log")
        hypes["fusion"]["args"]["use_cav"] = n
        logger.info(f"use_cav {n}:")
        results[n] = evaluate_run(opt, hypes, device, suffix=f"_use_cav{n}")
    return results


def main(argv=None):
    return exit_on_error(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
