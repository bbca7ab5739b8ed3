"""SECOND LiDAR encoder (spec baselines §A2): MeanVFE -> VoxelBackBone8x (spconv) -> HeightCompression.

``encoder_args``: ``voxel_size`` (3,) metres, ``lidar_range`` (6,) [xmin, ymin, zmin, xmax, ymax, zmax] metres,
``mean_vfe{num_point_features: 4}``, ``spconv{num_features_in, num_features_out: 64}``,
``map2bev{feature_num: 128}``. With voxel 0.1³ on [-102.4, -51.2, -3, 102.4, 51.2, 1] the sparse grid is
(z, y, x) = (41, 1024, 2048) and the output (N, 128, 128, 256) (stride 8 in x/y).
"""
import warnings

import numpy as np
import torch
import torch.nn as nn

from opencood.models.sub_modules.encoder_inputs import count_modality_agents, modality_inputs
from opencood.models.sub_modules.feature_info import FeatureInfo
from opencood.models.sub_modules.sparse_backbone_3d import VoxelBackBone8x
from opencood.utils.bev_grid import grid_size
from opencood.utils.config import REQUIRED, Key, Schema
from opencood.utils.errors import ConfigError, DataError
from opencood.utils.registry import ENCODERS

VOXEL_KEYS = ("voxel_features", "voxel_coords", "voxel_num_points")


class MeanVFE(nn.Module):
    """Voxel feature = mean of its points' features (zero-padded slots ignored).

    Args:
        num_point_features: features per point (4: x, y, z, intensity).
    """

    def __init__(self, num_point_features=4):
        super().__init__()
        self.num_point_features = int(num_point_features)

    def forward(self, voxel_features, voxel_num_points):
        """Args:
            voxel_features: (V, P, C) points of each voxel, padded with zeros.
            voxel_num_points: (V,) valid points per voxel.

        Returns:
            (V, C) mean features.
        """
        total = voxel_features[:, :, :self.num_point_features].sum(dim=1)  # (V, C)
        count = voxel_num_points.view(-1, 1).clamp(min=1).type_as(total)  # (V, 1)
        return total / count


class HeightCompression(nn.Module):
    """Fold the z axis of a dense volume into channels: (N, C, D, H, W) -> (N, C·D, H, W)."""

    def forward(self, volume):
        n, c, d, h, w = volume.shape
        return volume.reshape(n, c * d, h, w)  # (N, C*D, H, W), channel = c*D + z


