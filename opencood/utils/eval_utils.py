"""Average-precision evaluation of BEV box detections (vehicle class), HEAL/OpenCOOD compatible.

Matching rule (per frame, for each IoU threshold independently, see :mod:`opencood.utils.eval_matching`):
predictions are taken in descending score order; each one is compared by rotated BEV IoU (bottom-face polygons,
corners 0-3, x-y only) with the GT boxes of its frame that are *still unmatched*; if the best IoU is >= the
threshold the prediction is a true positive and that GT is removed, otherwise it is a false positive. A
duplicate detection can therefore still match a second, neighbouring GT (unlike VOC). Ties in IoU go to the
lowest GT index; ties in score keep the input order (stable sort).

AP is VOC2010 all-point AP over the detection sequence, in two variants:
  * global sort: all detections of the data set re-sorted by score (standard AP), written to
    ``eval_global_sort_<info>.yaml``;
  * no global sort: frame order, each frame sorted internally (the OPV2V-paper convention), written to
    ``eval_<info>.yaml``.
The reference computed the second variant by mutating the accumulated lists in place; here nothing is
mutated, so the variants can be computed in any order and repeatedly.

Accumulator layout (exactly the reference's)::

    result_stat = {0.3: {'tp': [], 'fp': [], 'gt': 0, 'score': []}, 0.5: {...}, 0.7: {...}}

The per-frame calls (:func:`calculate_tp_fp`, :func:`evaluate_frames`, :func:`calculate_tp_fp_classes`) only
queue copies of the frame's boxes; the matching of all queued frames runs in one batched pass the first time
the lists are read (``result_stat[0.5]['tp']``, :func:`calculate_ap`, :func:`eval_final_results`, or
:func:`materialize`), with results identical to matching each frame at once. A plain-dict ``result_stat``
built by the caller works too (its entries become lazy dicts with the same lists on the first call).

Box inputs are corners ``(K, 8, 3)`` in metres, any common frame (usually the ego LiDAR frame), as numpy
arrays or torch tensors; only ``[:, :4, :2]`` is used.

Several classes (V2X-Real: vehicle, pedestrian, truck): one accumulator per class,
``{class_name: {0.3: {...}, 0.5: {...}, 0.7: {...}}}`` (:func:`init_result_stat` with ``classes``); a
prediction is matched only to GT boxes of its own class (:func:`calculate_tp_fp_classes`), AP is computed per
class and mAP is the plain mean of the class APs (a class without GT counts with AP 0).

Eval YAMLs: precision/recall curves are written as one flow-style line of exact floats each (a YAML float
list; PyYAML's per-scalar emitter took seconds for 2,000 frames). Single class: ``ap30``, ``ap_50``, ``ap_70``,
``mpre_50``, ``mrec_50``, ``mpre_70``, ``mrec_70``. Several classes: the mAPs as ``ap30``/``ap_50``/``ap_70`` and
``mAP: {0.3, 0.5, 0.7}``, an AP table ``classes: {name: {ap30, ap_50, ap_70}}``, and per class the reference's
V2X-Real nesting ``name: {0.3: {ap, mrec, mpre}, 0.5: {...}, 0.7: {...}}``.
"""
import os
import re
import time

import numpy as np
import torch
import yaml

from opencood.utils import eval_matching as M
from opencood.utils.atomic_io import atomic_open

IOU_THRESHOLDS = (0.3, 0.5, 0.7)
AP_KEYS = ("ap30", "ap_50", "ap_70")  # summary keys of the three thresholds
# Keys of a multi-class summary next to the class names (a class may not be called like one of them).
_PER_CLASS_KEYS = AP_KEYS + ("mAP", "classes")


