"""Late fusion: every agent detects in its own frame; boxes are fused after projection (spec §3.4).

Training: one random agent per sample, in its own frame (shuffle, self-hit removal, labels = the record's own
objects (``AgentFrame.objects``, its CLEAN frame), augmentation, crop to ``cav_lidar_range``, GT boxes with any
corner outside removed).

Testing (batch size 1): one entry per agent within ``comm_range`` (noisy poses), keyed ``'ego'`` for the
ego and by cav id otherwise, each with its own ``processed_lidar``, ``anchor_box``, labels,
``transformation_matrix`` (noisy T_ego<-cav) and ``transformation_matrix_clean``; the post-processor
projects and fuses the per-agent detections, and builds the GT as the union of the agents' boxes
projected with the clean matrices (de-dup by id, ``gt_range`` filter).

Fair evaluation (OpenCOOD issue #104, a documented fix): the reference ran each agent on
``cav_lidar_range`` while the GT covered the larger ``gt_range``, so late fusion could not detect boxes
that intermediate fusion was scored on. Here every agent's detection range at test time is
``agent_range`` = the smallest box containing both ``cav_lidar_range`` and ``gt_range`` (own frame): the ego
alone then covers the whole GT range. The pre-processor and the anchors are built on that range
(``BEVGrid.with_range``; the model
must be built with ``lidar_range = ds.agent_range``; it equals ``cav_lidar_range`` whenever
``gt_range`` lies inside it, as in every shipped config). An agent's GT list keeps its objects inside
``agent_range`` plus those that fall inside the ego's ``gt_range``, so the fused GT equals intermediate
fusion's GT for the same agents.
"""
import copy

import numpy as np

from opencood.data_utils.datasets.base_fusion_dataset import (
    BaseFusionDataset, bev_distance, project_points, to_tensor)
from opencood.data_utils.post_processor import build_postprocessor
from opencood.data_utils.pre_processor import build_preprocessor
from opencood.utils.bev_grid import BEVGrid, range_hull
from opencood.utils.box_utils import boxes_to_corners_3d
from opencood.utils.pcd_utils import mask_ego_points, mask_points_by_range, shuffle_points
from opencood.utils.registry import DATASETS
from opencood.utils.transformation_utils import x1_to_x2


@DATASETS.register("late", "latefusion")
class LateFusionDataset(BaseFusionDataset):
    """Per-agent samples for late fusion (see module docstring)."""

    def __init__(self, params, visualize=False, train=True):
        super().__init__(params, visualize, train)
        self.agent_range = list(self.cav_lidar_range) if train else range_hull(self.cav_lidar_range, self.gt_range)
        if self.agent_range != list(self.cav_lidar_range):
            grid = BEVGrid.from_hypes(params).with_range(self.agent_range)
            pre = copy.deepcopy(params["preprocess"])
            pre["cav_lidar_range"] = self.agent_range
            post = copy.deepcopy(params["postprocess"])
            post["anchor_args"].update(grid.anchor_args())  # cav_lidar_range, W, H, D, vw, vh, vd
            self.pre_processor = build_preprocessor(pre, train)
            self.set_post_processor(build_postprocessor(post, train))

    def __getitem__(self, idx):
        rng = self.base.sample_rng(idx)
        agents = self.agents_of(idx, rng)  # delay and pose noise applied
        if not agents:  # lateheter: the ego's type takes no input
            return None
        if self.train:
            return {"ego": self.agent_sample(agents[int(rng.integers(len(agents)))], rng)}
        ego = agents[0]
        out = {}
        for agent in agents:
            if bev_distance(agent.lidar_pose, ego.lidar_pose) > self.comm_range:
                continue
            tfm_clean = x1_to_x2(agent.lidar_pose_clean, ego.lidar_pose_clean)
            sample = self.agent_sample(agent, rng, tfm_clean)
            sample["transformation_matrix"] = np.asarray(x1_to_x2(agent.lidar_pose, ego.lidar_pose), dtype=np.float32)
            sample["transformation_matrix_clean"] = np.asarray(tfm_clean, dtype=np.float32)
            sample.update({"sample_idx": idx, "cav_id": agent.agent_id})
            out["ego" if agent.is_ego else agent.agent_id] = sample
        return out

    def agent_sample(self, agent, rng, tfm_clean_to_ego=None):
        """One agent's input and labels in its own frame.

        Args:
            agent: the agent's ``AgentFrame``.
            rng: per-sample generator.
            tfm_clean_to_ego: (4, 4) clean T_ego<-agent at test time (keeps objects inside the ego's
                gt_range in the agent's GT list); None in training.
        """
        points = mask_ego_points(shuffle_points(agent.points, rng))
        gt = self.filter_and_pad(agent.own_objects)  # agent's clean frame
        aug = self.data_augmentor({"lidar_np": points, "object_bbx_center": gt.center,
                                   "object_bbx_mask": gt.mask}, rng)
        points = mask_points_by_range(aug["lidar_np"], self.agent_range)
        objects = gt.valid_objects(aug["object_bbx_center"][gt.mask.astype(bool)])
        keep = self.inside_range(objects.boxes, self.agent_range)
        if tfm_clean_to_ego is not None and len(objects.boxes):
            corners = project_points(boxes_to_corners_3d(objects.boxes, self.order).reshape(-1, 3),
                                     np.asarray(tfm_clean_to_ego)).reshape(-1, 8, 3)
            lo, hi = np.asarray(self.gt_range[:3]), np.asarray(self.gt_range[3:])
            keep |= np.all((corners >= lo) & (corners <= hi), axis=(1, 2))
        gt = self.filter_and_pad(objects, keep=keep)
        sample = {**self.gt_entries(gt), "anchor_box": self.anchor_box,
                  **self.agent_input(agent, points, rng), "label_dict": self.generate_label(gt),
                  "lidar_poses": np.asarray([agent.lidar_pose], dtype=np.float32),
                  "lidar_poses_clean": np.asarray([agent.lidar_pose_clean], dtype=np.float32)}
        if self.visualize:
            sample["origin_lidar"] = points.astype(np.float32)
        return sample
    def agent_input(self, agent, points, rng):
        """The model input of one agent from its prepared cloud (P, 4), own frame: ``{'processed_lidar': voxels}``
        (``lateheter``: the agent type's own input)."""
        return {"processed_lidar": self.pre_processor.preprocess(points)}

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
