"""3D bounding-box geometry: 7-vectors, 8 corners, projections and range filters.

Conventions (see docs/architecture.md): CARLA frame (x forward, y right, z up), metres; box yaw in
**radians**. A box is ``(x, y, z, h, w, l, yaw)`` for ``order='hwl'`` or ``(x, y, z, l, w, h, yaw)`` for
``order='lwh'``; ``l`` lies along the heading, ``w`` across it. Corners (N, 8, 3) follow the template
x = [+,+,-,-,+,+,-,-] l/2, y = [-,+,+,-,-,+,+,-] w/2, z = [-,-,-,-,+,+,+,+] h/2, rotated by yaw about z
and translated; corners 0-3 are the bottom face (the BEV polygon), 4-7 the top face above them.
Functions accept numpy arrays or torch tensors where stated and return the same type.
"""
import numpy as np
import torch

from opencood.utils.errors import DataError
from opencood.utils.transformation_utils import x1_to_x2, x_to_world

_SIGN_X = (1, 1, -1, -1, 1, 1, -1, -1)
_SIGN_Y = (-1, 1, 1, -1, -1, 1, 1, -1)
_SIGN_Z = (-1, -1, -1, -1, 1, 1, 1, 1)
# Corner pairs (tail, head) of the edges along +x (heading), +y (width) and +z (height) of the template.
_LENGTH_EDGES = ((3, 0), (2, 1), (7, 4), (6, 5))
_WIDTH_EDGES = ((0, 1), (3, 2), (4, 5), (7, 6))
_HEIGHT_EDGES = ((0, 4), (1, 5), (2, 6), (3, 7))


def dims_index(order):
    """Column indices ``(ih, iw, il)`` of h, w, l in a 7-vector box of ``order`` ('hwl' or 'lwh')."""
    if order == "hwl":
        return 3, 4, 5
    if order == "lwh":
        return 5, 4, 3
    raise ValueError(f"box order must be 'hwl' or 'lwh', got {order!r}")


def boxes_to_corners_3d(boxes3d, order):
    """7-vector boxes -> 8 corners.

    Args:
        boxes3d: (N, 7) numpy array or torch tensor, ``order`` layout, metres/radians.
        order: ``'hwl'`` or ``'lwh'``.

    Returns:
        (N, 8, 3) corners, same type (and dtype/device) as the input.
    """
    ih, iw, il = dims_index(order)
    is_np = isinstance(boxes3d, np.ndarray)
    boxes = torch.from_numpy(boxes3d) if is_np else boxes3d
    if not boxes.is_floating_point():
        boxes = boxes.double()
    signs = torch.tensor([_SIGN_X, _SIGN_Y, _SIGN_Z], dtype=boxes.dtype, device=boxes.device)  # (3, 8)
    half = torch.stack([boxes[:, il], boxes[:, iw], boxes[:, ih]], dim=1) / 2  # (N, 3)
    local = half[:, :, None] * signs[None]  # (N, 3, 8)
    cos, sin = torch.cos(boxes[:, 6]), torch.sin(boxes[:, 6])  # (N,)
    x = local[:, 0] * cos[:, None] - local[:, 1] * sin[:, None] + boxes[:, 0:1]  # (N, 8)
    y = local[:, 0] * sin[:, None] + local[:, 1] * cos[:, None] + boxes[:, 1:2]  # (N, 8)
    z = local[:, 2] + boxes[:, 2:3]  # (N, 8)
    corners = torch.stack([x, y, z], dim=2)  # (N, 8, 3)
    return corners.numpy() if is_np else corners


def boxes_to_corners2d(boxes3d, order):
    """Bottom-face corners (the BEV polygon) of 7-vector boxes.

    Args:
        boxes3d: (N, 7) numpy or torch, ``order`` layout.
        order: ``'hwl'`` or ``'lwh'``.

    Returns:
        (N, 4, 3) corners 0-3, same type as the input.
    """
    return boxes_to_corners_3d(boxes3d, order)[:, :4, :]


