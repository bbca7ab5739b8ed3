import copy
import math

import numpy as np
import pytest
import torch

from opencood.data_utils.post_processor import build_postprocessor
from opencood.data_utils.post_processor.voxel_postprocessor import (
    VoxelPostprocessor, decode_direction, direction_target, encode_boxes, sort_standup, standup_bev,
    standup_iou_pairs)
from opencood.ops.iou import standup_iou_plus1
from opencood.utils import box_utils
from opencood.utils.errors import ConfigError

RANGE = [-12.8, -6.4, -3.0, 12.8, 6.4, 1.0]


def make_params(**target):
    """A small postprocess section: 64 x 32 voxels of 0.4 m, stride 4 -> 8 x 16 anchor cells."""
    params = {
        "core_method": "VoxelPostprocessor",
        "gt_range": list(RANGE),
        "anchor_args": {"cav_lidar_range": list(RANGE), "l": 3.9, "w": 1.6, "h": 1.56, "r": [0, 90],
                        "feature_stride": 4, "num": 2, "W": 64, "H": 32, "D": 1,
                        "vw": 0.4, "vh": 0.4, "vd": 4.0},
        "target_args": {"pos_threshold": 0.6, "neg_threshold": 0.45, "score_threshold": 0.2},
        "order": "hwl",
        "max_num": 150,
        "nms_thresh": 0.15,
        "dir_args": {"dir_offset": 0.7853, "num_bins": 2, "anchor_yaw": [0, 90]},
    }
    params["target_args"].update(target)
    return params


def padded(boxes, max_num=150):
    center = np.zeros((max_num, 7), dtype=np.float64)
    mask = np.zeros(max_num, dtype=np.float64)
    center[:len(boxes)] = boxes
    mask[:len(boxes)] = 1
    return center, mask


def reference_labels(pp, gt, anchors):
    """Loop-style re-statement of the reference assignment (numpy), for comparison."""
    h, w, a, _ = anchors.shape
    flat = anchors.reshape(-1, 7).astype(np.float64)
    iou = standup_iou_plus1(standup_bev(torch.from_numpy(flat)).numpy(),
                            standup_bev(torch.from_numpy(gt)).numpy(), plus_one=pp.legacy_plus_one)
    id_highest = np.argmax(iou.T, axis=1)
    id_highest_gt = np.arange(iou.T.shape[0])
    ok = iou.T[id_highest_gt, id_highest] > 0
    id_highest, id_highest_gt = id_highest[ok], id_highest_gt[ok]
    id_pos, id_pos_gt = np.where(iou > pp.pos_threshold)
    id_neg = np.where(np.sum(iou < pp.neg_threshold, axis=1) == iou.shape[1])[0]
    id_pos = np.concatenate([id_pos, id_highest])
    id_pos_gt = np.concatenate([id_pos_gt, id_highest_gt])
    id_pos, index = np.unique(id_pos, return_index=True)
    id_pos_gt = id_pos_gt[index]
    pos = np.zeros(h * w * a)
    neg = np.zeros(h * w * a)
    targets = np.zeros((h * w * a, 7))
    pos[id_pos] = 1
    neg[id_neg] = 1
    neg[id_highest] = 0
    for i, g in zip(id_pos, id_pos_gt):
        an = flat[i]
        d = math.sqrt(an[4] ** 2 + an[5] ** 2)
        targets[i] = [(gt[g, 0] - an[0]) / d, (gt[g, 1] - an[1]) / d, (gt[g, 2] - an[2]) / an[3],
                      math.log(gt[g, 3] / an[3]), math.log(gt[g, 4] / an[4]), math.log(gt[g, 5] / an[5]),
                      gt[g, 6] - an[6]]
    return pos.reshape(h, w, a), neg.reshape(h, w, a), targets.reshape(h, w, 7 * a)


