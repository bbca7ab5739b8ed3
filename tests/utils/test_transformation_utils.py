"""Pose maths: CARLA matrix, inverse, composition, batched torch twin, pairwise and affine matrices."""
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

from opencood.utils.transformation_utils import (dist_two_pose, get_pairwise_transformation, normalize_pairwise_tfm,
                                                 pose_to_tfm, tfm_to_pose, x1_to_x2, x_to_world)


def _random_poses(rng, n):
    poses = np.zeros((n, 6))
    poses[:, :3] = rng.uniform(-100, 100, (n, 3))
    poses[:, 3] = rng.uniform(-80, 80, n)     # roll
    poses[:, 4] = rng.uniform(-179, 179, n)   # yaw
    poses[:, 5] = rng.uniform(-80, 80, n)     # pitch
    return poses


def test_x_to_world_is_rigid_and_matches_yaw_convention():
    T = x_to_world([1.0, 2.0, 3.0, 0.0, 90.0, 0.0])
    # yaw +90 deg turns +x toward +y: the frame's x axis points along world +y.
    np.testing.assert_allclose(T @ [1, 0, 0, 1], [1, 3, 3, 1], atol=1e-12)
    rng = np.random.default_rng(0)
    for pose in _random_poses(rng, 20):
        R = x_to_world(list(pose))[:3, :3]
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert abs(np.linalg.det(R) - 1) < 1e-12


def test_pitch_and_roll_directions():
    # CARLA matrix: pitch +90 turns the frame's x axis up; roll +90 turns its y axis down (row2 = [sp, -cp*sr, .]).
    T = x_to_world([0, 0, 0, 0, 0, 90.0])
    np.testing.assert_allclose(T[:3, 0], [0, 0, 1], atol=1e-12)
    T = x_to_world([0, 0, 0, 90.0, 0, 0])
    np.testing.assert_allclose(T[:3, 1], [0, 0, -1], atol=1e-12)


def test_tfm_to_pose_round_trip():
    rng = np.random.default_rng(1)
    for pose in _random_poses(rng, 50):
        np.testing.assert_allclose(tfm_to_pose(x_to_world(pose)), pose, atol=1e-9)


def test_x1_to_x2_composition_and_inverse():
    rng = np.random.default_rng(2)
    a, b, c = _random_poses(rng, 3)
    np.testing.assert_allclose(x1_to_x2(b, c) @ x1_to_x2(a, b), x1_to_x2(a, c), atol=1e-9)
    np.testing.assert_allclose(x1_to_x2(a, b) @ x1_to_x2(b, a), np.eye(4), atol=1e-9)
    p_a = np.array([1.0, -2.0, 0.5, 1.0])
    np.testing.assert_allclose(x_to_world(b) @ x1_to_x2(a, b) @ p_a, x_to_world(a) @ p_a, atol=1e-9)
    np.testing.assert_allclose(x1_to_x2(x_to_world(a), x_to_world(b)), x1_to_x2(a, b), atol=1e-12)


def test_pose_to_tfm_equals_x_to_world_and_is_differentiable():
    rng = np.random.default_rng(3)
    poses = _random_poses(rng, 8)
    t = torch.from_numpy(poses).requires_grad_(True)
    out = pose_to_tfm(t)
    np.testing.assert_allclose(out.detach().numpy(), np.stack([x_to_world(p) for p in poses]), atol=1e-12)
    out.sum().backward()
    assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    three = pose_to_tfm(torch.tensor([[1.0, 2.0, 30.0]], dtype=torch.float64))
    np.testing.assert_allclose(three[0].numpy(), x_to_world([1, 2, 0, 0, 30, 0]), atol=1e-12)


