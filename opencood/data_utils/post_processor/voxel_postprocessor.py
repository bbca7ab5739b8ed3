"""Anchor-based detection post-processing: anchors, target assignment, box coding, NMS, eval GT.

Conventions: boxes are 7-vectors ``(x, y, z, h, w, l, yaw)`` (``order='hwl'``) or ``(x, y, z, l, w, h, yaw)``
(``order='lwh'``) in metres and radians, in the LiDAR frame of the agent the anchors belong to; corners
follow ``opencood.utils.box_utils``. The anchor grid has ``H' x W'`` cells with ``A`` anchors each and is
flattened in ``(H', W', A)`` order everywhere (head outputs ``(B, A*k, H', W')`` are permuted to match).

Box coding (per anchor ``a``, ``d_a = sqrt(w_a^2 + l_a^2)``)::

    dx = (x - x_a) / d_a,  dy = (y - y_a) / d_a,  dz = (z - z_a) / h_a,
    dh = ln(h / h_a),      dw = ln(w / w_a),      dl = ln(l / l_a),     dyaw = yaw - yaw_a

Target assignment and decoding are plain torch, so they run on whatever device their inputs live on.
"""
import math
from typing import NamedTuple

import numpy as np
import torch

from opencood.data_utils.pre_processor.batch_utils import stack_arrays
from opencood.ops.nms import nms_rotated
from opencood.utils import box_utils
from opencood.utils.errors import ConfigError, DataError
from opencood.utils.registry import POSTPROCESSORS

# Column indices of (h, w, l) in a 7-vector of each box order.
_DIMS_INDEX = {"hwl": (3, 4, 5), "lwh": (5, 4, 3)}
# Predictions kept for rotated NMS (highest scores first), as in the reference.
NMS_TOP_K = 1000
# Extra reach (metres) of the stand-up pair search window, so rounding never drops a candidate pair.
STANDUP_SEARCH_MARGIN = 1e-6


def _dims_index(order):
    if order not in _DIMS_INDEX:
        raise ConfigError(f"config: key 'postprocess.order' must be 'hwl' or 'lwh', got {order!r}")
    return _DIMS_INDEX[order]


def limit_period(val, offset, period):
    """Wrap angles into ``[-offset * period, (1 - offset) * period)``.

    Args:
        val: tensor of angles, radians.
        offset: 0 gives ``[0, period)``, 0.5 gives ``[-period / 2, period / 2)``.
        period: radians.

    Returns:
        tensor like ``val``.
    """
    return val - torch.floor(val / period + offset) * period


def encode_boxes(boxes, anchors, order="hwl"):
    """Regression targets of boxes relative to their anchors.

    Args:
        boxes: (..., 7) ground-truth boxes, ``order`` layout.
        anchors: (..., 7) anchors, broadcastable to ``boxes``.
        order: ``'hwl'`` or ``'lwh'``.

    Returns:
        (..., 7) deltas ``(dx, dy, dz, d-dims as log ratios in the same column order, dyaw)``.
    """
    ih, iw, il = _dims_index(order)
    diag = torch.sqrt(anchors[..., iw] ** 2 + anchors[..., il] ** 2)  # (...)
    dxy = (boxes[..., 0:2] - anchors[..., 0:2]) / diag[..., None]  # (..., 2)
    dz = (boxes[..., 2:3] - anchors[..., 2:3]) / anchors[..., ih:ih + 1]  # (..., 1)
    ddims = torch.log(boxes[..., 3:6] / anchors[..., 3:6])  # (..., 3)
    dyaw = boxes[..., 6:7] - anchors[..., 6:7]  # (..., 1)
    return torch.cat([dxy, dz, ddims, dyaw], dim=-1)


