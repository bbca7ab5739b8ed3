"""Intermediate fusion: every agent is voxelised in its own frame; features are fused by the model
(spec data_eval §3.2, §3.4, §3.5).

Sample (``ds[idx]['ego']``):
  object_bbx_center (150, 7), object_bbx_mask (150,), object_bbx_class (150,) int64, object_ids — fused GT in
  the CLEAN ego frame; anchor_box (H', W', A, 7); processed_lidar [per-agent voxel dicts]; label_dict; cav_num;
  pairwise_t_matrix (L, L, 4, 4) ([i, j] = T_{j<-i} from noisy poses; identity if proj_first);
  lidar_poses, lidar_poses_clean (n, 6); agent_prior (n, 3) [delay s, speed m/s, infrastructure] (collated
  (N, 3), the model's ``FusionInput.prior``); sample_idx; cav_id_list; origin_lidar (P, 4) when visualize (all
  agents' points in the ego frame, projected with the noisy poses — what the model sees).

``use_cav: N`` (top level or ``fusion.args``): GT from every agent in range, inputs only from the first N
(in-order dynamic joining; N = 1 gives ego-only features scored against the fused GT).
"""
import numpy as np
import torch

from opencood.data_utils.datasets.base_fusion_dataset import (
    BaseFusionDataset, bev_distance, project_points, to_tensor)
from opencood.utils.config import Key
from opencood.utils.pcd_utils import mask_ego_points, mask_points_by_range, shuffle_points
from opencood.utils.pose_graph import BOX_ALIGN, BoxAlignment
from opencood.utils.registry import DATASETS
from opencood.utils.transformation_utils import get_pairwise_transformation, x1_to_x2

USE_CAV = Key(int, None, "only the first N agents (ego first) send inputs; the GT still comes from every agent "
                         "in range (dynamic joining)")


