"""Pose and transformation maths in the CARLA/UE4 frame convention.

Frames are left-handed: x forward, y right, z up; a positive yaw turns +x toward +y. A pose is the
6-vector ``[x, y, z, roll, yaw, pitch]`` in metres and **degrees** (the order OpenCDA writes in the agent
YAML ``lidar_pose``). ``T_w_a = x_to_world(pose_a)`` maps homogeneous points of frame ``a`` to the world;
``x1_to_x2(a, b)`` maps points of frame ``a`` to frame ``b``.
"""
import numpy as np
import torch


def _pose_array(pose):
    """Return ``pose`` as a float64 array of 6 numbers, or a (4, 4) matrix unchanged (float64)."""
    arr = np.asarray(pose, dtype=np.float64)
    if arr.shape not in ((6,), (4, 4)):
        raise ValueError(f"expected a pose [x, y, z, roll, yaw, pitch] or a 4x4 matrix, got shape {arr.shape}")
    return arr


def _world_rows(x, y, z, roll, yaw, pitch):
    """The 12 upper entries of T_world<-pose, row by row, for scalar or (N,) inputs (metres, degrees)."""
    roll, yaw, pitch = np.radians(roll), np.radians(yaw), np.radians(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    return (cp * cy, cy * sp * sr - sy * cr, -cy * sp * cr - sy * sr, x,
            sy * cp, sy * sp * sr + cy * cr, -sy * sp * cr + cy * sr, y,
            sp, -cp * sr, cp * cr, z)


def x_to_world(pose):
    """Pose(s) -> homogeneous matrix from that frame to the world (CARLA ``Transform.get_matrix``).

    Args:
        pose: ``[x, y, z, roll, yaw, pitch]`` (list, tuple or array), metres and degrees; or an (N, 6)
            array of such poses.

    Returns:
        (4, 4) float64 matrix T_world<-pose, or (N, 4, 4) for (N, 6) input.
    """
    arr = np.asarray(pose, dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] == 6:
        tfm = np.zeros((arr.shape[0], 4, 4), dtype=np.float64)  # (N, 4, 4)
        tfm[:, :3, :] = np.stack(_world_rows(*arr.T), axis=1).reshape(-1, 3, 4)
        tfm[:, 3, 3] = 1.0
        return tfm
    return np.array(_world_rows(*_pose_array(arr).reshape(6)) + (0.0, 0.0, 0.0, 1.0),
                    dtype=np.float64).reshape(4, 4)


def _to_world(pose_or_matrix):
    """T_world<-frame from a 6-vector pose or an already built (4, 4) matrix."""
    arr = _pose_array(pose_or_matrix)
    return arr if arr.shape == (4, 4) else x_to_world(arr)


def x1_to_x2(x1, x2):
    """Transformation that maps points of frame ``x1`` into frame ``x2``.

    Args:
        x1: pose 6-vector (metres, degrees) of the source frame in the world, or its (4, 4) T_world<-x1.
        x2: pose 6-vector of the target frame, or its (4, 4) T_world<-x2.

    Returns:
        (4, 4) float64 T_x2<-x1 = inv(T_world<-x2) @ T_world<-x1.
    """
    return np.linalg.inv(_to_world(x2)) @ _to_world(x1)


def tfm_to_pose(tfm):
    """Exact inverse of :func:`x_to_world`.

    Args:
        tfm: (4, 4) rigid transformation T_world<-frame.

    Returns:
        (6,) float64 ``[x, y, z, roll, yaw, pitch]``, metres and degrees (angles in (-180, 180]).
    """
    m = np.asarray(tfm, dtype=np.float64)
    yaw = np.degrees(np.arctan2(m[1, 0], m[0, 0]))
    roll = np.degrees(np.arctan2(-m[2, 1], m[2, 2]))
    pitch = np.degrees(np.arctan2(m[2, 0], np.hypot(m[2, 1], m[2, 2])))
    return np.array([m[0, 3], m[1, 3], m[2, 3], roll, yaw, pitch], dtype=np.float64)


def pose_to_tfm(poses):
    """Batched, differentiable :func:`x_to_world` in torch.

    Args:
        poses: (N, 6) ``[x, y, z, roll, yaw, pitch]`` (metres, degrees), or (N, 3) ``[x, y, yaw]``
            (z, roll and pitch taken as 0).

    Returns:
        (N, 4, 4) T_world<-pose, same dtype and device as ``poses``.
    """
    if poses.shape[-1] == 3:
        zeros = torch.zeros_like(poses[:, 0])
        poses = torch.stack([poses[:, 0], poses[:, 1], zeros, zeros, poses[:, 2], zeros], dim=1)  # (N, 6)
    x, y, z = poses[:, 0], poses[:, 1], poses[:, 2]  # (N,) each
    roll, yaw, pitch = torch.deg2rad(poses[:, 3]), torch.deg2rad(poses[:, 4]), torch.deg2rad(poses[:, 5])
    cr, sr = torch.cos(roll), torch.sin(roll)
    cy, sy = torch.cos(yaw), torch.sin(yaw)
    cp, sp = torch.cos(pitch), torch.sin(pitch)
    zeros, ones = torch.zeros_like(x), torch.ones_like(x)
    rows = [
        cp * cy, cy * sp * sr - sy * cr, -cy * sp * cr - sy * sr, x,
        sy * cp, sy * sp * sr + cy * cr, -sy * sp * cr + cy * sr, y,
        sp, -cp * sr, cp * cr, z,
        zeros, zeros, zeros, ones,
    ]
    return torch.stack(rows, dim=1).reshape(-1, 4, 4)  # (N, 4, 4)


def _agent_pose(agent):
    """The (possibly noisy) LiDAR pose of an agent record, of HEAL's ``{'params': {'lidar_pose'}}`` dict, or a
    pose / (4, 4) matrix given directly."""
    if hasattr(agent, "lidar_pose"):
        return agent.lidar_pose
    if isinstance(agent, dict):
        return agent["params"]["lidar_pose"]
    return agent


def get_pairwise_transformation(agents, max_cav, proj_first):
    """Pairwise transformations between the agents of one sample.

    Args:
        agents: the agents in order (ego first): a list of ``AgentFrame`` records (their ``lidar_pose``,
            possibly noisy), of 6-vector poses or (4, 4) T_world<-agent matrices; or HEAL's ordered dict
            ``{cav_id: {'params': {'lidar_pose': ...}}}``.
        max_cav: L, the padded number of agents.
        proj_first: when the points were already projected to the ego frame, every entry is identity.

    Returns:
        (L, L, 4, 4) float64 array whose ``[i, j]`` is T_{j<-i} = ``x1_to_x2(pose_i, pose_j)`` for the
        first ``min(len, L)`` agents; identity elsewhere (padding and diagonal).
    """
    pairwise = np.tile(np.eye(4, dtype=np.float64), (max_cav, max_cav, 1, 1))  # (L, L, 4, 4)
    if proj_first:
        return pairwise
    items = list(agents.values()) if isinstance(agents, dict) else list(agents)
    to_world = np.stack([_to_world(_agent_pose(agent)) for agent in items[:max_cav]])  # (n, 4, 4)
    n = to_world.shape[0]
    # T_{j<-i} = inv(T_w<-j) @ T_w<-i for every (i, j).
    pairwise[:n, :n] = np.linalg.inv(to_world)[None, :, :, :] @ to_world[:, None, :, :]
    pairwise[np.arange(n), np.arange(n)] = np.eye(4)
    return pairwise


def normalize_pairwise_tfm(pairwise_t_matrix, H, W, discrete_ratio, downsample_rate=1):
    """Turn metric pairwise transformations into ``F.affine_grid`` matrices on a BEV feature map.

    The feature map of every agent is centred on that agent: columns run along +x, rows along +y, and
    one cell spans ``discrete_ratio * downsample_rate`` metres, so the map covers
    ``x in [-r W / 2, r W / 2]``, ``y in [-r H / 2, r H / 2]`` (``r = discrete_ratio * downsample_rate``).
    ``F.affine_grid`` works in normalised coordinates ``x_n = x / (r W / 2)``, ``y_n = y / (r H / 2)``.
    Writing the BEV part of T_{j<-i} (rotation M, translation t) in those coordinates gives

        [[M00,          M01 * H / W,  tx * 2 / (r W)],
         [M10 * W / H,  M11,          ty * 2 / (r H)]].

    ``affine_grid`` uses theta to map each *output* location to where the *input* is sampled, so
    ``theta[b, i, j]`` warps a map in frame ``j`` into frame ``i``'s grid: the usual call
    ``warp(features_j, theta[b, 0, j])`` resamples agent j's map onto the ego grid (entry ``[0, j]`` is
    T_{j<-ego}, which maps an ego-grid location to agent j's grid). Use ``grid_sample`` with
    ``align_corners=False``.

    Args:
        pairwise_t_matrix: (B, L, L, 4, 4) T_{j<-i} in metres.
        H: map height in cells (or in metres with ``discrete_ratio`` 1, as HEAL models pass it).
        W: map width, same unit as H.
        discrete_ratio: metres per cell of the map at ``downsample_rate`` 1.
        downsample_rate: extra down-sampling of the map relative to ``discrete_ratio``.

    Returns:
        (B, L, L, 2, 3) affine matrices, same dtype/device as the input.
    """
    rows = pairwise_t_matrix[..., :2, :]  # (B, L, L, 2, 4)
    theta = torch.cat([rows[..., :2], rows[..., 3:]], dim=-1)  # (B, L, L, 2, 3), a copy (slices: no sync)
    cell = discrete_ratio * downsample_rate
    theta[..., 0, 1] = theta[..., 0, 1] * H / W
    theta[..., 1, 0] = theta[..., 1, 0] * W / H
    theta[..., 0, 2] = theta[..., 0, 2] / (cell * W) * 2
    theta[..., 1, 2] = theta[..., 1, 2] / (cell * H) * 2
    return theta


def dist_two_pose(pose_a, pose_b):
    """BEV (x-y) distance in metres between two poses (6-vectors or (4, 4) matrices, world frame)."""
    a = _to_world(pose_a)
    b = _to_world(pose_b)
    return float(np.hypot(a[0, 3] - b[0, 3], a[1, 3] - b[1, 3]))