def test_anchor_box_shape_and_values():
    pp = VoxelPostprocessor(make_params(), train=True)
    anchors = pp.generate_anchor_box()
    assert anchors.shape == (8, 16, 2, 7) and anchors.dtype == np.float32
    np.testing.assert_allclose(anchors[0, :, 0, 0], np.linspace(-12.4, 12.4, 16), atol=1e-6)
    np.testing.assert_allclose(anchors[:, 0, 1, 1], np.linspace(-6.0, 6.0, 8), atol=1e-6)
    np.testing.assert_allclose(anchors[..., 2], -1.0)
    np.testing.assert_allclose(anchors[3, 4, 0, 3:6], [1.56, 1.6, 3.9], atol=1e-6)
    np.testing.assert_allclose(anchors[3, 4, :, 6], [0.0, math.pi / 2], atol=1e-6)
    params = make_params()
    params["order"] = "lwh"
    lwh = VoxelPostprocessor(params, train=True).generate_anchor_box()
    np.testing.assert_allclose(lwh[3, 4, 0, 3:6], [3.9, 1.6, 1.56], atol=1e-6)


def test_builder_and_config_errors():
    assert isinstance(build_postprocessor(make_params(), True), VoxelPostprocessor)
    params = make_params()
    del params["anchor_args"]["W"]
    with pytest.raises(ConfigError, match="postprocess.anchor_args.W"):
        VoxelPostprocessor(params, True)
    params = make_params()
    params["core_method"] = "NoSuchPostprocessor"
    with pytest.raises(ConfigError, match="NoSuchPostprocessor"):
        build_postprocessor(params, True)


@pytest.mark.parametrize("legacy", [False, True])
def test_gt_identical_to_anchor_is_positive_with_zero_targets(legacy):
    pp = VoxelPostprocessor(make_params(legacy_plus_one=legacy), train=True)
    anchors = pp.generate_anchor_box()
    gt = anchors[3, 5, 1].astype(np.float64)[None]
    center, mask = padded(gt)
    label = pp.generate_label(center, anchors, mask)
    assert label["pos_equal_one"].shape == (8, 16, 2)
    assert label["targets"].shape == (8, 16, 14)
    assert label["pos_equal_one"][3, 5, 1] == 1
    assert label["neg_equal_one"][3, 5, 1] == 0
    assert np.all(label["targets"][3, 5, 7:14] == 0.0)
    # Every positive anchor is a non-negative, and far anchors are negatives.
    assert not np.any((label["pos_equal_one"] == 1) & (label["neg_equal_one"] == 1))
    assert label["neg_equal_one"][0, 0, 0] == 1 and label["pos_equal_one"][0, 0, 0] == 0


def test_empty_gt_gives_all_negative():
    pp = VoxelPostprocessor(make_params(), train=True)
    anchors = pp.generate_anchor_box()
    label = pp.generate_label(np.zeros((150, 7)), anchors, np.zeros(150))
    assert label["pos_equal_one"].sum() == 0 and np.all(label["neg_equal_one"] == 1)
    assert np.all(label["targets"] == 0)


def random_gt(rng, n):
    """Well separated random vehicles inside RANGE (>= 6 m apart in x)."""
    xs = np.array([-9.0, -3.0, 3.0, 9.0])[:n] + rng.uniform(-0.5, 0.5, n)
    ys = rng.uniform(-4.0, 4.0, n)
    zs = rng.uniform(-1.5, -0.5, n)
    dims = np.stack([rng.uniform(1.4, 1.8, n), rng.uniform(1.5, 2.0, n), rng.uniform(3.5, 4.5, n)], 1)
    yaws = rng.uniform(-math.pi, math.pi, n)
    return np.concatenate([np.stack([xs, ys, zs], 1), dims, yaws[:, None]], 1)


