"""CoAlign's box pre-computation: a trained uncertainty model's boxes for every agent of every frame, as JSON.

    python opencood/tools/pose_graph_pre_calc.py --model_dir RUN [--out_dir DIR] [--splits train val test]

``RUN`` holds a trained ``point_pillar_uncertainty`` model (its ``config.yaml`` and checkpoint). For every
split (``root_dir`` / ``validate_dir`` / ``test_dir`` of that config) each agent's own point cloud goes
through the model alone; the decoded boxes (its LiDAR frame, ``postprocess.order``, after score threshold
and rotated NMS) and their log-variances are written to ``<out_dir>/<split>.json`` (default out_dir
``RUN/box_align``) in the layout :class:`opencood.utils.pose_graph.BoxAlignment` reads; the file appears
atomically. Point the ``box_align.{train,val,test}_result`` keys of the CoAlign config at them.
"""
import argparse
import copy
import json
import logging
import os
import sys

import numpy as np
import torch

from opencood.data_utils.datasets import build_dataset
from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.models.heads.anchor_head import delta_to_boxes3d
from opencood.models.heads.box_coding import decode_direction
from opencood.ops.nms import nms_rotated
from opencood.tools import train_utils
from opencood.utils import box_utils
from opencood.utils.atomic_io import atomic_open
from opencood.utils.errors import ConfigError, OpencoodError
from opencood.utils.log import setup_logging
from opencood.utils.pcd_utils import mask_ego_points

logger = logging.getLogger("opencood.tools.pose_graph_pre_calc")
SPLIT_DIRS = {"train": "root_dir", "val": "validate_dir", "test": "test_dir"}


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_dir", required=True, help="run folder of a trained point_pillar_uncertainty")
    parser.add_argument("--out_dir", default=None, help="where <split>.json go (default: MODEL_DIR/box_align)")
    parser.add_argument("--splits", nargs="+", default=list(SPLIT_DIRS), choices=list(SPLIT_DIRS))
    parser.add_argument("--max_frames", type=int, default=None, help="only the first N frames per split")
    parser.set_defaults(set=None)  # load_yaml reads opt.set (no --set overrides here)
    return parser


def decode_with_uncertainty(output, anchors, head, nms_thresh):
    """One agent's detections with the log-variances of the anchors they came from.

    Args:
        output: model output of one agent (batch 1): cls/reg/dir/unc preds.
        anchors: (H', W', A, 7) tensor.
        head: the post-processor's :class:`AnchorHead` (score threshold, direction bins, order).
        nms_thresh: rotated-NMS IoU threshold.

    Returns:
        boxes (K, 7) in ``head.order``, log-variances (K, dim), scores (K,) as numpy arrays.
    """
    prob = torch.sigmoid(output["cls_preds"].float()).permute(0, 2, 3, 1).reshape(-1)  # (H'W'A,)
    boxes = delta_to_boxes3d(output["reg_preds"].float(), anchors, head.order)[0]  # (H'W'A, 7)
    unc = output["unc_preds"].float()
    dim = unc.shape[1] // head.num_anchors
    unc = unc.permute(0, 2, 3, 1).reshape(-1, dim)  # (H'W'A, dim)
    keep = prob > head.score_threshold
    boxes, scores, unc = boxes[keep], prob[keep], unc[keep]
    if "dir_preds" in output and head.num_bins:
        dir_logits = output["dir_preds"].float().permute(0, 2, 3, 1).reshape(-1, head.num_bins)[keep]
        boxes[:, 6] = decode_direction(boxes[:, 6], dir_logits.argmax(dim=1), head.dir_offset, head.num_bins)
    if len(boxes):
        idx = nms_rotated(box_utils.boxes_to_corners_3d(boxes, head.order), scores, nms_thresh)
        boxes, scores, unc = boxes[idx], scores[idx], unc[idx]
    return boxes.cpu().numpy(), unc.cpu().numpy(), scores.cpu().numpy()


def split_results(model, hypes, split, device, max_frames=None):
    """``{"<scenario>/<timestamp>": {agent_id: {boxes, uncertainty, scores}}}`` of one split."""
    h = copy.deepcopy(hypes)
    key = SPLIT_DIRS[split]
    if not h.get(key):
        raise ConfigError(f"{h.get('_source', 'config')}: missing key '{key}' (split '{split}')")
    h["validate_dir"] = h[key]
    ds = build_dataset(h, visualize=False, train=False)
    anchors = torch.as_tensor(ds.anchor_box, dtype=torch.float32, device=device)
    head, nms = ds.post_processor.head, float(h["postprocess"].get("nms_thresh", 0.15))
    out = {}
    n = len(ds) if max_frames is None else min(len(ds), max_frames)
    for idx in range(n):
        frame = {}
        for agent in ds.base.retrieve_base_data(idx, ds.base.sample_rng(idx)):
            voxels = ds.pre_processor.collate_batch([ds.pre_processor.preprocess(mask_ego_points(agent.points))])
            batch = train_utils.to_device({"processed_lidar": voxels, "record_len": torch.ones(1, dtype=torch.long)},
                                          device)
            with torch.no_grad():
                boxes, unc, scores = decode_with_uncertainty(model(batch), anchors, head, nms)
            frame[str(agent.agent_id)] = {"boxes": np.round(boxes, 5).tolist(),
                                          "uncertainty": np.round(unc, 5).tolist(),
                                          "scores": np.round(scores, 5).tolist()}
        out["/".join(str(v) for v in ds.base.sample_info(idx))] = frame
    return out


def run(opt):
    hypes = load_yaml(None, opt)
    if hypes["model"]["core_method"] != "point_pillar_uncertainty":
        raise ConfigError(f"{opt.model_dir}/config.yaml: model.core_method is '{hypes['model']['core_method']}'; "
                          f"the boxes need a trained point_pillar_uncertainty model")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = train_utils.create_model(hypes)
    train_utils.load_saved_model(opt.model_dir, model)
    model.to(device).eval()
    out_dir = opt.out_dir or os.path.join(opt.model_dir, "box_align")
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for split in opt.splits:
        results = split_results(model, hypes, split, device, opt.max_frames)
        path = os.path.join(out_dir, f"{split}.json")
        with atomic_open(path, "w") as f:
            json.dump(results, f)
        logger.info(f"{split}: {len(results)} frames -> {path}")
        written.append(path)
    return written


def main(argv=None):
    opt = build_parser().parse_args(argv)
    setup_logging(opt.model_dir, "pose_graph_pre_calc.log")
    try:
        return run(opt)
    except OpencoodError as err:
        print(str(err), file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
