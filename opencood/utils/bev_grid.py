"""The bird's-eye-view grid of an experiment, derived once from the config (``yaml_utils`` resolve pass).

Everything that lays data or features on a grid — voxelisers, scatter/encoders, anchors, late-fusion
agent ranges, evaluation ranges — takes its numbers from a :class:`BEVGrid` instead of recomputing them.

Units and frame: metres, in the LiDAR frame of the agent the grid belongs to (x forward, y right, z up);
ranges ``[xmin, ymin, zmin, xmax, ymax, zmax]``; voxel sizes ``[vx, vy, vz]``.
"""
import math
from dataclasses import dataclass, replace

import numpy as np


def grid_size(lidar_range, voxel_size):
    """Voxel grid ``(nx, ny, nz)`` = round((max - min) / voxel), as spconv's voxeliser computes it.

    Args:
        lidar_range: 6 numbers, metres.
        voxel_size: 3 numbers, metres.

    Returns:
        (3,) int64 numpy array.
    """
    r = np.asarray(lidar_range, dtype=np.float64)
    v = np.asarray(voxel_size, dtype=np.float64)
    return np.round((r[3:6] - r[0:3]) / v).astype(np.int64)


def anchor_cells(lidar_range, voxel_size):
    """HEAL's anchor-grid cell counts ``(W, H, D)`` = ceil(extent / voxel) along x, y, z."""
    r = [float(v) for v in lidar_range]
    v = [float(x) for x in voxel_size]
    return (math.ceil((r[3] - r[0]) / v[0]), math.ceil((r[4] - r[1]) / v[1]), math.ceil((r[5] - r[2]) / v[2]))


def range_hull(range_a, range_b):
    """Smallest ``[xmin, ymin, zmin, xmax, ymax, zmax]`` containing both ranges."""
    return [min(range_a[i], range_b[i]) for i in range(3)] + [max(range_a[i], range_b[i]) for i in range(3, 6)]


@dataclass(frozen=True)
class CameraGrid:
    """BEV extent of one camera agent type (its LSS ``grid_conf``): bounds ``[min, max, step]`` metres."""

    xbound: tuple
    ybound: tuple

    def crop_ratio(self, lidar_range):
        """(ratio_H, ratio_W) = LiDAR half-extent / camera half-extent (centre crop or zero pad)."""
        return (float(lidar_range[4]) / float(self.ybound[1]), float(lidar_range[3]) / float(self.xbound[1]))


@dataclass(frozen=True)
class BEVGrid:
    """The shared detection grid.

    Attributes:
        lidar_range: (6,) metres (``cav_lidar_range``).
        voxel_size: (3,) metres of the anchor/feature reference grid (``preprocess.args.voxel_size``).
        feature_stride: anchor grid cell = ``feature_stride`` voxels (``postprocess.anchor_args.feature_stride``).
        gt_range: (6,) metres, evaluation range (``postprocess.gt_range``, default ``lidar_range``).

    Camera agent types have their own extent (:class:`CameraGrid`, from their ``grid_conf``).
    """

    lidar_range: tuple
    voxel_size: tuple
    feature_stride: int = 2
    gt_range: tuple = None

    def __post_init__(self):
        object.__setattr__(self, "lidar_range", tuple(float(v) for v in self.lidar_range))
        object.__setattr__(self, "voxel_size", tuple(float(v) for v in self.voxel_size))
        object.__setattr__(self, "feature_stride", int(self.feature_stride))
        gt = self.lidar_range if self.gt_range is None else self.gt_range
        object.__setattr__(self, "gt_range", tuple(float(v) for v in gt))

    @property
    def grid_size(self):
        """(nx, ny, nz) voxels of ``voxel_size`` over ``lidar_range``."""
        return tuple(int(v) for v in grid_size(self.lidar_range, self.voxel_size))

    @property
    def anchor_cells(self):
        """HEAL's ``anchor_args`` ``(W, H, D)`` (ceil of extent / voxel)."""
        return anchor_cells(self.lidar_range, self.voxel_size)

    @property
    def feature_shape(self):
        """(H', W') of the anchor/feature map = (H // stride, W // stride)."""
        w, h, _ = self.anchor_cells
        return (h // self.feature_stride, w // self.feature_stride)

    @property
    def feature_cell(self):
        """(metres along x, metres along y) of one feature-map cell."""
        return (self.voxel_size[0] * self.feature_stride, self.voxel_size[1] * self.feature_stride)

    def with_range(self, lidar_range):
        """The same grid over another range (late fusion's test-time agent range)."""
        return replace(self, lidar_range=tuple(lidar_range))

    def anchor_args(self):
        """Derived ``postprocess.anchor_args`` values: cav_lidar_range, W, H, D, vw, vh, vd."""
        w, h, d = self.anchor_cells
        vw, vh, vd = self.voxel_size
        return {"cav_lidar_range": list(self.lidar_range), "W": w, "H": h, "D": d, "vw": vw, "vh": vh, "vd": vd}

    @classmethod
    def from_hypes(cls, hypes):
        """The grid of a loaded (resolved) experiment config: ``cav_lidar_range``,
        ``preprocess.args.voxel_size``, ``postprocess.anchor_args.feature_stride`` and ``postprocess.gt_range``.
        """
        pre = hypes.get("preprocess") or {}
        post = hypes.get("postprocess") or {}
        lidar_range = pre.get("cav_lidar_range", hypes.get("cav_lidar_range"))
        stride = (post.get("anchor_args") or {}).get("feature_stride", 2)
        return cls(lidar_range, pre["args"]["voxel_size"], stride, post.get("gt_range"))