@DATASETS.register("intermediate", "intermediatefusion")
class IntermediateFusionDataset(BaseFusionDataset):
    """Per-agent inputs + fused GT for intermediate-fusion models (see module docstring)."""

    FUSION_ARGS = BaseFusionDataset.FUSION_ARGS.extend({"use_cav": USE_CAV})
    CONFIG = BaseFusionDataset.CONFIG.extend({
        "args": Key(dict, {}, "fusion options", schema=FUSION_ARGS)})
    TOP_LEVEL = BaseFusionDataset.TOP_LEVEL.extend({
        "use_cav": USE_CAV,
        "box_align": Key(dict, None, "CoAlign: refine the noisy poses with the agent-object pose graph from "
                                     "pre-computed boxes", schema=BOX_ALIGN)})

    def __init__(self, params, visualize=False, train=True):
        super().__init__(params, visualize, train)
        use_cav = self.top_cfg.use_cav if self.top_cfg.use_cav is not None else self.fusion_cfg.args.use_cav
        self.use_cav = int(use_cav) if use_cav is not None else None
        model_args = (params.get("model") or {}).get("args") or {}
        self.supervise_single = bool(model_args.get("supervise_single", False))  # label_dict_single
        self.box_align = None
        if self.top_cfg.box_align is not None:
            self.box_align = BoxAlignment(self.top_cfg.box_align, self.split_name(), self.source)
        self.teacher_input = params.get("kd_flag") is not None  # DiscoNet: teacher_processed_lidar

    # ------------------------------------------------------------------ sample
    def __getitem__(self, idx):
        rng = self.base.sample_rng(idx)
        agents = self.agents_of(idx, rng)  # delay and pose noise applied
        if self.box_align is not None:  # CoAlign: noisy poses refined before any pairwise matrix
            self.box_align.align(agents, "/".join(str(v) for v in self.base.sample_info(idx)))
        kept = self.select_agents(agents)
        if not kept:
            return None
        return {"ego": self.build_sample(idx, kept, self.feature_agents(kept), rng)}

    def split_name(self):
        """``train`` | ``val`` | ``test``: the split being read (inference copies test_dir to validate_dir)."""
        if self.train:
            return "train"
        test_dir = self.params.get("test_dir")
        return "test" if test_dir and self.params.get("validate_dir") == test_dir else "val"

    def feature_agents(self, kept):
        """Agents whose inputs go to the model: all kept ones, or the first ``use_cav`` (dynamic joining,
        ``--fusion_method no``); the fused GT still uses every kept agent."""
        return kept if self.use_cav is None else kept[:max(1, self.use_cav)]

    def keep_agent(self, agent):
        """Extra per-agent filter (heter: known modality)."""
        return True

    def select_agents(self, agents):
        """Agents within ``comm_range`` of the ego (noisy poses), ego first; [] if the ego is dropped.

        Args:
            agents: ``AgentFrame`` records of the sample (ego first).

        Returns:
            list of ``AgentFrame``.
        """
        ego = agents[0]
        assert ego.is_ego, "the first agent of a sample must be the ego"
        if not self.keep_agent(ego):
            return []
        return [a for a in agents
                if bev_distance(a.lidar_pose, ego.lidar_pose) <= self.comm_range and self.keep_agent(a)]

    def build_sample(self, idx, gt_agents, feat_agents, rng):
        """Assemble the ``'ego'`` dict.

        Args:
            idx: sample index.
            gt_agents: ``AgentFrame`` records whose objects form the fused GT (ego first).
            feat_agents: ``AgentFrame`` records whose inputs go to the model (ego first).
            rng: per-sample generator.
        """
        ego = gt_agents[0]
        gt = self.filter_and_pad(self.base.objects_in_frame(gt_agents, ego.lidar_pose_clean), self.object_range)
        pairwise = get_pairwise_transformation(feat_agents, self.max_cav, self.proj_first)  # (L, L, 4, 4)
        sample = {
            **self.gt_entries(gt), "anchor_box": self.anchor_box, "label_dict": self.generate_label(gt),
            "cav_num": len(feat_agents), "pairwise_t_matrix": np.asarray(pairwise, dtype=np.float32),
            "lidar_poses": np.asarray([a.lidar_pose for a in feat_agents], dtype=np.float32),
            "lidar_poses_clean": np.asarray([a.lidar_pose_clean for a in feat_agents], dtype=np.float32),
            "sample_idx": idx, "cav_id_list": [a.agent_id for a in feat_agents],
            "agent_prior": self.agent_prior(feat_agents),
        }
        sample.update(self.agent_inputs(feat_agents, ego.lidar_pose, rng))
        if self.supervise_single:
            sample["label_dict_single"] = [self.single_labels(a) for a in feat_agents]
        if self.teacher_input:
            sample["teacher_processed_lidar"] = self.teacher_input_of(feat_agents, rng)
        if self.visualize:
            sample["origin_lidar"] = np.concatenate(
                [project_points(a.points, x1_to_x2(a.lidar_pose, ego.lidar_pose))
                 for a in gt_agents if a.points is not None], axis=0).astype(np.float32)
        return sample

    def single_labels(self, agent):
        """Anchor targets of one agent's own GT in its clean frame (``model.args.supervise_single``)."""
        return self.generate_label(self.filter_and_pad(agent.own_objects, self.object_range))

    def teacher_input_of(self, agents, rng):
        """DiscoNet's teacher input: the agents' points merged in the ego frame (clean poses, as the reference),
        cropped to ``cav_lidar_range`` and voxelised once."""
        ego_pose = agents[0].lidar_pose_clean
        points = np.concatenate([project_points(mask_ego_points(shuffle_points(a.points, rng)),
                                                x1_to_x2(a.lidar_pose_clean, ego_pose)) for a in agents], axis=0)
        return self.pre_processor.preprocess(mask_points_by_range(points, self.cav_lidar_range))

    def preprocessor_for(self, key):
        """The voxeliser of ``processed_lidar`` and of DiscoNet's ``teacher_processed_lidar``."""
        return self.pre_processor if key in ("processed_lidar", "teacher_processed_lidar") else None

    def prepare_points(self, agent, ego_pose, rng):
        """Shuffle, drop self-hits, optionally project to the ego (proj_first). Returns (P, 4)."""
        points = mask_ego_points(shuffle_points(agent.points, rng))
        if self.proj_first:
            points = project_points(points, x1_to_x2(agent.lidar_pose, ego_pose))
        return points

    def agent_inputs(self, agents, ego_pose, rng):
        """Model inputs of the agents: {'processed_lidar': [voxel dict per agent]}."""
        return {"processed_lidar": [self.pre_processor.preprocess(self.prepare_points(a, ego_pose, rng))
                                    for a in agents]}

    # ------------------------------------------------------------------ collate
    def collate_inputs(self, samples):
        """Batch the agents' inputs: voxel coords prefixed by the agent index within the batch."""
        return {"processed_lidar": self.pre_processor.collate_batch(
            [d for s in samples for d in s["processed_lidar"]])}

    def collate_batch_train(self, batch):
        """Collate samples (None skipped) -> {'ego': batch dict} or None if nothing is left.

        Shapes: record_len (B,), agent_prior (N, 3), object_bbx_center (B, 150, 7), object_bbx_mask (B, 150), object_bbx_class
        (B, 150) int64, pairwise_t_matrix (B, L, L, 4, 4), lidar_pose / lidar_pose_clean (N, 6), anchor_box
        (H', W', A, 7), label_dict {pos_equal_one, neg_equal_one (B, H', W', A), targets (B, H', W', 7A),
        object_bbx_center, object_bbx_mask, object_bbx_class, pairwise_t_matrix, record_len, anchor_box},
        object_ids = those of the first sample.
        """
        samples = [b["ego"] for b in self.drop_none(batch)]
        if not samples:
            return None
        record_len = torch.tensor([s["cav_num"] for s in samples], dtype=torch.long)
        gt = self.collate_gt(samples)
        pairwise = to_tensor(np.stack([s["pairwise_t_matrix"] for s in samples]))
        anchor = to_tensor(self.anchor_box)
        label_dict = self.collate_labels([s["label_dict"] for s in samples])
        label_dict.update(gt)
        label_dict.update({"pairwise_t_matrix": pairwise, "record_len": record_len, "anchor_box": anchor})
        out = {"record_len": record_len, **gt,
               "object_ids": samples[0]["object_ids"], "anchor_box": anchor, "label_dict": label_dict,
               "pairwise_t_matrix": pairwise,
               "lidar_pose": to_tensor(np.concatenate([s["lidar_poses"] for s in samples])),
               "lidar_pose_clean": to_tensor(np.concatenate([s["lidar_poses_clean"] for s in samples])),
               "agent_prior": to_tensor(np.concatenate([s["agent_prior"] for s in samples]))}
        out.update(self.collate_inputs(samples))
        if self.teacher_input:  # one merged cloud per sample: voxel coords prefixed by the sample index
            out["teacher_processed_lidar"] = self.pre_processor.collate_batch(
                [s["teacher_processed_lidar"] for s in samples])
        if self.supervise_single:  # (N, H', W', A) / (N, H', W', 7A), agents in batch order
            out["label_dict_single"] = self.collate_labels([d for s in samples for d in s["label_dict_single"]])
            out["label_dict_single"]["anchor_box"] = anchor
        if self.visualize:
            out["origin_lidar"] = [to_tensor(s["origin_lidar"]) for s in samples]
        return {"ego": out}
