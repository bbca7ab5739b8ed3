"""Per-batch inference for each fusion style: model forward + post-processing + ground truth.

Each function takes a collated test batch (batch size 1) already on the model's device and
returns ``{'pred_box_tensor': (K,8,3) or None, 'pred_score': (K,) or None, 'pred_label': (K,) or None,
'gt_box_tensor': (G,8,3), 'gt_label': (G,)}`` (labels: class index into the head's ``class_names``),
everything in the ego LiDAR frame (metres).
"""
from collections import OrderedDict

import numpy as np
import torch


def _result(dataset, batch, output_dict):
    pred_box, pred_score, pred_label = dataset.post_processor.post_process(batch, output_dict, return_labels=True)
    gt_box, gt_label = dataset.post_processor.generate_gt_bbx(batch, return_labels=True)
    return {"pred_box_tensor": pred_box, "pred_score": pred_score, "pred_label": pred_label,
            "gt_box_tensor": gt_box, "gt_label": gt_label}


def inference_intermediate_fusion(batch, model, dataset):
    """Intermediate (feature) fusion: one forward over all agents of the sample."""
    return _result(dataset, batch, OrderedDict(ego=model(batch["ego"])))


def inference_early_fusion(batch, model, dataset):
    """Early (raw point) fusion: the dataset already merged all agents' points into the ego frame."""
    return _result(dataset, batch, OrderedDict(ego=model(batch["ego"])))


def inference_late_fusion(batch, model, dataset):
    """Late fusion: every agent detects in its own frame; boxes are projected to the ego and NMS-merged."""
    output = OrderedDict((cav_id, model(content)) for cav_id, content in batch.items())
    return _result(dataset, batch, output)


def save_npy(result, batch, out_dir, idx):
    """Write ``npy/%04d_pcd.npy``, ``_pred.npy`` (K,8,3), ``_gt.npy`` (G,8,3) like the reference."""
    import os
    os.makedirs(out_dir, exist_ok=True)

    def np_(t):
        return np.zeros((0, 8, 3), np.float32) if t is None else t.detach().cpu().numpy()

    np.save(os.path.join(out_dir, f"{idx:04d}_pred.npy"), np_(result["pred_box_tensor"]))
    np.save(os.path.join(out_dir, f"{idx:04d}_gt.npy"), np_(result["gt_box_tensor"]))
    lidar = batch["ego"].get("origin_lidar")
    if isinstance(lidar, torch.Tensor):
        np.save(os.path.join(out_dir, f"{idx:04d}_pcd.npy"), lidar[0].cpu().numpy())
