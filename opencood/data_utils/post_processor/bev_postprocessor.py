"""PIXOR's anchor-free BEV targets and decoding (OpenCOOD ``BevPostprocessor``; spec baselines §A4).

The output grid is the anchor grid of ``postprocess.anchor_args`` (its ``feature_stride`` and the voxel size):
each cell's reference point is its anchor centre (x, y), anchors are not otherwise used. Targets per cell:
positive where the point lies inside a GT box's BEV rectangle (the first such box), regression
``(cos θ, sin θ, x_box − x_cell, y_box − y_cell, log w, log l)`` normalised by OpenCOOD's fixed mean / std.
Decoding inverts that; z and h come from the anchor template (PIXOR is a BEV detector); boxes are projected,
filtered and NMS-merged exactly as the anchor post-processor does.

Labels reuse the anchor layout keys: ``pos_equal_one`` / ``neg_equal_one`` (H', W', 1), ``targets`` (H', W', 6).
"""
import numpy as np
import torch

from opencood.data_utils.post_processor.voxel_postprocessor import VoxelPostprocessor
from opencood.utils import box_utils
from opencood.utils.registry import POSTPROCESSORS

# OpenCOOD's hard-coded normalisation of (cos, sin, dx, dy, log w, log l)
TARGET_MEAN = np.array([0.008, 0.001, 0.202, 0.2, 0.43, 1.368])
TARGET_STD = np.array([0.866, 0.5, 0.954, 0.668, 0.09, 0.111])
BOX_INDEX = {"hwl": {"h": 3, "w": 4, "l": 5}, "lwh": {"l": 3, "w": 4, "h": 5}}


@POSTPROCESSORS.register("BevPostprocessor")
class BevPostprocessor(VoxelPostprocessor):
    """Per-cell box targets and decoding for PIXOR (keys: those of :class:`VoxelPostprocessor`)."""

    def cell_points(self, anchors):
        """(H', W', 2) reference point (x, y) of each output cell, metres, from the anchor grid."""
        return np.asarray(anchors)[:, :, 0, :2]

    def generate_label(self, gt_box_center, anchors, mask, gt_class=None):
        """Args: gt_box_center (max_num, 7) padded GT (``order``), anchors (H', W', A, 7), mask (max_num,).

        Returns:
            float32 numpy ``pos_equal_one`` / ``neg_equal_one`` (H', W', 1), ``targets`` (H', W', 6).
        """
        idx = BOX_INDEX[self.order]
        boxes = np.asarray(gt_box_center, dtype=np.float64)[np.asarray(mask) == 1]  # (M, 7)
        points = self.cell_points(anchors).astype(np.float64)  # (H', W', 2)
        h, w = points.shape[:2]
        flat = points.reshape(-1, 2)  # (P, 2)
        off = flat[None] - boxes[:, None, :2]  # (M, P, 2)
        cos, sin = np.cos(boxes[:, 6:7]), np.sin(boxes[:, 6:7])  # (M, 1)
        along = off[..., 0] * cos + off[..., 1] * sin  # (M, P) in the box frame
        across = -off[..., 0] * sin + off[..., 1] * cos
        inside = (np.abs(along) <= boxes[:, idx["l"], None] / 2) & (np.abs(across) <= boxes[:, idx["w"], None] / 2)
        pos = inside.any(axis=0) if len(boxes) else np.zeros(len(flat), dtype=bool)  # (P,)
        targets = np.zeros((len(flat), 6))
        if pos.any():
            owner = boxes[inside.argmax(axis=0)[pos]]  # (K, 7) the first box holding each positive cell
            targets[pos] = np.column_stack([np.cos(owner[:, 6]), np.sin(owner[:, 6]),
                                            owner[:, 0] - flat[pos, 0], owner[:, 1] - flat[pos, 1],
                                            np.log(owner[:, idx["w"]]), np.log(owner[:, idx["l"]])])
        targets = np.where(pos[:, None], (targets - TARGET_MEAN) / TARGET_STD, 0.0)
        pos = pos.reshape(h, w, 1).astype(np.float32)
        return {"pos_equal_one": pos, "neg_equal_one": 1.0 - pos,
                "targets": targets.reshape(h, w, 6).astype(np.float32)}

    def decode_cells(self, output, anchors):
        """Boxes of the cells scoring above ``score_threshold``.

        Args:
            output: ``{'cls_preds' (1, 1, H', W'), 'reg_preds' (1, 6, H', W')}`` of one agent.
            anchors: (H', W', A, 7) tensor (cell centres; z and h of the template).

        Returns:
            corners (K, 8, 3), scores (K,), labels (K,) zeros, in the agent's frame.
        """
        prob = torch.sigmoid(output["cls_preds"][0, 0].float())  # (H', W')
        reg = output["reg_preds"][0].float().permute(1, 2, 0)  # (H', W', 6)
        reg = reg * torch.as_tensor(TARGET_STD).to(reg) + torch.as_tensor(TARGET_MEAN).to(reg)
        keep = prob > self.score_threshold
        reg, cells = reg[keep], anchors[:, :, 0][keep].to(reg)  # (K, 6), (K, 7)
        idx = BOX_INDEX[self.order]
        boxes = cells.clone()
        boxes[:, 0] = cells[:, 0] + reg[:, 2]
        boxes[:, 1] = cells[:, 1] + reg[:, 3]
        boxes[:, idx["w"]] = reg[:, 4].exp()
        boxes[:, idx["l"]] = reg[:, 5].exp()
        boxes[:, 6] = torch.atan2(reg[:, 1], reg[:, 0])
        corners = box_utils.boxes_to_corners_3d(boxes, self.order)  # (K, 8, 3)
        return corners, prob[keep], torch.zeros(len(boxes), dtype=torch.long, device=boxes.device)

    def _decode_agents(self, data_dict, output_dict):
        """Every agent's cell boxes projected into the ego frame: (corners, scores, labels) or None."""
        corners_list, scores_list, labels_list = [], [], []
        for cav_id, cav_content in data_dict.items():
            if cav_id not in output_dict:
                raise KeyError(f"post_process: no model output for agent '{cav_id}'")
            corners, scores, labels = self.decode_cells(output_dict[cav_id], torch.as_tensor(cav_content["anchor_box"]))
            if corners.shape[0] == 0:
                continue
            tfm = torch.as_tensor(cav_content["transformation_matrix"]).to(corners).reshape(4, 4)
            corners_list.append(box_utils.project_box3d(corners, tfm))
            scores_list.append(scores)
            labels_list.append(labels)
        if not corners_list:
            return None
        return torch.cat(corners_list), torch.cat(scores_list), torch.cat(labels_list)
