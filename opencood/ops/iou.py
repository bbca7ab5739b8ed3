"""Bird's-eye-view IoU of rotated and axis-aligned boxes, in pure PyTorch (CPU and CUDA).

Rotated IoU replaces the reference's shapely loops: the intersection of two convex quadrilaterals is
the convex polygon whose vertices are (a) the corners of each quad lying inside the other and (b) the
crossings of their edges. Those (at most 4 + 4 + 16 = 24) candidate points are sorted by angle around
their mean and the area follows from the shoelace formula. Everything is broadcast over box pairs;
pairs whose axis-aligned hulls do not overlap are skipped (their IoU is exactly 0).

All coordinates are metres in whatever common BEV frame the caller uses. Quads may be given in either
winding order. Zero-area (degenerate) boxes give IoU 0, never NaN.
"""
import numpy as np
import torch

from opencood.utils.box_utils import boxes_to_corners2d

# Pairs evaluated per vectorized step of the dense IoU (bounds peak memory to a few hundred MB).
_PAIR_CHUNK = 32768
# Tolerance (metres / square metres) of the inside and edge-crossing tests, in pair-local coordinates.
_EPS = 1e-9


def _as_quads(corners):
    """Return the BEV quads (K, 4, 2) of (K, 4, >=2) quads or (K, 8, 3) box corners (bottom face)."""
    return corners[:, :4, :2]


def _ccw(quads):
    """Reorder quads (K, 4, 2) counter-clockwise (positive signed area in the x-y plane)."""
    nxt = quads.roll(-1, dims=1)
    signed = (quads[..., 0] * nxt[..., 1] - quads[..., 1] * nxt[..., 0]).sum(dim=1)  # (K,)
    flipped = quads.flip(1)
    return torch.where((signed < 0)[:, None, None], flipped, quads)


def _polygon_area(quads):
    """Unsigned area (K,) of quads (K, 4, 2)."""
    nxt = quads.roll(-1, dims=1)
    return 0.5 * (quads[..., 0] * nxt[..., 1] - quads[..., 1] * nxt[..., 0]).sum(dim=1).abs()


def _inside(points, quads):
    """Whether points (K, P, 2) lie inside (or on) the counter-clockwise quads (K, 4, 2) -> (K, P)."""
    edges = quads.roll(-1, dims=1) - quads  # (K, 4, 2)
    rel = points[:, :, None, :] - quads[:, None, :, :]  # (K, P, 4, 2)
    cross = edges[:, None, :, 0] * rel[..., 1] - edges[:, None, :, 1] * rel[..., 0]  # (K, P, 4)
    return (cross >= -_EPS).all(dim=2)


def _pair_intersection(qa, qb):
    """Intersection area (K,) of paired counter-clockwise quads qa, qb (K, 4, 2), float64."""
    # Translate every pair so that qa's first corner sits at the origin: keeps the numbers small.
    origin = qa[:, :1, :]
    qa = qa - origin
    qb = qb - origin

    # (a) corners inside the other quad.
    a_in_b = _inside(qa, qb)  # (K, 4)
    b_in_a = _inside(qb, qa)  # (K, 4)

    # (b) edge crossings: edge i of qa, p + t r, against edge j of qb, q + u s.
    p = qa[:, :, None, :]  # (K, 4, 1, 2)
    r = (qa.roll(-1, dims=1) - qa)[:, :, None, :]  # (K, 4, 1, 2)
    q = qb[:, None, :, :]  # (K, 1, 4, 2)
    s = (qb.roll(-1, dims=1) - qb)[:, None, :, :]  # (K, 1, 4, 2)
    denom = r[..., 0] * s[..., 1] - r[..., 1] * s[..., 0]  # (K, 4, 4)
    qp = q - p  # (K, 4, 4, 2)
    t_num = qp[..., 0] * s[..., 1] - qp[..., 1] * s[..., 0]  # (K, 4, 4)
    u_num = qp[..., 0] * r[..., 1] - qp[..., 1] * r[..., 0]  # (K, 4, 4)
    parallel = denom.abs() <= _EPS
    safe = torch.where(parallel, torch.ones_like(denom), denom)
    t = t_num / safe
    u = u_num / safe
    crossing_ok = (~parallel) & (t >= -_EPS) & (t <= 1 + _EPS) & (u >= -_EPS) & (u <= 1 + _EPS)
    crossings = p + t[..., None] * r  # (K, 4, 4, 2)

    k = qa.shape[0]
    pts = torch.cat([qa, qb, crossings.reshape(k, 16, 2)], dim=1)  # (K, 24, 2)
    valid = torch.cat([a_in_b, b_in_a, crossing_ok.reshape(k, 16)], dim=1)  # (K, 24)

    count = valid.sum(dim=1)  # (K,)
    vmask = valid[..., None].to(pts.dtype)
    centre = (pts * vmask).sum(dim=1) / count.clamp(min=1)[:, None].to(pts.dtype)  # (K, 2)
    rel = pts - centre[:, None, :]
    angle = torch.atan2(rel[..., 1], rel[..., 0])  # (K, 24)
    angle = torch.where(valid, angle, torch.full_like(angle, 10.0))  # invalid points sort last
    order = angle.argsort(dim=1)
    rel = rel.gather(1, order[..., None].expand(-1, -1, 2))  # (K, 24, 2)
    valid = valid.gather(1, order)
    # Invalid slots repeat the first vertex: they add zero area to the closed shoelace sum.
    rel = torch.where(valid[..., None], rel, rel[:, :1, :])
    nxt = rel.roll(-1, dims=1)
    area = 0.5 * (rel[..., 0] * nxt[..., 1] - rel[..., 1] * nxt[..., 0]).sum(dim=1)  # (K,)
    return torch.where(count >= 3, area.abs(), torch.zeros_like(area))


