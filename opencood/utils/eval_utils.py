"""Average-precision evaluation of BEV box detections (vehicle class), HEAL/OpenCOOD compatible.

Matching rule (per frame, for each IoU threshold independently): predictions are taken in descending
score order; each one is compared by rotated BEV IoU (bottom-face polygons, corners 0-3, x-y only) with
the GT boxes of its frame that are *still unmatched*; if the best IoU is >= the threshold the prediction
is a true positive and that GT is removed, otherwise it is a false positive. A duplicate detection can
therefore still match a second, neighbouring GT (unlike VOC). Ties in IoU go to the lowest GT index;
ties in score keep the input order (stable sort).

AP is VOC2010 all-point AP over the detection sequence, in two variants:
  * global sort: all detections of the data set re-sorted by score (standard AP), written to
    ``eval_global_sort_<info>.yaml``;
  * no global sort: frame order, each frame sorted internally (the OPV2V-paper convention), written to
    ``eval_<info>.yaml``.
The reference computed the second variant by mutating the accumulated lists in place; here nothing is
mutated, so the variants can be computed in any order and repeatedly.

Accumulator layout (exactly the reference's)::

    result_stat = {0.3: {'tp': [], 'fp': [], 'gt': 0, 'score': []}, 0.5: {...}, 0.7: {...}}

Box inputs are corners ``(K, 8, 3)`` in metres, any common frame (usually the ego LiDAR frame), as numpy
arrays or torch tensors; only ``[:, :4, :2]`` is used.

Several classes (V2X-Real: vehicle, pedestrian, truck): one accumulator per class,
``{class_name: {0.3: {...}, 0.5: {...}, 0.7: {...}}}`` (:func:`init_result_stat` with ``classes``); a
prediction is matched only to GT boxes of its own class (:func:`calculate_tp_fp_classes`), AP is computed per
class and mAP is the plain mean of the class APs (a class without GT counts with AP 0).
"""
import os
import time

import numba
import numpy as np
import torch

from opencood.hypes_yaml.yaml_utils import save_yaml
from opencood.ops.iou import corners_iou_bev_pairs_np

IOU_THRESHOLDS = (0.3, 0.5, 0.7)
AP_KEYS = ("ap30", "ap_50", "ap_70")  # summary keys of the three thresholds
# Extra slack (metres) on the bounding-circle test so that touching boxes are still IoU candidates.
_CIRCLE_EPS = 1e-6


def init_result_stat(iou_thresholds=IOU_THRESHOLDS, classes=None):
    """Empty accumulator ``{thr: {'tp': [], 'fp': [], 'gt': 0, 'score': []}}`` for the given thresholds.

    Args:
        iou_thresholds: IoU thresholds (keys).
        classes: class names of a multi-class evaluation: one accumulator per class,
            ``{name: {thr: {...}}}``; None (or a single class) gives the plain layout.
    """
    if classes is not None and len(classes) > 1:
        return {str(name): init_result_stat(iou_thresholds) for name in classes}
    return {thr: {"tp": [], "fp": [], "gt": 0, "score": []} for thr in iou_thresholds}


def is_per_class(result_stat):
    """True for a per-class accumulator ``{class_name: {thr: ...}}`` (keys are strings, not thresholds)."""
    return bool(result_stat) and all(isinstance(k, str) for k in result_stat)


def _to_numpy(x):
    """Numpy float64 view of a torch tensor / array / None (None stays None)."""
    if x is None:
        return None
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _bev_quads(corners, name):
    """Bottom-face BEV quads (K, 4, 2) of corners (K, 8, 3) or (K, 4, >=2); None -> (0, 4, 2)."""
    if corners is None or corners.size == 0:
        return np.zeros((0, 4, 2), dtype=np.float64)
    if corners.ndim != 3 or corners.shape[1] < 4 or corners.shape[2] < 2:
        raise ValueError(f"eval_utils: {name} must have shape (K, 8, 3) or (K, 4, 2), got {corners.shape}")
    return np.ascontiguousarray(corners[:, :4, :2])


