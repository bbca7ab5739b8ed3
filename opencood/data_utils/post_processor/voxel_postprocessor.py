"""Anchor-based detection post-processing: the data-side wrapper of :class:`opencood.models.heads.AnchorHead`.

The head definition owns anchors, target assignment, box coding and decoding; this class feeds it numpy
samples in DataLoader workers (``generate_label``), stacks labels (``collate_batch``), fuses the agents'
decoded boxes (projection, size/height filters, rotated NMS, range filter) and builds the evaluation GT.
The box-coding and stand-up IoU functions stay importable from here.

Conventions: boxes are 7-vectors ``(x, y, z, h, w, l, yaw)`` (``order='hwl'``) or ``(x, y, z, l, w, h, yaw)``
(``order='lwh'``) in metres and radians, in the LiDAR frame of the agent the anchors belong to; corners
follow ``opencood.utils.box_utils``; the anchor grid is flattened in ``(H', W', A)`` order.
"""
import numpy as np
import torch

from opencood.data_utils.pre_processor.batch_utils import stack_arrays
from opencood.models.heads.anchor_head import ANCHOR_ARGS, DIR_ARGS, TARGET_ARGS, AnchorHead, delta_to_boxes3d
from opencood.models.heads.box_coding import (  # noqa: F401  (importable from here, as before)
    decode_boxes, decode_direction, direction_target, encode_boxes, limit_period)
from opencood.models.heads.target_assignment import (  # noqa: F401
    StandupIndex, sort_standup, standup_bev, standup_iou_pairs)
from opencood.ops.nms import nms_rotated
from opencood.utils import box_utils
from opencood.utils.config import REQUIRED, Key, Schema
from opencood.utils.errors import DataError
from opencood.utils.registry import POSTPROCESSORS

# Predictions kept for rotated NMS (highest scores first), as in the reference.
NMS_TOP_K = 1000
LABEL_KEYS = ("pos_equal_one", "neg_equal_one", "targets")