@pytest.mark.parametrize("legacy", [False, True])
def test_generate_label_matches_reference_algorithm(legacy):
    rng = np.random.default_rng(0)
    pp = VoxelPostprocessor(make_params(legacy_plus_one=legacy), train=True)
    anchors = pp.generate_anchor_box()
    for _ in range(5):
        gt = random_gt(rng, 4)
        label = pp.generate_label(padded(gt)[0], anchors, padded(gt)[1])
        pos, neg, targets = reference_labels(pp, gt, anchors)
        np.testing.assert_array_equal(label["pos_equal_one"], pos)
        np.testing.assert_array_equal(label["neg_equal_one"], neg)
        np.testing.assert_allclose(label["targets"], targets, atol=1e-6)


def test_legacy_plus_one_vs_exact():
    rng = np.random.default_rng(1)
    exact = VoxelPostprocessor(make_params(), train=True)
    legacy = VoxelPostprocessor(make_params(legacy_plus_one=True), train=True)
    anchors = exact.generate_anchor_box()
    # GT boxes placed exactly on anchors: same positives and targets either way.
    gt = np.stack([anchors[2, 3, 0], anchors[5, 12, 1]]).astype(np.float64)
    a = exact.generate_label(padded(gt)[0], anchors, padded(gt)[1])
    b = legacy.generate_label(padded(gt)[0], anchors, padded(gt)[1])
    np.testing.assert_array_equal(a["pos_equal_one"], b["pos_equal_one"])
    np.testing.assert_array_equal(a["targets"], b["targets"])
    # "+1" inflates IoU: never fewer positives nor more negatives than the exact IoU.
    for _ in range(5):
        gt = random_gt(rng, 4)
        a = exact.generate_label(padded(gt)[0], anchors, padded(gt)[1])
        b = legacy.generate_label(padded(gt)[0], anchors, padded(gt)[1])
        assert np.all(b["neg_equal_one"] <= a["neg_equal_one"])
        assert b["neg_equal_one"].sum() < a["neg_equal_one"].sum()


def test_encode_decode_round_trip():
    rng = np.random.default_rng(2)
    pp = VoxelPostprocessor(make_params(), train=True)
    anchors = pp.generate_anchor_box()
    gt = random_gt(rng, 4)
    label = pp.generate_label(padded(gt)[0], anchors, padded(gt)[1])
    targets = torch.from_numpy(label["targets"])[None]  # (1, H', W', 14)
    pos = label["pos_equal_one"].reshape(-1) == 1
    assert pos.sum() >= 4
    anchors_t = torch.from_numpy(anchors)
    boxes_last = VoxelPostprocessor.delta_to_boxes3d(targets, anchors_t)  # (1, N, 7)
    boxes_first = VoxelPostprocessor.delta_to_boxes3d(targets.permute(0, 3, 1, 2), anchors)
    assert boxes_last.shape == (1, 8 * 16 * 2, 7)
    torch.testing.assert_close(boxes_first, boxes_last)
    decoded = boxes_last[0, torch.from_numpy(pos)].double().numpy()  # (P, 7)
    dist = np.abs(decoded[:, None, :] - gt[None]).max(axis=2)  # (P, M)
    assert np.all(dist.min(axis=1) < 1e-5)
    assert set(dist.argmin(axis=1)) == set(range(4))
    # Module-level coding is the same transform.
    enc = encode_boxes(torch.from_numpy(gt), anchors_t.reshape(-1, 7)[:4].double())
    assert enc.shape == (4, 7)


def test_delta_to_boxes3d_rejects_wrong_shape():
    anchors = VoxelPostprocessor(make_params(), True).generate_anchor_box()
    with pytest.raises(ValueError, match="do not fit"):
        VoxelPostprocessor.delta_to_boxes3d(torch.zeros(1, 14, 4, 4), anchors)


