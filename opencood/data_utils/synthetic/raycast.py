"""Vectorized ray casting of a ground plane (z = 0) and upright rotated boxes.

Rays come in a 2-D grid from one origin (LiDAR: beams x azimuths; camera: pixel rows x columns). For
each box a conservative *footprint* in the grid (rows x columns that may hit it) is computed first, so
the slab test only runs on those rays: a box 50 m away covers a few dozen azimuth columns instead of
all of them. The slab test itself is done in the box frame (rays rotated by -yaw about z).
"""
import numpy as np

# Corner index pairs of the 12 edges of a box from :func:`box_corners` (index = 4 sx + 2 sy + sz, bits 0/1).
_EDGES = np.array([(i, i | bit) for i in range(8) for bit in (1, 2, 4) if not i & bit])
GROUND = -1  # hit code of the ground plane
NOTHING = -2  # hit code of a ray that hits nothing (sky / beyond range)


def box_corners(boxes):
    """(B, 8, 3) world corners of upright boxes (any corner order)."""
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], np.float64)  # (8, 3)
    local = boxes.half[:, None, :] * signs[None]  # (B, 8, 3)
    c, s = np.cos(boxes.yaw)[:, None], np.sin(boxes.yaw)[:, None]  # (B, 1)
    x = local[..., 0] * c - local[..., 1] * s
    y = local[..., 0] * s + local[..., 1] * c
    return np.stack([x, y, local[..., 2]], axis=2) + boxes.center[:, None, :]


