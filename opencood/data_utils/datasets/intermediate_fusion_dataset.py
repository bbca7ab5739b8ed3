"""Intermediate fusion: every agent is voxelised in its own frame; features are fused by the model
(spec data_eval §3.2, §3.4, §3.5).

Sample (``ds[idx]['ego']``):
  object_bbx_center (150, 7), object_bbx_mask (150,), object_ids — fused GT in the CLEAN ego frame;
  anchor_box (H', W', A, 7); processed_lidar [per-agent voxel dicts]; label_dict; cav_num;
  pairwise_t_matrix (L, L, 4, 4) ([i, j] = T_{j<-i} from noisy poses; identity if proj_first);
  lidar_poses, lidar_poses_clean (n, 6); sample_idx; cav_id_list;
  label_dict_single [per-agent targets + object_bbx_center_single/object_bbx_mask_single] when
  ``model.args.supervise_single``; origin_lidar (P, 4) when visualize (all agents' points in the ego frame,
  projected with the noisy poses — what the model sees).

``use_cav: N`` (top level or ``fusion.args``): GT from every agent in range, inputs only from the first N
(in-order dynamic joining; N = 1 gives ego-only features scored against the fused GT).

Documented fix: single-agent labels are built w.r.t. the agent's CLEAN pose (the reference used the noisy
pose, i.e. it moved the labels with the localisation error while the points stay exact in the agent frame).
"""
import numpy as np
import torch

from opencood.data_utils.datasets.base_fusion_dataset import (
    BaseFusionDataset, bev_distance, project_points, shuffle_points, to_tensor)
from opencood.utils.pcd_utils import mask_ego_points
from opencood.utils.pose_utils import add_noise_data_dict
from opencood.utils.registry import DATASETS
from opencood.utils.transformation_utils import get_pairwise_transformation, x1_to_x2