def init_result_stat(iou_thresholds=IOU_THRESHOLDS, classes=None):
    """Empty accumulator ``{thr: {'tp': [], 'fp': [], 'gt': 0, 'score': []}}`` for the given thresholds.

    Args:
        iou_thresholds: IoU thresholds (keys).
        classes: class names of a multi-class evaluation: one accumulator per class,
            ``{name: {thr: {...}}}``; None (or a single class) gives the plain layout.
    """
    if classes is not None and len(classes) > 1:
        reserved = [str(name) for name in classes if str(name) in _PER_CLASS_KEYS]
        if reserved:
            raise ValueError(f"eval_utils: class name '{reserved[0]}' is reserved in the eval YAML "
                             f"(reserved: {', '.join(_PER_CLASS_KEYS)})")
        return {str(name): init_result_stat(iou_thresholds) for name in classes}
    return M.new_accumulator(tuple(iou_thresholds))


def is_per_class(result_stat):
    """True for a per-class accumulator ``{class_name: {thr: ...}}`` (keys are strings, not thresholds)."""
    return bool(result_stat) and all(isinstance(k, str) for k in result_stat)


def materialize(result_stat):
    """Run the queued matching of every frame given so far (plain or per class); returns ``result_stat``.

    Reading the accumulator does this by itself; call it to time the matching or to settle it at a chosen point.
    """
    return M.flush_all(result_stat)


def evaluate_frames(frames, iou_thresholds=IOU_THRESHOLDS, result_stat=None):
    """Add many frames at several IoU thresholds (the batch form of :func:`calculate_tp_fp`).

    The frames are queued and matched, with everything queued before them, in one batched pass when
    ``result_stat`` is first read: IoUs only for same-frame prediction/GT pairs whose BEV bounding circles
    overlap (one call over all frames), then one numba pass for all thresholds. Results are identical to
    calling :func:`calculate_tp_fp` frame by frame.

    Args:
        frames: list of (det_boxes (K,8,3), det_score (K,), gt_boxes (G,8,3)), numpy or torch, metres;
            det_boxes/det_score None means no prediction, gt_boxes None means no GT.
        iou_thresholds: IoU thresholds in (0, 1].
        result_stat: accumulator to extend; a new one (see :func:`init_result_stat`) if None.

    Returns:
        result_stat with the frames appended (frame order, each frame sorted by descending score).
    """
    thresholds = tuple(iou_thresholds)
    M.check_thresholds(thresholds)
    if result_stat is None:
        result_stat = init_result_stat(thresholds)
    queue = M.queue_of(result_stat, thresholds)
    for frame in frames:
        queue.add(M.frame_arrays(*frame), thresholds)
    return result_stat


def calculate_tp_fp(det_boxes, det_score, gt_boxes, result_stat, iou_thresh):
    """Match one frame's detections to its GT at one IoU threshold and append to ``result_stat``.

    The frame is queued (copied) and matched in one batched pass with the others when ``result_stat`` is read
    (see the module docstring); the three calls of one frame (0.3, 0.5, 0.7) share one IoU computation.

    Args:
        det_boxes: (K, 8, 3) predicted corners (numpy or torch, metres) or None.
        det_score: (K,) confidence scores or None.
        gt_boxes: (G, 8, 3) GT corners in the same frame, or None.
        result_stat: accumulator ``{thr: {'tp', 'fp', 'gt', 'score'}}``, updated in place.
        iou_thresh: BEV IoU threshold in (0, 1] (key of ``result_stat``).
    """
    M.check_thresholds((iou_thresh,))
    M.queue_of(result_stat, (iou_thresh,)).add(M.frame_arrays(det_boxes, det_score, gt_boxes), (iou_thresh,))


caluclate_tp_fp = calculate_tp_fp  # the reference's spelling, kept for users' scripts


def _class_rows(labels, n_rows, k, name):
    """Bool mask (n_rows,) of the rows whose class index is ``k`` (``labels`` (n_rows,) or None)."""
    if n_rows == 0:
        return np.zeros(0, dtype=bool)
    if labels is None:
        raise ValueError(f"eval_utils: {name} is None for {n_rows} boxes of a multi-class evaluation")
    labels = M.to_numpy(labels).reshape(-1)
    if labels.shape[0] != n_rows:
        raise ValueError(f"eval_utils: {name} has {labels.shape[0]} entries for {n_rows} boxes")
    return labels == k


