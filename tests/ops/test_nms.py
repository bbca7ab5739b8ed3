"""Rotated NMS against a brute-force greedy loop with shapely polygons."""
import numpy as np
import pytest
import torch
from shapely.geometry import Polygon

from opencood.ops.nms import nms_rotated
from opencood.utils.box_utils import boxes_to_corners_3d


def _brute_force(corners, scores, thresh, top_k):
    order = list(np.argsort(-scores, kind="stable")[:top_k])
    polys = [Polygon(c[:4, :2]) for c in corners]
    keep = []
    while order:
        i = order.pop(0)
        keep.append(i)
        order = [j for j in order
                 if polys[i].intersection(polys[j]).area / polys[i].union(polys[j]).area <= thresh]
    return keep


def _clustered_boxes(rng, n):
    centres = rng.uniform(-20, 20, (8, 2))
    boxes = np.zeros((n, 7))
    boxes[:, :2] = centres[rng.integers(0, 8, n)] + rng.normal(0, 0.8, (n, 2))
    boxes[:, 3:6] = [1.56, 1.6, 3.9] * rng.uniform(0.8, 1.2, (n, 3))
    boxes[:, 6] = rng.uniform(-np.pi, np.pi, n)
    return boxes_to_corners_3d(boxes, "hwl")


@pytest.mark.parametrize("thresh", [0.15, 0.5])
def test_nms_matches_brute_force(thresh):
    rng = np.random.default_rng(0)
    corners = _clustered_boxes(rng, 120)
    scores = rng.uniform(0, 1, 120)
    keep = nms_rotated(torch.from_numpy(corners).float(), torch.from_numpy(scores).float(), thresh)
    assert keep.dtype == torch.long
    expect = _brute_force(corners, scores.astype(np.float32), thresh, 1000)
    assert 8 <= len(expect) < 120
    assert keep.tolist() == expect


def test_top_k_quads_and_empty():
    rng = np.random.default_rng(1)
    corners = _clustered_boxes(rng, 50)
    scores = rng.uniform(0, 1, 50)
    quads = torch.from_numpy(corners[:, :4, :2])
    keep = nms_rotated(quads, torch.from_numpy(scores), 0.15, top_k=10)
    assert keep.tolist() == _brute_force(corners, scores, 0.15, 10)
    empty = nms_rotated(torch.zeros(0, 8, 3), torch.zeros(0), 0.15)
    assert empty.shape == (0,) and empty.dtype == torch.long


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_nms_cuda():
    rng = np.random.default_rng(2)
    corners = torch.from_numpy(_clustered_boxes(rng, 300)).float()
    scores = torch.from_numpy(rng.uniform(0, 1, 300)).float()
    keep = nms_rotated(corners.cuda(), scores.cuda(), 0.15)
    assert keep.is_cuda
    assert keep.cpu().tolist() == nms_rotated(corners, scores, 0.15).tolist()