def corner_to_center(corners3d, order="hwl"):
    """8 corners -> 7-vector boxes (inverse of :func:`boxes_to_corners_3d` for upright boxes).

    Centre = mean of the 8 corners; l, w = mean BEV length of the 4 edges along the heading / across
    it; h = mean z extent of the 4 vertical edges; yaw = heading of the *sum of the unit vectors* of the
    4 heading edges. The reference averages the four ``atan2`` angles instead, which breaks near yaw =
    +-pi (e.g. pi - e and -pi + e average to 0); summing unit vectors fixes that.

    Args:
        corners3d: (N, 8, 3) numpy array, metres.
        order: ``'hwl'`` or ``'lwh'`` layout of the output.

    Returns:
        (N, 7) float64 boxes, yaw in radians within (-pi, pi].
    """
    ih, iw, il = dims_index(order)
    corners = np.asarray(corners3d, dtype=np.float64)
    heads = np.array(_LENGTH_EDGES)
    widths = np.array(_WIDTH_EDGES)
    heights = np.array(_HEIGHT_EDGES)
    vec_l = corners[:, heads[:, 1], :2] - corners[:, heads[:, 0], :2]  # (N, 4, 2)
    vec_w = corners[:, widths[:, 1], :2] - corners[:, widths[:, 0], :2]  # (N, 4, 2)
    len_l = np.linalg.norm(vec_l, axis=2)  # (N, 4)
    unit = vec_l / np.maximum(len_l, 1e-12)[..., None]  # (N, 4, 2)
    heading = unit.sum(axis=1)  # (N, 2)
    out = np.zeros((corners.shape[0], 7), dtype=np.float64)
    out[:, :3] = corners.mean(axis=1)
    out[:, il] = len_l.mean(axis=1)
    out[:, iw] = np.linalg.norm(vec_w, axis=2).mean(axis=1)
    out[:, ih] = np.abs(corners[:, heights[:, 1], 2] - corners[:, heights[:, 0], 2]).mean(axis=1)
    out[:, 6] = np.arctan2(heading[:, 1], heading[:, 0])
    return out


def _standup(corners):
    """[xmin, ymin, xmax, ymax] (N, 4) of corners (N, K, >=2), numpy or torch."""
    xy = corners[:, :, :2]
    if isinstance(xy, np.ndarray):
        return np.concatenate([xy.min(axis=1), xy.max(axis=1)], axis=1)
    return torch.cat([xy.amin(dim=1), xy.amax(dim=1)], dim=1)


def corner_to_standup_box_torch(box_corner):
    """Axis-aligned BEV hull of boxes.

    Args:
        box_corner: (N, 8, 3) or (N, 4, >=2) corners, torch (numpy also accepted).

    Returns:
        (N, 4) ``[xmin, ymin, xmax, ymax]``, same type as the input.
    """
    return _standup(box_corner)


def corner2d_to_standup_boxes(corner2d):
    """Axis-aligned hull of BEV quads.

    Args:
        corner2d: (N, 4, >=2) numpy (torch also accepted).

    Returns:
        (N, 4) ``[xmin, ymin, xmax, ymax]``, same type as the input.
    """
    return _standup(corner2d)


def project_box3d(box3d, transformation_matrix):
    """Apply a rigid transformation to box corners.

    Args:
        box3d: (N, 8, 3) corners, numpy or torch.
        transformation_matrix: (4, 4) T_target<-source, same library as ``box3d``.

    Returns:
        (N, 8, 3) corners in the target frame, same type as the input.
    """
    rot = transformation_matrix[:3, :3]
    trans = transformation_matrix[:3, 3]
    if isinstance(box3d, np.ndarray):
        return box3d @ np.asarray(rot).T + np.asarray(trans)
    rot = rot.to(box3d)
    return box3d @ rot.T + trans.to(box3d)


def project_points_by_matrix_torch(points, transformation_matrix):
    """Apply a rigid transformation to points (torch).

    Args:
        points: (N, 3) xyz.
        transformation_matrix: (4, 4) T_target<-source.

    Returns:
        (N, 3) points in the target frame.
    """
    tfm = transformation_matrix.to(points)
    return points @ tfm[:3, :3].T + tfm[:3, 3]


def transform_boxes(boxes, transformation_matrix, order):
    """Move 7-vector boxes to another frame (corners -> rigid transform -> boxes).

    Args:
        boxes: (N, 7) numpy, ``order`` layout, metres/radians, in the source frame.
        transformation_matrix: (4, 4) T_target<-source (rotation about z only keeps boxes upright).
        order: ``'hwl'`` or ``'lwh'``.

    Returns:
        (N, 7) float64 boxes in the target frame, yaw in (-pi, pi].
    """
    corners = boxes_to_corners_3d(np.asarray(boxes, dtype=np.float64), order)  # (N, 8, 3)
    return corner_to_center(project_box3d(corners, np.asarray(transformation_matrix, dtype=np.float64)), order)


