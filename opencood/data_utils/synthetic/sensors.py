"""Simulated sensors of the synthetic world: a CARLA-like rotating LiDAR and pinhole RGB/depth cameras.

LiDAR model (after CARLA's ray-cast LiDAR with OpenCDA's settings): beams evenly spaced in elevation
between -25 and +2 degrees, one ray per beam and azimuth step, 120 m range, intensity
``exp(-0.004 d)``, random drop-off (a general rate, plus an intensity-dependent rate below an
intensity limit) and Gaussian range noise. Points are returned in the sensor frame.

Cameras: OpenCDA's four mountings, 100 degree horizontal FOV pinhole, intrinsics
``fx = fy = W / (2 tan 50 deg)``, ``cx = W / 2``, ``cy = H / 2``. Images can be ray traced at a lower
internal resolution (``render_scale``) and upscaled (RGB bilinear, depth nearest); the intrinsics written
to disk always describe the full-size image.
"""
from dataclasses import dataclass

import cv2
import numpy as np

from opencood.data_utils.synthetic import raycast
from opencood.data_utils.synthetic.world import BUILD_START, LANE_W, ROAD_HALF
from opencood.utils.transformation_utils import x_to_world

# Vehicle-frame mountings (x, y, z, yaw deg) of camera0..3 (OpenCDA defaults): front, right-rear,
# left-rear, back.
CAMERA_MOUNTS = ((2.5, 0.0, 1.0, 0.0), (0.0, 0.3, 1.8, 100.0), (0.0, -0.3, 1.8, -100.0), (-2.0, 0.0, 1.5, 180.0))
# Road-side units: four cameras on the pole (x, y, z, yaw deg in the pole frame, x toward the intersection
# centre), 0.2 m below the LiDAR, looking ahead, right, left and back.
RSU_CAMERA_MOUNTS = ((0.3, 0.0, 2.8, 0.0), (0.0, 0.3, 2.8, 90.0), (0.0, -0.3, 2.8, -90.0), (-0.3, 0.0, 2.8, 180.0))
CAMERA_FOV_DEG = 100.0
# UE4 camera axes (x forward, y right, z up) -> OpenCV axes (x right, y down, z forward).
UE4_TO_CV = np.array([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
SELF_HIT = -3  # hit code of a return from the agent's own car (see add_self_hits)
_SUN = np.array([0.35, -0.45, 0.82]) / np.linalg.norm([0.35, -0.45, 0.82])


@dataclass
class LidarConfig:
    """CARLA-like LiDAR parameters.

    Attributes:
        beams: number of channels, evenly spaced in [lower_fov, upper_fov].
        h_res: azimuth step, degrees.
        range: maximum range, metres.
        lower_fov: lowest beam elevation, degrees.
        upper_fov: highest beam elevation, degrees.
        dropoff_general_rate: probability that any return is dropped.
        dropoff_intensity_limit: returns with intensity above this are never dropped by intensity.
        dropoff_zero_intensity: drop probability of a zero-intensity return (linear up to the limit).
        noise_stddev: Gaussian noise along the ray, metres.
    """
    beams: int = 64
    h_res: float = 0.2
    range: float = 120.0
    lower_fov: float = -25.0
    upper_fov: float = 2.0
    dropoff_general_rate: float = 0.3
    dropoff_intensity_limit: float = 0.7
    dropoff_zero_intensity: float = 0.4
    noise_stddev: float = 0.02


def _ray_grid(cfg):
    """Beam elevations (R,) radians, azimuth count C and sensor-frame unit ray directions (R, C, 3)."""
    elev = np.radians(np.linspace(cfg.lower_fov, cfg.upper_fov, cfg.beams))  # (R,)
    n_az = int(round(360.0 / cfg.h_res))
    az = -np.pi + np.arange(n_az) * (2 * np.pi / n_az)  # (C,)
    ce, se = np.cos(elev)[:, None], np.sin(elev)[:, None]
    dirs_sensor = np.stack([ce * np.cos(az)[None], ce * np.sin(az)[None], np.broadcast_to(se, (cfg.beams, n_az))],
                           axis=-1)  # (R, C, 3) unit
    return elev, n_az, dirs_sensor


def lidar_scan(lidar_pose, boxes, cfg, rng):
    """Cast one LiDAR sweep.

    Args:
        lidar_pose: (6,) sensor pose in the world ``[x, y, z, roll, yaw, pitch]`` (metres, degrees).
        boxes: world :class:`~opencood.data_utils.synthetic.world.Boxes` (the agent's own car excluded).
        cfg: :class:`LidarConfig`.
        rng: ``np.random.Generator`` for drop-off and noise.

    Returns:
        points (P, 4) float32 ``[x, y, z, intensity]`` in the sensor frame, beam (P,) int64 channel index
        (0 = lowest), box (P,) int64 index into ``boxes`` of the surface hit (GROUND for the ground).
    """
    elev, n_az, dirs_sensor = _ray_grid(cfg)
    world_from_sensor = x_to_world(lidar_pose)
    dirs_world = dirs_sensor @ world_from_sensor[:3, :3].T  # (R, C, 3)
    footprint = raycast.spherical_footprint(np.linalg.inv(world_from_sensor), elev, n_az)
    t, hit, _ = raycast.cast(world_from_sensor[:3, 3], dirs_world, boxes, footprint, t_max=cfg.range)
    rows, cols = np.nonzero(np.isfinite(t))
    dist = t[rows, cols]  # (P,)
    intensity = np.exp(-0.004 * dist)
    drop = rng.random(dist.size) < cfg.dropoff_general_rate
    p_int = cfg.dropoff_zero_intensity * np.clip(1.0 - intensity / cfg.dropoff_intensity_limit, 0.0, 1.0)
    drop |= rng.random(dist.size) < p_int
    keep = ~drop
    rows, cols, dist, intensity = rows[keep], cols[keep], dist[keep], intensity[keep]
    dist = dist + rng.normal(0.0, cfg.noise_stddev, dist.size)
    xyz = dirs_sensor[rows, cols] * dist[:, None]  # (P, 3)
    points = np.concatenate([xyz, intensity[:, None]], axis=1).astype(np.float32)
    return points, rows, hit[rows, cols]


def add_self_hits(points, beam, hit, lidar_pose, own_box, cfg, fraction, rng):
    """Let ``fraction`` of a sweep's returns come from the agent's own car (as ~2 % of a real OPV2V cloud do).

    Rays of the sweep's grid that hit ``own_box`` are cast; ``k = round(fraction * P / (1 - fraction))`` of them
    (drawn from ``rng``) return from the car's surface (range noise and intensity as :func:`lidar_scan`) in place
    of whatever the sweep had on those rays. The other rays pass through the car as before, so only the share of
    self-hits is real, not their full pattern (every ray toward the roof would hit it).

    Args:
        points: (P, 4) float32 sweep of :func:`lidar_scan` (sensor frame).
        beam: (P,) beam index of each point.
        hit: (P,) hit code of each point.
        lidar_pose: (6,) sensor pose in the world (metres, degrees).
        own_box: the agent's own car as one-box :class:`~opencood.data_utils.synthetic.world.Boxes`.
        cfg: the sweep's :class:`LidarConfig`.
        fraction: share of self-hits in the output, in [0, 1).
        rng: ``np.random.Generator`` for the choice of rays and the range noise.

    Returns:
        (points, beam, hit) with the self-hits appended (hit code :data:`SELF_HIT`).
    """
    elev, n_az, dirs_sensor = _ray_grid(cfg)
    world_from_sensor = x_to_world(lidar_pose)
    footprint = raycast.spherical_footprint(np.linalg.inv(world_from_sensor), elev, n_az)
    t, box, _ = raycast.cast(world_from_sensor[:3, 3], dirs_sensor @ world_from_sensor[:3, :3].T, own_box, footprint,
                             t_max=cfg.range)
    rows, cols = np.nonzero(box == 0)
    count = min(int(round(fraction * len(points) / (1.0 - fraction))), rows.size)
    pick = rng.choice(rows.size, size=count, replace=False)
    rows, cols = rows[pick], cols[pick]
    step = 2 * np.pi / n_az
    point_cols = np.round((np.arctan2(points[:, 1], points[:, 0]) + np.pi) / step).astype(np.int64) % n_az
    keep = ~np.isin(beam * n_az + point_cols, rows * n_az + cols)  # rays now returning from the car
    dist = t[rows, cols] + rng.normal(0.0, cfg.noise_stddev, count)
    own = np.concatenate([dirs_sensor[rows, cols] * dist[:, None], np.exp(-0.004 * dist)[:, None]], axis=1)
    return (np.concatenate([points[keep], own.astype(np.float32)]), np.concatenate([beam[keep], rows]),
            np.concatenate([hit[keep], np.full(count, SELF_HIT, np.int64)]))


def camera_intrinsic(width, height):
    """(3, 3) pinhole intrinsics of a 100 degree FOV camera of ``width`` x ``height`` pixels."""
    f = width / (2.0 * np.tan(np.radians(CAMERA_FOV_DEG / 2)))
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def _shade(world, boxes, hit, face, t, origin, dirs, v_frac):
    """RGB (h, w, 3) float colours of a rendered grid."""
    n_rows, n_cols = hit.shape
    sky_top, sky_horizon = np.array([95.0, 145.0, 215.0]), np.array([190.0, 210.0, 235.0])
    img = sky_top[None, None] + (sky_horizon - sky_top)[None, None] * np.clip(v_frac, 0, 1)[:, None, None]
    img = np.broadcast_to(img, (n_rows, n_cols, 3)).copy()
    # Ground: asphalt with lane markings, pavement, kerbside concrete.
    g = hit == raycast.GROUND
    if g.any():
        p = origin[None] + dirs[g] * t[g][:, None]  # (G, 3)
        m = world.world_to_map_xy(p[:, :2])  # (G, 2)
        surface = world.surface_class(m)
        palette = np.array([[72.0, 72.0, 78.0], [135.0, 132.0, 128.0], [110.0, 125.0, 90.0]])
        col = palette[surface]
        ax, ay = np.abs(m[:, 0]), np.abs(m[:, 1])
        on_x_road, on_y_road = ay < ROAD_HALF, ax < ROAD_HALF
        lateral = np.where(on_x_road & ~on_y_road, ay, ax)
        along = np.where(on_x_road & ~on_y_road, m[:, 0], m[:, 1])
        inside_crossing = on_x_road & on_y_road
        centre_line = (lateral < 0.12) & ~inside_crossing & (surface == 0)
        lane_line = (np.abs(lateral - LANE_W) < 0.08) & (np.mod(along, 6.0) < 3.0) & ~inside_crossing
        col[lane_line & (surface == 0)] = [220.0, 220.0, 220.0]
        col[centre_line] = [225.0, 190.0, 60.0]
        kerb = (np.abs(np.minimum(ax, ay) - BUILD_START) < 0.2)
        col[kerb] = [160.0, 160.0, 160.0]
        img[g] = col
    b = hit >= 0
    if b.any():
        normals = raycast.face_normals(boxes, hit[b], face[b])  # (K, 3)
        light = 0.45 + 0.55 * np.clip(normals @ _SUN, 0.0, 1.0)
        img[b] = boxes.color[hit[b]].astype(np.float64) * light[:, None]
    # Aerial perspective: far surfaces fade toward the horizon colour.
    solid = np.isfinite(t)
    fog = 1.0 - np.exp(-np.where(solid, t, 0.0) / 350.0)
    img = img * (1.0 - fog[..., None]) + sky_horizon[None, None] * fog[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def render_camera(world, boxes, cords, width, height, render_scale=1):
    """Ray-trace one pinhole camera.

    Args:
        world: the :class:`~opencood.data_utils.synthetic.world.World` (for ground markings).
        boxes: world boxes visible to this camera (the agent's own car excluded).
        cords: (6,) camera pose in the world (UE4 axes), metres and degrees.
        width: output image width, pixels.
        height: output image height, pixels.
        render_scale: trace at ``(width / s, height / s)`` and upscale by ``s``.

    Returns:
        rgb (height, width, 3) uint8, depth (height, width) float64 planar depth in metres (inf = sky),
        seen (K,) int64 indices into ``boxes`` hit by at least one traced pixel.
    """
    w, h = max(width // render_scale, 1), max(height // render_scale, 1)
    k = camera_intrinsic(w, h)
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)  # (h, w)
    x_cv, y_cv = (u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1]
    dirs_ue = np.stack([np.ones_like(x_cv), x_cv, -y_cv], axis=-1)  # (h, w, 3); UE4 x component 1 => t = depth
    world_from_cam = x_to_world(cords)
    dirs = dirs_ue @ world_from_cam[:3, :3].T  # (h, w, 3)
    cv_from_world = UE4_TO_CV @ np.linalg.inv(world_from_cam)
    footprint = raycast.pinhole_footprint(cv_from_world, k, w, h)
    origin = world_from_cam[:3, 3]
    t, hit, face = raycast.cast(origin, dirs, boxes, footprint)
    horizon_v = k[1, 2] - k[1, 1] * np.tan(np.radians(cords[5]))
    v_frac = (np.arange(h) + 0.5) / max(horizon_v, 1.0)
    rgb = _shade(world, boxes, hit, face, t, origin, dirs, v_frac)
    seen = np.unique(hit[hit >= 0])
    if (w, h) != (width, height):
        rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR)
        t = cv2.resize(np.where(np.isfinite(t), t, 1e9).astype(np.float32), (width, height),
                       interpolation=cv2.INTER_NEAREST).astype(np.float64)
        t[t >= 1e8] = np.inf
    return rgb, t, seen