@ENCODERS.register("second")
class SECOND(nn.Module):
    """Sparse-convolution LiDAR encoder returning a BEV map at 1/8 of the voxel grid in x/y.

    Args:
        encoder_args: see ``CONFIG`` and the module docstring.

    ``spconv.num_features_in`` must equal the MeanVFE output (4). HEAL's configs say 64 (a bug that spconv 1
    tolerated, HEAL issue 20); such a value is replaced by 4 with a warning.
    """

    WHERE = "model.args.encoder_args"
    CONFIG = Schema({
        "voxel_size": Key(list, REQUIRED, "voxel [vx, vy, vz] metres (= the voxeliser's)", length=3),
        "lidar_range": Key(list, REQUIRED, "[xmin, ymin, zmin, xmax, ymax, zmax] metres, the agent's LiDAR frame",
                           length=6),
        "mean_vfe": Key(dict, {}, "voxel feature = mean of its points", schema=Schema({
            "num_point_features": Key(int, 4, "features per point (x, y, z, intensity)"),
        })),
        "spconv": Key(dict, REQUIRED, "VoxelBackBone8x", schema=Schema({
            "num_features_in": Key(int, None, "input features per voxel; must be mean_vfe.num_point_features "
                                              "(HEAL's 64 is replaced with a warning)"),
            "num_features_out": Key(int, 64, "channels of the output volume"),
        })),
        "map2bev": Key(dict, {}, "height compression (z folded into channels)", schema=Schema({
            "feature_num": Key(int, None, "BEV channels = num_features_out x output z cells (checked)"),
        })),
        "grid_size": Key(list, None, "derived (yaml loader): [nx, ny, nz] voxels; recomputed from lidar_range / "
                                     "voxel_size", length=3),
    }, name="second encoder")

    def __init__(self, encoder_args):
        super().__init__()
        cfg = self.CONFIG.parse(encoder_args, self.WHERE)
        self.sparse_shape = self.sparse_grid(cfg)
        num_point_features = cfg.mean_vfe.num_point_features
        num_in = cfg.spconv.num_features_in
        if num_in is not None and num_in != num_point_features:
            warnings.warn(f"{self.WHERE}.spconv.num_features_in: {num_in} does not match the MeanVFE output "
                          f"({num_point_features}); using {num_point_features}")
        self.feature_info(cfg)  # checks map2bev.feature_num

        self.vfe = MeanVFE(num_point_features)
        self.spconv_block = VoxelBackBone8x(num_point_features, cfg.spconv.num_features_out, self.sparse_shape)
        self.map_to_bev = HeightCompression()

    @staticmethod
    def sparse_grid(cfg):
        """(z, y, x) sparse shape = ``bev_grid.grid_size(lidar_range, voxel_size)[::-1] + [1, 0, 0]``."""
        return grid_size(cfg.lidar_range, cfg.voxel_size)[::-1] + np.array([1, 0, 0])

    @classmethod
    def feature_info(cls, args, where=WHERE, source="config"):
        """Output map: ``num_features_out`` x Z' channels at 8 voxels per cell in x/y (``map2bev`` checked)."""
        cfg = cls.CONFIG.parse(args, where, source)
        depth, height, width = VoxelBackBone8x.output_shape(cls.sparse_grid(cfg))
        num_out = cfg.spconv.num_features_out
        channels = num_out * depth
        feature_num = cfg.map2bev.feature_num
        if feature_num is not None and feature_num != channels:
            raise ConfigError(f"{source}: {where}.map2bev.feature_num = {feature_num} but spconv outputs "
                              f"{channels} channels ({num_out} x {depth} z-cells)")
        vx, vy = float(cfg.voxel_size[0]), float(cfg.voxel_size[1])
        return FeatureInfo(channels, (8 * vx, 8 * vy), (height, width))

    def forward(self, data_dict, modality_name):
        """Args:
            data_dict: batch dict with ``inputs_<modality_name>`` = ``{'voxel_features' (V, P, 4),
                'voxel_coords' (V, 4) [agent_idx, z, y, x], 'voxel_num_points' (V,)}`` and optionally
                ``'batch_size'`` (number of agents N; default max agent_idx + 1).
            modality_name: e.g. ``'m3'``.

        Returns:
            (N, num_features_out·Z', Y/8, X/8) BEV features, e.g. (N, 128, 128, 256), and ``{}``.
        """
        key = f"inputs_{modality_name}"
        inputs = modality_inputs(data_dict, modality_name, VOXEL_KEYS)
        coords = inputs["voxel_coords"]
        batch_size = inputs.get("batch_size")
        if batch_size is None:
            batch_size = count_modality_agents(data_dict, modality_name)
        if batch_size is None:
            if coords.shape[0] == 0:
                raise DataError(f"batch['{key}']: no voxels and no 'batch_size'")
            batch_size = int(coords[:, 0].max()) + 1
        features = self.vfe(inputs["voxel_features"], inputs["voxel_num_points"])  # (V, 4)
        if features.is_cuda:
            volume = self.spconv_block(features, coords, int(batch_size))  # (N, C, Z', Y/8, X/8)
        else:  # spconv's CPU kernels have no bf16: under CPU autocast the sparse part runs in fp32
            with torch.autocast("cpu", enabled=False):
                volume = self.spconv_block(features.float(), coords, int(batch_size))
        return self.map_to_bev(volume), {}  # (N, C*Z', Y/8, X/8)
