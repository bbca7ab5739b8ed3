"""Evaluate a trained run on the test split.

``python opencood/tools/inference.py --model_dir RUN_DIR [--fusion_method intermediate|early|late|single|no]``

Writes ``eval_<info>.yaml`` and ``eval_global_sort_<info>.yaml`` (AP@0.3/0.5/0.7, precision/recall, the
communication volume and ms per frame; with several classes in ``postprocess.anchor_args.classes``: their mean as
ap30/ap_50/ap_70 and ``mAP``, per-class APs under ``classes`` and per class ``{iou: {ap, mrec, mpre}}``, see
``utils/eval_utils.py``) into the run folder, where info = ``<fusion><note>_<x>_<y>_epoch<E>`` (x, y = GT range
half sizes);
``--save_vis`` writes BEV pictures (headless) to ``vis_<info>/``.
"""
import argparse
import logging
import os
import sys
import time

import torch
from tqdm import tqdm

from opencood.data_utils.datasets import build_dataset
from opencood.hypes_yaml.yaml_utils import add_config_args, load_yaml, require
from opencood.tools import inference_utils, train_utils
from opencood.tools.loaders import build_loader
from opencood.utils import comm_volume, eval_utils
from opencood.utils.errors import ConfigError, exit_on_error
from opencood.utils.log import setup_logging

logger = logging.getLogger("opencood.tools.inference")

FUSION_METHODS = ("intermediate", "early", "late", "single", "no")


def build_parser():
    p = argparse.ArgumentParser(description="Run a trained model on the test split and compute AP.")
    p.add_argument("--model_dir", required=True, help="run folder with config.yaml and checkpoints")
    p.add_argument("--fusion_method", "-f", default="intermediate", choices=FUSION_METHODS)
    p.add_argument("--save_vis", action="store_true", help="write BEV pictures of GT vs predictions")
    p.add_argument("--save_vis_interval", type=int, default=40, help="picture every N frames")
    p.add_argument("--save_npy", action="store_true", help="write npy/ point clouds, predictions, GT")
    p.add_argument("--range", default=None,
                   help="'X,Y': evaluate on [-X,-Y,zmin,X,Y,zmax] (rewrites every range in the config)")
    p.add_argument("--note", default="", help="suffix of the result file names")
    p.add_argument("--num_workers", type=int, default=2)
    p.add_argument("--max_frames", type=int, default=None, help="stop after N test frames (quick checks)")
    add_config_args(p)  # --set key.path=value
    return p


def dataset_fusion(hypes):
    """What samples the config's fusion dataset (``fusion.core_method``) builds: early, late or intermediate."""
    from opencood.data_utils.datasets.early_fusion_dataset import EarlyFusionDataset
    from opencood.data_utils.datasets.late_fusion_dataset import LateFusionDataset
    from opencood.utils.registry import DATASETS
    cls = DATASETS.get(require(hypes, "fusion.core_method"), hypes.get("_source", "config"))
    return "early" if issubclass(cls, EarlyFusionDataset) else "late" if issubclass(cls, LateFusionDataset) \
        else "intermediate"


def check_fusion_method(hypes, method):
    """``-f METHOD`` must be one the config's dataset supports, else the result would be mislabelled.

    ``early``/``late``/``intermediate`` need a dataset of that kind (the samples decide the fusion, so
    ``-f early`` on an intermediate config would only rename the intermediate result); ``no`` (ego features,
    everyone's ground truth) needs an intermediate dataset; ``single`` works with any.

    Raises:
        ConfigError: naming the config, its ``fusion.core_method`` and what would fit.
    """
    if method not in FUSION_METHODS:
        raise ConfigError(f"--fusion_method: unknown '{method}'; known: {', '.join(FUSION_METHODS)}")
    kind = dataset_fusion(hypes)
    need = {"early": "early", "late": "late", "intermediate": "intermediate", "no": "intermediate"}.get(method)
    if need is not None and need != kind:
        fits = ", ".join(m for m in FUSION_METHODS if m in (kind, "single") or (kind == "intermediate" and m == "no"))
        raise ConfigError(f"{hypes.get('_source', 'config')}: --fusion_method {method} needs a {need}-fusion "
                          f"dataset, but fusion.core_method '{hypes['fusion']['core_method']}' builds {kind} "
                          f"samples; use -f {fits.replace(', ', ' / ')} or a {need}-fusion config")


def set_eval_range(hypes, x, y):
    """Rewrite cav_lidar_range / lidar_range / gt_range everywhere to [-x,-y,zmin,x,y,zmax] and re-derive."""
    from opencood.hypes_yaml.yaml_utils import YAML_PARSERS

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("cav_lidar_range", "lidar_range", "gt_range") and isinstance(v, list) and len(v) == 6:
                    node[k] = [-x, -y, v[2], x, y, v[5]]
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(hypes)
    return YAML_PARSERS[hypes.get("yaml_parser", "load_general_params")](hypes)


