"""Early fusion: all agents' points are projected into the ego frame and voxelised once (spec §3.4).

Per sample: agents within ``comm_range`` of the ego (believed poses: with ``noise_setting`` noisy, as in
intermediate fusion; the reference's early fusion ignored pose noise); points shuffled, self-hits removed,
projected to the ego with the believed poses, stacked; GT = objects of all agents w.r.t. the clean ego pose
(de-dup by id); training augmentation (``data_augment``); points cropped to
``cav_lidar_range`` (open interval); GT boxes with any corner outside the GT range removed
(``cav_lidar_range`` in training, ``gt_range`` in evaluation); one voxelisation.

``ds[idx]['ego']``: object_bbx_center (150, 7), object_bbx_mask, object_bbx_class, object_ids, anchor_box,
processed_lidar (voxel dict), label_dict, cav_num, lidar_poses / lidar_poses_clean (n, 6), sample_idx,
cav_id_list, points_per_agent (n,), origin_lidar (P, 4) when visualize.
"""
import numpy as np

from opencood.data_utils.datasets.base_fusion_dataset import BaseFusionDataset, bev_distance, project_points
from opencood.utils.pcd_utils import mask_ego_points, mask_points_by_range, shuffle_points
from opencood.utils.registry import DATASETS
from opencood.utils.transformation_utils import x1_to_x2


@DATASETS.register("early", "earlyfusion")
class EarlyFusionDataset(BaseFusionDataset):
    """One fused point cloud per sample (see module docstring)."""

    def __getitem__(self, idx):
        rng = self.base.sample_rng(idx)
        agents = self.agents_of(idx, rng)  # delay and pose noise applied
        ego_pose = agents[0].lidar_pose  # believed (noisy) pose: the points are projected with what is believed
        agents = [a for a in agents if bev_distance(a.lidar_pose, ego_pose) <= self.comm_range]
        clouds = [project_points(mask_ego_points(shuffle_points(a.points, rng)), x1_to_x2(a.lidar_pose, ego_pose))
                  for a in agents]
        points = np.concatenate(clouds, axis=0)
        gt = self.filter_and_pad(self.base.objects_in_frame(agents, agents[0].lidar_pose_clean))  # clean ego frame
        aug = self.data_augmentor({"lidar_np": points, "object_bbx_center": gt.center,
                                   "object_bbx_mask": gt.mask}, rng)
        points = mask_points_by_range(aug["lidar_np"], self.cav_lidar_range)
        gt = self.filter_and_pad(gt.valid_objects(aug["object_bbx_center"][gt.mask.astype(bool)]), self.object_range)
        sample = {
            **self.gt_entries(gt), "anchor_box": self.anchor_box,
            "processed_lidar": self.pre_processor.preprocess(points), "label_dict": self.generate_label(gt),
            "cav_num": len(agents),
            "lidar_poses": np.asarray([a.lidar_pose for a in agents], dtype=np.float32),
            "lidar_poses_clean": np.asarray([a.lidar_pose_clean for a in agents], dtype=np.float32),
            "sample_idx": idx, "cav_id_list": [a.agent_id for a in agents],
            # what each agent contributes inside the ego's range (communication volume, utils/comm_volume.py)
            "points_per_agent": [len(mask_points_by_range(c, self.cav_lidar_range)) for c in clouds]}
        if self.visualize:
            sample["origin_lidar"] = points.astype(np.float32)
        return {"ego": sample}

    def collate_batch_train(self, batch):
        """{'ego': processed_lidar (coords prefixed by sample index), object_bbx_center (B, 150, 7),
        object_bbx_mask (B, 150), object_bbx_class (B, 150), object_ids (first sample), anchor_box, label_dict
        (B, ...), record_len (B,) ones}; None samples skipped, None if nothing is left."""
        return self.collate_single_cloud_train(batch)

    def collate_batch_test(self, batch):
        """The shared test collate + ``points_per_agent`` (ego first) of the one sample."""
        out = super().collate_batch_test(batch)
        if out is not None:
            out["ego"]["points_per_agent"] = self.drop_none(batch)[0]["ego"]["points_per_agent"]
        return out