def mask_boxes_outside_range_numpy(boxes, limit_range, order, min_num_corners=8, return_mask=False):
    """Keep the boxes that have at least ``min_num_corners`` corners inside a range (bounds inclusive).

    Args:
        boxes: (N, 7) numpy, ``order`` layout.
        limit_range: ``[xmin, ymin, zmin, xmax, ymax, zmax]`` metres (extra entries ignored).
        order: ``'hwl'`` or ``'lwh'``.
        min_num_corners: corners (of 8, each tested on x, y and z) that must be inside.
        return_mask: also return the (N,) bool mask.

    Returns:
        (K, 7) kept boxes, or ``(boxes, mask)`` when ``return_mask``.
    """
    limit = np.asarray(limit_range, dtype=np.float64)
    corners = boxes_to_corners_3d(np.asarray(boxes), order)  # (N, 8, 3)
    inside = ((corners >= limit[0:3]) & (corners <= limit[3:6])).all(axis=2)  # (N, 8)
    mask = inside.sum(axis=1) >= min_num_corners  # (N,)
    kept = boxes[mask]
    return (kept, mask) if return_mask else kept


def get_mask_for_boxes_within_range_torch(boxes, gt_range, min_corners=8, bev=False):
    """Which boxes have at least ``min_corners`` of their 8 corners inside ``gt_range`` (bounds inclusive).

    Args:
        boxes: (N, 8, 3) corners, torch.
        gt_range: ``[xmin, ymin, zmin, xmax, ymax, zmax]`` metres.
        min_corners: corners that must be inside (8: the OPV2V rule; V2X-Real keeps a box with 2).
        bev: test x and y only (V2X-Real's 2-D mask); else x, y and z.

    Returns:
        (N,) bool tensor.
    """
    rng = torch.as_tensor(gt_range, dtype=boxes.dtype, device=boxes.device)
    dims = 2 if bev else 3
    inside = ((boxes[..., :dims] >= rng[0:dims]) & (boxes[..., :dims] <= rng[3:3 + dims])).all(dim=2)  # (N, 8)
    return inside.sum(dim=1) >= min_corners


def remove_large_pred_bbx(bbx_3d, max_extent=6.0):
    """Keep predictions whose axis-aligned BEV extent is plausible for a vehicle.

    The reference meant to test x, y and z extents but read the y column for "z" (and mixed a float
    into a bool mask); the effective rule, implemented here, is x and y extent <= ``max_extent``.

    Args:
        bbx_3d: (N, 8, 3) corners, torch.
        max_extent: largest allowed x and y extent, metres.

    Returns:
        (N,) bool keep mask.
    """
    extent = bbx_3d[:, :, :2].amax(dim=1) - bbx_3d[:, :, :2].amin(dim=1)  # (N, 2)
    return (extent <= max_extent).all(dim=1)


def remove_bbx_abnormal_z(bbx_3d, z_min=-3.0, z_max=1.0):
    """Keep predictions whose corners all lie within a height band of the LiDAR frame.

    The reference keeps a box when its lowest corner is >= -3 m and its highest corner <= 1 m (the
    LiDAR sits ~1.9 m above the road, so this is the ground-to-roof band of vehicles).

    Args:
        bbx_3d: (N, 8, 3) corners, torch.
        z_min: lowest allowed corner z, metres.
        z_max: highest allowed corner z, metres.

    Returns:
        (N,) bool keep mask.
    """
    z = bbx_3d[:, :, 2]  # (N, 8)
    return (z.amin(dim=1) >= z_min) & (z.amax(dim=1) <= z_max)


def create_bbx(extent):
    """Corners of a box centred at the origin of its own frame.

    Args:
        extent: (3,) **half** sizes ``[l/2, w/2, h/2]`` metres (the agent YAML ``extent``).

    Returns:
        (8, 3) float64 corners in the template order.
    """
    ext = np.asarray(extent, dtype=np.float64).reshape(3)
    return np.array([_SIGN_X, _SIGN_Y, _SIGN_Z], dtype=np.float64).T * ext  # (8, 3)