def prepare_hypes(opt):
    """Config of the run folder, adjusted for testing (test split, range, fusion style)."""
    hypes = load_yaml(None, opt)
    check_fusion_method(hypes, opt.fusion_method)
    if opt.range:
        try:
            x, y = (float(v) for v in opt.range.split(","))
        except ValueError:
            raise ConfigError(f"--range: expected 'X,Y' in metres, got '{opt.range}'") from None
        hypes = set_eval_range(hypes, x, y)
    hypes["validate_dir"] = require(hypes, "test_dir")
    if opt.fusion_method == "single":
        # ego features only, scored against the ego's own ground truth
        hypes["train_params"]["max_cav"] = 1
    elif opt.fusion_method == "no":
        # ego features only, scored against the ground truth of every agent in range
        hypes.setdefault("fusion", {}).setdefault("args", {})["use_cav"] = 1
    return hypes


def evaluate(model, dataset, opt, saved_path, infer_info, device, volume=None):
    """Loop over the test set; returns (result_stat, seconds per frame). With ``volume`` (a
    ``comm_volume.VolumeMeter``) the bytes every collaborator sends to the ego are added to it per frame."""
    loader = build_loader(dataset, "test", num_workers=opt.num_workers, device=device)
    # the class list of the YAML (postprocess.anchor_args.classes): several classes -> per-class AP and mAP
    result_stat = eval_utils.init_result_stat(classes=dataset.post_processor.head.class_names)
    infer_fn = {"intermediate": inference_utils.inference_intermediate_fusion,
                "early": inference_utils.inference_early_fusion,
                "late": inference_utils.inference_late_fusion}.get(opt.fusion_method,
                                                                   inference_utils.inference_intermediate_fusion)
    vis_dir = os.path.join(saved_path, f"vis_{infer_info}")
    model_time, frames = 0.0, 0
    for i, batch in enumerate(tqdm(loader, desc="inference", file=sys.stdout)):
        if opt.max_frames is not None and i >= opt.max_frames:
            break
        if batch is None:
            continue
        with torch.no_grad():
            batch = train_utils.to_device(batch, device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            batch = dataset.device_preprocess(batch)
            with comm_volume.recording(model) as outputs:
                res = infer_fn(batch, model, dataset)
            if device.type == "cuda":
                torch.cuda.synchronize()
            model_time += time.perf_counter() - t0
            frames += 1
            if volume is not None:
                outputs = dict(zip(batch, outputs)) if opt.fusion_method == "late" else {"ego": outputs[-1]}
                volume.add(comm_volume.collaborator_bytes(opt.fusion_method, batch, outputs,
                                                          dataset.post_processor))
        if eval_utils.is_per_class(result_stat):
            eval_utils.calculate_tp_fp_classes(res["pred_box_tensor"], res["pred_score"], res["pred_label"],
                                               res["gt_box_tensor"], res["gt_label"], result_stat)
        else:  # the three IoU thresholds at once; the matching runs batched when the APs are computed
            eval_utils.evaluate_frames([(res["pred_box_tensor"], res["pred_score"], res["gt_box_tensor"])],
                                       result_stat=result_stat)
        if opt.save_npy:
            inference_utils.save_npy(res, batch, os.path.join(saved_path, "npy"), i)
        if opt.save_vis and i % max(1, opt.save_vis_interval) == 0:
            _save_vis(res, batch, dataset, vis_dir, i)
    return result_stat, model_time / max(frames, 1)


def _save_vis(res, batch, dataset, vis_dir, idx):
    from opencood.visualization import vis_utils
    os.makedirs(vis_dir, exist_ok=True)
    ego = batch["ego"]
    pts = ego.get("origin_lidar")
    pts = pts[0].cpu().numpy() if isinstance(pts, torch.Tensor) else None
    gt = res["gt_box_tensor"].cpu().numpy() if res["gt_box_tensor"] is not None else None
    pred = res["pred_box_tensor"].cpu().numpy() if res["pred_box_tensor"] is not None else None
    rng = dataset.params["postprocess"]["gt_range"]
    vis_utils.draw_bev(pts, gt, pred, os.path.join(vis_dir, f"bev_{idx:05d}.png"), rng)


def evaluate_run(opt, hypes, device, suffix=""):
    """Build the test dataset and model from ``hypes``, load the run's checkpoint, evaluate, write the
    two eval YAMLs (info = ``<fusion><note>_<x>_<y>_epoch<E><suffix>``) and return the global-sort APs."""
    dataset = build_dataset(hypes, visualize=True, train=False)
    model = train_utils.create_model(hypes)
    epoch, model = train_utils.load_saved_model(opt.model_dir, model)
    model.to(device).eval()
    gt_range = hypes["postprocess"]["gt_range"]
    infer_info = f"{opt.fusion_method}{opt.note}_{gt_range[3]:g}_{gt_range[4]:g}_epoch{epoch}{suffix}"
    volume = comm_volume.VolumeMeter()
    result_stat, sec = evaluate(model, dataset, opt, opt.model_dir, infer_info, device, volume)
    aps = eval_utils.eval_final_results(result_stat, opt.model_dir, infer_info,
                                        extra={**volume.summary(), "infer_ms_per_frame": sec * 1000})
    logger.info(f"communication: {volume.summary()['comm_bytes_per_agent']:.0f} bytes per collaborator per frame")
    logger.info(f"inference: {sec * 1000:.1f} ms per frame (model + post-processing) on {device}")
    return aps


def run(opt):
    setup_logging()
    hypes = prepare_hypes(opt)  # a missing run folder fails here, before a log file is opened in it
    setup_logging(opt.model_dir, "inference.log")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return evaluate_run(opt, hypes, device)


def main(argv=None):
    return exit_on_error(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