def calculate_tp_fp_classes(det_boxes, det_score, det_labels, gt_boxes, gt_labels, result_stat,
                            iou_thresholds=IOU_THRESHOLDS):
    """Match one frame class by class (a prediction only matches GT of its class) and append the results.

    Queued like :func:`calculate_tp_fp`: each class's accumulator matches its frames when it is read.

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
    thresholds = tuple(iou_thresholds)
    M.check_thresholds(thresholds)
    det, score, gt = M.frame_arrays(det_boxes, det_score, gt_boxes)
    queues = [M.queue_of(stat, thresholds) for stat in result_stat.values()]
    masks = [(_class_rows(det_labels, det.shape[0], k, "det_labels"), _class_rows(gt_labels, gt.shape[0], k,
                                                                                 "gt_labels"))
             for k in range(len(queues))]  # all checked before anything is queued
    for queue, (det_rows, gt_rows) in zip(queues, masks):
        queue.add((det[det_rows], score[det_rows], gt[gt_rows]), thresholds)


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
    """The eval-YAML summary of one variant.

    Plain accumulator: ``{ap30, ap_50, ap_70, mpre_50, mrec_50, mpre_70, mrec_70}`` (the reference's keys).
    Per class: ``ap30``/``ap_50``/``ap_70`` = mAP (mean of the class APs), ``mAP`` = ``{0.3: .., 0.5: .., 0.7: ..}``,
    ``classes`` = ``{name: {ap30, ap_50, ap_70}}`` and, per class, the reference's V2X-Real nesting
    ``name: {thr: {'ap', 'mrec', 'mpre'}}``.
    """
    if is_per_class(result_stat):
        curves = {name: {thr: calculate_ap(stat, thr, global_sort_detections) for thr in IOU_THRESHOLDS}
                  for name, stat in result_stat.items()}
        m_ap = {thr: float(np.mean([c[thr][0] for c in curves.values()])) for thr in IOU_THRESHOLDS}
        summary = {key: m_ap[thr] for thr, key in zip(IOU_THRESHOLDS, AP_KEYS)}
        summary["mAP"] = m_ap
        summary["classes"] = {name: {key: c[thr][0] for thr, key in zip(IOU_THRESHOLDS, AP_KEYS)}
                              for name, c in curves.items()}
        for name, c in curves.items():
            summary[name] = {thr: {"ap": ap, "mrec": mrec, "mpre": mpre} for thr, (ap, mrec, mpre) in c.items()}
        return summary
    ap30, _, _ = calculate_ap(result_stat, 0.3, global_sort_detections)
    ap50, mrec50, mpre50 = calculate_ap(result_stat, 0.5, global_sort_detections)
    ap70, mrec70, mpre70 = calculate_ap(result_stat, 0.7, global_sort_detections)
    return {"ap30": ap30, "ap_50": ap50, "ap_70": ap70,
            "mpre_50": mpre50, "mrec_50": mrec50, "mpre_70": mpre70, "mrec_70": mrec70}


def _aps_only(summary):
    """``{ap30, ap_50, ap_70}`` of a :func:`_variant` summary (+ ``classes`` for a per-class one)."""
    out = {key: summary[key] for key in AP_KEYS}
    if "classes" in summary:
        out["classes"] = {name: dict(c) for name, c in summary["classes"].items()}
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


def eval_final_results(result_stat, save_path, infer_info=None, global_sort_detections=None, extra=None):
    """Compute both AP variants, write them as YAML and print them.

    Writes (atomically) ``save_path/eval_global_sort_<info>.yaml`` and ``save_path/eval_<info>.yaml``
    (``eval_global_sort.yaml`` / ``eval.yaml`` when ``infer_info`` is None) with keys ap30, ap_50, ap_70,
    mpre_50, mrec_50, mpre_70, mrec_70. A per-class accumulator writes the layout of :func:`_variant` (mAPs
    as ap30, ap_50, ap_70, ``mAP``, ``classes`` and the per-class nesting) and prints each class and the mAP.

    Both call forms of the lineage work: HEAL's ``eval_final_results(stat, path, infer_info)`` (a string or
    None; returns the global-sort APs) and OpenCOOD's ``eval_final_results(stat, path, global_sort_detections)``
    (a bool in third place; returns that variant).

    Args:
        result_stat: accumulator with entries for IoU 0.3, 0.5 and 0.7 (plain or per class).
        save_path: output folder (created if missing).
        infer_info: suffix naming the run, e.g. ``intermediate_102.4_51.2_epoch17``, or a bool (OpenCOOD's
            positional ``global_sort_detections``).
        global_sort_detections: which variant to return (default: global sort).
        extra: further entries written after the APs in both files (e.g. communication volume, latency).

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
        save_eval_yaml({**summary, **(extra or {})}, os.path.join(save_path, f"{name}{suffix}.yaml"))
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


