"""Scatter pillar features onto the dense BEV canvas (rows = y, cols = x)."""
import torch.nn as nn

from opencood.utils.errors import ConfigError


class PointPillarScatter(nn.Module):
    """Dense pseudo-image from pillars.

    Args:
        model_cfg: ``{num_features: 64, grid_size: [nx, ny, nz]}`` (``grid_size`` derived by the YAML loader;
            PointPillars has one z cell).
    """

    def __init__(self, model_cfg):
        super().__init__()
        self.num_bev_features = model_cfg["num_features"]
        if "grid_size" not in model_cfg:
            raise ConfigError("point_pillar_scatter: missing key 'grid_size' (derived by yaml_utils.load_yaml)")
        self.nx, self.ny, self.nz = (int(v) for v in model_cfg["grid_size"])
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
