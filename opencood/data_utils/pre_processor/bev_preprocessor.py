"""PIXOR's BEV input (OpenCOOD ``BevPreprocessor``; spec baselines §A4): an occupancy cube + one intensity channel.

For a cloud in the agent's LiDAR frame and ``cav_lidar_range`` cut into cells of ``voxel_size`` (vx, vy, vz):
channel k < nz is 1 where a point falls in z slice k of a cell column, channel nz is the mean intensity of the
column's points (0 where empty). Layout (nz + 1, ny, nx), rows = y, columns = x (OpenCOOD stored x along rows).
"""
import numpy as np
import torch

from opencood.utils.bev_grid import grid_size
from opencood.utils.config import REQUIRED, Key, Schema
from opencood.utils.errors import ConfigError, DataError
from opencood.utils.registry import PREPROCESSORS


@PREPROCESSORS.register("BevPreprocessor")
class BevPreprocessor:
    """Occupancy + intensity BEV image of one point cloud.

    Args:
        preprocess_params: the YAML ``preprocess`` section (see ``CONFIG``).
        train: unused (same in training and evaluation).
        path: dotted config path of the section, for messages.
    """

    CONFIG = Schema({
        "core_method": Key(str, REQUIRED, "registered pre-processor name"),
        "cav_lidar_range": Key(list, None, "[xmin, ymin, zmin, xmax, ymax, zmax] m of the image", length=6),
        "args": Key(dict, REQUIRED, "BEV image settings", schema=Schema({
            "voxel_size": Key(list, REQUIRED, "[vx, vy, vz] m: pixel size and z-slice height", length=3),
        }, name="bev image")),
    }, name="pre-processing")

    def __init__(self, preprocess_params, train, path="preprocess"):
        source = preprocess_params.get("_source", "config")
        cfg = self.CONFIG.parse(preprocess_params, path, source)
        if cfg.cav_lidar_range is None:
            raise ConfigError(f"{source}: missing key '{path}.cav_lidar_range'")
        self.lidar_range = np.asarray(cfg.cav_lidar_range, dtype=np.float64)
        self.voxel_size = np.asarray(cfg.args.voxel_size, dtype=np.float64)
        if self.voxel_size.min() <= 0:
            raise ConfigError(f"{source}: key '{path}.args.voxel_size' must be 3 positive numbers")
        self.grid_size = grid_size(self.lidar_range, self.voxel_size)  # (nx, ny, nz)
        self.train = train

    @property
    def channels(self):
        """nz occupancy slices + 1 intensity channel."""
        return int(self.grid_size[2]) + 1

    def preprocess(self, pcd_np):
        """Args: pcd_np: (P, >=4) points [x, y, z, intensity] (metres), numpy.

        Returns:
            ``{'bev_input': (nz + 1, ny, nx) float32}``.
        """
        if pcd_np.ndim != 2 or pcd_np.shape[1] < 4:
            raise DataError(f"BevPreprocessor.preprocess: expected points of shape (P, >=4), got {pcd_np.shape}")
        nx, ny, nz = (int(v) for v in self.grid_size)
        idx = np.floor((pcd_np[:, :3] - self.lidar_range[:3]) / self.voxel_size).astype(np.int64)  # (P, 3)
        keep = np.all((idx >= 0) & (idx < np.array([nx, ny, nz])), axis=1)
        idx, intensity = idx[keep], pcd_np[keep, 3].astype(np.float64)
        bev = np.zeros((nz + 1, ny, nx), dtype=np.float32)
        bev[idx[:, 2], idx[:, 1], idx[:, 0]] = 1.0  # occupancy slices
        column = idx[:, 1] * nx + idx[:, 0]
        count = np.bincount(column, minlength=nx * ny)
        total = np.bincount(column, weights=intensity, minlength=nx * ny)
        bev[nz] = (total / np.maximum(count, 1)).reshape(ny, nx)  # mean intensity, 0 where empty
        return {"bev_input": bev}

    @staticmethod
    def collate_batch(batch):
        """List of ``{'bev_input': (C, H, W)}`` -> ``{'bev_input': (B, C, H, W) float tensor}``."""
        return {"bev_input": torch.from_numpy(np.stack([b["bev_input"] for b in batch]))}
