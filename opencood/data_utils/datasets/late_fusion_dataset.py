"""Late fusion: every agent detects in its own frame; boxes are fused after projection (spec §3.4).

Training: one random agent per sample, in its own frame (shuffle, self-hit removal, labels w.r.t. its
CLEAN pose, augmentation, crop to ``cav_lidar_range``, GT boxes with any corner outside removed).

Testing (batch size 1): one entry per agent within ``comm_range`` (noisy poses), keyed ``'ego'`` for the
ego and by cav id otherwise, each with its own ``processed_lidar``, ``anchor_box``, labels,
``transformation_matrix`` (noisy T_ego<-cav) and ``transformation_matrix_clean``; the post-processor
projects and fuses the per-agent detections, and builds the GT as the union of the agents' boxes
projected with the clean matrices (de-dup by id, ``gt_range`` filter).

Fair evaluation (OpenCOOD issue #104, a documented fix): the reference ran each agent on
``cav_lidar_range`` while the GT covered the larger ``gt_range``, so late fusion could not detect boxes
that intermediate fusion was scored on. Here every agent's detection range at test time is
``agent_range`` = the smallest box containing both ``cav_lidar_range`` and ``gt_range`` (own frame): the ego
alone then covers the whole GT range. The pre-processor and the anchors are built on that range (the model
must be built with ``lidar_range = ds.agent_range``; it equals ``cav_lidar_range`` whenever
``gt_range`` lies inside it, as in every shipped config). An agent's GT list keeps its objects inside
``agent_range`` plus those that fall inside the ego's ``gt_range``, so the fused GT equals intermediate
fusion's GT for the same agents.
"""
import copy
import math

import numpy as np

from opencood.data_utils.datasets.base_fusion_dataset import (
    BaseFusionDataset, bev_distance, project_points, shuffle_points, to_tensor)
from opencood.data_utils.post_processor import build_postprocessor
from opencood.data_utils.pre_processor import build_preprocessor
from opencood.utils.box_utils import boxes_to_corners_3d
from opencood.utils.pcd_utils import mask_ego_points, mask_points_by_range
from opencood.utils.pose_utils import add_noise_data_dict
from opencood.utils.registry import DATASETS
from opencood.utils.transformation_utils import x1_to_x2


def range_hull(range_a, range_b):
    """Smallest [xmin, ymin, zmin, xmax, ymax, zmax] containing both ranges."""
    return [min(range_a[i], range_b[i]) for i in range(3)] + [max(range_a[i], range_b[i]) for i in range(3, 6)]