def test_direction_bins_around_pi():
    anchors = torch.zeros(1, 6, 7)
    yaws = torch.tensor([math.pi - 0.01, -math.pi + 0.01, 0.0, math.pi / 2, -math.pi / 2, 0.79])
    reg = torch.zeros(1, 6, 7)
    reg[..., 6] = yaws
    bins = direction_target(anchors, reg, 0.7853, 2)
    assert bins.dtype == torch.long
    assert bins.tolist() == [[0, 0, 1, 0, 1, 0]]
    # (H', W', A, 7) anchors broadcast over the batch.
    grid = torch.zeros(1, 3, 2, 7)
    grid[..., 6] = math.pi / 2
    reg2 = torch.zeros(2, 6, 7)
    reg2[..., 6] = torch.tensor([0.0, math.pi - 0.01, -math.pi / 2, 0.0, 0.0, 0.0])
    assert direction_target(grid, reg2, 0.7853, 2).shape == (2, 6)


def test_decode_direction_recovers_heading():
    rng = np.random.default_rng(3)
    true = torch.from_numpy(rng.uniform(-math.pi, math.pi, 400))
    # Stay away from the bin boundaries (yaw - offset = k*pi), where either answer is right.
    far = (torch.remainder(true - 0.7853, math.pi) - math.pi / 2).abs() < math.pi / 2 - 1e-3
    true = true[far]
    flipped = true + math.pi * torch.from_numpy(rng.integers(0, 2, true.numel())) \
        + 2 * math.pi * torch.from_numpy(rng.integers(-1, 2, true.numel()))
    bins = direction_target(torch.zeros(true.numel(), 7), torch.stack(
        [torch.zeros_like(true)] * 6 + [true], dim=1)[None], 0.7853, 2)[0]
    out = decode_direction(flipped, bins, 0.7853, 2)
    assert torch.all(out >= -math.pi) and torch.all(out < math.pi)
    torch.testing.assert_close(out, true, atol=1e-6, rtol=0)


def synthetic_outputs(pp, anchors, boxes, logits):
    """Head maps whose positive anchors of each box decode to that box with the given logit."""
    h, w, a, _ = anchors.shape
    cls = torch.full((h, w, a), -10.0)
    reg = torch.zeros(h, w, a, 7)
    dirs = torch.zeros(h, w, a, 2)
    for box, logit in zip(boxes, logits):
        label = pp.generate_label(padded(box[None])[0], anchors, padded(box[None])[1])
        pos = torch.from_numpy(label["pos_equal_one"] == 1)  # (H', W', A)
        targets = torch.from_numpy(label["targets"]).reshape(h, w, a, 7)
        cls[pos] = logit
        reg[pos] = targets[pos]
        bins = direction_target(torch.from_numpy(anchors).reshape(1, -1, 7), targets.reshape(1, -1, 7),
                                0.7853, 2).reshape(h, w, a)
        one_hot = torch.nn.functional.one_hot(bins, 2).float() * 5
        dirs[pos] = one_hot[pos]
        # Regress the flipped heading: the direction head must restore it.
        reg[..., 6][pos] = torch.remainder(reg[..., 6][pos] + math.pi, 2 * math.pi)
    return {"cls_preds": cls.permute(2, 0, 1)[None],  # (1, A, H', W')
            "reg_preds": reg.reshape(h, w, a * 7).permute(2, 0, 1)[None],  # (1, 7A, H', W')
            "dir_preds": dirs.reshape(h, w, a * 2).permute(2, 0, 1)[None]}  # (1, 2A, H', W')


def match(pred, boxes):
    """Max corner distance of each expected box to its nearest prediction."""
    gt = box_utils.boxes_to_corners_3d(torch.from_numpy(boxes).float(), "hwl")  # (M, 8, 3)
    dist = (pred[None] - gt[:, None]).norm(dim=-1).amax(dim=-1)  # (M, K)
    return dist.amin(dim=1)