def _frame_arrays(det_boxes, det_score, gt_boxes):
    """Normalise one frame to (pred quads (K,4,2), scores (K,), gt quads (G,4,2)) float64 arrays."""
    det = _bev_quads(_to_numpy(det_boxes), "det_boxes")
    gt = _bev_quads(_to_numpy(gt_boxes), "gt_boxes")
    if det_boxes is None:
        score = np.zeros(0, dtype=np.float64)
    else:
        if det_score is None:
            raise ValueError("eval_utils: det_score is None while det_boxes is given")
        score = _to_numpy(det_score).reshape(-1)
        if score.shape[0] != det.shape[0]:
            raise ValueError(f"eval_utils: det_score has {score.shape[0]} entries for {det.shape[0]} det_boxes")
    return det, score, gt


@numba.njit(cache=True)
def _greedy_match_kernel(cand_start, cand_gt, cand_iou, n_gt, thresholds):
    """Greedy score-ordered matching for several IoU thresholds in one pass.

    Args:
        cand_start: (NP + 1,) int64 CSR offsets; candidates of prediction p are ``cand_start[p]:cand_start[p+1]``.
            Predictions are ordered by frame, then by descending score inside a frame.
        cand_gt: (C,) int64 global GT index of each candidate, ascending within a prediction.
        cand_iou: (C,) float64 BEV IoU of each candidate pair (pairs not listed have IoU 0).
        n_gt: total number of GT boxes (over all frames).
        thresholds: (T,) float64 IoU thresholds, all > 0.

    Returns:
        (T, NP) bool: whether each prediction is a true positive at each threshold.
    """
    n_pred = cand_start.shape[0] - 1
    n_thr = thresholds.shape[0]
    matched = np.zeros((n_thr, n_gt), dtype=np.bool_)
    tp = np.zeros((n_thr, n_pred), dtype=np.bool_)
    for p in range(n_pred):
        for t in range(n_thr):
            best = -1
            best_iou = -1.0
            for c in range(cand_start[p], cand_start[p + 1]):
                g = cand_gt[c]
                if not matched[t, g] and cand_iou[c] > best_iou:
                    best_iou = cand_iou[c]
                    best = g
            if best >= 0 and best_iou >= thresholds[t]:
                matched[t, best] = True
                tp[t, p] = True
    return tp


def _candidate_pairs(pred_quads, pred_frame_start, gt_quads, gt_frame_start):
    """All (prediction, GT) pairs of the same frame whose BEV bounding circles overlap.

    Args:
        pred_quads: (NP, 4, 2) predictions, grouped by frame.
        pred_frame_start: (F + 1,) offsets of each frame's predictions.
        gt_quads: (NG, 4, 2) GT, grouped by frame.
        gt_frame_start: (F + 1,) offsets of each frame's GT.

    Returns:
        pred_idx, gt_idx: (C,) int64 global indices, sorted by prediction then GT.
    """
    n_pred_f = np.diff(pred_frame_start)  # (F,)
    n_gt_f = np.diff(gt_frame_start)  # (F,)
    pair_counts = n_pred_f * n_gt_f  # (F,)
    n_pairs = int(pair_counts.sum())
    if n_pairs == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    frames_with_pairs = np.nonzero(pair_counts)[0]
    counts = pair_counts[frames_with_pairs]
    pair_frame = np.repeat(frames_with_pairs, counts)  # (P,)
    pair_offset = np.cumsum(counts) - counts  # (F',)
    local = np.arange(n_pairs, dtype=np.int64) - np.repeat(pair_offset, counts)  # (P,)
    g_count = n_gt_f[pair_frame]
    pred_idx = pred_frame_start[pair_frame] + local // g_count  # (P,)
    gt_idx = gt_frame_start[pair_frame] + local % g_count  # (P,)

    pred_centre = pred_quads.mean(axis=1)  # (NP, 2)
    pred_radius = np.sqrt(((pred_quads - pred_centre[:, None]) ** 2).sum(-1)).max(1)  # (NP,)
    gt_centre = gt_quads.mean(axis=1)  # (NG, 2)
    gt_radius = np.sqrt(((gt_quads - gt_centre[:, None]) ** 2).sum(-1)).max(1)  # (NG,)
    delta = pred_centre[pred_idx] - gt_centre[gt_idx]  # (P, 2)
    reach = pred_radius[pred_idx] + gt_radius[gt_idx] + _CIRCLE_EPS  # (P,)
    keep = (delta ** 2).sum(-1) <= reach ** 2  # (P,)
    return pred_idx[keep], gt_idx[keep]