def decode_boxes(deltas, anchors, order="hwl"):
    """Inverse of :func:`encode_boxes`.

    Args:
        deltas: (..., 7) regression outputs.
        anchors: (..., 7) anchors, broadcastable to ``deltas``.
        order: ``'hwl'`` or ``'lwh'``.

    Returns:
        (..., 7) boxes in ``order`` layout, in the anchors' frame.
    """
    ih, iw, il = _dims_index(order)
    diag = torch.sqrt(anchors[..., iw] ** 2 + anchors[..., il] ** 2)  # (...)
    xy = deltas[..., 0:2] * diag[..., None] + anchors[..., 0:2]  # (..., 2)
    z = deltas[..., 2:3] * anchors[..., ih:ih + 1] + anchors[..., 2:3]  # (..., 1)
    dims = torch.exp(deltas[..., 3:6]) * anchors[..., 3:6]  # (..., 3)
    yaw = deltas[..., 6:7] + anchors[..., 6:7]  # (..., 1)
    return torch.cat([xy, z, dims, yaw], dim=-1)


def direction_target(anchors, reg_targets, dir_offset, num_bins):
    """Direction-bin class of every anchor's target yaw (shared by the loss and the decoder).

    bin = floor(wrap(yaw_a + dyaw - dir_offset, [0, 2pi)) / (2pi / num_bins)), clamped to the bins.

    Args:
        anchors: (B, N, 7), (N, 7) or (H', W', A, 7) anchors with N = H'W'A (only yaw is used).
        reg_targets: (B, N, 7) regression targets (``dyaw`` in the last column).
        dir_offset: radians (0.7853 in the configs).
        num_bins: number of direction bins (2).

    Returns:
        (B, N) long bin indices.
    """
    anchor_yaw = anchors[..., 6]
    if anchors.dim() != reg_targets.dim():
        anchor_yaw = anchor_yaw.reshape(-1)  # (N,)
    yaw = reg_targets[..., 6] + anchor_yaw.to(reg_targets)  # (B, N)
    offset_yaw = limit_period(yaw - dir_offset, 0.0, 2 * math.pi)
    bins = torch.floor(offset_yaw / (2 * math.pi / num_bins)).long()
    return bins.clamp(min=0, max=num_bins - 1)


def decode_direction(yaw, dir_bins, dir_offset, num_bins):
    """Resolve the heading ambiguity of decoded yaws with the direction head's bins.

    yaw' = wrap(yaw - dir_offset, [0, period)) + dir_offset + period * bin, then wrapped to [-pi, pi),
    with period = 2pi / num_bins.

    Args:
        yaw: (K,) decoded yaws, radians.
        dir_bins: (K,) predicted bin indices.
        dir_offset: radians.
        num_bins: number of direction bins.

    Returns:
        (K,) yaws in [-pi, pi).
    """
    period = 2 * math.pi / num_bins
    rot = limit_period(yaw - dir_offset, 0.0, period)
    yaw = rot + dir_offset + period * dir_bins.to(yaw.dtype)
    return limit_period(yaw, 0.5, 2 * math.pi)


def standup_bev(boxes, order="hwl"):
    """Axis-aligned BEV hulls of 7-vector boxes (identical to the min/max of their 4 bottom corners).

    Args:
        boxes: (K, 7) tensor, ``order`` layout.
        order: ``'hwl'`` or ``'lwh'``.

    Returns:
        (K, 4) ``[xmin, ymin, xmax, ymax]``.
    """
    _, iw, il = _dims_index(order)
    cos, sin = torch.cos(boxes[:, 6]).abs(), torch.sin(boxes[:, 6]).abs()
    half_x = 0.5 * (boxes[:, il] * cos + boxes[:, iw] * sin)  # (K,)
    half_y = 0.5 * (boxes[:, il] * sin + boxes[:, iw] * cos)  # (K,)
    return torch.stack([boxes[:, 0] - half_x, boxes[:, 1] - half_y,
                        boxes[:, 0] + half_x, boxes[:, 1] + half_y], dim=1)


class StandupIndex(NamedTuple):
    """Search structure over stand-up boxes (see :func:`sort_standup`); all search values float64."""

    boxes: torch.Tensor  # (N, 4) the indexed boxes, original dtype
    order: torch.Tensor  # (N,) long: box indices sorted by (x bucket, ymin)
    keys: torch.Tensor  # (N,) float64 sorted ``bucket * stride + (ymin - y0)``
    x0: float  # smallest xmin (bucket origin), metres
    y0: float  # smallest ymin, metres
    bucket: float  # bucket width along x, metres (the widest x extent)
    stride: float  # key distance between consecutive buckets (> ymin span + 2)
    y_span: float  # largest ymin - y0
    num_buckets: int
    widest_x: float  # largest x extent, metres
    widest_y: float  # largest y extent, metres