@POSTPROCESSORS.register("VoxelPostprocessor")
class VoxelPostprocessor:
    """Anchors, training targets, box decoding and NMS for anchor-based BEV detection heads.

    Args:
        anchor_params: the YAML ``postprocess`` section (see ``CONFIG``; ``anchor_args`` carries the
            loader-derived ``cav_lidar_range``, ``W``, ``H`` (voxel cells), ``vw``, ``vh``, ``vd`` (m)).
        train: training mode.
        grid: optional :class:`opencood.utils.bev_grid.BEVGrid` to lay the anchors on (default: the grid of
            the derived ``anchor_args``).

    ``target_args.legacy_plus_one``: the reference computes the stand-up IoU of target assignment with the
    pixel "+1" convention applied in metres, which inflates IoU (more positives, fewer negatives). The
    default here is the exact IoU (a documented fix); set it to true to reproduce the reference labels.
    When one anchor clears ``pos_threshold`` for several GT boxes it regresses to the one of highest
    IoU (the reference took the lowest-index one).
    """

    CONFIG = Schema({
        "core_method": Key(str, REQUIRED, "registered post-processor name"),
        "order": Key(str, "hwl", "box vector layout: hwl = (x, y, z, h, w, l, yaw)", choices=("hwl", "lwh")),
        "gt_range": Key(list, None, "metres; GT and predictions kept with all 8 corners inside "
                                    "(default: anchor_args.cav_lidar_range)", length=6),
        "max_num": Key(int, 150, "GT rows per sample (padded)"),
        "nms_thresh": Key(float, REQUIRED, "rotated BEV NMS IoU"),
        "nms_per_class": Key(bool, False, "multi-class heads: NMS within each class only (a pedestrian beside a "
                                          "truck survives); false: one NMS over all classes, as the reference"),
        "max_box_extent": Key(float, 6.0, "metres; predictions with a larger axis-aligned BEV x or y extent "
                                          "are dropped (V2X-Real: 100)"),
        "pred_z_range": Key(list, [-3.0, 1.0], "metres; predictions with a corner below/above this z band are "
                                               "dropped (LiDAR frame; taller classes need a wider band)", length=2),
        "anchor_args": Key(dict, REQUIRED, "anchors (single- or multi-class form)", schema=ANCHOR_ARGS),
        "target_args": Key(dict, REQUIRED, "target assignment and score threshold", schema=TARGET_ARGS),
        "dir_args": Key(dict, None, "direction bins (needed when the model has a direction head)", schema=DIR_ARGS),
    }, name="post-processing")

    def __init__(self, anchor_params, train, grid=None):
        source = anchor_params.get("_source", "config") if isinstance(anchor_params, dict) else "config"
        cfg = self.CONFIG.parse(anchor_params, "postprocess", source)
        self.params = anchor_params
        self.train = train
        self.head = AnchorHead.from_config(cfg, source, grid)
        self.order = cfg.order
        self.max_num = int(cfg.max_num)
        self.nms_thresh = float(cfg.nms_thresh)
        self.nms_per_class = bool(cfg.nms_per_class) and self.head.num_classes > 1
        self.max_box_extent = float(cfg.max_box_extent)
        self.pred_z_range = [float(v) for v in cfg.pred_z_range]
        self.gt_range = list(self.head.grid.gt_range)
        # which boxes count as inside gt_range: (corners needed, x/y only); the dataset may set its own rule
        self.range_rule = (8, False)
        self.anchor_num = self.head.num_anchors
        self.pos_threshold = float(cfg.target_args.pos_threshold)
        self.neg_threshold = float(cfg.target_args.neg_threshold)
        self.score_threshold = self.head.score_threshold
        self.legacy_plus_one = self.head.legacy_plus_one
        self._anchor_cache = None  # (anchors float64 numpy, as tensor, stand-up search index), see _anchor_index

    # ------------------------------------------------------------------ anchors and targets
    def generate_anchor_box(self):
        """Anchor boxes of the detection grid: (H', W', A, 7) float32 numpy (see :meth:`AnchorHead.anchors`)."""
        return self.head.anchors()

    def generate_label_torch(self, gt_boxes, anchors, anchor_index=None, gt_class=None):
        """Assign GT boxes to anchors by stand-up BEV IoU and compute regression targets (torch).

        Positive: IoU > ``pos_threshold`` with some GT (of the anchor's class), or the best anchor of a GT
        (if its IoU > 0). Negative: IoU < ``neg_threshold`` with every GT, and not a GT's best anchor. Only
        the anchor/GT pairs whose stand-up boxes can overlap are evaluated (see :func:`standup_iou_pairs`),
        which gives the same labels as the dense IoU matrix at a fraction of its cost.

        Args:
            gt_boxes: (M, 7) valid GT boxes, ``order`` layout, in the anchors' frame.
            anchors: (H', W', A, 7) anchors.
            anchor_index: optional ``sort_standup(standup_bev(anchors.reshape(-1, 7)))``, computed once
                by callers that label many samples against the same anchors.
            gt_class: (M,) long class index of each GT (``object_bbx_class``); needed by multi-class heads.

        Returns:
            dict of tensors on the anchors' device, in the anchors' dtype: ``pos_equal_one``,
            ``neg_equal_one`` (H', W', A) and ``targets`` (H', W', 7A).
        """
        return self.head.assign(gt_boxes, anchors, anchor_index, gt_class)

    def generate_label(self, gt_box_center, anchors, mask, gt_class=None):
        """Training labels of one sample (numpy wrapper of :meth:`generate_label_torch`).

        Args:
            gt_box_center: (max_num, 7) padded GT boxes, ``order`` layout, in the anchors' frame.
            anchors: (H', W', A, 7) anchors from :meth:`generate_anchor_box`.
            mask: (max_num,) 1 for valid rows of ``gt_box_center``.
            gt_class: optional (max_num,) int64 ``object_bbx_class`` (0-based index into the head's classes).

        Returns:
            dict of float32 numpy: ``pos_equal_one``, ``neg_equal_one`` (H', W', A), ``targets`` (H', W', 7A).
        """
        valid_rows = np.asarray(mask) == 1  # (max_num,)
        valid = np.asarray(gt_box_center, dtype=np.float64)[valid_rows]  # (M, 7)
        classes = None if gt_class is None else torch.from_numpy(np.asarray(gt_class, dtype=np.int64)[valid_rows])
        anchor_tensor, anchor_index = self._anchor_index(anchors)
        label = self.generate_label_torch(torch.from_numpy(valid), anchor_tensor, anchor_index, classes)
        return {k: v.numpy().astype(np.float32) for k, v in label.items()}

    def _anchor_index(self, anchors):
        """float64 tensor and stand-up search index of numpy ``anchors``, rebuilt only when their values change.

        Returns:
            ``(anchors (H', W', A, 7) float64 tensor, sort_standup(...) of their stand-up boxes)``.
        """
        anchors = np.asarray(anchors)
        cached = self._anchor_cache
        if cached is None or cached[0].shape != anchors.shape or not np.array_equal(cached[0], anchors):
            values = anchors.astype(np.float64)  # a private copy: in-place edits of the caller's array are seen
            tensor = torch.from_numpy(values)
            cached = (values, tensor, sort_standup(standup_bev(tensor.reshape(-1, 7), self.order)))
            self._anchor_cache = cached
        return cached[1], cached[2]

    @staticmethod
    def collate_batch(label_batch_list):
        """Stack per-sample labels.

        Args:
            label_batch_list: list of :meth:`generate_label` outputs.

        Returns:
            dict of float32 tensors ``pos_equal_one``, ``neg_equal_one`` (B, H', W', A), ``targets``
            (B, H', W', 7A) (in shared memory when called in a DataLoader worker).
        """
        return {key: stack_arrays([lab[key] for lab in label_batch_list]) for key in LABEL_KEYS}

    # ------------------------------------------------------------------ decoding
    @staticmethod
    def delta_to_boxes3d(deltas, anchors, order="hwl"):
        """Decode a regression map: (B, 7A, H', W') or (B, H', W', 7A) -> (B, H'W'A, 7) boxes."""
        return delta_to_boxes3d(deltas, anchors, order)

    def post_process(self, data_dict, output_dict, return_labels=False):
        """Turn head outputs into final boxes in the ego frame.

        For every agent: :meth:`AnchorHead.decode` (score threshold, decode, direction fix, optional IoU
        rescoring, corners), projection by its ``transformation_matrix``. Then over all agents: drop boxes
        with BEV extent > ``max_box_extent`` (6 m) or corners outside z in ``pred_z_range`` ([-3, 1] m),
        rotated NMS (``nms_thresh``, top 1000; per class with ``nms_per_class``) and keep boxes with all 8
        corners inside ``gt_range``.

        Args:
            data_dict: ``{cav_id: {'anchor_box' (H', W', A, 7), 'transformation_matrix' (4, 4)
                T_ego<-cav, ...}}`` (batch size 1).
            output_dict: ``{cav_id: {'cls_preds' (1, A, H', W'), 'reg_preds' (1, 7A, H', W'),
                optional 'dir_preds' (1, num_bins*A, H', W'), optional 'iou_preds' (1, A, H', W')}}``.
            return_labels: also return each box's class index (into the head's ``class_names``).

        Returns:
            ``(pred_box3d (K, 8, 3), scores (K,))`` (+ ``labels (K,)`` long) tensors on the model's device,
            ego frame; ``None`` for each when no box survives.
        """
        fused = self._decode_agents(data_dict, output_dict)
        if fused is not None:
            fused = self._filter(*fused)
        if fused is None:
            return (None, None, None) if return_labels else (None, None)
        return fused if return_labels else fused[:2]

    def _decode_agents(self, data_dict, output_dict):
        """Every agent's detections in the ego frame: ``(corners (K, 8, 3), scores (K,), labels (K,))`` or None."""
        corners_list, scores_list, labels_list = [], [], []
        for cav_id, cav_content in data_dict.items():
            if cav_id not in output_dict:
                raise KeyError(f"post_process: no model output for agent '{cav_id}'")
            corners, scores, labels = self.head.decode(output_dict[cav_id], cav_content["anchor_box"])
            if corners.shape[0] == 0:
                continue
            tfm = torch.as_tensor(cav_content["transformation_matrix"]).to(corners).reshape(4, 4)
            corners_list.append(box_utils.project_box3d(corners, tfm))
            scores_list.append(scores)
            labels_list.append(labels)
        if not corners_list:
            return None
        return torch.cat(corners_list), torch.cat(scores_list), torch.cat(labels_list)

    def _filter(self, corners, scores, labels):
        """Size/height filters, rotated NMS (see :meth:`_nms`), range filter; None when nothing is left."""
        keep = box_utils.remove_large_pred_bbx(corners, self.max_box_extent) \
            & box_utils.remove_bbx_abnormal_z(corners, *self.pred_z_range)
        corners, scores, labels = corners[keep], scores[keep], labels[keep]
        if corners.shape[0] == 0:
            return None
        keep = self._nms(corners, scores, labels)
        corners, scores, labels = corners[keep], scores[keep], labels[keep]
        keep = box_utils.get_mask_for_boxes_within_range_torch(corners, self.gt_range, *self.range_rule)
        corners, scores, labels = corners[keep], scores[keep], labels[keep]
        if corners.shape[0] == 0:
            return None
        return corners, scores, labels

    def _nms(self, corners, scores, labels):
        """Kept indices (K,) of rotated NMS (top 1000 per NMS call), by descending score.

        ``nms_per_class``: one NMS per class (boxes of different classes never suppress each other), the
        kept boxes of all classes then merged by score; else one class-agnostic NMS.
        """
        if not self.nms_per_class:
            return nms_rotated(corners, scores, self.nms_thresh, top_k=NMS_TOP_K)
        kept = []
        for k in torch.unique(labels):
            rows = torch.nonzero(labels == k).reshape(-1)  # (N_k,)
            kept.append(rows[nms_rotated(corners[rows], scores[rows], self.nms_thresh, top_k=NMS_TOP_K)])
        kept = torch.cat(kept)
        return kept[torch.sort(scores[kept], descending=True, stable=True).indices]

    def generate_gt_bbx(self, data_dict, return_labels=False):
        """Corners of the fused ground truth for evaluation, in the ego frame.

        Each agent's valid ``object_bbx_center`` rows are turned into corners and projected with its
        ``transformation_matrix_clean`` (else ``transformation_matrix``); objects seen by several agents
        are kept once (first occurrence by id), then only boxes with all 8 corners inside ``gt_range``.

        Args:
            data_dict: ``{cav_id: {'object_bbx_center' (1, max_num, 7) or (max_num, 7), 'object_bbx_mask',
                'object_ids' (list, one per valid row), 'transformation_matrix(_clean)' (4, 4),
                optional 'object_bbx_class' (max_num,) class index (0 when absent)}}``.
            return_labels: also return each GT box's class index.

        Returns:
            (G, 8, 3) float32 corners (+ (G,) long class indices).
        """
        corners_list, labels_list, ids = [], [], []
        device = None
        for cav_id, cav_content in data_dict.items():
            centers = torch.as_tensor(cav_content["object_bbx_center"]).float()
            device = centers.device
            mask = torch.as_tensor(cav_content["object_bbx_mask"], device=device).reshape(-1) == 1
            valid = centers.reshape(-1, 7)[mask]  # (M, 7)
            object_ids = list(cav_content["object_ids"])
            if len(object_ids) != valid.shape[0]:
                raise DataError(f"generate_gt_bbx: agent '{cav_id}' has {valid.shape[0]} valid boxes but "
                                f"{len(object_ids)} object ids")
            key = "transformation_matrix_clean" if "transformation_matrix_clean" in cav_content \
                else "transformation_matrix"
            tfm = torch.as_tensor(cav_content[key]).to(device=device, dtype=torch.float32).reshape(4, 4)
            corners_list.append(box_utils.project_box3d(box_utils.boxes_to_corners_3d(valid, self.order), tfm))
            labels_list.append(_gt_classes(cav_content, mask))
            ids.extend(object_ids)
        if not corners_list:
            empty = torch.zeros(0, 8, 3)
            return (empty, torch.zeros(0, dtype=torch.long)) if return_labels else empty
        corners, labels = torch.cat(corners_list), torch.cat(labels_list)  # (sum M, 8, 3), (sum M,)
        first = {}
        for i, obj_id in enumerate(ids):
            first.setdefault(obj_id, i)
        unique = torch.as_tensor(sorted(first.values()), dtype=torch.long, device=device)
        corners, labels = corners[unique], labels[unique]  # (G', 8, 3), (G',)
        inside = box_utils.get_mask_for_boxes_within_range_torch(corners, self.gt_range, *self.range_rule)
        return (corners[inside], labels[inside]) if return_labels else corners[inside]


def _gt_classes(cav_content, mask):
    """(M,) long ``object_bbx_class`` of the valid rows ``mask`` (zeros without the key)."""
    if "object_bbx_class" not in cav_content:
        return torch.zeros(int(mask.sum()), dtype=torch.long, device=mask.device)
    return torch.as_tensor(cav_content["object_bbx_class"], device=mask.device).long().reshape(-1)[mask]