def _match_frames(frames, thresholds):
    """Match every frame at every threshold.

    Args:
        frames: list of (pred quads (K,4,2), scores (K,), gt quads (G,4,2)) float64 arrays.
        thresholds: tuple of IoU thresholds (> 0).

    Returns:
        tp: (T, NP) bool, predictions ordered by frame then descending score;
        scores: (NP,) scores in that order; n_gt: total GT count.
    """
    if any(not 0.0 < thr <= 1.0 for thr in thresholds):
        raise ValueError(f"eval_utils: IoU thresholds must lie in (0, 1], got {thresholds}")
    n_frames = len(frames)
    pred_counts = np.array([f[0].shape[0] for f in frames], dtype=np.int64)  # (F,)
    gt_counts = np.array([f[2].shape[0] for f in frames], dtype=np.int64)  # (F,)
    pred_frame_start = np.concatenate([[0], np.cumsum(pred_counts)]).astype(np.int64)  # (F+1,)
    gt_frame_start = np.concatenate([[0], np.cumsum(gt_counts)]).astype(np.int64)  # (F+1,)
    n_pred, n_gt = int(pred_frame_start[-1]), int(gt_frame_start[-1])

    if n_frames:
        pred_quads = np.concatenate([f[0] for f in frames])  # (NP, 4, 2)
        scores = np.concatenate([f[1] for f in frames])  # (NP,)
        gt_quads = np.concatenate([f[2] for f in frames])  # (NG, 4, 2)
    else:
        pred_quads = np.zeros((0, 4, 2))
        scores = np.zeros(0)
        gt_quads = np.zeros((0, 4, 2))
    # Frame order, descending score inside a frame (lexsort is stable: equal scores keep input order).
    pred_frame = np.repeat(np.arange(n_frames), pred_counts)  # (NP,)
    order = np.lexsort((-scores, pred_frame))
    pred_quads, scores = pred_quads[order], scores[order]

    pred_idx, gt_idx = _candidate_pairs(pred_quads, pred_frame_start, gt_quads, gt_frame_start)
    if pred_idx.size:
        ious = corners_iou_bev_pairs_np(pred_quads[pred_idx], gt_quads[gt_idx])  # (C,)
    else:
        ious = np.zeros(0, dtype=np.float64)
    cand_start = np.zeros(n_pred + 1, dtype=np.int64)
    np.cumsum(np.bincount(pred_idx, minlength=n_pred), out=cand_start[1:])
    tp = _greedy_match_kernel(cand_start, gt_idx.astype(np.int64), ious.astype(np.float64), n_gt,
                              np.asarray(thresholds, dtype=np.float64))
    return tp, scores, n_gt


def _accumulate(result_stat, thresholds, tp, scores, n_gt):
    """Append matching results to the reference-layout accumulator (plain Python ints/floats)."""
    missing = [thr for thr in thresholds if thr not in result_stat]
    if missing:
        raise ValueError(f"eval_utils: result_stat has no entry for IoU threshold {missing[0]} "
                         f"(has {sorted(result_stat)})")
    score_list = scores.tolist()
    for t, thr in enumerate(thresholds):
        stat = result_stat[thr]
        tp_int = tp[t].astype(np.int64)
        stat["tp"].extend(tp_int.tolist())
        stat["fp"].extend((1 - tp_int).tolist())
        stat["score"].extend(score_list)
        stat["gt"] += n_gt