@DATASETS.register("intermediate", "intermediatefusion")
class IntermediateFusionDataset(BaseFusionDataset):
    """Per-agent inputs + fused GT for intermediate-fusion models (see module docstring)."""

    def __init__(self, params, visualize=False, train=True):
        super().__init__(params, visualize, train)
        model_args = (params.get("model") or {}).get("args") or {}
        self.supervise_single = bool(model_args.get("supervise_single", False)) or self.heterogeneous
        use_cav = params.get("use_cav", (params["fusion"].get("args") or {}).get("use_cav"))
        self.use_cav = int(use_cav) if use_cav is not None else None

    # ------------------------------------------------------------------ sample
    def __getitem__(self, idx):
        rng = self.base.sample_rng(idx)
        base_data = self.base.retrieve_base_data(idx, rng)
        add_noise_data_dict(base_data, self.noise_setting, rng)
        kept = self.select_agents(base_data)
        if not kept:
            return None
        return {"ego": self.build_sample(idx, kept, self.feature_agents(kept), rng)}

    def feature_agents(self, kept):
        """Agents whose inputs go to the model: all kept ones, or the first ``use_cav`` (dynamic joining,
        ``--fusion_method no``); the fused GT still uses every kept agent."""
        return kept if self.use_cav is None else kept[:max(1, self.use_cav)]

    def keep_agent(self, cav):
        """Extra per-agent filter (heter: known modality)."""
        return True

    def select_agents(self, base_data):
        """Agents within ``comm_range`` of the ego (noisy poses), ego first; [] if the ego is dropped.

        Returns:
            list of (cav_id, base-data dict).
        """
        items = list(base_data.items())
        ego_id, ego = items[0]
        assert ego["ego"], "the first agent of a sample must be the ego"
        if not self.keep_agent(ego):
            return []
        ego_pose = ego["params"]["lidar_pose"]
        return [(cav_id, cav) for cav_id, cav in items
                if bev_distance(cav["params"]["lidar_pose"], ego_pose) <= self.comm_range and self.keep_agent(cav)]

    def build_sample(self, idx, gt_agents, feat_agents, rng):
        """Assemble the ``'ego'`` dict.

        Args:
            idx: sample index.
            gt_agents: list of (cav_id, base dict) whose objects form the fused GT.
            feat_agents: list of (cav_id, base dict) whose inputs go to the model (ego first).
            rng: per-sample generator.
        """
        ego = gt_agents[0][1]
        ego_pose, ego_pose_clean = ego["params"]["lidar_pose"], ego["params"]["lidar_pose_clean"]
        center, mask, ids = self.generate_object_center([c["params"] for _, c in gt_agents], ego_pose_clean,
                                                        self.object_range)
        feat_dict = dict(feat_agents)
        pairwise = get_pairwise_transformation(feat_dict, self.max_cav, self.proj_first)  # (L, L, 4, 4)
        sample = {
            "object_bbx_center": center, "object_bbx_mask": mask, "object_ids": ids,
            "anchor_box": self.anchor_box, "label_dict": self.generate_label(center, mask),
            "cav_num": len(feat_agents), "pairwise_t_matrix": np.asarray(pairwise, dtype=np.float32),
            "lidar_poses": np.asarray([c["params"]["lidar_pose"] for _, c in feat_agents], dtype=np.float32),
            "lidar_poses_clean": np.asarray([c["params"]["lidar_pose_clean"] for _, c in feat_agents],
                                            dtype=np.float32),
            "sample_idx": idx, "cav_id_list": [cav_id for cav_id, _ in feat_agents],
        }
        sample.update(self.agent_inputs(feat_agents, ego_pose, rng))
        if self.supervise_single:
            sample["label_dict_single"] = [self.single_label(cav) for _, cav in feat_agents]
        if self.visualize:
            sample["origin_lidar"] = np.concatenate(
                [project_points(c["lidar_np"], x1_to_x2(c["params"]["lidar_pose"], ego_pose))
                 for _, c in gt_agents if "lidar_np" in c], axis=0).astype(np.float32)
        return sample

    def prepare_points(self, cav, ego_pose, rng):
        """Shuffle, drop self-hits, optionally project to the ego (proj_first). Returns (P, 4)."""
        points = mask_ego_points(shuffle_points(cav["lidar_np"], rng))
        if self.proj_first:
            points = project_points(points, x1_to_x2(cav["params"]["lidar_pose"], ego_pose))
        return points

    def agent_inputs(self, agents, ego_pose, rng):
        """Model inputs of the agents: {'processed_lidar': [voxel dict per agent]}."""
        return {"processed_lidar": [self.pre_processor.preprocess(self.prepare_points(c, ego_pose, rng))
                                    for _, c in agents]}

    def single_objects_keep(self, cav, boxes):
        """Extra filter of an agent's own labels (heter camera agents: bev visibility)."""
        return None

    def single_label(self, cav):
        """Targets of one agent from its own objects in its own CLEAN frame (cav_lidar_range filter)."""
        boxes, ids = self.project_objects([cav["params"]], cav["params"]["lidar_pose_clean"])
        center, mask, _ = self.filter_and_pad(boxes, ids, self.cav_lidar_range,
                                              self.single_objects_keep(cav, boxes))
        label = self.generate_label(center, mask)
        label.update({"object_bbx_center_single": center, "object_bbx_mask_single": mask})
        return label

    # ------------------------------------------------------------------ collate
    def collate_inputs(self, samples):
        """Batch the agents' inputs: voxel coords prefixed by the agent index within the batch."""
        return {"processed_lidar": self.pre_processor.collate_batch(
            [d for s in samples for d in s["processed_lidar"]])}

    def collate_batch_train(self, batch):
        """Collate samples (None skipped) -> {'ego': batch dict} or None if nothing is left.

        Shapes: record_len (B,), object_bbx_center (B, 150, 7), object_bbx_mask (B, 150),
        pairwise_t_matrix (B, L, L, 4, 4), lidar_pose / lidar_pose_clean (N, 6), anchor_box (H', W', A, 7),
        label_dict {pos_equal_one, neg_equal_one (B, H', W', A), targets (B, H', W', 7A), object_bbx_center,
        object_bbx_mask, pairwise_t_matrix, record_len, anchor_box}, label_dict_single (N-stacked),
        object_ids = those of the first sample.
        """
        samples = [b["ego"] for b in self.drop_none(batch)]
        if not samples:
            return None
        record_len = torch.tensor([s["cav_num"] for s in samples], dtype=torch.long)
        center = to_tensor(np.stack([s["object_bbx_center"] for s in samples]))
        mask = to_tensor(np.stack([s["object_bbx_mask"] for s in samples]))
        pairwise = to_tensor(np.stack([s["pairwise_t_matrix"] for s in samples]))
        anchor = to_tensor(self.anchor_box)
        label_dict = self.collate_labels([s["label_dict"] for s in samples])
        label_dict.update({"object_bbx_center": center, "object_bbx_mask": mask, "pairwise_t_matrix": pairwise,
                           "record_len": record_len, "anchor_box": anchor})
        out = {"record_len": record_len, "object_bbx_center": center, "object_bbx_mask": mask,
               "object_ids": samples[0]["object_ids"], "anchor_box": anchor, "label_dict": label_dict,
               "pairwise_t_matrix": pairwise,
               "lidar_pose": to_tensor(np.concatenate([s["lidar_poses"] for s in samples])),
               "lidar_pose_clean": to_tensor(np.concatenate([s["lidar_poses_clean"] for s in samples]))}
        out.update(self.collate_inputs(samples))
        if self.supervise_single:
            singles = [d for s in samples for d in s["label_dict_single"]]
            single = self.collate_labels(singles)
            single.update({
                "object_bbx_center_single": to_tensor(np.stack([d["object_bbx_center_single"] for d in singles])),
                "object_bbx_mask_single": to_tensor(np.stack([d["object_bbx_mask_single"] for d in singles])),
                "anchor_box": anchor})
            out["label_dict_single"] = single
        if self.visualize:
            out["origin_lidar"] = [to_tensor(s["origin_lidar"]) for s in samples]
        return {"ego": out}