def test_post_process_returns_known_boxes():
    params = make_params()
    params["gt_range"] = [-12.8, -6.4, -3.0, 6.0, 6.4, 1.0]
    pp = VoxelPostprocessor(params, train=False)
    anchors = pp.generate_anchor_box()
    boxes = np.array([[-8.0, -2.0, -1.2, 1.5, 1.7, 4.0, 0.3],
                      [-1.0, 2.5, -0.9, 1.6, 1.8, 4.2, -2.9],
                      [4.0, -1.0, -1.0, 1.5, 1.6, 3.8, 1.7],
                      [-5.0, 3.0, -1.0, 1.5, 1.6, 3.8, 0.0],  # below the score threshold
                      [10.0, 0.0, -1.0, 1.5, 1.6, 3.8, 0.0]])  # outside gt_range in x
    logits = [3.0, 2.0, 1.0, math.log(0.19 / 0.81), 4.0]
    out = synthetic_outputs(pp, anchors, boxes, logits)
    data = {"ego": {"anchor_box": torch.from_numpy(anchors), "transformation_matrix": torch.eye(4)}}
    pred, scores = pp.post_process(data, {"ego": out})
    assert pred.shape == (3, 8, 3) and scores.shape == (3,)
    assert torch.all(match(pred, boxes[:3]) < 1e-4)
    torch.testing.assert_close(scores.sort(descending=True).values, torch.sigmoid(torch.tensor([3.0, 2.0, 1.0])))

    # Late fusion: a second agent 2 m ahead in x whose own frame sees one box.
    tfm = torch.eye(4, dtype=torch.float64)
    tfm[0, 3] = 2.0
    cav_box = np.array([[0.0, -4.0, -1.0, 1.5, 1.6, 3.8, 0.5]])
    data["cav_1"] = {"anchor_box": torch.from_numpy(anchors), "transformation_matrix": tfm}
    outputs = {"ego": out, "cav_1": synthetic_outputs(pp, anchors, cav_box, [2.5])}
    pred, scores = pp.post_process(data, outputs)
    expected = np.concatenate([boxes[:3], cav_box + np.array([[2.0, 0, 0, 0, 0, 0, 0]])])
    assert pred.shape == (4, 8, 3)
    assert torch.all(match(pred, expected) < 1e-4)


def test_post_process_nothing_survives():
    pp = VoxelPostprocessor(make_params(), train=False)
    anchors = pp.generate_anchor_box()
    out = {"cls_preds": torch.full((1, 2, 8, 16), -5.0), "reg_preds": torch.zeros(1, 14, 8, 16)}
    data = {"ego": {"anchor_box": torch.from_numpy(anchors), "transformation_matrix": torch.eye(4)}}
    assert pp.post_process(data, {"ego": out}) == (None, None)


def test_generate_gt_bbx_dedups_and_filters():
    params = make_params()
    params["gt_range"] = [-12.8, -6.4, -3.0, 10.0, 6.4, 1.0]
    pp = VoxelPostprocessor(params, train=False)
    ego_boxes = np.array([[0.0, 0.0, -1.0, 1.5, 1.6, 4.0, 0.0],
                          [5.0, 2.0, -1.0, 1.5, 1.6, 4.0, 0.5]])
    center, mask = padded(ego_boxes)
    tfm = torch.eye(4)
    tfm[0, 3] = 3.0
    cav_boxes = np.array([[2.0, 2.0, -1.0, 1.5, 1.6, 4.0, 0.5],  # id 7 again (seen by both)
                          [-6.0, -3.0, -1.0, 1.5, 1.6, 4.0, 0.0],  # id 9 -> x = -3 in ego
                          [8.5, 0.0, -1.0, 1.5, 1.6, 4.0, 0.0]])  # id 11 -> x = 11.5, out of range
    c2, m2 = padded(cav_boxes)
    data = {"ego": {"object_bbx_center": torch.from_numpy(center)[None], "object_bbx_mask":
                    torch.from_numpy(mask)[None], "object_ids": [3, 7], "transformation_matrix_clean": torch.eye(4)},
            "cav_1": {"object_bbx_center": torch.from_numpy(c2), "object_bbx_mask": torch.from_numpy(m2),
                      "object_ids": [7, 9, 11], "transformation_matrix": torch.eye(4),
                      "transformation_matrix_clean": tfm}}
    gt = pp.generate_gt_bbx(data)
    expected = np.array([ego_boxes[0], ego_boxes[1], [-3.0, -3.0, -1.0, 1.5, 1.6, 4.0, 0.0]])
    assert gt.shape == (3, 8, 3)
    torch.testing.assert_close(gt, box_utils.boxes_to_corners_3d(torch.from_numpy(expected).float(), "hwl"))
    bad = copy.deepcopy(data)
    bad["cav_1"]["object_ids"] = [7]
    with pytest.raises(Exception, match="object ids"):
        pp.generate_gt_bbx(bad)


