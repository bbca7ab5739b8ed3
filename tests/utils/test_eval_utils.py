"""AP evaluation: hand-computed cases for both variants, matching rules, fast path vs brute force, files."""
import os

import numpy as np
import pytest
import torch
import yaml
from shapely.geometry import Polygon

from opencood.utils import eval_utils as E
from opencood.utils.box_utils import boxes_to_corners_3d


def corners(*xy_yaw, l=4.0, w=2.0):
    """Corners (N, 8, 3) of l x w boxes at (x, y[, yaw]) tuples."""
    boxes = []
    for item in xy_yaw:
        x, y = item[:2]
        yaw = item[2] if len(item) > 2 else 0.0
        boxes.append([x, y, -1.0, 1.5, w, l, yaw])
    return boxes_to_corners_3d(np.asarray(boxes, dtype=np.float64).reshape(-1, 7), "hwl")


def two_frame_stat():
    """Frame 1: GT A, B; p(0.9) hits A exactly, p(0.3) is far away (FP).
    Frame 2: GT C; p(0.8) shifted 1 m along the 4 m length -> IoU (4-1)/(4+1) = 0.6; p(0.6) far away (FP).
    """
    stat = E.init_result_stat()
    f1 = (corners((0, 0), (50, 50)), np.array([0.3, 0.9]), corners((50, 50), (10, 0)))
    # p(0.3) sits at (0, 0): no GT there. p(0.9) sits on A = (50, 50).
    f2 = (corners((21, 0), (-40, 30)), np.array([0.8, 0.6]), corners((20, 0)))
    for det, score, gt in (f1, f2):
        for thr in E.IOU_THRESHOLDS:
            E.caluclate_tp_fp(det, score, gt, stat, thr)
    return stat


def test_hand_computed_ap_both_variants():
    stat = two_frame_stat()
    assert stat[0.5]["tp"] == [1, 0, 1, 0]
    assert stat[0.5]["fp"] == [0, 1, 0, 1]
    assert stat[0.5]["score"] == [0.9, 0.3, 0.8, 0.6]
    assert stat[0.5]["gt"] == 3
    assert stat[0.7]["tp"] == [1, 0, 0, 0]
    # No global sort, IoU 0.5: sequence TP FP TP FP, 3 GT.
    #   rec = 1/3 1/3 2/3 2/3, prec = 1 1/2 2/3 1/2
    #   mrec = 0 1/3 1/3 2/3 2/3 1, mpre (non-increasing from right) = 1 1 2/3 2/3 1/2 0
    #   AP = 1/3*1 + 1/3*2/3 + 1/3*0 = 5/9
    ap, mrec, mpre = E.calculate_ap(stat, 0.5, False)
    assert ap == pytest.approx(5 / 9)
    assert mrec == pytest.approx([0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 1])
    assert mpre == pytest.approx([1, 1, 2 / 3, 2 / 3, 0.5, 0])
    # Global sort, IoU 0.5: scores 0.9 TP, 0.8 TP, 0.6 FP, 0.3 FP
    #   rec = 1/3 2/3 2/3 2/3, prec = 1 1 2/3 1/2 -> AP = 1/3*1 + 1/3*1 = 2/3
    assert E.calculate_ap(stat, 0.5, True)[0] == pytest.approx(2 / 3)
    # IoU 0.3 is the same as 0.5 here.
    assert E.calculate_ap(stat, 0.3, False)[0] == pytest.approx(5 / 9)
    assert E.calculate_ap(stat, 0.3, True)[0] == pytest.approx(2 / 3)
    # IoU 0.7: only the first detection is a TP (both orders start with it): AP = 1/3 * 1.
    assert E.calculate_ap(stat, 0.7, False)[0] == pytest.approx(1 / 3)
    assert E.calculate_ap(stat, 0.7, True)[0] == pytest.approx(1 / 3)


def test_ap_does_not_mutate_and_variants_commute():
    stat = two_frame_stat()
    before = {thr: {k: (list(v) if isinstance(v, list) else v) for k, v in s.items()} for thr, s in stat.items()}
    no_global_first = E.calculate_ap(stat, 0.5, False)[0]
    global_ap = E.calculate_ap(stat, 0.5, True)[0]
    assert E.calculate_ap(stat, 0.5, False)[0] == no_global_first
    assert E.calculate_ap(stat, 0.5, True)[0] == global_ap
    assert stat == before
    table = E.eval_final_results_dict(stat)
    assert table["global_sort"]["ap_50"] == pytest.approx(2 / 3)
    assert table["no_global_sort"]["ap_50"] == pytest.approx(5 / 9)
    assert set(table["global_sort"]) == {"ap30", "ap_50", "ap_70"}


