"""LiDAR world augmentation keeps points and boxes consistent."""
import numpy as np
import pytest

from opencood.data_utils.augmentor.data_augmentor import (
    DataAugmentor, random_world_flip, random_world_rotation, random_world_scaling)
from opencood.ops.points_in_boxes import points_in_boxes
from opencood.utils.errors import ConfigError

BOXES = np.array([[10.0, 5.0, -1.0, 1.5, 2.0, 4.4, 0.3], [-20.0, 3.0, -1.0, 1.5, 2.0, 4.4, -2.8]])


def points_inside():
    """Points on a grid inside each box (box frame -> LiDAR frame)."""
    u = np.stack(np.meshgrid(np.linspace(-0.4, 0.4, 5), np.linspace(-0.4, 0.4, 5), [-0.3, 0.3]), -1).reshape(-1, 3)
    pts = []
    for x, y, z, h, w, l, yaw in BOXES:
        local = u * [l, w, h]
        c, s = np.cos(yaw), np.sin(yaw)
        pts.append(np.stack([x + c * local[:, 0] - s * local[:, 1], y + s * local[:, 0] + c * local[:, 1],
                             z + local[:, 2], np.ones(len(u))], 1))
    return np.concatenate(pts)


@pytest.mark.parametrize("op,arg", [(random_world_flip, ["x", "y"]), (random_world_rotation, [-1.5, 1.5]),
                                    (random_world_scaling, [0.9, 1.1])])
def test_points_stay_inside_their_boxes(op, arg):
    pts = points_inside()
    for seed in range(4):
        boxes, moved = op(BOXES, pts, arg, np.random.default_rng(seed))
        inside = points_in_boxes(moved[:, :3], boxes, order="hwl")  # (M, P)
        assert inside.sum(axis=1).tolist() == [len(pts) // 2] * 2


def test_flip_and_rotation_formulas():
    rng = np.random.default_rng(0)
    b, p = random_world_rotation(BOXES, points_inside(), [0.5, 0.5], rng)
    np.testing.assert_allclose(b[:, 6], BOXES[:, 6] + 0.5)
    np.testing.assert_allclose(np.linalg.norm(b[:, :2], axis=1), np.linalg.norm(BOXES[:, :2], axis=1))
    flipped = [random_world_flip(BOXES, points_inside(), ["y"], np.random.default_rng(s))[0] for s in range(20)]
    changed = [f for f in flipped if f[0, 0] != BOXES[0, 0]]
    assert changed, "p = 0.5 per axis"
    np.testing.assert_allclose(changed[0][:, 0], -BOXES[:, 0])
    np.testing.assert_allclose(np.cos(changed[0][:, 6]), -np.cos(BOXES[:, 6]), atol=1e-9)


def test_augmentor_applies_to_valid_rows_only_and_train_only():
    cfg = [{"NAME": "random_world_scaling", "WORLD_SCALE_RANGE": [2.0, 2.0]}]
    center = np.zeros((4, 7), np.float32)
    center[:2] = BOXES
    d = {"lidar_np": points_inside(), "object_bbx_center": center, "object_bbx_mask": np.array([1, 1, 0, 0.0])}
    out = DataAugmentor(cfg, train=True)(dict(d), np.random.default_rng(0))
    np.testing.assert_allclose(out["object_bbx_center"][:2, :6], BOXES[:, :6] * 2, rtol=1e-6)
    assert np.all(out["object_bbx_center"][2:] == 0)
    same = DataAugmentor(cfg, train=False)(dict(d), np.random.default_rng(0))
    assert same["lidar_np"] is d["lidar_np"]


def test_unknown_augmentation_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown data_augment\\[0\\].NAME 'random_jitter'"):
        DataAugmentor([{"NAME": "random_jitter"}])
    with pytest.raises(ConfigError, match="WORLD_ROT_ANGLE"):
        DataAugmentor([{"NAME": "random_world_rotation"}])