def test_collate_batch():
    pp = VoxelPostprocessor(make_params(), train=True)
    anchors = pp.generate_anchor_box()
    labels = [pp.generate_label(np.zeros((150, 7)), anchors, np.zeros(150)) for _ in range(3)]
    batch = VoxelPostprocessor.collate_batch(labels)
    assert batch["pos_equal_one"].shape == (3, 8, 16, 2)
    assert batch["neg_equal_one"].shape == (3, 8, 16, 2)
    assert batch["targets"].shape == (3, 8, 16, 14)
    assert batch["targets"].dtype == torch.float32


@pytest.mark.parametrize("plus_one", [False, True])
def test_standup_iou_pairs_equals_dense(plus_one):
    rng = np.random.default_rng(4)
    lo_a = rng.uniform(-20, 20, (300, 2))
    a = np.concatenate([lo_a, lo_a + rng.uniform(0.2, 5, (300, 2))], 1)
    lo_b = rng.uniform(-20, 20, (40, 2))
    b = np.concatenate([lo_b, lo_b + rng.uniform(0.2, 5, (40, 2))], 1)
    b[0] = [a[0, 2] + 0.5, a[0, 1], a[0, 2] + 2.0, a[0, 3]]  # 0.5 m gap: IoU > 0 only with "+1"
    dense = standup_iou_plus1(a, b, plus_one=plus_one)
    ia, ib, iou = standup_iou_pairs(torch.from_numpy(a), torch.from_numpy(b), plus_one)
    sparse = np.zeros_like(dense)
    sparse[ia.numpy(), ib.numpy()] = iou.numpy()
    np.testing.assert_allclose(sparse, dense, rtol=0, atol=1e-12)
    assert (dense > 0).sum() == ia.numel()
    assert (dense[0, 0] > 0) == plus_one


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_labels_and_post_process_on_cuda_match_cpu():
    pp = VoxelPostprocessor(make_params(), train=False)
    anchors = pp.generate_anchor_box()
    gt = random_gt(np.random.default_rng(5), 4)
    cpu = pp.generate_label_torch(torch.from_numpy(gt), torch.from_numpy(anchors).double())
    gpu = pp.generate_label_torch(torch.from_numpy(gt).cuda(), torch.from_numpy(anchors).double().cuda())
    for key in cpu:
        assert gpu[key].is_cuda
        torch.testing.assert_close(gpu[key].cpu(), cpu[key])
    out = synthetic_outputs(pp, anchors, gt[:3], [3.0, 2.0, 1.0])
    data = {"ego": {"anchor_box": torch.from_numpy(anchors), "transformation_matrix": torch.eye(4)}}
    box_cpu, score_cpu = pp.post_process(data, {"ego": out})
    box_gpu, score_gpu = pp.post_process(data, {"ego": {k: v.cuda() for k, v in out.items()}})
    assert box_gpu.is_cuda and score_gpu.is_cuda
    torch.testing.assert_close(box_gpu.cpu(), box_cpu, atol=1e-4, rtol=0)
    torch.testing.assert_close(score_gpu.cpu(), score_cpu)