def test_voc_ap_simple():
    # One detection, TP, 2 GT: rec 0.5 prec 1 -> AP 0.5.
    ap, mrec, mpre = E.voc_ap([0.5], [1.0])
    assert ap == pytest.approx(0.5)
    assert mrec == [0.0, 0.5, 1.0] and mpre == [1.0, 1.0, 0.0]


def test_duplicate_can_match_second_gt():
    # GT A at x=0, GT B at x=1 (overlapping). Two detections at x=0.4:
    # IoU with A = 3.6/4.4 = 0.818, with B = 3.4/4.6 = 0.739. The first takes A, the duplicate takes B.
    gt = corners((0, 0), (1, 0))
    det = corners((0.4, 0), (0.4, 0))
    stat = E.init_result_stat()
    for thr in E.IOU_THRESHOLDS:
        E.calculate_tp_fp(det, np.array([0.9, 0.8]), gt, stat, thr)
    assert stat[0.7]["tp"] == [1, 1]
    assert stat[0.3]["tp"] == [1, 1]
    # A third duplicate finds no GT left -> FP.
    stat = E.init_result_stat((0.5,))
    E.calculate_tp_fp(corners((0.4, 0), (0.4, 0), (0.4, 0)), np.array([0.9, 0.8, 0.7]), gt, stat, 0.5)
    assert stat[0.5]["tp"] == [1, 1, 0] and stat[0.5]["fp"] == [0, 0, 1]


def test_gt_without_predictions_and_no_gt():
    stat = E.init_result_stat()
    E.calculate_tp_fp(None, None, corners((0, 0), (10, 0), (20, 0)), stat, 0.5)
    E.calculate_tp_fp(torch.zeros(0, 8, 3), torch.zeros(0), torch.from_numpy(corners((0, 0))), stat, 0.5)
    assert stat[0.5]["gt"] == 4 and stat[0.5]["tp"] == [] and stat[0.5]["score"] == []
    assert E.calculate_ap(stat, 0.5, True)[0] == 0.0
    assert E.calculate_ap(stat, 0.5, False)[0] == 0.0

    stat = E.init_result_stat()
    E.calculate_tp_fp(corners((0, 0), (5, 5)), np.array([0.5, 0.7]), None, stat, 0.5)
    assert stat[0.5]["gt"] == 0 and stat[0.5]["fp"] == [1, 1] and stat[0.5]["score"] == [0.7, 0.5]
    assert E.calculate_ap(stat, 0.5, True)[0] == 0.0


def test_torch_input_and_bad_input():
    stat = E.init_result_stat((0.5,))
    det = torch.from_numpy(corners((0, 0))).float()
    E.calculate_tp_fp(det, torch.tensor([0.5]), torch.from_numpy(corners((0, 0))), stat, 0.5)
    assert stat[0.5]["tp"] == [1]
    with pytest.raises(ValueError, match="no entry for IoU threshold 0.7"):
        E.calculate_tp_fp(det, torch.tensor([0.5]), None, stat, 0.7)
    with pytest.raises(ValueError, match="det_score"):
        E.calculate_tp_fp(det, torch.tensor([0.5, 0.2]), None, stat, 0.5)


def brute_force_tp(det, score, gt, thr):
    """Reference semantics with shapely polygons: score-ordered greedy, remove matched GT."""
    order = np.argsort(-score, kind="stable")
    gt_polys = [Polygon(g[:4, :2]) for g in gt]
    tp = []
    for i in order:
        p = Polygon(det[i, :4, :2])
        ious = [p.intersection(g).area / p.union(g).area for g in gt_polys]
        if not ious or max(ious) < thr:
            tp.append(0)
            continue
        tp.append(1)
        gt_polys.pop(int(np.argmax(ious)))
    return tp