def evaluate_frames(frames, iou_thresholds=IOU_THRESHOLDS, result_stat=None):
    """Vectorized TP/FP matching of many frames at several IoU thresholds.

    IoUs are computed only for prediction/GT pairs of the same frame whose BEV bounding circles overlap
    (one batched call over all frames); the greedy matching then runs for all thresholds in one
    numba pass. Results are identical to calling :func:`calculate_tp_fp` frame by frame.

    Args:
        frames: list of (det_boxes (K,8,3), det_score (K,), gt_boxes (G,8,3)), numpy or torch, metres;
            det_boxes/det_score None means no prediction, gt_boxes None means no GT.
        iou_thresholds: IoU thresholds in (0, 1].
        result_stat: accumulator to extend; a new one (see :func:`init_result_stat`) if None.

    Returns:
        result_stat with the frames appended (frame order, each frame sorted by descending score).
    """
    thresholds = tuple(iou_thresholds)
    if result_stat is None:
        result_stat = init_result_stat(thresholds)
    arrays = [_frame_arrays(*frame) for frame in frames]
    tp, scores, n_gt = _match_frames(arrays, thresholds)
    _accumulate(result_stat, thresholds, tp, scores, n_gt)
    return result_stat


def calculate_tp_fp(det_boxes, det_score, gt_boxes, result_stat, iou_thresh):
    """Match one frame's detections to its GT at one IoU threshold and append to ``result_stat``.

    Args:
        det_boxes: (K, 8, 3) predicted corners (numpy or torch, metres) or None.
        det_score: (K,) confidence scores or None.
        gt_boxes: (G, 8, 3) GT corners in the same frame, or None.
        result_stat: accumulator ``{thr: {'tp', 'fp', 'gt', 'score'}}``, updated in place.
        iou_thresh: BEV IoU threshold (key of ``result_stat``).
    """
    tp, scores, n_gt = _match_frames([_frame_arrays(det_boxes, det_score, gt_boxes)], (iou_thresh,))
    _accumulate(result_stat, (iou_thresh,), tp, scores, n_gt)


caluclate_tp_fp = calculate_tp_fp  # the reference's spelling, kept for users' scripts


def _class_rows(labels, n_rows, k, name):
    """Bool mask (n_rows,) of the rows whose class index is ``k`` (``labels`` (n_rows,) or None)."""
    if n_rows == 0:
        return np.zeros(0, dtype=bool)
    if labels is None:
        raise ValueError(f"eval_utils: {name} is None for {n_rows} boxes of a multi-class evaluation")
    labels = _to_numpy(labels).reshape(-1)
    if labels.shape[0] != n_rows:
        raise ValueError(f"eval_utils: {name} has {labels.shape[0]} entries for {n_rows} boxes")
    return labels == k


def calculate_tp_fp_classes(det_boxes, det_score, det_labels, gt_boxes, gt_labels, result_stat,
                            iou_thresholds=IOU_THRESHOLDS):
    """Match one frame class by class (a prediction only matches GT of its class) and append the results.

    Args:
        det_boxes: (K, 8, 3) predicted corners or None.
        det_score: (K,) scores or None.
        det_labels: (K,) class index of each prediction (position in ``result_stat``'s class order) or None.
        gt_boxes: (G, 8, 3) GT corners or None.
        gt_labels: (G,) class index of each GT box or None.
        result_stat: per-class accumulator from ``init_result_stat(..., classes=names)``, updated in place.
        iou_thresholds: IoU thresholds to match at (keys of every class's accumulator).
    """
    if not is_per_class(result_stat):
        raise ValueError("eval_utils: calculate_tp_fp_classes needs a per-class result_stat "
                         "(init_result_stat(classes=[...]))")
    det, score, gt = _frame_arrays(det_boxes, det_score, gt_boxes)
    thresholds = tuple(iou_thresholds)
    for k, name in enumerate(result_stat):
        det_rows = _class_rows(det_labels, det.shape[0], k, "det_labels")
        gt_rows = _class_rows(gt_labels, gt.shape[0], k, "gt_labels")
        tp, scores, n_gt = _match_frames([(det[det_rows], score[det_rows], gt[gt_rows])], thresholds)
        _accumulate(result_stat[name], thresholds, tp, scores, n_gt)