@pytest.mark.parametrize("plus_one", [False, True])
def test_standup_iou_pairs_with_reused_index_equals_dense(plus_one):
    """Grid-like, clustered, zero-width and far-away boxes; the index is built once and reused."""
    rng = np.random.default_rng(7)
    xs, ys = np.meshgrid(np.linspace(-20, 20, 21), np.linspace(-10, 10, 11))
    centres = np.stack([xs.ravel(), ys.ravel()], 1)
    sizes = np.where(rng.uniform(size=(len(centres), 1)) < 0.5, [[3.9, 1.6]], [[1.6, 3.9]])
    a = np.concatenate([centres - sizes / 2, centres + sizes / 2], 1)
    a[:5, 2] = a[:5, 0]  # zero width
    index = sort_standup(torch.from_numpy(a))
    for trial in range(6):
        m = int(rng.integers(1, 30))
        lo = rng.uniform(-25, 25, (m, 2)) * (0.1 if trial == 1 else 1.0)  # trial 1: clustered queries
        b = np.concatenate([lo, lo + rng.uniform(0.0, 6.0, (m, 2))], 1)
        if trial == 2:
            b[0] = [100, 100, 101, 101]  # far outside every strip
        dense = standup_iou_plus1(a, b, plus_one=plus_one)
        for idx in (None, index):
            ia, ib, iou = standup_iou_pairs(torch.from_numpy(a), torch.from_numpy(b), plus_one, idx)
            sparse = np.zeros_like(dense)
            sparse[ia.numpy(), ib.numpy()] = iou.numpy()
            np.testing.assert_allclose(sparse, dense, rtol=0, atol=1e-12)
            assert (dense > 0).sum() == ia.numel()
            assert torch.all(ib[1:] >= ib[:-1])


def test_label_anchor_cache_follows_anchor_values():
    rng = np.random.default_rng(2)
    pp = VoxelPostprocessor(make_params(), train=True)
    anchors = pp.generate_anchor_box()
    gt = random_gt(rng, 4)
    first = pp.generate_label(padded(gt)[0], anchors, padded(gt)[1])
    assert pp.generate_label(padded(gt)[0], anchors.copy(), padded(gt)[1])["targets"].tobytes() == \
        first["targets"].tobytes()
    anchors[..., 0] += 1.0  # edited in place: the cached search index must not be reused
    moved = pp.generate_label(padded(gt)[0], anchors, padded(gt)[1])
    pos, neg, targets = reference_labels(pp, gt, anchors)
    np.testing.assert_array_equal(moved["pos_equal_one"], pos)
    np.testing.assert_array_equal(moved["neg_equal_one"], neg)
    np.testing.assert_allclose(moved["targets"], targets, atol=1e-6)


def test_nms_per_class_keeps_overlapping_boxes_of_other_classes():
    """Three boxes on one spot: vehicle 0.9, vehicle 0.8 (suppressed either way), pedestrian 0.7 (suppressed by
    the class-agnostic NMS only); the survivors stay sorted by score."""
    params = make_params()
    anchor_args = params["anchor_args"]
    for key in ("l", "w", "h", "r", "num"):
        anchor_args.pop(key)
    anchor_args["classes"] = [{"name": "vehicle", "l": 3.9, "w": 1.6, "h": 1.56, "r": [0, 90]},
                              {"name": "pedestrian", "l": 0.8, "w": 0.6, "h": 1.73, "r": [0, 90]}]
    params["dir_args"]["anchor_yaw"] = [0, 90, 0, 90]
    boxes = torch.tensor([[5.0, 0.0, -1.0, 1.5, 2.0, 4.0, 0.0], [5.2, 0.0, -1.0, 1.5, 2.0, 4.0, 0.0],
                          [5.0, 0.0, -1.0, 1.5, 2.0, 4.0, 0.0]])
    corners = box_utils.boxes_to_corners_3d(boxes, "hwl")
    scores, labels = torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 0, 1])
    agnostic = VoxelPostprocessor(params, train=False)
    assert agnostic._filter(corners, scores, labels)[2].tolist() == [0]
    per_class = VoxelPostprocessor(dict(params, nms_per_class=True), train=False)
    _, kept_scores, kept_labels = per_class._filter(corners, scores, labels)
    assert kept_labels.tolist() == [0, 1] and kept_scores.tolist() == pytest.approx([0.9, 0.7])