@pytest.mark.parametrize("area", [(200.0, 100.0), (25.0, 12.0)])
def test_fast_path_matches_per_frame_and_brute_force(area):
    frames = E.random_frames(25, seed=3, max_pred=20, max_gt=12, area=area)
    frames.append((None, None, frames[0][2]))
    frames.append((frames[1][0], frames[1][1], None))
    fast = E.evaluate_frames(frames)
    slow = E.init_result_stat()
    for det, score, gt in frames:
        for thr in E.IOU_THRESHOLDS:
            E.calculate_tp_fp(det, score, gt, slow, thr)
    assert fast == slow
    for thr in E.IOU_THRESHOLDS:
        expected = []
        for det, score, gt in frames:
            if det is not None:
                expected += brute_force_tp(det, score, gt if gt is not None else np.zeros((0, 8, 3)), thr)
        assert fast[thr]["tp"] == expected
    assert sum(fast[0.5]["tp"]) > 0 and sum(fast[0.5]["fp"]) > 0


def test_eval_final_results_files(tmp_path, capsys):
    stat = two_frame_stat()
    aps = E.eval_final_results(stat, str(tmp_path), infer_info="intermediate_epoch3")
    assert aps == pytest.approx((2 / 3, 2 / 3, 1 / 3))
    assert sorted(os.listdir(tmp_path)) == ["eval_global_sort_intermediate_epoch3.yaml",
                                            "eval_intermediate_epoch3.yaml"]
    keys = {"ap30", "ap_50", "ap_70", "mpre_50", "mrec_50", "mpre_70", "mrec_70"}
    with open(tmp_path / "eval_intermediate_epoch3.yaml") as f:
        local = yaml.safe_load(f)
    with open(tmp_path / "eval_global_sort_intermediate_epoch3.yaml") as f:
        glob = yaml.safe_load(f)
    assert set(local) == keys and set(glob) == keys
    assert local["ap_50"] == pytest.approx(5 / 9) and glob["ap_50"] == pytest.approx(2 / 3)
    assert all(isinstance(v, float) for v in local["mpre_50"])
    out = capsys.readouterr().out
    assert "The Average Precision at IOU 0.5 is 0.5556" in out
    assert "The Average Precision at IOU 0.5 is 0.6667" in out

    sub = tmp_path / "plain"
    E.eval_final_results(stat, str(sub))
    assert sorted(os.listdir(sub)) == ["eval.yaml", "eval_global_sort.yaml"]


def test_benchmark_eval_small():
    out = E.benchmark_eval(n_frames=20, seed=1)
    assert out["n_frames"] == 20 and out["seconds"] > 0 and out["n_predictions"] > 0
    assert 0.0 < out["ap"]["global_sort"]["ap_50"] <= 1.0


def three_class_stat():
    """vehicle (0): GT A (0, 0) found exactly (0.9) -> AP 1.
    pedestrian (1): GT P 0.8 x 0.6 at (10, 0); a pedestrian-labelled box on A (0.8, FP: it may not take the
    vehicle GT) and one exactly on P (0.7, TP) -> rec (0, 1), prec (0, 1/2) -> AP 1/2.
    truck (2): GT T 8 x 3 at (30, 0), no prediction -> AP 0. mAP = (1 + 1/2 + 0) / 3 = 1/2 at every IoU."""
    stat = E.init_result_stat(classes=["vehicle", "pedestrian", "truck"])
    det = np.concatenate([corners((0, 0)), corners((0, 0)), corners((10, 0), l=0.8, w=0.6)])
    gt = np.concatenate([corners((0, 0)), corners((10, 0), l=0.8, w=0.6), corners((30, 0), l=8.0, w=3.0)])
    E.calculate_tp_fp_classes(det, np.array([0.9, 0.8, 0.7]), np.array([0, 1, 1]), gt, np.array([0, 1, 2]), stat)
    return stat