def _pairs_iou(qa, qb):
    """IoU (K,) of paired quads (K, 4, 2) as float64 tensors."""
    qa = _ccw(qa)
    qb = _ccw(qb)
    inter = _pair_intersection(qa, qb)
    union = _polygon_area(qa) + _polygon_area(qb) - inter
    return torch.where(union > _EPS, inter / union.clamp(min=_EPS), torch.zeros_like(union))


def corners_iou_bev_pairs(corners_a, corners_b):
    """Rotated BEV IoU of given pairs of boxes.

    Args:
        corners_a: (K, 4, >=2) BEV quads, or (K, 8, 3) box corners (corners 0-3 = bottom face), metres.
        corners_b: same layout and K as ``corners_a``.

    Returns:
        (K,) IoU of ``corners_a[k]`` with ``corners_b[k]``, dtype of the input (float64 inside).
    """
    out_dtype = corners_a.dtype if corners_a.is_floating_point() else torch.float64
    qa = _as_quads(corners_a).to(torch.float64)
    qb = _as_quads(corners_b).to(device=qa.device, dtype=torch.float64)
    return _pairs_iou(qa, qb).to(out_dtype)


def corners_iou_bev(corners_a, corners_b):
    """Dense rotated BEV IoU matrix between two sets of boxes (torch, CPU or CUDA).

    Args:
        corners_a: (N, 4, >=2) BEV quads, or (N, 8, 3) box corners (corners 0-3 = bottom face), metres.
        corners_b: (M, 4, >=2) or (M, 8, 3), same frame.

    Returns:
        (N, M) IoU, dtype of ``corners_a`` (float64 arithmetic inside).
    """
    out_dtype = corners_a.dtype if corners_a.is_floating_point() else torch.float64
    qa = _as_quads(corners_a).to(torch.float64)  # (N, 4, 2)
    qb = _as_quads(corners_b).to(device=qa.device, dtype=torch.float64)  # (M, 4, 2)
    out = torch.zeros(qa.shape[0], qb.shape[0], dtype=torch.float64, device=qa.device)
    if out.numel() == 0:
        return out.to(out_dtype)
    lo_a, hi_a = qa.amin(dim=1), qa.amax(dim=1)  # (N, 2)
    lo_b, hi_b = qb.amin(dim=1), qb.amax(dim=1)  # (M, 2)
    overlap = (torch.minimum(hi_a[:, None], hi_b[None]) > torch.maximum(lo_a[:, None], lo_b[None])).all(-1)
    ia, ib = overlap.nonzero(as_tuple=True)  # candidate pairs, (K,) each
    for start in range(0, ia.numel(), _PAIR_CHUNK):
        sa = ia[start:start + _PAIR_CHUNK]
        sb = ib[start:start + _PAIR_CHUNK]
        out[sa, sb] = _pairs_iou(qa[sa], qb[sb])
    return out.to(out_dtype)


