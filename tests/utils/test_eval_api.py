"""The per-frame evaluation API with deferred (batched) matching: identical to matching each frame at once, the
accumulator readable like the reference's plain dict, and the compact eval YAMLs."""
import copy
import json
import pickle

import numpy as np
import pytest
import torch
import yaml

from opencood.utils import eval_matching, eval_utils as E
from opencood.utils.box_utils import boxes_to_corners_3d


def edge_frames():
    """Random frames plus the edge cases: no GT, no predictions, neither, empty arrays, tied scores, duplicates,
    (K, 4, 2) quads and torch inputs."""
    frames = E.random_frames(40, seed=7, max_pred=25, max_gt=15, area=(60.0, 30.0))
    det, score, gt = frames[0]
    frames += [(None, None, gt), (det, score, None), (None, None, None),
               (np.zeros((0, 8, 3)), np.zeros(0), np.zeros((0, 8, 3)))]
    tied = np.full(det.shape[0], 0.5)  # all scores equal: the input order decides
    frames.append((det, tied, gt))
    frames.append((np.concatenate([gt, gt]), np.concatenate([np.full(len(gt), 0.7), np.full(len(gt), 0.7)]), gt))
    frames.append((det[:, :4, :2].copy(), score, gt[:, :4, :2].copy()))
    d1, s1, g1 = frames[1]
    frames.append((torch.from_numpy(d1).float(), torch.from_numpy(s1).float(), torch.from_numpy(g1)))
    frames.append(frames[-1])  # the same frame twice in a row (two frames, not one)
    return frames


def immediate(frames, thresholds=E.IOU_THRESHOLDS):
    """What matching each frame when it arrives (the former per-frame path) accumulates."""
    stat = E.init_result_stat(thresholds)
    for det, score, gt in frames:
        for thr in thresholds:
            E.calculate_tp_fp(det, score, gt, stat, thr)
            E.materialize(stat)
    return stat


def plain(stat):
    return {thr: {k: (list(v) if isinstance(v, list) else v) for k, v in s.items()} for thr, s in stat.items()}


def all_aps(stat):
    return [E.calculate_ap(stat, thr, flag) for thr in E.IOU_THRESHOLDS for flag in (True, False)]


def test_deferred_equals_immediate_bit_for_bit(monkeypatch):
    frames = edge_frames()
    expected = immediate(frames)
    calls = []
    real = eval_matching.match_frames
    monkeypatch.setattr(eval_matching, "match_frames", lambda f, t: calls.append((len(f), t)) or real(f, t))
    stat = E.init_result_stat()
    for det, score, gt in frames:
        for thr in E.IOU_THRESHOLDS:
            E.caluclate_tp_fp(det, score, gt, stat, thr)
    assert calls == []  # nothing matched yet
    assert plain(stat) == plain(expected)
    # one batched pass; the three thresholds of a frame share one entry (the repeated last frame is its own)
    assert calls == [(len(frames), E.IOU_THRESHOLDS)]
    assert all_aps(stat) == all_aps(expected)  # AP, mrec, mpre exactly equal, both variants
    assert sum(stat[0.5]["tp"]) > 0 and sum(stat[0.5]["fp"]) > 0
    # the reference's list layout: tp/fp 0/1 ints, scores frame by frame in descending order
    assert set(stat[0.7]["tp"]) == {0, 1} and all(type(v) is int for v in stat[0.7]["fp"])
    assert stat[0.3]["gt"] == sum(0 if g is None else len(g) for _, _, g in frames)


def test_threshold_outer_loop_and_batch_form_agree():
    frames = edge_frames()
    expected = plain(immediate(frames))
    outer = E.init_result_stat()
    for thr in E.IOU_THRESHOLDS:  # thresholds outermost: one entry per call, same sequences per threshold
        for det, score, gt in frames:
            E.calculate_tp_fp(det, score, gt, outer, thr)
    assert plain(outer) == expected
    assert plain(E.evaluate_frames(frames)) == expected
    half = E.evaluate_frames(frames[:10])
    E.evaluate_frames(frames[10:], result_stat=half)
    assert plain(half) == expected


