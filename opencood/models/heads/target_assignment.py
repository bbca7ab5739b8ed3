"""Target assignment of the anchor head: sparse stand-up BEV IoU between anchors and GT boxes.

Boxes are in metres in the anchors' LiDAR frame. Plain torch: runs in DataLoader workers on tensors made
from numpy and on device tensors alike.
"""
from typing import NamedTuple

import torch

from opencood.models.heads.box_coding import dims_index, encode_boxes

# Extra reach (metres) of the stand-up pair search window, so rounding never drops a candidate pair.
STANDUP_SEARCH_MARGIN = 1e-6


def standup_bev(boxes, order="hwl"):
    """Axis-aligned BEV hulls of 7-vector boxes (identical to the min/max of their 4 bottom corners).

    Args:
        boxes: (K, 7) tensor, ``order`` layout.
        order: ``'hwl'`` or ``'lwh'``.

    Returns:
        (K, 4) ``[xmin, ymin, xmax, ymax]``.
    """
    _, iw, il = dims_index(order)
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


def _first_at_max(index, other, iou, size, sentinel):
    """Per ``index`` value in [0, size): the highest IoU and the lowest ``other`` index reaching it.

    Returns:
        ``(max_iou (size,), best (size,) long)``, ``best = sentinel`` where ``index`` has no pair.
    """
    max_iou = torch.zeros(size, dtype=iou.dtype, device=iou.device).scatter_reduce_(0, index, iou, reduce="amax")
    at_max = iou == max_iou[index]  # (K,)
    best = torch.full((size,), sentinel, dtype=torch.long, device=iou.device).scatter_reduce_(
        0, index[at_max], other[at_max], reduce="amin")
    return max_iou, best


def assign_targets(anchors, gt_boxes, pos_threshold, neg_threshold, order="hwl", plus_one=False,
                   anchor_index=None, anchor_class=None, gt_class=None):
    """Assign GT boxes to anchors by stand-up BEV IoU and encode the regression targets.

    Positive: IoU > ``pos_threshold`` with some GT, or the best anchor of a GT (if its IoU > 0).
    Negative: IoU < ``neg_threshold`` with every GT, and not a GT's best anchor. A positive anchor regresses
    to the GT of highest IoU (lowest GT index on ties); a GT's best anchor is its lowest-index anchor of
    highest IoU. With classes, an anchor only sees the GTs of its own class (each class is assigned on
    its own, with its own thresholds).

    Args:
        anchors: (N, 7) anchors, ``order`` layout.
        gt_boxes: (M, 7) valid GT boxes, same frame and order (cast to the anchors' dtype/device).
        pos_threshold, neg_threshold: floats, or (N,) tensors (per-anchor class thresholds).
        order: box order.
        plus_one: the reference's legacy "+1" stand-up IoU.
        anchor_index: optional ``sort_standup(standup_bev(anchors))``.
        anchor_class: optional (N,) long class of every anchor; ``gt_class`` (M,) long of every GT.

    Returns:
        ``(pos (N,) bool, neg (N,) bool, targets (N, 7))`` on the anchors' device and dtype.
    """
    gt = gt_boxes.to(anchors)  # (M, 7)
    n, m = anchors.shape[0], gt.shape[0]
    device = anchors.device
    if anchor_index is None:
        anchor_index = sort_standup(standup_bev(anchors, order))
    anchor_idx, gt_idx, iou = standup_iou_pairs(anchor_index.boxes, standup_bev(gt, order), plus_one,
                                                anchor_index)  # (K,) each, IoU > 0
    if anchor_class is not None and gt_class is not None:
        same = anchor_class.to(device)[anchor_idx] == gt_class.to(device)[gt_idx]  # (K,)
        anchor_idx, gt_idx, iou = anchor_idx[same], gt_idx[same], iou[same]
    max_iou, best_gt = _first_at_max(anchor_idx, gt_idx, iou, n, m)  # (N,) each
    _, best_anchor = _first_at_max(gt_idx, anchor_idx, iou, m, n)  # (M,): GTs without overlap get none
    has_best = best_anchor < n  # (M,)
    # GT forcing each anchor positive (lowest GT index if several), m where none.
    forced_gt = torch.full((n,), m, dtype=torch.long, device=device)
    forced_gt.scatter_reduce_(0, best_anchor[has_best], torch.arange(m, device=device)[has_best], reduce="amin")
    forced = forced_gt < m  # (N,)
    above = max_iou > _as_threshold(pos_threshold, max_iou)  # (N,)
    pos = above | forced
    neg = (max_iou < _as_threshold(neg_threshold, max_iou)) & ~forced
    assigned = torch.where(above, best_gt, forced_gt)[pos]  # (P,)
    targets = torch.zeros_like(anchors)  # (N, 7)
    targets[pos] = encode_boxes(gt[assigned], anchors[pos], order)
    return pos, neg, targets


def _as_threshold(value, like):
    """A float threshold as is; a per-anchor tensor in the IoU's dtype and device."""
    return value.to(like) if torch.is_tensor(value) else value