@DATASETS.register("late", "latefusion")
class LateFusionDataset(BaseFusionDataset):
    """Per-agent samples for late fusion (see module docstring)."""

    def __init__(self, params, visualize=False, train=True):
        super().__init__(params, visualize, train)
        self.agent_range = list(self.cav_lidar_range) if train else range_hull(self.cav_lidar_range, self.gt_range)
        if self.agent_range != list(self.cav_lidar_range):
            pre = copy.deepcopy(params["preprocess"])
            pre["cav_lidar_range"] = self.agent_range
            post = copy.deepcopy(params["postprocess"])
            anchor = post["anchor_args"]
            anchor["cav_lidar_range"] = self.agent_range
            for key, size, lo in (("W", "vw", 0), ("H", "vh", 1), ("D", "vd", 2)):
                anchor[key] = math.ceil((self.agent_range[lo + 3] - self.agent_range[lo]) / anchor[size])
            self.pre_processor = build_preprocessor(pre, train)
            self.post_processor = build_postprocessor(post, train)
            self.anchor_box = self.post_processor.generate_anchor_box()

    def __getitem__(self, idx):
        rng = self.base.sample_rng(idx)
        base_data = self.base.retrieve_base_data(idx, rng)
        add_noise_data_dict(base_data, self.noise_setting, rng)
        if self.train:
            cav_ids = list(base_data)
            cav_id = cav_ids[int(rng.integers(len(cav_ids)))]
            return {"ego": self.agent_sample(base_data[cav_id], rng)}
        items = list(base_data.items())
        ego = items[0][1]
        ego_pose, ego_clean = ego["params"]["lidar_pose"], ego["params"]["lidar_pose_clean"]
        out = {}
        for cav_id, cav in items:
            if bev_distance(cav["params"]["lidar_pose"], ego_pose) > self.comm_range:
                continue
            tfm_clean = x1_to_x2(cav["params"]["lidar_pose_clean"], ego_clean)
            sample = self.agent_sample(cav, rng, tfm_clean)
            sample["transformation_matrix"] = np.asarray(x1_to_x2(cav["params"]["lidar_pose"], ego_pose),
                                                         dtype=np.float32)
            sample["transformation_matrix_clean"] = np.asarray(tfm_clean, dtype=np.float32)
            sample.update({"sample_idx": idx, "cav_id": cav_id})
            out["ego" if cav["ego"] else cav_id] = sample
        return out

    def agent_sample(self, cav, rng, tfm_clean_to_ego=None):
        """One agent's input and labels in its own frame.

        Args:
            cav: base-data dict of the agent.
            rng: per-sample generator.
            tfm_clean_to_ego: (4, 4) clean T_ego<-cav at test time (keeps objects inside the ego's
                gt_range in the agent's GT list); None in training.
        """
        params = cav["params"]
        points = mask_ego_points(shuffle_points(cav["lidar_np"], rng))
        boxes, ids = self.project_objects([params], params["lidar_pose_clean"])
        center, mask, ids = self.filter_and_pad(boxes, ids)
        aug = self.data_augmentor({"lidar_np": points, "object_bbx_center": center, "object_bbx_mask": mask}, rng)
        points = mask_points_by_range(aug["lidar_np"], self.agent_range)
        boxes = aug["object_bbx_center"][mask.astype(bool)]
        keep = self.inside_range(boxes, self.agent_range)
        if tfm_clean_to_ego is not None and len(boxes):
            corners = project_points(boxes_to_corners_3d(boxes, self.order).reshape(-1, 3),
                                     np.asarray(tfm_clean_to_ego)).reshape(-1, 8, 3)
            lo, hi = np.asarray(self.gt_range[:3]), np.asarray(self.gt_range[3:])
            keep |= np.all((corners >= lo) & (corners <= hi), axis=(1, 2))
        center, mask, ids = self.filter_and_pad(boxes, ids, keep=keep)
        sample = {"object_bbx_center": center, "object_bbx_mask": mask, "object_ids": ids,
                  "anchor_box": self.anchor_box, "processed_lidar": self.pre_processor.preprocess(points),
                  "label_dict": self.generate_label(center, mask),
                  "lidar_poses": np.asarray([params["lidar_pose"]], dtype=np.float32),
                  "lidar_poses_clean": np.asarray([params["lidar_pose_clean"]], dtype=np.float32)}
        if self.visualize:
            sample["origin_lidar"] = points.astype(np.float32)
        return sample

    def collate_batch_train(self, batch):
        """Training collate: same layout as early fusion (one cloud per sample); None samples skipped."""
        return self.collate_single_cloud_train(batch)

    def collate_batch_test(self, batch):
        """Test collate (batch size 1): one entry per agent key, each collated as a batch of one, with
        transformation_matrix(_clean) (4, 4); ``'ego'`` also carries sample_idx, cav_id_list and
        origin_lidar (1, P, 4) = all agents' points in the ego frame (noisy poses) when visualize."""
        batch = self.drop_none(batch)
        self.check_test_batch(batch)
        if not batch:
            return None
        sample = batch[0]
        out = {}
        for key, s in sample.items():
            entry = self.collate_one_cloud_per_sample([s])
            entry["transformation_matrix"] = to_tensor(s["transformation_matrix"])
            entry["transformation_matrix_clean"] = to_tensor(s["transformation_matrix_clean"])
            out[key] = entry
        out["ego"].update({"sample_idx": sample["ego"]["sample_idx"],
                           "cav_id_list": [s["cav_id"] for s in sample.values()]})
        if self.visualize:
            out["ego"]["origin_lidar"] = to_tensor(np.concatenate(
                [project_points(s["origin_lidar"], s["transformation_matrix"]) for s in sample.values()])
            ).unsqueeze(0)
        return out