# A float list is written by hand when it is longer than this; shorter ones go through PyYAML.
_FLOW_MIN_LEN = 8
_CURVE_TOKEN = "opencood_eval_curve_{}_"
_CURVE_TOKEN_RE = re.compile(r"opencood_eval_curve_(\d+)_")
# A float repr without '.' before its exponent ('1e-05'): YAML 1.1 reads it as a string unless it is '1.0e-05'.
_BARE_EXPONENT_RE = re.compile(r"(?<![\d.])(\d+)(e[-+]\d+)")


def _flow_floats(values):
    """``[v0, v1, ...]``: a flow-style YAML list of the exact (shortest round-trip) reprs of finite floats.

    Args:
        values: (N,) float64 array. Curves repeat values a lot (recall changes only at a TP), so each distinct
            value is formatted once.
    """
    if np.signbit(values).any():  # np.unique would merge -0.0 with 0.0
        uniq, inverse = values, np.arange(values.size)
    else:
        uniq, inverse = np.unique(values, return_inverse=True)
    text = [repr(v) for v in uniq.tolist()]
    text = np.array([_BARE_EXPONENT_RE.sub(r"\1.0\2", t) if "e" in t else t for t in text], dtype=object)
    return "[" + ", ".join(text[inverse.reshape(-1)].tolist()) + "]"


def _as_curve(value):
    """A long list of finite Python floats as a float64 array (to format by hand), else None."""
    if not (isinstance(value, list) and len(value) >= _FLOW_MIN_LEN and set(map(type, value)) == {float}):
        return None
    arr = np.asarray(value, dtype=np.float64)
    return arr if np.isfinite(arr).all() else None


def save_eval_yaml(data, path):
    """Write an eval summary as YAML, atomically; long lists of floats (precision/recall curves) go on one
    flow-style line each, formatted directly (exact reprs, read back bit for bit by any YAML loader).

    Args:
        data: dict of floats, strings, dicts (keys may be IoU floats) and float lists; numpy values allowed.
        path: target file.
    """
    curves = []

    def strip(node):  # the small skeleton for PyYAML: plain Python types, curves replaced by tokens
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items()}
        if isinstance(node, np.ndarray):
            node = node.tolist()
        if isinstance(node, (list, tuple)):
            curve = _as_curve(node)
            if curve is not None:
                curves.append(curve)
                return _CURVE_TOKEN.format(len(curves) - 1)
            return [strip(v) for v in node]
        return node.item() if isinstance(node, np.generic) else node

    skeleton = yaml.safe_dump(strip(data), sort_keys=False, default_flow_style=None)
    text = _CURVE_TOKEN_RE.sub(lambda m: _flow_floats(curves[int(m.group(1))]), skeleton)
    with atomic_open(path, "w") as f:
        f.write(text)


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
        result_stat = materialize(evaluate_frames(frames))
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