def test_get_pairwise_transformation():
    rng = np.random.default_rng(4)
    poses = _random_poses(rng, 3)
    data = OrderedDict((str(i), {"params": {"lidar_pose": list(p)}}) for i, p in enumerate(poses))
    pw = get_pairwise_transformation(data, 5, False)
    assert pw.shape == (5, 5, 4, 4)
    for i in range(3):
        for j in range(3):
            np.testing.assert_allclose(pw[i, j], x1_to_x2(poses[i], poses[j]), atol=1e-9)
    np.testing.assert_array_equal(pw[3:], np.eye(4)[None, None].repeat(2, 0).repeat(5, 1))
    np.testing.assert_array_equal(get_pairwise_transformation(data, 2, True), np.tile(np.eye(4), (2, 2, 1, 1)))
    assert get_pairwise_transformation(data, 2, False).shape == (2, 2, 4, 4)


def _hot_map(H, W, row, col):
    m = torch.zeros(1, 1, H, W)
    m[0, 0, row, col] = 1.0
    return m


def _cell_to_xy(row, col, H, W, r):
    return (col + 0.5) * r - W * r / 2, (row + 0.5) * r - H * r / 2


def _xy_to_cell(x, y, H, W, r):
    return int(round((y + H * r / 2) / r - 0.5)), int(round((x + W * r / 2) / r - 0.5))


def _warp(feature, theta):
    grid = F.affine_grid(theta[None], list(feature.shape), align_corners=False)
    return F.grid_sample(feature, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def test_normalize_pairwise_tfm_moves_hot_cell():
    H, W, r = 16, 24, 0.5
    ego = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    for cav, (row, col) in [([2.0, -1.5, 0.0, 0.0, 0.0, 0.0], (5, 7)),
                            ([1.0, 0.5, 0.0, 0.0, 90.0, 0.0], (9, 13)),
                            ([-1.0, 1.0, 0.0, 0.0, 180.0, 0.0], (6, 10))]:
        # pairwise[0, 1] = T_{cav <- ego}; batch of one, two agents.
        pair = np.stack([np.stack([np.eye(4), x1_to_x2(ego, cav)]), np.stack([x1_to_x2(cav, ego), np.eye(4)])])
        theta = normalize_pairwise_tfm(torch.from_numpy(pair)[None].float(), H, W, r)
        assert theta.shape == (1, 2, 2, 2, 3)
        # A hot cell in the cav's map must land where its metric point sits in the ego frame.
        x, y = _cell_to_xy(row, col, H, W, r)
        x_e, y_e, _, _ = x1_to_x2(cav, ego) @ [x, y, 0.0, 1.0]
        warped = _warp(_hot_map(H, W, row, col), theta[0, 0, 1])
        assert warped.max() > 0.99
        got = np.unravel_index(int(warped.argmax()), (H, W))
        assert tuple(int(v) for v in got) == _xy_to_cell(x_e, y_e, H, W, r)
    # Same result when H, W are given in metres with ratio 1 (HEAL convention).
    t1 = normalize_pairwise_tfm(torch.from_numpy(pair)[None], H * r, W * r, 1.0)
    t2 = normalize_pairwise_tfm(torch.from_numpy(pair)[None], H, W, r)
    torch.testing.assert_close(t1, t2)
    t3 = normalize_pairwise_tfm(torch.from_numpy(pair)[None], H // 2, W // 2, r, downsample_rate=2)
    torch.testing.assert_close(t3, t2)


def test_dist_two_pose():
    assert dist_two_pose([0, 0, 5, 0, 10, 0], [3, 4, -2, 0, 50, 0]) == 5.0


def test_x_to_world_batched_equals_single():
    rng = np.random.default_rng(3)
    poses = rng.uniform(-200, 200, (50, 6))
    batched = x_to_world(poses)
    assert batched.shape == (50, 4, 4) and batched.dtype == np.float64
    for pose, tfm in zip(poses, batched):
        np.testing.assert_array_equal(tfm, x_to_world(pose))
        np.testing.assert_array_equal(tfm, x_to_world(pose.tolist()))
    assert x_to_world(poses[:0]).shape == (0, 4, 4)