def cast(origin, dirs, boxes, footprint, t_max=np.inf):
    """Closest hit of every ray of a grid.

    Args:
        origin: (3,) ray origin, world frame (metres).
        dirs: (R, C, 3) ray directions, world frame (need not be unit; ``t`` is in their units).
        boxes: :class:`~opencood.data_utils.synthetic.world.Boxes` (world frame).
        footprint: ``f(corners (8, 3)) -> (rows, cols)`` index arrays of the grid rays that may hit a box
            with these world corners, or ``None`` when none can.
        t_max: hits farther than this (in ``t``) are ignored.

    Returns:
        t (R, C) float64 ray parameter of the hit (inf when none), hit (R, C) int64 box index or
        GROUND / NOTHING, face (R, C) int8 hit face: 0..2 = box axis x/y/z entered from the + side,
        3..5 = from the - side, -1 for ground/nothing.
    """
    n_rows, n_cols = dirs.shape[:2]
    t = np.full((n_rows, n_cols), np.inf)
    hit = np.full((n_rows, n_cols), NOTHING, np.int64)
    face = np.full((n_rows, n_cols), -1, np.int8)
    dz = dirs[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = np.where(dz < -1e-12, -origin[2] / dz, np.inf)  # (R, C)
    ground = t_ground < t_max
    t[ground] = t_ground[ground]
    hit[ground] = GROUND
    corners = box_corners(boxes)  # (B, 8, 3)
    for b in range(len(boxes)):
        cell = footprint(corners[b])
        if cell is None:
            continue
        rows, cols = cell
        if rows.size == 0 or cols.size == 0:
            continue
        block = np.ix_(rows, cols)
        d = dirs[block]  # (r, c, 3)
        cb, sb = np.cos(boxes.yaw[b]), np.sin(boxes.yaw[b])
        rel = origin - boxes.center[b]
        o_local = np.array([rel[0] * cb + rel[1] * sb, -rel[0] * sb + rel[1] * cb, rel[2]])  # (3,)
        d_local = np.stack([d[..., 0] * cb + d[..., 1] * sb, -d[..., 0] * sb + d[..., 1] * cb, d[..., 2]],
                           axis=-1)  # (r, c, 3)
        d_local = np.where(np.abs(d_local) < 1e-12, 1e-12, d_local)
        inv = 1.0 / d_local
        t1 = (-boxes.half[b] - o_local) * inv  # (r, c, 3)
        t2 = (boxes.half[b] - o_local) * inv
        t_in = np.minimum(t1, t2)
        t_near = t_in.max(axis=-1)  # (r, c)
        t_far = np.maximum(t1, t2).min(axis=-1)
        cur = t[block]
        better = (t_near <= t_far) & (t_near > 1e-6) & (t_near < cur) & (t_near < t_max)
        if not better.any():
            continue
        axis = t_in.argmax(axis=-1)  # (r, c) slab that was entered last = the face hit
        entered_from_plus = np.take_along_axis(d_local, axis[..., None], -1)[..., 0] < 0
        face_code = (axis + np.where(entered_from_plus, 0, 3)).astype(np.int8)
        t[block] = np.where(better, t_near, cur)
        hit[block] = np.where(better, b, hit[block])
        face[block] = np.where(better, face_code, face[block])
    return t, hit, face


def face_normals(boxes, hit, face):
    """World unit normals of the surfaces hit (ground and nothing get +z).

    Args:
        boxes: the :class:`Boxes` that were cast against.
        hit: (...) int64 box index / GROUND / NOTHING from :func:`cast`.
        face: (...) int8 face code from :func:`cast`.

    Returns:
        (..., 3) float64 normals.
    """
    normals = np.zeros(hit.shape + (3,))
    normals[..., 2] = 1.0
    is_box = hit >= 0
    if not is_box.any():
        return normals
    f = face[is_box].astype(np.int64)
    local = np.zeros((f.size, 3))
    local[np.arange(f.size), f % 3] = np.where(f < 3, 1.0, -1.0)
    yaw = boxes.yaw[hit[is_box]]
    c, s = np.cos(yaw), np.sin(yaw)
    normals[is_box] = np.stack([local[:, 0] * c - local[:, 1] * s, local[:, 0] * s + local[:, 1] * c,
                                local[:, 2]], axis=1)
    return normals


def spherical_footprint(sensor_from_world, elevations, n_azimuth):
    """Footprint function for a LiDAR grid (rows = ascending elevations, columns = azimuths).

    Column k has azimuth ``-pi + k * 2 pi / n_azimuth``; both angles are in the sensor frame.

    Args:
        sensor_from_world: (4, 4) T_sensor<-world.
        elevations: (R,) ascending beam elevations, radians.
        n_azimuth: C, columns over 360 degrees.

    Returns:
        ``f(corners (8, 3)) -> (rows, cols)`` for :func:`cast`.
    """
    step = 2 * np.pi / n_azimuth

    def footprint(corners):
        local = corners @ sensor_from_world[:3, :3].T + sensor_from_world[:3, 3]  # (8, 3)
        mid = local[:, :2].mean(axis=0)
        radius = np.linalg.norm(local[:, :2] - mid, axis=1).max()
        dist = np.hypot(mid[0], mid[1])
        z_lo, z_hi = local[:, 2].min(), local[:, 2].max()
        if dist <= radius + 1e-3:  # the sensor stands over the footprint circle: any azimuth
            cols = np.arange(n_azimuth)
            d_min = 1e-3
        else:
            span = np.arcsin(radius / dist)
            centre = np.arctan2(mid[1], mid[0])
            k0 = int(np.floor((centre - span + np.pi) / step)) - 1
            k1 = int(np.ceil((centre + span + np.pi) / step)) + 1
            cols = np.arange(k0, k1 + 1) % n_azimuth
            d_min = dist - radius
        d_max = dist + radius
        el_hi = np.arctan2(z_hi, d_min if z_hi > 0 else d_max)
        el_lo = np.arctan2(z_lo, d_min if z_lo < 0 else d_max)
        r0 = np.searchsorted(elevations, el_lo - 1e-4, side="left")
        r1 = np.searchsorted(elevations, el_hi + 1e-4, side="right")
        return np.arange(r0, r1), cols

    return footprint


def pinhole_footprint(camera_from_world, intrinsic, width, height):
    """Footprint function for a pinhole camera grid (rows = pixel v, columns = pixel u).

    Args:
        camera_from_world: (4, 4) T_camera<-world with OpenCV camera axes (x right, y down, z forward).
        intrinsic: (3, 3) pixel intrinsics of the grid.
        width: grid columns.
        height: grid rows.

    Returns:
        ``f(corners (8, 3)) -> (rows, cols)`` for :func:`cast`.
    """
    near = 1e-2

    def footprint(corners):
        local = corners @ camera_from_world[:3, :3].T + camera_from_world[:3, 3]  # (8, 3)
        z = local[:, 2]
        if (z <= near).all():  # behind the camera
            return None
        if (z <= near).any():  # straddles the near plane: keep the part in front of it
            a, b = local[_EDGES[:, 0]], local[_EDGES[:, 1]]  # (12, 3) edge ends
            crossing = (a[:, 2] - near) * (b[:, 2] - near) < 0
            a, b = a[crossing], b[crossing]
            w = ((near - a[:, 2]) / (b[:, 2] - a[:, 2]))[:, None]
            local = np.concatenate([local[z > near], a + w * (b - a)])  # (K, 3) all with z >= near
            z = local[:, 2]
        u = intrinsic[0, 0] * local[:, 0] / z + intrinsic[0, 2]
        v = intrinsic[1, 1] * local[:, 1] / z + intrinsic[1, 2]
        c0, c1 = max(int(np.floor(u.min())) - 1, 0), min(int(np.ceil(u.max())) + 1, width)
        r0, r1 = max(int(np.floor(v.min())) - 1, 0), min(int(np.ceil(v.max())) + 1, height)
        if c0 >= c1 or r0 >= r1:
            return None
        return np.arange(r0, r1), np.arange(c0, c1)

    return footprint