def world_objects_to_boxes(object_dict, lidar_pose, order="hwl", lidar_range=None, min_num_corners=2):
    """Express all objects of an agent YAML as 7-vector boxes in a LiDAR frame, in one vectorized pass.

    Each object's pose is ``[location + center, angle]``: the ``center`` offset is added in world
    axes without rotating it by the object's angle (that is how the OPV2V dumper defines it). Its 8
    corners (from the half sizes ``extent``) are mapped with ``x1_to_x2(object_pose, lidar_pose)``
    and turned back into a box with :func:`corner_to_center`. Objects with non-finite values are
    skipped.

    Args:
        object_dict: ``{id: {'location': (3,), 'center': (3,), 'angle': [roll, yaw, pitch] deg,
            'extent': (3,) half sizes}}`` (world frame, metres).
        lidar_pose: (6,) pose of the target LiDAR frame in the world (metres, degrees), or its (4, 4)
            T_world<-lidar.
        order: ``'hwl'`` or ``'lwh'``.
        lidar_range: optional ``[xmin, ymin, zmin, xmax, ymax, zmax]``; when given, objects with fewer
            than ``min_num_corners`` corners inside it are skipped.
        min_num_corners: see ``lidar_range``.

    Returns:
        ``(ids, boxes)``: list of the kept object ids in ``object_dict`` order and (M, 7) float64 boxes
        in ``order`` layout (metres, radians), LiDAR frame.

    Raises:
        DataError: an object misses one of the keys above or has a value that is not 3 numbers.
    """
    dims_index(order)
    ids = list(object_dict)
    fields = {key: [] for key in ("location", "center", "angle", "extent")}
    for object_id in ids:
        content = object_dict[object_id]
        for key, values in fields.items():
            if key not in content:
                raise DataError(f"vehicles[{object_id}]: missing key {key!r}")
            values.append(content[key])
    try:
        arrays = {key: np.asarray(values, dtype=np.float64).reshape(len(ids), 3) for key, values in fields.items()}
    except (TypeError, ValueError):
        raise DataError(f"vehicles[{_first_malformed_object(object_dict, fields)}]: 'location', 'center', "
                        f"'angle' and 'extent' must be 3 numbers each") from None
    poses = np.concatenate([arrays["location"] + arrays["center"], arrays["angle"]], axis=1)  # (M, 6)
    extent = arrays["extent"]  # (M, 3) half sizes
    finite = np.isfinite(poses).all(axis=1) & np.isfinite(extent).all(axis=1)  # (M,)
    poses, extent = poses[finite], extent[finite]
    ids = [i for i, ok in zip(ids, finite) if ok]
    if not ids:
        return [], np.zeros((0, 7), dtype=np.float64)
    world_to_lidar = x1_to_x2(np.eye(4), lidar_pose)  # (4, 4) T_lidar<-world
    tfm = world_to_lidar @ x_to_world(poses)  # (M, 4, 4) T_lidar<-object
    corners = create_bbx(np.ones(3))[None] * extent[:, None, :]  # (M, 8, 3) object frames
    corners = corners @ tfm[:, :3, :3].transpose(0, 2, 1) + tfm[:, None, :3, 3]  # (M, 8, 3) LiDAR frame
    boxes = corner_to_center(corners, order=order)  # (M, 7)
    if lidar_range is not None:
        boxes, keep = mask_boxes_outside_range_numpy(boxes, lidar_range, order, min_num_corners, return_mask=True)
        ids = [i for i, ok in zip(ids, keep) if ok]
    return ids, boxes


def _first_malformed_object(object_dict, keys):
    """Id of the first object whose ``keys`` are not 3 numbers each."""
    for object_id, content in object_dict.items():
        try:
            np.asarray([content[k] for k in keys], dtype=np.float64).reshape(len(keys), 3)
        except (TypeError, ValueError):
            return object_id
    return None


def project_world_objects(object_dict, output_dict, lidar_pose, order="hwl", lidar_range=None,
                          min_num_corners=2):
    """Express the objects of an agent YAML as 7-vector boxes in a LiDAR frame (HEAL's in-place API).

    Same computation as :func:`world_objects_to_boxes`; see there for the object fields and frames.

    Args:
        object_dict: ``{id: {'location', 'center', 'angle' (deg), 'extent' (half sizes)}}``, world frame.
        output_dict: filled in place with ``{id: (7,) float64 box}`` in ``order`` layout.
        lidar_pose: (6,) pose of the target LiDAR frame in the world (metres, degrees).
        order: ``'hwl'`` or ``'lwh'``.
        lidar_range: optional range filter, see :func:`world_objects_to_boxes`.
        min_num_corners: see ``lidar_range``.

    Raises:
        DataError: an object misses one of the keys above.
    """
    ids, boxes = world_objects_to_boxes(object_dict, lidar_pose, order, lidar_range, min_num_corners)
    output_dict.update(zip(ids, boxes))
