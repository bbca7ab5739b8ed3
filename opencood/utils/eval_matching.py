"""TP/FP matching of BEV box detections and the deferred accumulators behind the per-frame evaluation API.

Matching rule (per frame, for each IoU threshold independently): predictions are taken in descending score
order; each one is compared by rotated BEV IoU (bottom-face polygons, corners 0-3, x-y only) with the GT boxes
of its frame that are *still unmatched*; if the best IoU is >= the threshold the prediction is a true positive
and that GT is removed, otherwise it is a false positive. Ties in IoU go to the lowest GT index; ties in score
keep the input order (stable sort).

:func:`match_frames` does this for many frames at once: IoUs only for same-frame pairs whose bounding circles
overlap (one batched call), then one numba pass over all thresholds.

Deferred accumulation: the per-frame API (``calculate_tp_fp`` once per frame and threshold) only copies the
frame's arrays into a :class:`MatchQueue`; the matching runs in one :func:`match_frames` call the first time
the accumulated lists are read. Each threshold's accumulator is a :class:`LazyStat`, a ``dict`` with the
reference's keys ``tp``, ``fp``, ``gt``, ``score`` whose every read (``stat['tp']``, ``.items()``,
iteration, ``==``, copying, pickling, YAML/JSON dumping) runs the queued matches first, so code that reads
``result_stat[0.5]['tp']`` sees exactly what immediate matching would have produced. The thresholds of one
accumulator share a queue: the usual loop over 0.3/0.5/0.7 for one frame stores and matches the frame once.
"""
import numba
import numpy as np
import yaml

from opencood.ops.iou import corners_iou_bev_pairs_np

STAT_KEYS = ("tp", "fp", "gt", "score")
# Extra slack (metres) on the bounding-circle test so that touching boxes are still IoU candidates.
_CIRCLE_EPS = 1e-6


def check_thresholds(thresholds):
    """Raise ValueError unless every IoU threshold lies in (0, 1]."""
    if any(not 0.0 < thr <= 1.0 for thr in thresholds):
        raise ValueError(f"eval_utils: IoU thresholds must lie in (0, 1], got {tuple(thresholds)}")


def to_numpy(x):
    """Numpy float64 array of a torch tensor / array / None (None stays None); may share memory with x."""
    if x is None:
        return None
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _bev_quads(corners, name):
    """Bottom-face BEV quads (K, 4, 2), a fresh C-contiguous copy, of corners (K, 8, 3) or (K, 4, >=2)."""
    if corners is None or corners.size == 0:
        return np.zeros((0, 4, 2), dtype=np.float64)
    if corners.ndim != 3 or corners.shape[1] < 4 or corners.shape[2] < 2:
        raise ValueError(f"eval_utils: {name} must have shape (K, 8, 3) or (K, 4, 2), got {corners.shape}")
    return np.array(corners[:, :4, :2], dtype=np.float64, order="C")


def frame_arrays(det_boxes, det_score, gt_boxes):
    """One frame as (pred quads (K,4,2), scores (K,), gt quads (G,4,2)) float64 arrays owned by the caller
    (copies: later changes to the inputs do not reach a queued frame).

    Args:
        det_boxes: (K, 8, 3) or (K, 4, 2) predicted corners (numpy or torch, metres) or None.
        det_score: (K,) scores, or None together with det_boxes.
        gt_boxes: (G, 8, 3) or (G, 4, 2) GT corners or None.
    """
    det = _bev_quads(to_numpy(det_boxes), "det_boxes")
    gt = _bev_quads(to_numpy(gt_boxes), "gt_boxes")
    if det_boxes is None:
        score = np.zeros(0, dtype=np.float64)
    else:
        if det_score is None:
            raise ValueError("eval_utils: det_score is None while det_boxes is given")
        score = np.array(to_numpy(det_score), dtype=np.float64).reshape(-1)
        if score.shape[0] != det.shape[0]:
            raise ValueError(f"eval_utils: det_score has {score.shape[0]} entries for {det.shape[0]} det_boxes")
    return det, score, gt


def _same_frame(a, b):
    """Whether two frame_arrays tuples hold identical arrays."""
    return all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b))


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


def match_frames(frames, thresholds):
    """Match every frame at every threshold.

    Args:
        frames: list of :func:`frame_arrays` tuples (pred quads (K,4,2), scores (K,), gt quads (G,4,2)).
        thresholds: tuple of IoU thresholds in (0, 1].

    Returns:
        tp: (T, NP) bool, predictions ordered by frame then descending score (stable);
        scores: (NP,) scores in that order; pred_counts: (F,) predictions per frame; gt_counts: (F,) GT per frame.
    """
    check_thresholds(thresholds)
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
    return tp, scores, pred_counts, gt_counts


