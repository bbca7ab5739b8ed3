"""Which points fall inside which rotated 3D boxes (torch, CPU or CUDA; numpy accepted)."""
import numpy as np
import torch

from opencood.utils.box_utils import dims_index

# Box x point elements handled per vectorized step (bounds peak memory).
_CHUNK_ELEMS = 1 << 22


def points_in_boxes(points, boxes, order="hwl"):
    """Point-in-box test for upright boxes rotated by yaw about z.

    A point is inside when, in the box frame, ``|x| <= l/2``, ``|y| <= w/2`` and ``|z| <= h/2``
    (boundaries count as inside).

    Args:
        points: (P, >=3) points, xyz first, metres; torch tensor or numpy array.
        boxes: (M, 7) boxes in ``order`` layout, same frame, yaw in radians; same library as ``points``.
        order: ``'hwl'`` or ``'lwh'``.

    Returns:
        (M, P) bool mask (numpy for numpy input).
    """
    ih, iw, il = dims_index(order)
    is_np = isinstance(points, np.ndarray)
    pts = torch.from_numpy(np.asarray(points)) if is_np else points
    bxs = torch.from_numpy(np.asarray(boxes)) if is_np else boxes
    dtype = torch.promote_types(pts.dtype, bxs.dtype)
    if not dtype.is_floating_point:
        dtype = torch.float64
    xyz = pts[:, :3].to(dtype)  # (P, 3)
    bxs = bxs.to(device=pts.device, dtype=dtype)  # (M, 7)
    half = torch.stack([bxs[:, il], bxs[:, iw], bxs[:, ih]], dim=1) / 2  # (M, 3)
    cos, sin = torch.cos(bxs[:, 6]), torch.sin(bxs[:, 6])  # (M,)
    out = torch.zeros(bxs.shape[0], xyz.shape[0], dtype=torch.bool, device=pts.device)
    step = max(1, _CHUNK_ELEMS // max(1, xyz.shape[0]))
    for start in range(0, bxs.shape[0], step):
        sl = slice(start, start + step)
        rel = xyz[None] - bxs[sl, None, :3]  # (m, P, 3)
        local_x = rel[..., 0] * cos[sl, None] + rel[..., 1] * sin[sl, None]  # (m, P)
        local_y = -rel[..., 0] * sin[sl, None] + rel[..., 1] * cos[sl, None]  # (m, P)
        out[sl] = ((local_x.abs() <= half[sl, 0:1]) & (local_y.abs() <= half[sl, 1:2])
                   & (rel[..., 2].abs() <= half[sl, 2:3]))
    return out.numpy() if is_np else out
