"""Timing of the HEAL-style evaluation API (per-frame ``calculate_tp_fp`` + ``eval_final_results``).

:func:`benchmark_eval_api` runs what users' scripts and ``inference.py`` do on :func:`eval_utils.random_frames`
(2,000 frames of <= 50 predictions and <= 30 GT): three ``calculate_tp_fp`` calls per frame (IoU 0.3/0.5/0.7),
then ``eval_final_results`` (matching of the queued frames, both AP variants, both YAML files).

:func:`reference_style_eval` is a baseline written here after the reference's algorithm (spec
``data_eval_spec.md`` §6) and its costs: per frame, shapely polygons and one intersection/union per
prediction-GT pair of the still-unmatched GTs; AP with Python-list cumulative sums; each YAML written by
PyYAML's pure-Python ``yaml.dump(..., default_flow_style=False)``. It is not the reference package itself.
"""
import os
import tempfile
import time

import numpy as np
import torch
import yaml

from opencood.utils import eval_utils as E


def _reference_style_frame(det, score, gt, stat, thr):
    """One frame at one threshold, matched like the reference: a shapely loop over score-sorted predictions."""
    from shapely.geometry import Polygon

    fp, tp = [], []
    gt_polys = [Polygon(g[:4, :2]) for g in gt]
    if det is not None:
        order = np.argsort(-score)
        det_polys = [Polygon(d[:4, :2]) for d in det]
        for i in order:
            p = det_polys[i]
            ious = [p.intersection(g).area / p.union(g).area for g in gt_polys]
            if not gt_polys or max(ious) < thr:
                fp.append(1)
                tp.append(0)
                continue
            fp.append(0)
            tp.append(1)
            gt_polys.pop(int(np.argmax(ious)))
        stat[thr]["score"] += score[order].tolist()
    stat[thr]["fp"] += fp
    stat[thr]["tp"] += tp
    stat[thr]["gt"] += len(gt)


def _reference_style_ap(stat, thr, global_sort):
    """AP with the reference's Python-list cumulative sums and VOC loop (returns ap, mrec, mpre)."""
    tp, fp = list(stat[thr]["tp"]), list(stat[thr]["fp"])
    if global_sort:
        order = np.argsort(-np.array(stat[thr]["score"]))
        tp, fp = np.array(tp)[order].tolist(), np.array(fp)[order].tolist()
    run = 0
    for i, v in enumerate(tp):
        run += v
        tp[i] = run
    run = 0
    for i, v in enumerate(fp):
        run += v
        fp[i] = run
    rec = [t / stat[thr]["gt"] for t in tp]
    prec = [t / (t + f) for t, f in zip(tp, fp)]
    mrec, mpre = [0.0] + rec + [1.0], [0.0] + prec + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    ap = sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])
    return ap, mrec, mpre


def reference_style_eval(frames, out_dir):
    """Time the reference-style baseline (see the module docstring) on ``frames``.

    Returns:
        dict: ``ref_match_s`` (the per-frame calls), ``ref_final_s`` (both variants' APs and YAML files),
        ``ref_total_s`` and ``ref_ap`` = {variant: (ap30, ap50, ap70)}.
    """
    stat = {thr: {"tp": [], "fp": [], "gt": 0, "score": []} for thr in E.IOU_THRESHOLDS}
    t0 = time.perf_counter()
    for det, score, gt in frames:
        for thr in E.IOU_THRESHOLDS:
            _reference_style_frame(det, score, gt, stat, thr)
    t1 = time.perf_counter()
    aps = {}
    for name, flag in (("eval_global_sort", True), ("eval", False)):
        dump, ap3 = {}, []
        for thr, key in zip(E.IOU_THRESHOLDS, E.AP_KEYS):
            ap, mrec, mpre = _reference_style_ap(stat, thr, flag)
            dump[key] = ap
            ap3.append(ap)
            if thr != 0.3:
                dump[f"mpre_{int(thr * 100)}"], dump[f"mrec_{int(thr * 100)}"] = mpre, mrec
        with open(os.path.join(out_dir, f"ref_{name}.yaml"), "w") as f:
            yaml.dump(dump, f, default_flow_style=False)
        aps["global_sort" if flag else "no_global_sort"] = tuple(ap3)
    t2 = time.perf_counter()
    return {"ref_match_s": t1 - t0, "ref_final_s": t2 - t1, "ref_total_s": t2 - t0, "ref_ap": aps}


def benchmark_eval_api(n_frames=2000, seed=0, reference=False):
    """Time the per-frame API end to end on one CPU thread (numba compile excluded).

    Args:
        n_frames: frames of :func:`eval_utils.random_frames` (<= 50 predictions, <= 30 GT each).
        seed: random seed.
        reference: also time :func:`reference_style_eval` on the same frames (about a minute for 2,000).

    Returns:
        dict: ``api_calls_s`` (3 x n_frames ``calculate_tp_fp`` calls), ``api_final_s`` (``eval_final_results``:
        the queued matching, both variants, both YAML files), ``api_match_s``/``api_ap_s``/``api_write_s`` (its
        parts, measured in a second identical run), ``api_total_s``, ``n_frames``, ``n_predictions``,
        ``yaml_bytes`` (both files), ``ap`` = {variant: (ap30, ap50, ap70)}; with ``reference`` the
        :func:`reference_style_eval` entries and ``ap_max_abs_diff`` between the two.
    """
    frames = E.random_frames(n_frames, seed=seed)
    E.materialize(E.evaluate_frames(frames[:2]))  # compile / load the numba kernel outside the timed region
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the batched IoU runs in torch: measure one core
    try:
        with tempfile.TemporaryDirectory() as out_dir:
            stat = E.init_result_stat()
            t0 = time.perf_counter()
            for det, score, gt in frames:
                for thr in E.IOU_THRESHOLDS:
                    E.calculate_tp_fp(det, score, gt, stat, thr)
            t1 = time.perf_counter()
            global_aps = E.eval_final_results(stat, out_dir, "bench")
            t2 = time.perf_counter()
            local_aps = [E.eval_final_results_dict(stat)["no_global_sort"][key] for key in E.AP_KEYS]
            yaml_bytes = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))
            # the parts of eval_final_results, on a fresh accumulator of the same frames
            parts = E.init_result_stat()
            for det, score, gt in frames:
                for thr in E.IOU_THRESHOLDS:
                    E.calculate_tp_fp(det, score, gt, parts, thr)
            t3 = time.perf_counter()
            E.materialize(parts)
            t4 = time.perf_counter()
            summaries = [E._variant(parts, flag) for flag in (True, False)]
            t5 = time.perf_counter()
            for i, summary in enumerate(summaries):
                E.save_eval_yaml(summary, os.path.join(out_dir, f"parts_{i}.yaml"))
            t6 = time.perf_counter()
            out = {"api_calls_s": t1 - t0, "api_final_s": t2 - t1, "api_total_s": t2 - t0,
                   "api_match_s": t4 - t3, "api_ap_s": t5 - t4, "api_write_s": t6 - t5,
                   "n_frames": n_frames, "n_predictions": len(stat[0.5]["tp"]), "yaml_bytes": yaml_bytes,
                   "ap": {"global_sort": tuple(global_aps), "no_global_sort": tuple(local_aps)}}
            if reference:
                out.update(reference_style_eval(frames, out_dir))
                out["ap_max_abs_diff"] = max(abs(a - b) for v in out["ap"]
                                             for a, b in zip(out["ap"][v], out["ref_ap"][v]))
    finally:
        torch.set_num_threads(torch_threads)
    return out