class MatchQueue:
    """Frames handed to an accumulator whose matching has not run yet (one queue per plain accumulator).

    Entries keep call order; each holds one frame's arrays and the thresholds it was queued for. A call for
    the same frame (identical arrays) at a threshold the latest entry does not have yet joins that entry, so
    HEAL's per-frame loop over 0.3/0.5/0.7 stores and matches each frame once. Joining only the latest entry
    keeps every threshold's own frame sequence in call order.
    """
    __slots__ = ("stats", "frames", "members")

    def __init__(self):
        self.stats = {}  # {threshold: LazyStat}
        self.frames = []  # [(pred quads (K,4,2), scores (K,), gt quads (G,4,2))]
        self.members = []  # [set of thresholds of each frame]

    def add(self, frame, thresholds):
        """Queue one :func:`frame_arrays` tuple for the given thresholds (keys of ``self.stats``)."""
        if self.frames and self.members[-1].isdisjoint(thresholds) and _same_frame(self.frames[-1], frame):
            self.members[-1].update(thresholds)
        else:
            self.frames.append(frame)
            self.members.append(set(thresholds))

    def flush(self):
        """Match every queued frame (one :func:`match_frames` call) and extend the accumulators."""
        if not self.frames:
            return
        frames, members = self.frames, self.members
        self.frames, self.members = [], []  # taken first: the reads below do not re-enter
        thresholds = tuple(sorted(set().union(*members)))
        tp, scores, pred_counts, gt_counts = match_frames(frames, thresholds)
        for t, thr in enumerate(thresholds):
            in_frame = np.fromiter((thr in m for m in members), dtype=bool, count=len(members))  # (F,)
            rows = np.repeat(in_frame, pred_counts)  # (NP,)
            tp_int = tp[t][rows].astype(np.int64)
            stat = self.stats[thr]
            dict.__getitem__(stat, "tp").extend(tp_int.tolist())
            dict.__getitem__(stat, "fp").extend((1 - tp_int).tolist())
            dict.__getitem__(stat, "score").extend(scores[rows].tolist())
            dict.__setitem__(stat, "gt", dict.__getitem__(stat, "gt") + int(gt_counts[in_frame].sum()))


def _flushing(name):
    """A dict method of LazyStat that runs the queued matches (its own and a LazyStat argument's) first."""
    base = getattr(dict, name)

    def method(self, *args, **kwargs):
        self.flush()
        for other in args:  # ==, |, update(...) with another lazy accumulator read its storage directly
            if isinstance(other, LazyStat):
                other.flush()
        return base(self, *args, **kwargs)

    method.__name__ = name
    method.__doc__ = base.__doc__
    return method


class LazyStat(dict):
    """One threshold's accumulator ``{'tp': [...], 'fp': [...], 'gt': int, 'score': [...]}`` whose pending
    frames (in its :class:`MatchQueue`) are matched before any read; pickles/copies as a plain dict (built by
    ``dict(...)``, which ``torch.load(weights_only=True)`` refuses: save ``{thr: dict(s) ...}`` for that)."""
    __slots__ = ("queue",)

    def __init__(self, content, queue):
        super().__init__(content)
        self.queue = queue

    def flush(self):
        """Run the queued matches of this accumulator (and of the other thresholds sharing its queue)."""
        if self.queue.frames:
            self.queue.flush()

    def __reduce_ex__(self, protocol):
        return dict, (dict(self.items()),)


# Every dict method that reads or changes the content waits for the queued matches.
for _name in ("__getitem__", "get", "__iter__", "keys", "values", "items", "__repr__", "__eq__", "__ne__", "copy",
              "pop", "popitem", "setdefault", "update", "__setitem__", "__delitem__", "clear", "__or__", "__ror__",
              "__ior__", "__reversed__"):
    setattr(LazyStat, _name, _flushing(_name))


def _represent_lazy(dumper, data):
    return dumper.represent_dict(dict(data.items()))


for _dumper in (yaml.SafeDumper, yaml.Dumper, getattr(yaml, "CSafeDumper", None), getattr(yaml, "CDumper", None)):
    if _dumper is not None:
        _dumper.add_representer(LazyStat, _represent_lazy)


def is_accumulator(value):
    """Whether ``value`` is a one-threshold accumulator (a dict with the keys tp, fp, gt, score)."""
    return isinstance(value, dict) and all(key in value for key in STAT_KEYS)


def new_accumulator(thresholds):
    """``{thr: LazyStat}`` for the given thresholds, all sharing one queue."""
    queue = MatchQueue()
    queue.stats = {thr: LazyStat({"tp": [], "fp": [], "gt": 0, "score": []}, queue) for thr in thresholds}
    return dict(queue.stats)


def queue_of(result_stat, thresholds):
    """The queue shared by the accumulators of ``result_stat`` ``{thr: stat}``, checking that every threshold
    has one. Plain-dict accumulators (a user's literal ``{0.5: {'tp': [], ...}}``) are replaced in place by
    LazyStats holding the same lists (a reference to the old inner dict does not see later ``gt`` counts)."""
    for thr in thresholds:
        if thr not in result_stat or not is_accumulator(result_stat[thr]):
            raise ValueError(f"eval_utils: result_stat has no entry for IoU threshold {thr} "
                             f"(has {sorted(k for k in result_stat if not isinstance(k, str))})")
    entries = {k: v for k, v in result_stat.items() if is_accumulator(v)}
    queues = {id(v.queue): v.queue for v in entries.values() if isinstance(v, LazyStat)}
    if len(queues) == 1:
        (queue,) = queues.values()
        if len(queue.stats) == len(entries) and all(queue.stats.get(k) is v for k, v in entries.items()):
            return queue
    for queue in queues.values():  # a changed accumulator: settle what is pending, then share a new queue
        queue.flush()
    queue = MatchQueue()
    for k, v in entries.items():
        queue.stats[k] = result_stat[k] = LazyStat(v, queue)
    return queue


def flush_all(result_stat):
    """Run every queued match of a plain ``{thr: stat}`` or per-class ``{name: {thr: stat}}`` accumulator."""
    for value in result_stat.values():
        if isinstance(value, LazyStat):
            value.flush()
        elif isinstance(value, dict) and not is_accumulator(value):
            flush_all(value)
    return result_stat