def test_per_class_ap_hand_computed_and_map(tmp_path, capsys):
    stat = three_class_stat()
    assert list(stat) == ["vehicle", "pedestrian", "truck"] and E.is_per_class(stat)
    assert stat["vehicle"][0.5]["tp"] == [1] and stat["pedestrian"][0.5]["tp"] == [0, 1]
    assert stat["truck"][0.5] == {"tp": [], "fp": [], "gt": 1, "score": []}
    table = E.eval_final_results_dict(stat)
    for variant in ("global_sort", "no_global_sort"):
        classes = table[variant]["classes"]
        for key in E.AP_KEYS:
            assert classes["vehicle"][key] == pytest.approx(1.0)
            assert classes["pedestrian"][key] == pytest.approx(0.5)
            assert classes["truck"][key] == pytest.approx(0.0)
            assert table[variant][key] == pytest.approx(np.mean([classes[c][key] for c in classes]))
            assert table[variant][key] == pytest.approx(0.5)
    aps = E.eval_final_results(stat, str(tmp_path), "x")
    assert aps == pytest.approx((0.5, 0.5, 0.5))
    with open(tmp_path / "eval_global_sort_x.yaml") as f:
        saved = yaml.safe_load(f)
    assert saved["ap_50"] == pytest.approx(0.5) and saved["classes"]["pedestrian"]["ap_70"] == pytest.approx(0.5)
    assert set(saved["classes"]["truck"]) == {"ap30", "ap_50", "ap_70"}
    assert saved["mAP"] == pytest.approx({0.3: 0.5, 0.5: 0.5, 0.7: 0.5})
    # the reference's V2X-Real nesting {class: {iou: {ap, mrec, mpre}}}
    assert set(saved) == {"ap30", "ap_50", "ap_70", "mAP", "classes", "vehicle", "pedestrian", "truck"}
    assert set(saved["pedestrian"]) == {0.3, 0.5, 0.7} and set(saved["pedestrian"][0.5]) == {"ap", "mrec", "mpre"}
    assert saved["pedestrian"][0.5]["ap"] == pytest.approx(0.5)
    assert saved["pedestrian"][0.5]["mrec"] == pytest.approx([0.0, 0.0, 1.0, 1.0])
    assert saved["pedestrian"][0.5]["mpre"] == pytest.approx([0.5, 0.5, 0.5, 0.0])
    assert saved["truck"][0.7] == {"ap": 0.0, "mrec": [0.0, 1.0], "mpre": [0.0, 0.0]}
    out = capsys.readouterr().out
    assert "pedestrian: AP@0.3 0.5000, AP@0.5 0.5000, AP@0.7 0.5000 (global sort)" in out
    assert "The mean Average Precision (mAP) at IOU 0.5 is 0.5000" in out


def test_per_class_variants_and_class_agnostic_difference():
    """Every box of two_frame_stat as a vehicle: the vehicle class reproduces the single-class APs; a
    class-agnostic match of three_class_stat's frame would have let the pedestrian box match nothing else."""
    stat = E.init_result_stat(classes=["vehicle", "pedestrian"])
    f1 = (corners((0, 0), (50, 50)), np.array([0.3, 0.9]), corners((50, 50), (10, 0)))
    f2 = (corners((21, 0), (-40, 30)), np.array([0.8, 0.6]), corners((20, 0)))
    for det, score, gt in (f1, f2):
        E.calculate_tp_fp_classes(det, score, np.zeros(2), gt, np.zeros(len(gt)), stat)
    single = E.eval_final_results_dict(two_frame_stat())
    table = E.eval_final_results_dict(stat)
    for variant in ("global_sort", "no_global_sort"):
        assert table[variant]["classes"]["vehicle"] == pytest.approx(single[variant])
        assert table[variant]["ap_50"] == pytest.approx(single[variant]["ap_50"] / 2)  # pedestrian: no GT, AP 0
    with pytest.raises(ValueError, match="det_labels has 1 entries for 2 boxes"):
        E.calculate_tp_fp_classes(*f1[:2], np.zeros(1), f1[2], np.zeros(2), stat)
    with pytest.raises(ValueError, match="per-class result_stat"):
        E.calculate_tp_fp_classes(*f1[:2], np.zeros(2), f1[2], np.zeros(2), E.init_result_stat())


def test_eval_final_results_reference_signature(tmp_path):
    """OpenCOOD's positional bool picks the returned variant; HEAL's string names the files."""
    stat = two_frame_stat()
    assert E.eval_final_results(stat, str(tmp_path / "a"), True) == pytest.approx((2 / 3, 2 / 3, 1 / 3))
    local = E.eval_final_results(stat, str(tmp_path / "b"), False)
    assert local[1] == pytest.approx(5 / 9)
    assert sorted(os.listdir(tmp_path / "b")) == ["eval.yaml", "eval_global_sort.yaml"]
    assert E.eval_final_results(stat, str(tmp_path / "c"), "run", global_sort_detections=False)[1] \
        == pytest.approx(5 / 9)
    assert sorted(os.listdir(tmp_path / "c")) == ["eval_global_sort_run.yaml", "eval_run.yaml"]