def voc_ap(rec, prec):
    """VOC2010 all-point average precision.

    Args:
        rec: recall after each detection (sequence of floats).
        prec: precision after each detection.

    Returns:
        (ap, mrec, mpre): AP as float; mrec = [0, *rec, 1]; mpre = [0, *prec, 0] made non-increasing
        from the right (plain lists of floats, as the reference returns).
    """
    mrec = np.concatenate([[0.0], np.asarray(rec, dtype=np.float64), [1.0]])
    mpre = np.concatenate([[0.0], np.asarray(prec, dtype=np.float64), [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    changes = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
    ap = float(np.sum((mrec[changes] - mrec[changes - 1]) * mpre[changes]))
    return ap, mrec.tolist(), mpre.tolist()


def calculate_ap(result_stat, iou, global_sort_detections):
    """AP at one IoU threshold from an accumulator (does not modify it).

    Args:
        result_stat: accumulator filled by :func:`calculate_tp_fp` / :func:`evaluate_frames`.
        iou: IoU threshold key.
        global_sort_detections: True re-sorts all detections by score (standard AP); False keeps the
            accumulated frame order (OPV2V-paper convention).

    Returns:
        (ap, mrec, mprec) as in :func:`voc_ap`. With no GT at all the recall is defined as 0 (AP 0).
    """
    stat = result_stat[iou]
    tp = np.asarray(stat["tp"], dtype=np.float64)
    fp = np.asarray(stat["fp"], dtype=np.float64)
    if tp.shape != fp.shape:
        raise ValueError(f"eval_utils: result_stat[{iou}] has {tp.size} tp but {fp.size} fp entries")
    if global_sort_detections:
        score = np.asarray(stat["score"], dtype=np.float64)
        if score.shape != tp.shape:
            raise ValueError(f"eval_utils: result_stat[{iou}] has {score.size} scores for {tp.size} detections")
        order = np.argsort(-score, kind="stable")
        tp, fp = tp[order], fp[order]
    cum_tp = np.cumsum(tp)
    cum_fp = np.cumsum(fp)
    gt_total = stat["gt"]
    rec = cum_tp / gt_total if gt_total > 0 else np.zeros_like(cum_tp)
    prec = cum_tp / np.maximum(cum_tp + cum_fp, 1.0)
    return voc_ap(rec, prec)


def _variant(result_stat, global_sort_detections):
    """AP summary dict (ap30, ap_50, ap_70, mpre/mrec at 0.5 and 0.7) of one variant.

    A per-class accumulator gives ``ap30``, ``ap_50``, ``ap_70`` = mAP (mean of the class APs) and
    ``classes`` = ``{name: summary of that class}``.
    """
    if is_per_class(result_stat):
        classes = {name: _variant(stat, global_sort_detections) for name, stat in result_stat.items()}
        summary = {key: float(np.mean([c[key] for c in classes.values()])) for key in AP_KEYS}
        summary["classes"] = classes
        return summary
    ap30, _, _ = calculate_ap(result_stat, 0.3, global_sort_detections)
    ap50, mrec50, mpre50 = calculate_ap(result_stat, 0.5, global_sort_detections)
    ap70, mrec70, mpre70 = calculate_ap(result_stat, 0.7, global_sort_detections)
    return {"ap30": ap30, "ap_50": ap50, "ap_70": ap70,
            "mpre_50": mpre50, "mrec_50": mrec50, "mpre_70": mpre70, "mrec_70": mrec70}


def _aps_only(summary):
    """``{ap30, ap_50, ap_70}`` of a :func:`_variant` summary (+ ``classes`` with the same keys)."""
    out = {key: summary[key] for key in AP_KEYS}
    if "classes" in summary:
        out["classes"] = {name: _aps_only(c) for name, c in summary["classes"].items()}
    return out


def eval_final_results_dict(result_stat):
    """APs of both variants, for tables.

    Args:
        result_stat: accumulator with entries for IoU 0.3, 0.5 and 0.7 (plain or per class).

    Returns:
        ``{'global_sort': {'ap30', 'ap_50', 'ap_70'}, 'no_global_sort': {...}}`` (floats); per class, the
        values are mAPs and each variant also has ``classes`` = ``{name: {'ap30', 'ap_50', 'ap_70'}}``.
    """
    return {name: _aps_only(_variant(result_stat, flag))
            for name, flag in (("global_sort", True), ("no_global_sort", False))}


def eval_final_results(result_stat, save_path, infer_info=None, global_sort_detections=None):
    """Compute both AP variants, write them as YAML and print them.

    Writes (atomically) ``save_path/eval_global_sort_<info>.yaml`` and ``save_path/eval_<info>.yaml``
    (``eval_global_sort.yaml`` / ``eval.yaml`` when ``infer_info`` is None) with keys ap30, ap_50, ap_70,
    mpre_50, mrec_50, mpre_70, mrec_70. A per-class accumulator writes the mAPs as ap30, ap_50, ap_70 and the
    per-class summaries (same keys) under ``classes``, and prints each class and the mAP.

    Both call forms of the lineage work: HEAL's ``eval_final_results(stat, path, infer_info)`` (a string or
    None; returns the global-sort APs) and OpenCOOD's ``eval_final_results(stat, path, global_sort_detections)``
    (a bool in third place; returns that variant).

    Args:
        result_stat: accumulator with entries for IoU 0.3, 0.5 and 0.7 (plain or per class).
        save_path: output folder (created if missing).
        infer_info: suffix naming the run, e.g. ``intermediate_102.4_51.2_epoch17``, or a bool (OpenCOOD's
            positional ``global_sort_detections``).
        global_sort_detections: which variant to return (default: global sort).

    Returns:
        (ap30, ap50, ap70) of the requested variant (mAPs for a per-class accumulator).
    """
    if isinstance(infer_info, (bool, np.bool_)):
        global_sort_detections, infer_info = bool(infer_info), None
    if global_sort_detections is None:
        global_sort_detections = True
    os.makedirs(save_path, exist_ok=True)
    suffix = "" if infer_info is None else f"_{infer_info}"
    results = {}
    for name, flag, label in (("eval_global_sort", True, "global sort"),
                              ("eval", False, "no global sort")):
        summary = _variant(result_stat, flag)
        save_yaml(summary, os.path.join(save_path, f"{name}{suffix}.yaml"))
        _print_summary(summary, label)
        results[flag] = summary
    chosen = results[bool(global_sort_detections)]
    return chosen["ap30"], chosen["ap_50"], chosen["ap_70"]


def _print_summary(summary, label):
    """Print the APs of one variant (per class first, then the mAP, for a per-class summary)."""
    for name, c in summary.get("classes", {}).items():
        print(f"{name}: " + ", ".join(f"AP@{thr} {c[key]:.4f}" for thr, key in zip(IOU_THRESHOLDS, AP_KEYS))
              + f" ({label})")
    what = "mean Average Precision (mAP)" if "classes" in summary else "Average Precision"
    for thr, key in zip(IOU_THRESHOLDS, AP_KEYS):
        print(f"The {what} at IOU {thr} is {summary[key]:.4f} ({label})")


def _random_corners(centres, lengths, widths, yaws):
    """Box corners (N, 8, 3) for BEV centres (N, 2), lengths/widths/yaws (N,) (height 1.5 m, z 0)."""
    from opencood.utils.box_utils import boxes_to_corners_3d

    n = centres.shape[0]
    boxes = np.stack([centres[:, 0], centres[:, 1], np.full(n, -1.0), np.full(n, 1.5),
                      widths, lengths, yaws], axis=1)  # (N, 7) hwl
    return boxes_to_corners_3d(boxes, "hwl")


def random_frames(n_frames, seed=0, max_pred=50, max_gt=30, area=(200.0, 100.0)):
    """Realistic random evaluation frames (for benchmarks and tests).

    Each frame has up to ``max_gt`` GT boxes (~4 x 2 m, any yaw) uniform in an ``area`` (metres) around the
    origin; about 85 % of them are detected with centre noise ~N(0, 0.3 m), size noise ~5 % and yaw noise
    ~N(0, 0.1 rad), a few twice; false positives fill up to ``max_pred`` predictions in total.

    Args:
        n_frames: number of frames.
        seed: numpy random seed.
        max_pred: maximum predictions per frame.
        max_gt: maximum GT boxes per frame.
        area: (x extent, y extent) of the scene, metres.

    Returns:
        list of (det_boxes (K,8,3), det_score (K,), gt_boxes (G,8,3)) float64 numpy arrays.
    """
    rng = np.random.default_rng(seed)
    half = np.asarray(area, dtype=np.float64) / 2.0
    frames = []
    for _ in range(n_frames):
        n_gt = int(rng.integers(0, max_gt + 1))
        gt_centre = rng.uniform(-half, half, size=(n_gt, 2))
        gt_l = rng.normal(4.2, 0.4, n_gt)
        gt_w = rng.normal(1.9, 0.15, n_gt)
        gt_yaw = rng.uniform(-np.pi, np.pi, n_gt)
        detected = np.nonzero(rng.random(n_gt) < 0.85)[0]
        dup = detected[rng.random(detected.size) < 0.1]
        src = np.concatenate([detected, dup])[:max_pred]
        n_tp = src.size
        n_fp = int(rng.integers(0, max_pred - n_tp + 1))
        centre = np.concatenate([gt_centre[src] + rng.normal(0, 0.3, (n_tp, 2)),
                                 rng.uniform(-half, half, size=(n_fp, 2))])
        length = np.concatenate([gt_l[src] * rng.normal(1, 0.05, n_tp), rng.normal(4.2, 0.4, n_fp)])
        width = np.concatenate([gt_w[src] * rng.normal(1, 0.05, n_tp), rng.normal(1.9, 0.15, n_fp)])
        yaw = np.concatenate([gt_yaw[src] + rng.normal(0, 0.1, n_tp), rng.uniform(-np.pi, np.pi, n_fp)])
        score = np.concatenate([rng.beta(5, 2, n_tp), rng.beta(2, 5, n_fp)])
        frames.append((_random_corners(centre, length, width, yaw), score,
                       _random_corners(gt_centre, gt_l, gt_w, gt_yaw)))
    return frames


def benchmark_eval(n_frames=2000, seed=0):
    """Time matching (IoU 0.3/0.5/0.7) plus both AP variants on random frames, on one CPU thread.

    Args:
        n_frames: number of frames (see :func:`random_frames`: up to 50 predictions and 30 GT each).
        seed: random seed.

    Returns:
        dict with ``seconds`` (matching + APs, numba compile excluded), ``match_seconds``, ``ap_seconds``,
        ``n_frames``, ``n_predictions``, ``n_gt`` and the APs of both variants (``ap``).
    """
    frames = random_frames(n_frames, seed=seed)
    evaluate_frames(frames[:2])  # compile / load the numba kernel outside the timed region
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the batched IoU runs in torch: measure one core
    try:
        start = time.perf_counter()
        result_stat = evaluate_frames(frames)
        matched = time.perf_counter()
        variants = {name: _variant(result_stat, flag)
                    for name, flag in (("global_sort", True), ("no_global_sort", False))}
        end = time.perf_counter()
    finally:
        torch.set_num_threads(torch_threads)
    return {"seconds": end - start, "match_seconds": matched - start, "ap_seconds": end - matched,
            "n_frames": n_frames, "n_predictions": len(result_stat[0.5]["tp"]),
            "n_gt": result_stat[0.5]["gt"],
            "ap": {name: {key: v[key] for key in ("ap30", "ap_50", "ap_70")} for name, v in variants.items()}}