def sort_standup(boxes):
    """Index stand-up boxes for :func:`standup_iou_pairs` (build it once when the boxes are reused, e.g. anchors).

    Boxes are bucketed by ``xmin`` into strips as wide as the widest box and sorted by ``ymin`` inside a
    strip, so a query box only visits the boxes of the few strips and the ``ymin`` window it can reach.

    Args:
        boxes: (N, 4) ``[xmin, ymin, xmax, ymax]``, metres, N >= 1.

    Returns:
        :class:`StandupIndex`.
    """
    b = boxes.double()  # (N, 4)
    x0, y0 = float(b[:, 0].min()), float(b[:, 1].min())
    widest_x, widest_y = float((b[:, 2] - b[:, 0]).max()), float((b[:, 3] - b[:, 1]).max())
    bucket = widest_x if widest_x > 0 else 1.0
    y_span = float(b[:, 1].max()) - y0
    stride = y_span + 2.0 + STANDUP_SEARCH_MARGIN
    strip = torch.floor((b[:, 0] - x0) / bucket)  # (N,)
    keys = strip * stride + (b[:, 1] - y0)  # (N,)
    keys, order = torch.sort(keys)
    return StandupIndex(boxes, order, keys.contiguous(), x0, y0, bucket, stride, y_span, int(strip.max()) + 1,
                        widest_x, widest_y)


def standup_iou_pairs(boxes_a, boxes_b, plus_one=False, index_a=None):
    """Sparse axis-aligned IoU: every pair of boxes with a positive IoU.

    Same convention as :func:`opencood.ops.iou.standup_iou_plus1` (with ``plus_one`` widths are
    ``x2 - x1 + 1`` in metres, the reference's legacy rule), but only candidate pairs are evaluated: for
    each box of ``boxes_b`` the boxes of ``boxes_a`` whose ``xmin`` strip and ``ymin`` lie within reach are
    looked up in :func:`sort_standup`'s index (a slightly larger window than needed, never a smaller one),
    then the pairs are tested exactly. Cost grows with the number of nearby pairs, not ``N * M``.

    Args:
        boxes_a: (N, 4) ``[xmin, ymin, xmax, ymax]``, metres.
        boxes_b: (M, 4) same layout and frame.
        plus_one: use the legacy "+1" convention.
        index_a: optional ``sort_standup(boxes_a)`` (saves building it when ``boxes_a`` are reused).

    Returns:
        ``(index_a (K,), index_b (K,), iou (K,))`` for all pairs with IoU > 0, ordered by ``index_b``.
    """
    one = 1.0 if plus_one else 0.0
    device = boxes_a.device
    if boxes_a.shape[0] == 0 or boxes_b.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty, torch.zeros(0, dtype=boxes_a.dtype, device=device)
    idx = sort_standup(boxes_a) if index_a is None else index_a
    q = boxes_b.double()  # (M, 4)
    margin = STANDUP_SEARCH_MARGIN
    # Overlap needs xmin_a in (xmin_b - one - widest_x, xmax_b + one), likewise for y.
    first_strip = torch.floor((q[:, 0] - one - idx.widest_x - margin - idx.x0) / idx.bucket).clamp(min=0)  # (M,)
    last_strip = torch.floor((q[:, 2] + one + margin - idx.x0) / idx.bucket).clamp(max=idx.num_buckets - 1)
    span = int((last_strip - first_strip).max().clamp(min=-1)) + 1  # strips visited by the widest query
    strips = first_strip[:, None] + torch.arange(max(span, 0), device=device, dtype=q.dtype)  # (M, S)
    y_lo = (q[:, 1] - one - idx.widest_y - margin - idx.y0).clamp(min=-1.0, max=idx.y_span + 1.0)  # (M,)
    y_hi = (q[:, 3] + one + margin - idx.y0).clamp(min=-1.0, max=idx.y_span + 1.0)  # (M,)
    lo = torch.searchsorted(idx.keys, (strips * idx.stride + y_lo[:, None]).contiguous(), right=False)  # (M, S)
    hi = torch.searchsorted(idx.keys, (strips * idx.stride + y_hi[:, None]).contiguous(), right=True)  # (M, S)
    counts = torch.where(strips <= last_strip[:, None], (hi - lo).clamp(min=0), 0).reshape(-1)  # (M*S,)
    lo = lo.reshape(-1)
    index_b = torch.repeat_interleave(
        torch.arange(boxes_b.shape[0], device=device).repeat_interleave(max(span, 0)), counts)  # (K',)
    first = torch.repeat_interleave(lo - (torch.cumsum(counts, 0) - counts), counts)  # (K',)
    index_a = idx.order[first + torch.arange(index_b.shape[0], device=device)]  # (K',)
    a, b = boxes_a[index_a], boxes_b[index_b]  # (K', 4) each
    iw = torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0]) + one  # (K',)
    ih = torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1]) + one  # (K',)
    inter = iw.clamp(min=0) * ih.clamp(min=0)
    union = (a[:, 2] - a[:, 0] + one) * (a[:, 3] - a[:, 1] + one) \
        + (b[:, 2] - b[:, 0] + one) * (b[:, 3] - b[:, 1] + one) - inter
    iou = torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), torch.zeros_like(inter))
    keep = iou > 0
    return index_a[keep], index_b[keep], iou[keep]


