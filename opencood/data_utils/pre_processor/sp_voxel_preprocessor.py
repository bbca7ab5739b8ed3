"""Voxelisation of LiDAR point clouds for PointPillars / SECOND encoders (spconv-2 semantics).

The grid is ``round((max - min) / voxel_size)`` cells of ``cav_lidar_range`` (``opencood.utils.bev_grid.grid_size``); points outside the range
are dropped, every voxel keeps at most ``max_points_per_voxel`` points (first come, first kept) and at
most ``max_voxel_train`` / ``max_voxel_test`` voxels are produced, in first-occurrence order of the
points — exactly what spconv's ``Point2VoxelCPU3d`` does.

Two interchangeable backends give identical outputs: spconv's ``PointToVoxel`` (about 4x faster on the
CPU, where data-loader workers voxelise, but it keeps a dense int32 hash of the whole grid: 0.5 MB for
PointPillars' 512 x 256 x 1 grid, 340 MB for SECOND's 2048 x 1024 x 40) and the pure-torch
:func:`opencood.ops.voxelize.voxelize` (no grid-sized memory, runs on CUDA tensors too). The default
(``backend=None``) uses spconv for CPU input when the grid has at most ``SPCONV_MAX_GRID_CELLS`` cells,
the torch op otherwise.

Units: metres, in the frame of the agent whose points are given (usually its own LiDAR frame).
"""
import importlib

import numpy as np
import torch

from opencood.data_utils.pre_processor.batch_utils import cat_tensors
from opencood.ops.voxelize import voxelize
from opencood.utils.bev_grid import grid_size
from opencood.utils.config import REQUIRED, Key, Schema
from opencood.utils.errors import ConfigError, DataError
from opencood.utils.registry import PREPROCESSORS
from opencood.utils.spconv_utils import import_spconv

# Point features fed to the encoders: x, y, z, intensity.
NUM_POINT_FEATURES = 4
# Largest grid (cells) for which spconv's dense voxel hash (4 bytes a cell) is worth its memory.
SPCONV_MAX_GRID_CELLS = 1 << 24
BACKENDS = ("spconv", "torch")


