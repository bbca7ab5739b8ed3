"""Points-in-boxes against a per-point brute force."""
import math

import numpy as np
import pytest
import torch

from opencood.ops.points_in_boxes import points_in_boxes


def _brute(points, boxes, order):
    out = np.zeros((len(boxes), len(points)), dtype=bool)
    for m, b in enumerate(boxes):
        h, w, l = (b[3], b[4], b[5]) if order == "hwl" else (b[5], b[4], b[3])
        c, s = math.cos(b[6]), math.sin(b[6])
        for p, q in enumerate(points):
            dx, dy, dz = q[0] - b[0], q[1] - b[1], q[2] - b[2]
            lx, ly = dx * c + dy * s, -dx * s + dy * c
            out[m, p] = abs(lx) <= l / 2 and abs(ly) <= w / 2 and abs(dz) <= h / 2
    return out


@pytest.mark.parametrize("order", ["hwl", "lwh"])
def test_points_in_boxes_vs_brute_force(order):
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.uniform(-6, 6, (600, 3)), rng.uniform(0, 1, (600, 1))], axis=1)
    boxes = np.zeros((7, 7))
    boxes[:, :3] = rng.uniform(-4, 4, (7, 3))
    boxes[:, 3:6] = rng.uniform(1, 5, (7, 3))
    boxes[:, 6] = rng.uniform(-np.pi, np.pi, 7)
    expect = _brute(points, boxes, order)
    assert expect.sum() > 50
    out_np = points_in_boxes(points, boxes, order)
    assert isinstance(out_np, np.ndarray) and out_np.shape == (7, 600)
    np.testing.assert_array_equal(out_np, expect)
    out_t = points_in_boxes(torch.from_numpy(points), torch.from_numpy(boxes), order)
    np.testing.assert_array_equal(out_t.numpy(), expect)


def test_rotated_box_simple():
    box = torch.tensor([[0.0, 0.0, 0.0, 2.0, 1.0, 4.0, math.pi / 2]])  # l=4 along y after rotation
    pts = torch.tensor([[0.0, 1.9, 0.0], [1.9, 0.0, 0.0], [0.0, 0.0, 1.1]])
    assert points_in_boxes(pts, box).tolist() == [[True, False, False]]
