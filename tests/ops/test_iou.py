"""Rotated / axis-aligned BEV IoU against shapely and hand-computed cases."""
import numpy as np
import pytest
import torch
from shapely.geometry import Polygon

from opencood.ops.iou import (boxes_iou_bev, corners_iou_bev, corners_iou_bev_np, corners_iou_bev_pairs_np,
                              standup_iou_plus1)
from opencood.utils.box_utils import boxes_to_corners2d


def _random_boxes(rng, n, spread=6.0):
    boxes = np.zeros((n, 7))
    boxes[:, :2] = rng.uniform(-spread, spread, (n, 2))
    boxes[:, 3:6] = rng.uniform(0.5, 5.0, (n, 3))
    boxes[:, 6] = rng.uniform(-np.pi, np.pi, n)
    return boxes


def _shapely_iou(qa, qb):
    out = np.zeros((len(qa), len(qb)))
    for i, a in enumerate(qa):
        pa = Polygon(a[:, :2])
        for j, b in enumerate(qb):
            pb = Polygon(b[:, :2])
            union = pa.union(pb).area
            out[i, j] = pa.intersection(pb).area / union if union > 0 else 0.0
    return out


def test_random_rotated_vs_shapely():
    rng = np.random.default_rng(0)
    a = boxes_to_corners2d(_random_boxes(rng, 60), "hwl")
    b = boxes_to_corners2d(_random_boxes(rng, 50), "hwl")
    ours = corners_iou_bev_np(a, b)
    ref = _shapely_iou(a, b)
    assert ours.dtype == np.float64 and ours.shape == (60, 50)
    assert (ref > 0).sum() > 100  # the test must exercise real overlaps
    np.testing.assert_allclose(ours, ref, atol=1e-9)


def test_special_cases():
    base = np.array([[0.0, 0.0, 0.0, 1.5, 2.0, 4.0, 0.3]])
    cases = np.concatenate([
        base,                                              # identical
        base + [[20.0, 0, 0, 0, 0, 0, 0]],                 # disjoint
        np.array([[0.1, 0.1, 0.0, 1.5, 1.0, 2.0, 0.3]]),   # contained
        np.array([[4.0 * np.cos(0.3), 4.0 * np.sin(0.3), 0, 1.5, 2.0, 4.0, 0.3]]),  # touching along an edge
        np.array([[0.0, 0.0, 0.0, 1.5, 2.0, 4.0, 0.3 + np.pi]]),  # same box, opposite heading
        np.array([[0.0, 0.0, 0.0, 1.5, 2.0, 4.0, 0.3 + np.pi / 2]]),  # cross shape
    ])
    qa = boxes_to_corners2d(base, "hwl")
    qb = boxes_to_corners2d(cases, "hwl")
    ours = corners_iou_bev_np(qa, qb)[0]
    ref = _shapely_iou(qa, qb)[0]
    np.testing.assert_allclose(ours, ref, atol=1e-9)
    np.testing.assert_allclose(ours[[0, 1, 2, 3, 4]], [1.0, 0.0, 2.0 / 8.0, 0.0, 1.0], atol=1e-9)


def test_axis_aligned_identical_edges_and_winding():
    sq = np.array([[[0, 0], [2, 0], [2, 2], [0, 2]]], dtype=float)
    shifted = sq + [1.0, 0.0]  # shares the y edges' lines
    np.testing.assert_allclose(corners_iou_bev_np(sq, sq[:, ::-1]), [[1.0]])  # clockwise input
    np.testing.assert_allclose(corners_iou_bev_np(sq, shifted), [[2.0 / 6.0]])


def test_degenerate_boxes_no_nan():
    zero = np.zeros((1, 4, 2))
    line = np.array([[[0, 0], [1, 0], [1, 0], [0, 0]]], dtype=float)
    sq = np.array([[[0, 0], [2, 0], [2, 2], [0, 2]]], dtype=float)
    out = corners_iou_bev_np(np.concatenate([zero, line]), np.concatenate([zero, line, sq]))
    assert np.isfinite(out).all() and (out == 0).all()
    assert corners_iou_bev_np(np.zeros((0, 4, 2)), sq).shape == (0, 1)


def test_pairs_and_torch_match_dense():
    rng = np.random.default_rng(1)
    a = boxes_to_corners2d(_random_boxes(rng, 30, 3.0), "hwl")
    b = boxes_to_corners2d(_random_boxes(rng, 30, 3.0), "hwl")
    dense = corners_iou_bev_np(a, b)
    np.testing.assert_allclose(corners_iou_bev_pairs_np(a, b), np.diag(dense), atol=1e-12)
    t = corners_iou_bev(torch.from_numpy(a).float(), torch.from_numpy(b).float())
    assert t.dtype == torch.float32
    np.testing.assert_allclose(t.numpy(), dense, atol=1e-6)
    # (N, 8, 3) corners are accepted directly (bottom face used).
    boxes = _random_boxes(rng, 10, 3.0)
    np.testing.assert_allclose(boxes_iou_bev(torch.from_numpy(boxes), torch.from_numpy(boxes)).diagonal().numpy(),
                               np.ones(10), atol=1e-9)


def test_lwh_order_same_result():
    rng = np.random.default_rng(2)
    hwl = _random_boxes(rng, 12, 3.0)
    lwh = hwl[:, [0, 1, 2, 5, 4, 3, 6]]
    a = boxes_iou_bev(torch.from_numpy(hwl), torch.from_numpy(hwl), "hwl")
    b = boxes_iou_bev(torch.from_numpy(lwh), torch.from_numpy(lwh), "lwh")
    torch.testing.assert_close(a, b)


def test_standup_plus1_matches_legacy_loop():
    rng = np.random.default_rng(3)
    a = np.sort(rng.uniform(-5, 5, (20, 2, 2)), axis=1).transpose(0, 2, 1).reshape(20, 4)[:, [0, 2, 1, 3]]
    b = np.sort(rng.uniform(-5, 5, (15, 2, 2)), axis=1).transpose(0, 2, 1).reshape(15, 4)[:, [0, 2, 1, 3]]
    ref = np.zeros((20, 15))
    for n in range(20):
        for k in range(15):
            iw = min(a[n, 2], b[k, 2]) - max(a[n, 0], b[k, 0]) + 1
            ih = min(a[n, 3], b[k, 3]) - max(a[n, 1], b[k, 1]) + 1
            if iw > 0 and ih > 0:
                ua = (a[n, 2] - a[n, 0] + 1) * (a[n, 3] - a[n, 1] + 1) + (b[k, 2] - b[k, 0] + 1) * (
                    b[k, 3] - b[k, 1] + 1) - iw * ih
                ref[n, k] = iw * ih / ua
    np.testing.assert_allclose(standup_iou_plus1(a, b), ref, atol=1e-12)
    torch_out = standup_iou_plus1(torch.from_numpy(a), torch.from_numpy(b))
    np.testing.assert_allclose(torch_out.numpy(), ref, atol=1e-12)


def test_standup_exact():
    a = np.array([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    b = np.array([[1.0, 0.0, 3.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    out = standup_iou_plus1(a, b, plus_one=False)
    np.testing.assert_allclose(out, [[1.0 / 3.0, 0.0], [0.0, 0.0]])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(4)
    a = torch.from_numpy(boxes_to_corners2d(_random_boxes(rng, 200), "hwl"))
    b = torch.from_numpy(boxes_to_corners2d(_random_boxes(rng, 150), "hwl"))
    torch.testing.assert_close(corners_iou_bev(a.cuda(), b.cuda()).cpu(), corners_iou_bev(a, b))
