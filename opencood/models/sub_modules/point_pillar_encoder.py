"""Heterogeneous-model LiDAR encoder ``point_pillar``: PillarVFE + scatter -> raw BEV map (before backbone)."""
import torch.nn as nn

from opencood.models.sub_modules.encoder_inputs import count_modality_agents, modality_inputs
from opencood.models.sub_modules.pillar_vfe import PillarVFE
from opencood.models.sub_modules.point_pillar_scatter import PointPillarScatter
from opencood.utils.registry import ENCODERS


@ENCODERS.register("point_pillar")
class PointPillar(nn.Module):
    """PointPillars encoder of one agent type (HEAL ``heter_encoders.PointPillar``).

    Args:
        args: ``encoder_args`` = ``{voxel_size, lidar_range, pillar_vfe{...}, point_pillar_scatter{num_features,
            grid_size}}``; ranges/voxels in metres, in each agent's own LiDAR frame.
    """

    def __init__(self, args):
        super().__init__()
        self.pillar_vfe = PillarVFE(args["pillar_vfe"], num_point_features=4,
                                    voxel_size=args["voxel_size"], point_cloud_range=args["lidar_range"])
        self.scatter = PointPillarScatter(args["point_pillar_scatter"])
        self.out_channels = self.scatter.num_bev_features

    def forward(self, data_dict, modality_name):
        """Args:
            data_dict: batch['ego'] with ``inputs_{modality_name}`` = {voxel_features (V, P, 4),
                voxel_coords (V, 4) [agent index within this modality, z, y, x], voxel_num_points (V,)}.
            modality_name: e.g. ``'m1'``.

        Returns:
            (N_m, 64, ny, nx) BEV pseudo-image, rows = y, cols = x.
        """
        inputs = modality_inputs(data_dict, modality_name, ("voxel_features", "voxel_coords", "voxel_num_points"))
        batch_dict = {
            "voxel_features": inputs["voxel_features"],
            "voxel_coords": inputs["voxel_coords"],
            "voxel_num_points": inputs["voxel_num_points"],
            "batch_size": count_modality_agents(data_dict, modality_name),
        }
        batch_dict = self.pillar_vfe(batch_dict)
        batch_dict = self.scatter(batch_dict)
        return batch_dict["spatial_features"]
