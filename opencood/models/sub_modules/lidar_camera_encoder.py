"""LiDAR + camera agent type (the seed's "LiDAR + Camera" modality): one agent carrying both sensors.

PointPillars BEV of its LiDAR (``lidar``: point_pillar encoder args) and Lift-Splat-Shoot BEV of its cameras
(``camera``: lift_splat_shoot encoder args) on the same cell size; the camera map is centre-cropped /
zero-padded onto the LiDAR grid (as camera agent types are), both are concatenated and fused by a 1x1 conv +
BN + ReLU into ``out_channels``. The result is the type's raw BEV map (before its backbone), on the LiDAR grid.

Input ``inputs_mX``: the voxel keys of the type's voxeliser and the camera keys of ``process_camera_data`` in
one dict (``heter.modality_setting.mX.sensor_type: lidar_camera``; intermediate heterogeneous dataset).
"""
import torch
import torch.nn as nn
import torchvision.transforms.functional as TF

from opencood.models.sub_modules.feature_info import FeatureInfo, format_cell, same_cell
from opencood.models.sub_modules.lift_splat_shoot import LiftSplatShoot
from opencood.models.sub_modules.point_pillar_encoder import PointPillar
from opencood.utils.config import REQUIRED, Key, Schema
from opencood.utils.errors import ConfigError
from opencood.utils.registry import ENCODERS


@ENCODERS.register("lidar_camera")
class LidarCameraEncoder(nn.Module):
    """LiDAR and camera BEV of one agent fused onto the LiDAR grid.

    Args:
        encoder_args: see ``CONFIG``.
    """

    WHERE = "model.args.encoder_args"
    CONFIG = Schema({
        "lidar": Key(dict, REQUIRED, "PointPillars encoder (point_pillar encoder_args)", schema=PointPillar.CONFIG),
        "camera": Key(dict, REQUIRED, "Lift-Splat-Shoot encoder (lift_splat_shoot encoder_args)",
                      schema=LiftSplatShoot.CONFIG),
        "out_channels": Key(int, REQUIRED, "channels of the fused BEV map (1x1 conv over LiDAR + camera channels)"),
    }, name="lidar_camera encoder")

    def __init__(self, encoder_args):
        super().__init__()
        cfg = self.CONFIG.parse(encoder_args, self.WHERE)
        lidar, camera = self.branch_infos(cfg)
        self.size = lidar.size  # (H, W) of the LiDAR grid
        self.lidar_encoder = PointPillar(cfg.lidar)
        self.camera_encoder = LiftSplatShoot(cfg.camera)
        self.fuse = nn.Sequential(nn.Conv2d(lidar.channels + camera.channels, cfg.out_channels, 1, bias=False),
                                  nn.BatchNorm2d(cfg.out_channels, eps=1e-3, momentum=0.01), nn.ReLU(inplace=True))

    @classmethod
    def branch_infos(cls, cfg, where=WHERE, source="config"):
        """(LiDAR FeatureInfo, camera FeatureInfo); the two cells must be equal."""
        lidar = PointPillar.feature_info(cfg.lidar, f"{where}.lidar", source)
        camera = LiftSplatShoot.feature_info(cfg.camera, f"{where}.camera", source)
        if not same_cell(lidar.cell, camera.cell):
            raise ConfigError(f"{source}: {where}.camera.grid_conf cells {format_cell(camera.cell)} differ from the "
                              f"LiDAR voxels {format_cell(lidar.cell)} ({where}.lidar.voxel_size)")
        return lidar, camera

    @classmethod
    def feature_info(cls, args, where=WHERE, source="config"):
        """Output map: ``out_channels`` on the LiDAR grid."""
        cfg = cls.CONFIG.parse(args, where, source)
        lidar, _ = cls.branch_infos(cfg, where, source)
        return FeatureInfo(cfg.out_channels, lidar.cell, lidar.size)

    def forward(self, data_dict, modality_name):
        """Args:
            data_dict: batch dict with ``inputs_<modality_name>`` holding the voxel keys (``voxel_features``,
                ``voxel_coords``, ``voxel_num_points``) and the camera keys (``imgs``, ``intrins``, ``rots``,
                ``trans``, ``post_rots``, ``post_trans``) of the same agents.
            modality_name: e.g. ``'m1'``.

        Returns:
            (N, out_channels, H, W) fused BEV on the LiDAR grid, and the camera encoder's aux (depth items).
        """
        lidar, _ = self.lidar_encoder(data_dict, modality_name)  # (N, C_l, H, W)
        camera, aux = self.camera_encoder(data_dict, modality_name)  # (N, C_c, H_c, W_c), same cell
        camera = TF.center_crop(camera, list(self.size))  # (N, C_c, H, W): crop or zero-pad
        return self.fuse(torch.cat([lidar, camera], dim=1)), aux  # (N, out_channels, H, W)