def corners_iou_bev_np(corners_a, corners_b):
    """Numpy twin of :func:`corners_iou_bev` (same algorithm, run by torch on the CPU).

    Args:
        corners_a: (N, 4, >=2) or (N, 8, 3) array, metres.
        corners_b: (M, 4, >=2) or (M, 8, 3) array, same frame.

    Returns:
        (N, M) float64 array.
    """
    a = torch.from_numpy(np.ascontiguousarray(corners_a, dtype=np.float64))
    b = torch.from_numpy(np.ascontiguousarray(corners_b, dtype=np.float64))
    return corners_iou_bev(a, b).numpy()


def corners_iou_bev_pairs_np(corners_a, corners_b):
    """Numpy twin of :func:`corners_iou_bev_pairs`: IoU of ``corners_a[k]`` with ``corners_b[k]``.

    Args:
        corners_a: (K, 4, >=2) or (K, 8, 3) array, metres.
        corners_b: same layout and K.

    Returns:
        (K,) float64 array.
    """
    a = torch.from_numpy(np.ascontiguousarray(corners_a, dtype=np.float64))
    b = torch.from_numpy(np.ascontiguousarray(corners_b, dtype=np.float64))
    return corners_iou_bev_pairs(a, b).numpy()


def boxes_iou_bev(boxes_a, boxes_b, order="hwl"):
    """Rotated BEV IoU between 7-vector boxes (torch).

    Args:
        boxes_a: (N, 7) boxes (x, y, z, h, w, l, yaw) for ``order='hwl'`` or (x, y, z, l, w, h, yaw)
            for ``'lwh'``; metres, yaw in radians.
        boxes_b: (M, 7) boxes, same order and frame.
        order: ``'hwl'`` or ``'lwh'``.

    Returns:
        (N, M) IoU tensor.
    """
    return corners_iou_bev(boxes_to_corners2d(boxes_a, order), boxes_to_corners2d(boxes_b, order))


def standup_iou_plus1(boxes_a, boxes_b, plus_one=True):
    """Axis-aligned IoU of [x1, y1, x2, y2] boxes (numpy or torch, same type out).

    With ``plus_one`` the legacy pixel convention of the reference's Cython ``box_overlaps`` is kept:
    widths and heights are ``x2 - x1 + 1`` even though the boxes are in metres. This inflates IoU for
    car-sized boxes, and anchor target assignment must use it to reproduce the reference labels.
    With ``plus_one=False`` the exact IoU is returned (0 where the union is empty).

    Args:
        boxes_a: (N, 4) [xmin, ymin, xmax, ymax].
        boxes_b: (M, 4) [xmin, ymin, xmax, ymax].
        plus_one: use the legacy +1 convention.

    Returns:
        (N, M) IoU, float64 for numpy input, input float dtype for torch input.
    """
    is_np = isinstance(boxes_a, np.ndarray)
    if is_np:
        a = torch.from_numpy(np.ascontiguousarray(boxes_a, dtype=np.float64))
        b = torch.from_numpy(np.ascontiguousarray(boxes_b, dtype=np.float64))
    else:
        a = boxes_a if boxes_a.is_floating_point() else boxes_a.double()
        b = boxes_b.to(device=a.device, dtype=a.dtype)
    one = 1.0 if plus_one else 0.0
    area_a = (a[:, 2] - a[:, 0] + one) * (a[:, 3] - a[:, 1] + one)  # (N,)
    area_b = (b[:, 2] - b[:, 0] + one) * (b[:, 3] - b[:, 1] + one)  # (M,)
    iw = torch.minimum(a[:, None, 2], b[None, :, 2]) - torch.maximum(a[:, None, 0], b[None, :, 0]) + one
    ih = torch.minimum(a[:, None, 3], b[None, :, 3]) - torch.maximum(a[:, None, 1], b[None, :, 1]) + one
    inter = iw.clamp(min=0) * ih.clamp(min=0)  # (N, M)
    union = area_a[:, None] + area_b[None, :] - inter
    iou = torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), torch.zeros_like(inter))
    return iou.numpy() if is_np else iou
