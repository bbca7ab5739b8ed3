"""Point-cloud voxelization in pure torch, reproducing spconv 2's ``Point2VoxelCPU3d``."""
import numpy as np
import torch


def voxelize(points, voxel_size, lidar_range, max_points_per_voxel, max_voxels):
    """Group points into a regular voxel grid.

    Semantics (as spconv's ``Point2VoxelCPU3d`` walking the points in order): the grid has
    ``round((max - min) / voxel_size)`` cells per axis; a point belongs to cell
    ``floor((p - min) / voxel_size)`` and is dropped if that is outside ``[0, grid)`` on any axis.
    Voxels are numbered in the order their first point appears; points that would open voxel number
    ``max_voxels`` or later are dropped, and each voxel keeps its first ``max_points_per_voxel`` points.
    Unused slots are zero. Runs on the device of ``points`` (CPU or CUDA).

    Args:
        points: (P, C) points, xyz first, metres (LiDAR frame); torch tensor or numpy array.
        voxel_size: (3,) voxel edge along x, y, z, metres.
        lidar_range: (6,) ``[xmin, ymin, zmin, xmax, ymax, zmax]`` metres.
        max_points_per_voxel: points kept per voxel.
        max_voxels: voxels kept.

    Returns:
        voxels (V, max_points_per_voxel, C) float32, coords (V, 3) int32 ``(z, y, x)`` cell indices,
        num_points (V,) int32; numpy arrays for numpy input, tensors otherwise.
    """
    is_np = isinstance(points, np.ndarray)
    pts = torch.from_numpy(np.ascontiguousarray(points)) if is_np else points
    device = pts.device
    if not pts.is_floating_point():
        pts = pts.float()
    vsize = torch.as_tensor(voxel_size, dtype=pts.dtype, device=device).reshape(3)
    rng = torch.as_tensor(lidar_range, dtype=pts.dtype, device=device).reshape(6)
    grid = torch.round((rng[3:] - rng[:3]) / vsize).long()  # (3,) cells along x, y, z

    cell = torch.floor((pts[:, :3] - rng[:3]) / vsize).long()  # (P, 3) x, y, z
    valid = ((cell >= 0) & (cell < grid)).all(dim=1)  # (P,)
    pts = pts[valid]  # (Q, C) in point order
    cell = cell[valid]  # (Q, 3)
    key = (cell[:, 2] * grid[1] + cell[:, 1]) * grid[0] + cell[:, 0]  # (Q,) linear z-y-x index

    uniq, inverse = torch.unique(key, return_inverse=True)  # (U,), (Q,)
    pos = torch.arange(key.shape[0], device=device)
    first = torch.full((uniq.shape[0],), key.shape[0], dtype=torch.long, device=device)
    first = first.scatter_reduce(0, inverse, pos, reduce="amin")  # (U,) first point of each voxel
    by_first = torch.argsort(first)  # unique ids in first-occurrence order
    rank = torch.empty_like(by_first)
    rank[by_first] = torch.arange(by_first.shape[0], device=device)
    voxel_id = rank[inverse]  # (Q,) voxel number of each point

    # Slot of each point inside its voxel = number of earlier points of the same voxel.
    sort_vid, sort_pos = torch.sort(voxel_id, stable=True)  # point order kept within a voxel
    counts = torch.bincount(voxel_id, minlength=by_first.shape[0])  # (U,) points per voxel number
    starts = torch.cumsum(counts, 0) - counts  # (U,)
    slot = torch.empty_like(voxel_id)
    slot[sort_pos] = torch.arange(sort_vid.shape[0], device=device) - starts[sort_vid]

    num_voxels = min(int(by_first.shape[0]), int(max_voxels))
    keep = (voxel_id < num_voxels) & (slot < max_points_per_voxel)  # (Q,)
    voxels = torch.zeros(num_voxels, max_points_per_voxel, pts.shape[1], dtype=torch.float32, device=device)
    voxels[voxel_id[keep], slot[keep]] = pts[keep].float()  # (V, max_pts, C)
    num_points = counts[:num_voxels].clamp(max=max_points_per_voxel).int()  # (V,)
    lin = uniq[by_first[:num_voxels]]  # (V,)
    coords = torch.stack([lin // (grid[0] * grid[1]), (lin // grid[0]) % grid[1], lin % grid[0]], dim=1).int()
    if is_np:
        return voxels.numpy(), coords.numpy(), num_points.numpy()
    return voxels, coords, num_points