@PREPROCESSORS.register("SpVoxelPreprocessor")
class SpVoxelPreprocessor:
    """Turn one agent's point cloud into voxels (spconv-2 ``Point2VoxelCPU3d`` semantics).

    Args:
        preprocess_params: the YAML ``preprocess`` section (see ``CONFIG``).
        train: use ``max_voxel_train`` (True) or ``max_voxel_test`` (False) as the voxel cap.
        backend: ``'spconv'``, ``'torch'`` or None (automatic, see the module docstring); CUDA input
            always uses the torch op.
        path: dotted config path of the section, for messages (``heter.modality_setting.m1.preprocess``).
    """

    CONFIG = Schema({
        "core_method": Key(str, REQUIRED, "registered pre-processor name"),
        "cav_lidar_range": Key(list, None, "[xmin, ymin, zmin, xmax, ymax, zmax] m of the voxel grid (derived from "
                                           "the top-level cav_lidar_range when absent)", length=6),
        "args": Key(dict, REQUIRED, "voxeliser settings", schema=Schema({
            "voxel_size": Key(list, REQUIRED, "[vx, vy, vz] m", length=3),
            "max_points_per_voxel": Key(int, REQUIRED, "points kept per voxel (first come, first kept)"),
            "max_voxel_train": Key(int, REQUIRED, "voxel cap per cloud in training"),
            "max_voxel_test": Key(int, REQUIRED, "voxel cap per cloud in evaluation"),
            "on_device": Key(bool, False, "workers pass points; voxelise after the batch reached the model's device"),
        }, name="voxeliser")),
    }, name="pre-processing")

    def __init__(self, preprocess_params, train, backend=None, path="preprocess"):
        source = preprocess_params.get("_source", "config") if isinstance(preprocess_params, dict) else "config"
        cfg = self.CONFIG.parse(preprocess_params, path, source)
        self.params = preprocess_params
        self.train = train
        if cfg.cav_lidar_range is None:
            raise ConfigError(f"{source}: missing key '{path}.cav_lidar_range'")
        self.lidar_range = [float(v) for v in cfg.cav_lidar_range]
        self.voxel_size = [float(v) for v in cfg.args.voxel_size]
        if min(self.voxel_size) <= 0:
            raise ConfigError(f"{source}: key '{path}.args.voxel_size' must be 3 positive numbers, "
                              f"got {cfg.args.voxel_size}")
        self.max_points_per_voxel = int(cfg.args.max_points_per_voxel)
        self.max_voxels = int(cfg.args.max_voxel_train if train else cfg.args.max_voxel_test)
        self.grid_size = grid_size(self.lidar_range, self.voxel_size)  # (3,) cells along x, y, z
        if backend is None:
            backend = "spconv" if int(np.prod(self.grid_size)) <= SPCONV_MAX_GRID_CELLS else "torch"
        if backend not in BACKENDS:
            raise ValueError(f"SpVoxelPreprocessor: backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend
        # on_device: workers only read points; voxelisation happens after the batch reached the model's
        # device (``voxelize_collated``), e.g. on the GPU, instead of in the DataLoader workers.
        self.on_device = bool(cfg.args.on_device)
        self._spconv_generator = None  # built on first use, inside the data-loader worker
        self._spconv_buffer_zero = False  # whether the generator's voxel buffer is known to be all zero

    def _spconv_voxelize(self, points):
        """spconv ``PointToVoxel`` on CPU points (P, 4) -> (voxels, coords, num_points) tensors.

        The generator's voxel buffer (``max_voxels x max_points_per_voxel x 4`` floats, 16 MB for
        PointPillars) is kept all-zero between calls by re-zeroing only the rows a call filled, so spconv
        need not clear the whole buffer every time (its ``clear_voxels``), which was ~40% of its run time.
        """
        if self._spconv_generator is None:
            import_spconv("preprocess.core_method")
            point_to_voxel = importlib.import_module("spconv.pytorch.utils").PointToVoxel
            self._spconv_generator = point_to_voxel(
                vsize_xyz=self.voxel_size, coors_range_xyz=self.lidar_range, num_point_features=NUM_POINT_FEATURES,
                max_num_voxels=self.max_voxels, max_num_points_per_voxel=self.max_points_per_voxel)
            self._spconv_buffer_zero = True  # PointToVoxel allocates its buffers with zeros
        generator = self._spconv_generator
        clean, self._spconv_buffer_zero = self._spconv_buffer_zero, False  # stays False if the call raises
        voxels, coords, num_points = generator(points, clear_voxels=not clean)  # copies of its buffers
        generator.voxels[:voxels.shape[0]].zero_()
        self._spconv_buffer_zero = True
        return voxels, coords, num_points

    def preprocess(self, pcd_np):
        """Voxelise one point cloud.

        Args:
            pcd_np: (P, >=4) points ``[x, y, z, intensity, ...]`` in metres, numpy or torch (any device);
                only the first 4 columns are used.

        Returns:
            dict with ``voxel_features`` (V, max_points_per_voxel, 4) float32 (zero padded),
            ``voxel_coords`` (V, 3) int32 as (z, y, x) cell indices and ``voxel_num_points`` (V,) int32;
            numpy arrays for numpy input, tensors on the input's device for torch input.
        """
        is_np = isinstance(pcd_np, np.ndarray)
        if pcd_np.ndim != 2 or pcd_np.shape[1] < NUM_POINT_FEATURES:
            raise DataError(f"SpVoxelPreprocessor.preprocess: expected points of shape (P, >=4), "
                            f"got {tuple(pcd_np.shape)}")
        if self.on_device and is_np:
            return {"points": np.ascontiguousarray(pcd_np[:, :NUM_POINT_FEATURES], dtype=np.float32)}  # (P, 4)
        points = torch.from_numpy(np.ascontiguousarray(pcd_np[:, :NUM_POINT_FEATURES], dtype=np.float32)) \
            if is_np else pcd_np[:, :NUM_POINT_FEATURES].float().contiguous()  # (P, 4)
        if self.backend == "spconv" and points.device.type == "cpu":
            voxels, coords, num_points = self._spconv_voxelize(points)
        else:
            voxels, coords, num_points = voxelize(points, self.voxel_size, self.lidar_range,
                                                  self.max_points_per_voxel, self.max_voxels)
        out = {"voxel_features": voxels, "voxel_coords": coords, "voxel_num_points": num_points}
        if is_np:
            out = {k: v.numpy() for k, v in out.items()}
        return out

    @staticmethod
    def collate_batch(batch):
        """Stack the voxels of several point clouds, prefixing each voxel's coords by its cloud index.

        Args:
            batch: list of :meth:`preprocess` outputs, or a dict of lists
                ``{'voxel_features': [...], 'voxel_coords': [...], 'voxel_num_points': [...]}``.

        Returns:
            dict of tensors: ``voxel_features`` (ΣV, P, 4) float32, ``voxel_coords`` (ΣV, 4) int32 as
            ``[cloud index, z, y, x]``, ``voxel_num_points`` (ΣV,) int32 (in shared memory when called in a
            DataLoader worker, see ``batch_utils``).
        """
        if isinstance(batch, (list, tuple)) and batch and "points" in batch[0]:
            # on_device: (ΣP, 5) points [cloud index, x, y, z, intensity], voxelised later on the device
            pts = [torch.as_tensor(b["points"]).float() for b in batch]
            return {"points": cat_tensors([torch.cat([torch.full_like(p[:, :1], i), p], dim=1)
                                           for i, p in enumerate(pts)])}
        if isinstance(batch, dict):
            features, coords, num_points = batch["voxel_features"], batch["voxel_coords"], batch["voxel_num_points"]
        elif isinstance(batch, (list, tuple)):
            features = [b["voxel_features"] for b in batch]
            coords = [b["voxel_coords"] for b in batch]
            num_points = [b["voxel_num_points"] for b in batch]
        else:
            raise TypeError(f"SpVoxelPreprocessor.collate_batch: expected a list or dict, got {type(batch).__name__}")
        coords = [torch.as_tensor(c).to(torch.int32) for c in coords]  # each (V_i, 3)
        prefixed = [torch.cat([torch.full_like(c[:, :1], i), c], dim=1) for i, c in enumerate(coords)]
        return {
            "voxel_features": cat_tensors([torch.as_tensor(f).float() for f in features]),  # (ΣV, P, 4)
            "voxel_coords": cat_tensors(prefixed),  # (ΣV, 4)
            "voxel_num_points": cat_tensors([torch.as_tensor(n).to(torch.int32) for n in num_points]),  # (ΣV,)
        }

    def voxelize_collated(self, collated):
        """Voxelise a collated ``{'points': (ΣP, 5)}`` batch on its own device (GPU when it is there).

        Same result as voxelising each cloud in the workers and collating (``ops.voxelize`` reproduces
        spconv's voxeliser exactly): one call per cloud, so each keeps its own ``max_voxels`` cap.

        Returns:
            the :meth:`collate_batch` voxel dict (``voxel_coords`` prefixed by the cloud index).
        """
        points = collated["points"]  # (ΣP, 5)
        idx = points[:, 0].long()
        n = int(idx.max().item()) + 1 if idx.numel() else 0
        order = torch.argsort(idx, stable=True)
        counts = torch.bincount(idx, minlength=n).tolist()
        parts = torch.split(points[order, 1:], counts)  # each (P_i, 4), original point order kept
        return self.collate_batch([self.preprocess(p) for p in parts])
