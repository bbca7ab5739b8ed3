"""Scatter pillar features onto the dense BEV canvas (rows = y, cols = x)."""
import torch.nn as nn

from opencood.utils.config import REQUIRED, Key, Schema
from opencood.utils.errors import ConfigError


class PointPillarScatter(nn.Module):
    """Dense pseudo-image from pillars.

    Args:
        model_cfg: the ``point_pillar_scatter`` section (see ``CONFIG``; PointPillars has one z cell).
    """

    CONFIG = Schema({
        "num_features": Key(int, REQUIRED, "channels of the canvas = the pillar feature size (pillar_vfe's last "
                                           "num_filters)"),
        "grid_size": Key(list, None, "derived (yaml loader / encoder): [nx, ny, nz] voxels of the canvas",
                         length=3),
    }, name="point_pillar_scatter")

    def __init__(self, model_cfg):
        super().__init__()
        cfg = self.CONFIG.parse(model_cfg, "point_pillar_scatter")
        if cfg.grid_size is None:
            raise ConfigError("point_pillar_scatter: missing key 'grid_size' (derived by yaml_utils.load_yaml)")
        self.nx, self.ny, self.nz = (int(v) for v in cfg.grid_size)
        if self.nz != 1:
            raise ConfigError(f"point_pillar_scatter: grid_size z must be 1 for pillars, got {self.nz}")

    def forward(self, batch_dict):
        """Args:
            batch_dict: ``pillar_features`` (M, C), ``voxel_coords`` (M, 4) as (agent, z, y, x); optional
                ``batch_size`` (number of agents; default max agent index + 1).

        Returns:
            batch_dict with ``spatial_features`` (N, C, ny, nx).
        """
        pillars = batch_dict["pillar_features"]  # (M, C)
        coords = batch_dict["voxel_coords"].long()  # (M, 4)
        n = batch_dict.get("batch_size")
        if n is None:
            n = int(coords[:, 0].max().item()) + 1 if coords.shape[0] else 1
        cells = self.ny * self.nx
        index = coords[:, 0] * cells + coords[:, 2] * self.nx + coords[:, 3]  # (M,)
        canvas = pillars.new_zeros(n * cells, pillars.shape[1])  # (N*ny*nx, C)
        canvas = canvas.index_copy(0, index, pillars)
        batch_dict["spatial_features"] = (
            canvas.view(n, self.ny, self.nx, -1).permute(0, 3, 1, 2).contiguous())  # (N, C, ny, nx)
        return batch_dict