def test_user_plain_dict_reads_in_between_and_input_copies():
    """A literal accumulator (HEAL's scripts build it by hand) works; reading it part way and going on, and
    changing the caller's arrays after a call, change nothing."""
    frames = [tuple(None if x is None else np.array(x) for x in f) for f in edge_frames()]
    expected = plain(immediate(frames, (0.5, 0.7)))
    stat = {0.5: {"tp": [], "fp": [], "gt": 0, "score": []}, 0.7: {"tp": [], "fp": [], "gt": 0, "score": []}}
    tp_list = stat[0.5]["tp"]
    for i, (det, score, gt) in enumerate(frames):
        for thr in (0.5, 0.7):
            E.calculate_tp_fp(det, score, gt, stat, thr)
        if i == 5:
            assert len(stat[0.7]["tp"]) == sum(len(f[1]) for f in frames[:6] if f[1] is not None)
        if det is not None and det.size:
            det += 100.0  # moved away from every GT after the call: must not matter
    assert plain(stat) == expected
    assert stat[0.5]["tp"] is tp_list  # the caller's lists were extended, not replaced
    assert isinstance(stat[0.5], dict)


def test_lazy_accumulator_reads_like_a_plain_dict():
    frames = edge_frames()[:8]
    expected = plain(immediate(frames))

    def fresh():
        return E.evaluate_frames(frames)

    assert pickle.loads(pickle.dumps(fresh())) == expected
    assert type(pickle.loads(pickle.dumps(fresh()))[0.5]) is dict
    assert copy.deepcopy(fresh()) == expected
    assert {thr: dict(s) for thr, s in fresh().items()} == expected
    assert {thr: {**s} for thr, s in fresh().items()} == expected
    assert {thr: dict(s.items()) for thr, s in fresh().items()} == expected
    assert json.loads(json.dumps({str(k): v for k, v in fresh().items()})) == {str(k): v for k, v in expected.items()}
    assert yaml.safe_load(yaml.safe_dump(fresh())) == expected
    assert yaml.safe_load(yaml.dump(fresh())) == expected
    assert fresh() == expected and expected == fresh() and not (fresh() != expected)
    assert fresh()[0.3] == fresh()[0.3]  # two lazy accumulators compared directly
    s = fresh()
    s[0.5]["gt"] += 1  # read-modify-write waits for the queue
    assert s[0.5]["gt"] == expected[0.5]["gt"] + 1
    assert repr(fresh()[0.7]) == repr(expected[0.7])


def test_per_class_deferred_equals_immediate():
    frames = edge_frames()
    rng = np.random.default_rng(0)
    labelled = [(d, s, None if d is None else rng.integers(0, 3, len(s)), g,
                 None if g is None else rng.integers(0, 3, len(g))) for d, s, g in frames]
    names = ["vehicle", "pedestrian", "truck"]
    lazy = E.init_result_stat(classes=names)
    now = E.init_result_stat(classes=names)
    for frame in labelled:
        E.calculate_tp_fp_classes(*frame, lazy)
        E.calculate_tp_fp_classes(*frame, now)
        E.materialize(now)
    assert {n: plain(lazy[n]) for n in names} == {n: plain(now[n]) for n in names}
    assert E.eval_final_results_dict(lazy) == E.eval_final_results_dict(now)
    assert sum(lazy["truck"][0.3]["tp"]) > 0


