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
from opencood.models.sub_modules.sparse_backbone_3d import VoxelBackBone8x
from opencood.utils.errors import ConfigError, DataError
from opencood.utils.registry import ENCODERS

_WHERE = "model.args.encoder_args"
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
        encoder_args: see the module docstring.

    ``spconv.num_features_in`` must equal the MeanVFE output (4). HEAL's configs say 64 (a bug that spconv 1
    tolerated, HEAL issue 20); such a value is replaced by 4 with a warning.
    """

    def __init__(self, encoder_args):
        super().__init__()
        for key in ("voxel_size", "lidar_range", "spconv"):
            if key not in encoder_args:
                raise ConfigError(f"{_WHERE}: missing key '{key}'")
        voxel_size = np.asarray(encoder_args["voxel_size"], dtype=np.float64)
        lidar_range = np.asarray(encoder_args["lidar_range"], dtype=np.float64)
        if voxel_size.shape != (3,) or lidar_range.shape != (6,):
            raise ConfigError(f"{_WHERE}: 'voxel_size' needs 3 numbers and 'lidar_range' 6")
        grid_size = np.round((lidar_range[3:] - lidar_range[:3]) / voxel_size).astype(np.int64)  # (x, y, z)
        self.sparse_shape = grid_size[::-1] + np.array([1, 0, 0])  # (z, y, x)

        num_point_features = int(encoder_args.get("mean_vfe", {}).get("num_point_features", 4))
        spconv_args = encoder_args["spconv"]
        num_in = int(spconv_args.get("num_features_in", num_point_features))
        if num_in != num_point_features:
            warnings.warn(f"{_WHERE}.spconv.num_features_in: {num_in} does not match the MeanVFE output "
                          f"({num_point_features}); using {num_point_features}")
        num_out = int(spconv_args.get("num_features_out", 64))

        self.vfe = MeanVFE(num_point_features)
        self.spconv_block = VoxelBackBone8x(num_point_features, num_out, self.sparse_shape)
        self.map_to_bev = HeightCompression()
        depth = VoxelBackBone8x.output_shape(self.sparse_shape)[0]
        self.out_channels = num_out * depth
        feature_num = encoder_args.get("map2bev", {}).get("feature_num")
        if feature_num is not None and int(feature_num) != self.out_channels:
            raise ConfigError(f"{_WHERE}.map2bev.feature_num: {feature_num} does not match the backbone output "
                              f"{num_out} channels x {depth} z-cells = {self.out_channels}")

    def forward(self, data_dict, modality_name):
        """Args:
            data_dict: batch dict with ``inputs_<modality_name>`` = ``{'voxel_features' (V, P, 4),
                'voxel_coords' (V, 4) [agent_idx, z, y, x], 'voxel_num_points' (V,)}`` and optionally
                ``'batch_size'`` (number of agents N; default max agent_idx + 1).
            modality_name: e.g. ``'m3'``.

        Returns:
            (N, num_features_out·Z', Y/8, X/8) BEV features, e.g. (N, 128, 128, 256).
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
        return self.map_to_bev(volume)  # (N, C*Z', Y/8, X/8)
