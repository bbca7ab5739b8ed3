"""Heterogeneous-model LiDAR encoder ``point_pillar``: PillarVFE + scatter -> raw BEV map (before backbone)."""
import torch.nn as nn

from opencood.models.sub_modules.encoder_inputs import count_modality_agents, modality_inputs
from opencood.models.sub_modules.feature_info import FeatureInfo, check_channels
from opencood.models.sub_modules.pillar_vfe import PillarVFE
from opencood.models.sub_modules.point_pillar_scatter import PointPillarScatter
from opencood.utils.bev_grid import grid_size
from opencood.utils.config import REQUIRED, Key, Schema
from opencood.utils.errors import ConfigError
from opencood.utils.registry import ENCODERS

VOXEL_KEYS = ("voxel_features", "voxel_coords", "voxel_num_points")

PILLAR_KEYS = {
    "voxel_size": Key(list, REQUIRED, "pillar size [vx, vy, vz] metres (= the voxeliser's)", length=3),
    "lidar_range": Key(list, REQUIRED, "[xmin, ymin, zmin, xmax, ymax, zmax] metres, the agent's LiDAR frame",
                       length=6),
    "pillar_vfe": Key(dict, {}, "pillar feature net", schema=PillarVFE.CONFIG),
    "point_pillar_scatter": Key(dict, REQUIRED, "canvas of the pillar features", schema=PointPillarScatter.CONFIG),
}


def pillar_grid(cfg, where, source="config"):
    """(nx, ny, nz) of the pillar canvas: ``bev_grid.grid_size(lidar_range, voxel_size)``.

    A ``point_pillar_scatter.grid_size`` the loader derived from the voxeliser's settings must agree.
    """
    grid = [int(v) for v in grid_size(cfg.lidar_range, cfg.voxel_size)]
    given = cfg.point_pillar_scatter.grid_size
    if given is not None and [int(v) for v in given] != grid:
        raise ConfigError(f"{source}: {where}.point_pillar_scatter.grid_size = {list(given)} (derived from the "
                          f"voxeliser) but {where}.lidar_range / voxel_size give {grid}")
    return grid


def pillar_feature_info(cfg, where, source="config"):
    """Output of PillarVFE + scatter: ``num_features`` channels at the voxel grid (cell = voxel x/y)."""
    vfe_out = FeatureInfo(int(cfg.pillar_vfe.num_filters[-1]), (0.0, 0.0), (0, 0), "pillar_vfe")
    channels = check_channels(cfg.point_pillar_scatter.num_features, vfe_out,
                              f"{where}.point_pillar_scatter.num_features", source)
    nx, ny, _ = pillar_grid(cfg, where, source)
    return FeatureInfo(channels, (float(cfg.voxel_size[0]), float(cfg.voxel_size[1])), (ny, nx))


def build_pillar_modules(cfg, where, source="config"):
    """(PillarVFE, PointPillarScatter) of a parsed pillar section (``PILLAR_KEYS``)."""
    vfe = PillarVFE(cfg.pillar_vfe, num_point_features=4, voxel_size=cfg.voxel_size,
                    point_cloud_range=cfg.lidar_range)
    scatter = PointPillarScatter(dict(cfg.point_pillar_scatter, grid_size=pillar_grid(cfg, where, source)))
    return vfe, scatter


def pillars_to_bev(pillar_vfe, scatter, voxels, n_agents):
    """Pillar features scattered onto each agent's canvas.

    Args:
        voxels: {voxel_features (V, P, 4), voxel_coords (V, 4) [agent index, z, y, x], voxel_num_points (V,)}.
        n_agents: number of agents N (trailing agents without voxels keep an empty canvas).

    Returns:
        (N, C, ny, nx) BEV pseudo-image, rows = y, cols = x.
    """
    batch_dict = {key: voxels[key] for key in VOXEL_KEYS}
    batch_dict["batch_size"] = n_agents
    return scatter(pillar_vfe(batch_dict))["spatial_features"]


@ENCODERS.register("point_pillar")
class PointPillar(nn.Module):
    """PointPillars encoder of one agent type (HEAL ``heter_encoders.PointPillar``).

    Args:
        args: ``encoder_args`` (see ``CONFIG``); ranges/voxels in metres, in each agent's own LiDAR frame.
    """

    WHERE = "model.args.encoder_args"
    CONFIG = Schema(dict(PILLAR_KEYS, grid_size=Key(list, None, "derived (yaml loader): [nx, ny, nz] voxels; "
                                                                "recomputed from lidar_range / voxel_size",
                                                    length=3)), name="point_pillar encoder")

    def __init__(self, args):
        super().__init__()
        cfg = self.CONFIG.parse(args, self.WHERE)
        self.pillar_vfe, self.scatter = build_pillar_modules(cfg, self.WHERE)

    @classmethod
    def feature_info(cls, args, where=WHERE, source="config"):
        """Output map: ``point_pillar_scatter.num_features`` channels on the (ny, nx) voxel grid."""
        return pillar_feature_info(cls.CONFIG.parse(args, where, source), where, source)

    def forward(self, data_dict, modality_name):
        """Args:
            data_dict: batch['ego'] with ``inputs_{modality_name}`` = {voxel_features (V, P, 4),
                voxel_coords (V, 4) [agent index within this modality, z, y, x], voxel_num_points (V,)}.
            modality_name: e.g. ``'m1'``.

        Returns:
            (N_m, C, ny, nx) BEV pseudo-image (rows = y, cols = x), and ``{}`` (no extra outputs).
        """
        inputs = modality_inputs(data_dict, modality_name, VOXEL_KEYS)
        n = count_modality_agents(data_dict, modality_name)
        return pillars_to_bev(self.pillar_vfe, self.scatter, inputs, n), {}