def test_bad_input_fails_at_the_call_and_queues_nothing():
    stat = E.init_result_stat((0.5,))
    det = boxes_to_corners_3d(np.array([[0.0, 0, -1, 1.5, 2, 4, 0]]), "hwl")
    with pytest.raises(ValueError, match=r"no entry for IoU threshold 0.7 \(has \[0.5\]\)"):
        E.calculate_tp_fp(det, np.ones(1), det, stat, 0.7)
    with pytest.raises(ValueError, match=r"must lie in \(0, 1\]"):
        E.calculate_tp_fp(det, np.ones(1), det, {0.0: {"tp": [], "fp": [], "gt": 0, "score": []}}, 0.0)
    with pytest.raises(ValueError, match="det_score has 2 entries for 1 det_boxes"):
        E.calculate_tp_fp(det, np.ones(2), det, stat, 0.5)
    with pytest.raises(ValueError, match=r"gt_boxes must have shape"):
        E.calculate_tp_fp(det, np.ones(1), np.zeros((3, 2)), stat, 0.5)
    per_class = E.init_result_stat(classes=["vehicle", "pedestrian"])
    with pytest.raises(ValueError, match="gt_labels has 2 entries for 1 boxes"):
        E.calculate_tp_fp_classes(det, np.ones(1), np.zeros(1), det, np.zeros(2), per_class)
    assert stat[0.5] == {"tp": [], "fp": [], "gt": 0, "score": []}
    assert per_class["vehicle"][0.5] == {"tp": [], "fp": [], "gt": 0, "score": []}
    with pytest.raises(ValueError, match="class name 'classes' is reserved"):
        E.init_result_stat(classes=["vehicle", "classes"])


def test_eval_yaml_curves_exact_and_compact(tmp_path):
    frames = E.random_frames(60, seed=2)
    stat = E.evaluate_frames(frames)
    E.eval_final_results(stat, str(tmp_path), "run", extra={"comm_bytes_per_agent": 123.5, "note": "x"})
    with open(tmp_path / "eval_global_sort_run.yaml") as f:
        text = f.read()
    saved = yaml.safe_load(text)
    ap50, mrec50, mpre50 = E.calculate_ap(stat, 0.5, True)
    assert saved["ap_50"] == ap50 and saved["mrec_50"] == mrec50 and saved["mpre_50"] == mpre50  # bit for bit
    assert all(type(v) is float for v in saved["mpre_70"])
    assert saved["comm_bytes_per_agent"] == 123.5 and saved["note"] == "x"
    assert len(text.splitlines()) < 20  # one line per curve
    assert list(saved) == ["ap30", "ap_50", "ap_70", "mpre_50", "mrec_50", "mpre_70", "mrec_70",
                           "comm_bytes_per_agent", "note"]


def test_save_eval_yaml_float_forms(tmp_path):
    """Exponent forms without a dot ('1e-05' would load as a string), -0.0, numpy input, short and nested lists."""
    curve = [0.0, -0.0, 1e-05, 2.5e-07, 1.0, 1 / 3, 0.1 + 0.2, 5e-324, 1e-300, 0.5]
    data = {"a": curve, "b": np.asarray(curve), "short": [0.25, 1e-05], "ints": list(range(10)),
            "nested": {0.3: {"ap": np.float64(0.5), "mrec": curve}}, "mixed": [1, 2.0] * 5,
            "inf": [float("inf")] + curve}
    path = tmp_path / "e.yaml"
    E.save_eval_yaml(data, path)
    with open(path) as f:
        back = yaml.safe_load(f)
    for key in ("a", "b"):
        assert back[key] == curve and [str(v) for v in back[key]] == [str(v) for v in curve]  # keeps -0.0
    assert back["short"] == [0.25, 1e-05] and back["ints"] == list(range(10))
    assert back["nested"] == {0.3: {"ap": 0.5, "mrec": curve}} and back["mixed"] == [1, 2.0] * 5
    assert back["inf"][0] == float("inf") and back["inf"][1:] == curve


def test_benchmark_eval_api_agrees_with_reference_style():
    out = pytest.importorskip("opencood.utils.eval_benchmark").benchmark_eval_api(n_frames=25, seed=4, reference=True)
    assert out["n_frames"] == 25 and out["n_predictions"] > 0 and out["yaml_bytes"] > 0
    assert out["ap_max_abs_diff"] < 1e-12  # the shapely loop of the reference gives the same APs
    assert 0.0 < out["ap"]["global_sort"][1] <= 1.0
    assert out["api_total_s"] > 0 and out["ref_total_s"] > 0