def _get(params, path, default=None, required=True):
    """Nested ``postprocess`` value ``a.b`` or a one-line ConfigError naming the key."""
    node = params
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            if not required:
                return default
            raise ConfigError(f"{params.get('_source', 'config')}: missing key 'postprocess.{path}'")
        node = node[part]
    return node


@POSTPROCESSORS.register("VoxelPostprocessor")
class VoxelPostprocessor:
    """Anchors, training targets, box decoding and NMS for anchor-based BEV detection heads.

    Args:
        anchor_params: the YAML ``postprocess`` section: ``order``, ``gt_range``, ``nms_thresh``,
            ``anchor_args`` {``cav_lidar_range``, ``l``, ``w``, ``h`` (m), ``r`` (degrees), ``num``,
            ``feature_stride``, and the parser-derived ``W``, ``H`` (voxel cells), ``vw``, ``vh`` (m)},
            ``target_args`` {``pos_threshold``, ``neg_threshold``, ``score_threshold``,
            ``legacy_plus_one`` (default false)}, ``dir_args`` {``dir_offset`` (rad), ``num_bins``}
            (needed only when the model has a direction head).
        train: training mode.

    ``target_args.legacy_plus_one``: the reference computes the stand-up IoU of target assignment with the
    pixel "+1" convention applied in metres, which inflates IoU (more positives, fewer negatives). The
    default here is the exact IoU (a documented fix); set it to true to reproduce the reference labels.
    When one anchor clears ``pos_threshold`` for several GT boxes it regresses to the one of highest
    IoU (the reference took the lowest-index one).
    """

    def __init__(self, anchor_params, train):
        self.params = anchor_params
        self.train = train
        self.order = anchor_params.get("order", "hwl")
        _dims_index(self.order)
        anchor_args = _get(anchor_params, "anchor_args")
        for key in ("cav_lidar_range", "l", "w", "h", "r", "W", "H", "vw", "vh"):
            _get(anchor_params, f"anchor_args.{key}")
        self.anchor_num = int(anchor_args.get("num", len(anchor_args["r"])))
        if self.anchor_num != len(anchor_args["r"]):
            raise ConfigError(f"{anchor_params.get('_source', 'config')}: 'postprocess.anchor_args.num' "
                              f"({self.anchor_num}) must equal the number of yaws in 'anchor_args.r'")
        self.pos_threshold = float(_get(anchor_params, "target_args.pos_threshold"))
        self.neg_threshold = float(_get(anchor_params, "target_args.neg_threshold"))
        self.score_threshold = float(_get(anchor_params, "target_args.score_threshold"))
        self.legacy_plus_one = bool(_get(anchor_params, "target_args.legacy_plus_one", False, required=False))
        self.nms_thresh = float(_get(anchor_params, "nms_thresh"))
        self.gt_range = [float(v) for v in _get(anchor_params, "gt_range", anchor_args["cav_lidar_range"],
                                                required=False)]
        self._anchor_cache = None  # (anchors float64 numpy, as tensor, stand-up search index), see _anchor_index

    # ------------------------------------------------------------------ anchors and targets
    def generate_anchor_box(self):
        """Anchor boxes of the detection grid.

        Centres are ``linspace(xmin + vw, xmax - vw, W // stride)`` along x (likewise y) and z = -1 m, as
        the reference generates them (not exact cell centres; checkpoints were trained with these).

        Returns:
            (H', W', A, 7) float32 numpy, ``order`` layout, in the agent's LiDAR frame.
        """
        args = self.params["anchor_args"]
        stride = int(args.get("feature_stride", 2))
        rng = [float(v) for v in args["cav_lidar_range"]]
        vw, vh = float(args["vw"]), float(args["vh"])
        xs = np.linspace(rng[0] + vw, rng[3] - vw, int(args["W"]) // stride)  # (W',)
        ys = np.linspace(rng[1] + vh, rng[4] - vh, int(args["H"]) // stride)  # (H',)
        cx, cy = np.meshgrid(xs, ys)  # (H', W') each
        shape = cx.shape + (self.anchor_num,)
        anchors = np.zeros(shape + (7,), dtype=np.float64)  # (H', W', A, 7)
        anchors[..., 0] = cx[..., None]
        anchors[..., 1] = cy[..., None]
        anchors[..., 2] = -1.0
        ih, iw, il = _dims_index(self.order)
        anchors[..., ih] = float(args["h"])
        anchors[..., iw] = float(args["w"])
        anchors[..., il] = float(args["l"])
        anchors[..., 6] = np.deg2rad(np.asarray(args["r"], dtype=np.float64))
        return anchors.astype(np.float32)

    def generate_label_torch(self, gt_boxes, anchors, anchor_index=None):
        """Assign GT boxes to anchors by stand-up BEV IoU and compute regression targets (torch).

        Positive: IoU > ``pos_threshold`` with some GT, or the best anchor of a GT (if its IoU > 0).
        Negative: IoU < ``neg_threshold`` with every GT, and not a GT's best anchor. Only the anchor/GT
        pairs whose stand-up boxes can overlap are evaluated (see :func:`standup_iou_pairs`), which gives
        the same labels as the dense IoU matrix at a fraction of its cost.

        Args:
            gt_boxes: (M, 7) valid GT boxes, ``order`` layout, in the anchors' frame.
            anchors: (H', W', A, 7) anchors.
            anchor_index: optional ``sort_standup(standup_bev(anchors.reshape(-1, 7)))``, computed once
                by callers that label many samples against the same anchors.

        Returns:
            dict of tensors on the anchors' device, in the anchors' dtype: ``pos_equal_one``,
            ``neg_equal_one`` (H', W', A) and ``targets`` (H', W', 7A).
        """
        h, w, a, _ = anchors.shape
        flat = anchors.reshape(-1, 7)  # (N, 7)
        gt = gt_boxes.to(flat)  # (M, 7)
        n, m = flat.shape[0], gt.shape[0]
        device = flat.device
        if anchor_index is None:
            anchor_index = sort_standup(standup_bev(flat, self.order))
        anchor_idx, gt_idx, iou = standup_iou_pairs(anchor_index.boxes, standup_bev(gt, self.order),
                                                    self.legacy_plus_one, anchor_index)  # (K,) each, IoU > 0
        # Per anchor: highest IoU and the lowest-index GT reaching it.
        max_iou = torch.zeros(n, dtype=iou.dtype, device=device).scatter_reduce_(
            0, anchor_idx, iou, reduce="amax")  # (N,)
        at_max = iou == max_iou[anchor_idx]  # (K,)
        best_gt = torch.full((n,), m, dtype=torch.long, device=device).scatter_reduce_(
            0, anchor_idx[at_max], gt_idx[at_max], reduce="amin")  # (N,)
        # Per GT: the first anchor of highest IoU (GTs without any overlap get none).
        gt_max = torch.zeros(m, dtype=iou.dtype, device=device).scatter_reduce_(0, gt_idx, iou, reduce="amax")
        at_gt_max = iou == gt_max[gt_idx]  # (K,)
        best_anchor = torch.full((m,), n, dtype=torch.long, device=device).scatter_reduce_(
            0, gt_idx[at_gt_max], anchor_idx[at_gt_max], reduce="amin")  # (M,)
        has_best = best_anchor < n  # (M,)
        # GT forcing each anchor positive (lowest GT index if several), m where none.
        forced_gt = torch.full((n,), m, dtype=torch.long, device=device)
        forced_gt.scatter_reduce_(0, best_anchor[has_best], torch.arange(m, device=device)[has_best],
                                  reduce="amin")
        forced = forced_gt < m  # (N,)
        above = max_iou > self.pos_threshold  # (N,)
        pos = above | forced
        neg = (max_iou < self.neg_threshold) & ~forced
        assigned = torch.where(above, best_gt, forced_gt)[pos]  # (P,)
        targets = torch.zeros_like(flat)  # (N, 7)
        targets[pos] = encode_boxes(gt[assigned], flat[pos], self.order)
        return {
            "pos_equal_one": pos.to(flat.dtype).reshape(h, w, a),
            "neg_equal_one": neg.to(flat.dtype).reshape(h, w, a),
            "targets": targets.reshape(h, w, a * 7),
        }

    def generate_label(self, gt_box_center, anchors, mask):
        """Training labels of one sample (numpy wrapper of :meth:`generate_label_torch`).

        Args:
            gt_box_center: (max_num, 7) padded GT boxes, ``order`` layout, in the anchors' frame.
            anchors: (H', W', A, 7) anchors from :meth:`generate_anchor_box`.
            mask: (max_num,) 1 for valid rows of ``gt_box_center``.

        Returns:
            dict of float32 numpy: ``pos_equal_one``, ``neg_equal_one`` (H', W', A), ``targets`` (H', W', 7A).
        """
        valid = np.asarray(gt_box_center, dtype=np.float64)[np.asarray(mask) == 1]  # (M, 7)
        anchor_tensor, anchor_index = self._anchor_index(anchors)
        label = self.generate_label_torch(torch.from_numpy(valid), anchor_tensor, anchor_index)
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
        return {key: stack_arrays([lab[key] for lab in label_batch_list])
                for key in ("pos_equal_one", "neg_equal_one", "targets")}

    # ------------------------------------------------------------------ decoding
    @staticmethod
    def delta_to_boxes3d(deltas, anchors, order="hwl"):
        """Decode a regression map into boxes.

        Args:
            deltas: (B, 7A, H', W') head output or (B, H', W', 7A).
            anchors: (H', W', A, 7) anchors (tensor or numpy).
            order: box order of anchors and output.

        Returns:
            (B, H'W'A, 7) boxes in the anchors' frame, dtype/device of ``deltas``.
        """
        anchors = torch.as_tensor(anchors).to(device=deltas.device, dtype=deltas.dtype)
        h, w, a = anchors.shape[:3]
        if tuple(deltas.shape[1:]) == (h, w, 7 * a):
            channels_last = deltas  # (B, H', W', 7A)
        elif tuple(deltas.shape[1:]) == (7 * a, h, w):
            channels_last = deltas.permute(0, 2, 3, 1)  # (B, H', W', 7A)
        else:
            raise ValueError(f"delta_to_boxes3d: deltas of shape {tuple(deltas.shape)} do not fit anchors "
                             f"of shape {tuple(anchors.shape)}")
        flat = channels_last.reshape(deltas.shape[0], -1, 7)  # (B, H'W'A, 7)
        return decode_boxes(flat, anchors.reshape(1, -1, 7), order)

    def post_process(self, data_dict, output_dict):
        """Turn head outputs into final boxes in the ego frame.

        For every agent: sigmoid scores > ``score_threshold``, decode, fix yaw with the direction head,
        optional IoU-head rescoring, corners, projection by its ``transformation_matrix``. Then over all
        agents: drop boxes with BEV extent > 6 m or corners outside z in [-3, 1] m, rotated NMS
        (``nms_thresh``, top 1000) and keep boxes with all 8 corners inside ``gt_range``.

        Args:
            data_dict: ``{cav_id: {'anchor_box' (H', W', A, 7), 'transformation_matrix' (4, 4)
                T_ego<-cav, ...}}`` (batch size 1).
            output_dict: ``{cav_id: {'cls_preds' (1, A, H', W'), 'reg_preds' (1, 7A, H', W'),
                optional 'dir_preds' (1, num_bins*A, H', W'), optional 'iou_preds' (1, A, H', W')}}``.

        Returns:
            ``(pred_box3d (K, 8, 3), scores (K,))`` tensors on the model's device, ego frame; ``(None, None)``
            when no box survives.
        """
        corners_list, scores_list = [], []
        for cav_id, cav_content in data_dict.items():
            if cav_id not in output_dict:
                raise KeyError(f"post_process: no model output for agent '{cav_id}'")
            out = output_dict[cav_id]
            cls = out["cls_preds"].float()  # (1, A, H', W')
            if cls.shape[0] != 1:
                raise ValueError(f"post_process expects batch size 1, got {cls.shape[0]}")
            prob = torch.sigmoid(cls).permute(0, 2, 3, 1).reshape(-1)  # (H'W'A,)
            boxes = self.delta_to_boxes3d(out["reg_preds"].float(), cav_content["anchor_box"], self.order)[0]
            keep = prob > self.score_threshold
            boxes, scores = boxes[keep], prob[keep]  # (K, 7), (K,)
            if "dir_preds" in out:
                offset = float(_get(self.params, "dir_args.dir_offset"))
                num_bins = int(_get(self.params, "dir_args.num_bins"))
                dir_logits = out["dir_preds"].float().permute(0, 2, 3, 1).reshape(-1, num_bins)[keep]  # (K, bins)
                boxes[:, 6] = decode_direction(boxes[:, 6], dir_logits.argmax(dim=1), offset, num_bins)
            if "iou_preds" in out:
                iou = out["iou_preds"].float().permute(0, 2, 3, 1).reshape(-1)[keep]  # (K,)
                scores = scores * ((iou + 1) * 0.5) ** 4
            if boxes.shape[0] == 0:
                continue
            corners = box_utils.boxes_to_corners_3d(boxes, self.order)  # (K, 8, 3)
            tfm = torch.as_tensor(cav_content["transformation_matrix"]).to(corners).reshape(4, 4)
            corners_list.append(box_utils.project_box3d(corners, tfm))
            scores_list.append(scores)
        if not corners_list:
            return None, None
        corners = torch.cat(corners_list)  # (K, 8, 3)
        scores = torch.cat(scores_list)  # (K,)
        keep = box_utils.remove_large_pred_bbx(corners) & box_utils.remove_bbx_abnormal_z(corners)
        corners, scores = corners[keep], scores[keep]
        if corners.shape[0] == 0:
            return None, None
        keep = nms_rotated(corners, scores, self.nms_thresh, top_k=NMS_TOP_K)
        corners, scores = corners[keep], scores[keep]
        keep = box_utils.get_mask_for_boxes_within_range_torch(corners, self.gt_range)
        corners, scores = corners[keep], scores[keep]
        if corners.shape[0] == 0:
            return None, None
        return corners, scores

    def generate_gt_bbx(self, data_dict):
        """Corners of the fused ground truth for evaluation, in the ego frame.

        Each agent's valid ``object_bbx_center`` rows are turned into corners and projected with its
        ``transformation_matrix_clean`` (else ``transformation_matrix``); objects seen by several agents
        are kept once (first occurrence by id), then only boxes with all 8 corners inside ``gt_range``.

        Args:
            data_dict: ``{cav_id: {'object_bbx_center' (1, max_num, 7) or (max_num, 7), 'object_bbx_mask',
                'object_ids' (list, one per valid row), 'transformation_matrix(_clean)' (4, 4)}}``.

        Returns:
            (G, 8, 3) float32 corners.
        """
        corners_list, ids = [], []
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
            ids.extend(object_ids)
        if not corners_list:
            return torch.zeros(0, 8, 3)
        corners = torch.cat(corners_list)  # (sum M, 8, 3)
        first = {}
        for i, obj_id in enumerate(ids):
            first.setdefault(obj_id, i)
        corners = corners[torch.as_tensor(sorted(first.values()), dtype=torch.long, device=device)]  # (G', 8, 3)
        return corners[box_utils.get_mask_for_boxes_within_range_torch(corners, self.gt_range)]
