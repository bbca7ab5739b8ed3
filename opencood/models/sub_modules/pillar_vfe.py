"""Pillar feature net of PointPillars: per-point decoration + PFN (Linear-BN-ReLU) + max over points.

Frame: the agent's own LiDAR frame; voxel sizes and ranges in metres.
"""
import torch
import torch.nn as nn

from opencood.utils.config import Key, Schema


class PFNLayer(nn.Module):
    """One pillar feature layer: Linear + BN1d + ReLU, then max over the points of each pillar.

    Args:
        in_channels: features per point.
        out_channels: output features per pillar.
        use_norm: BatchNorm1d (eps 1e-3, momentum 0.01) after a bias-free Linear; else a Linear with bias.
        last_layer: the last layer returns the pillar max (M, 1, C); earlier layers output C/2 per point
            and concatenate the broadcast pillar max, giving (M, P, C).
    """

    def __init__(self, in_channels, out_channels, use_norm=True, last_layer=False):
        super().__init__()
        self.last_vfe = last_layer
        self.use_norm = use_norm
        if not last_layer:
            out_channels = out_channels // 2
        if use_norm:
            self.linear = nn.Linear(in_channels, out_channels, bias=False)
            self.norm = nn.BatchNorm1d(out_channels, eps=1e-3, momentum=0.01)
        else:
            self.linear = nn.Linear(in_channels, out_channels, bias=True)

    def forward(self, inputs):
        """Args: inputs (M, P, C_in). Returns (M, 1, C_out) for the last layer, else (M, P, C_out)."""
        x = self.linear(inputs)  # (M, P, C)
        if self.use_norm:
            x = self.norm(x.permute(0, 2, 1)).permute(0, 2, 1)  # BN over channels, stats over M*P points
        x = torch.relu(x)
        x_max = x.max(dim=1, keepdim=True)[0]  # (M, 1, C)
        if self.last_vfe:
            return x_max
        return torch.cat([x, x_max.expand(-1, x.shape[1], -1)], dim=2)  # (M, P, 2C)


class PillarVFE(nn.Module):
    """Decorate each point with offsets to its pillar mean and centre, then run the PFN layers.

    Point features (``use_absolute_xyz``): raw (x, y, z, intensity) + (x, y, z) − pillar point mean +
    (x, y, z) − pillar centre = 10 (+1 range if ``with_distance``). Without ``use_absolute_xyz`` the raw
    xyz is dropped (7 features). Padded points of a pillar are zeroed before the PFN.

    Args:
        model_cfg: the ``pillar_vfe`` section (see ``CONFIG``).
        num_point_features: raw features per point (4).
        voxel_size: (vx, vy, vz) metres.
        point_cloud_range: [xmin, ymin, zmin, xmax, ymax, zmax] metres.
    """

    CONFIG = Schema({
        "use_norm": Key(bool, True, "BatchNorm1d after a bias-free Linear in each PFN layer"),
        "with_distance": Key(bool, False, "add each point's range sqrt(x^2+y^2+z^2) (metres) as a feature"),
        "use_absolute_xyz": Key(bool, True, "keep the raw x, y, z among the point features"),
        "num_filters": Key(list, [64], "output features of each PFN layer (the last = pillar feature C)"),
    }, name="pillar_vfe")

    def __init__(self, model_cfg, num_point_features, voxel_size, point_cloud_range):
        super().__init__()
        cfg = self.CONFIG.parse(model_cfg, "pillar_vfe")
        self.use_norm = cfg.use_norm
        self.with_distance = cfg.with_distance
        self.use_absolute_xyz = cfg.use_absolute_xyz
        in_features = num_point_features + (6 if self.use_absolute_xyz else 3)
        if self.with_distance:
            in_features += 1
        filters = [in_features] + list(cfg.num_filters)
        self.pfn_layers = nn.ModuleList([
            PFNLayer(filters[i], filters[i + 1], self.use_norm, last_layer=i >= len(filters) - 2)
            for i in range(len(filters) - 1)
        ])
        self.num_filters = filters[-1]
        voxel = torch.as_tensor(voxel_size, dtype=torch.float32)
        pc_range = torch.as_tensor(point_cloud_range, dtype=torch.float32)
        # Centre of voxel (0, 0, 0) in metres; pillar centre = coord * voxel + offset.
        self.register_buffer("voxel_size", voxel, persistent=False)
        self.register_buffer("centre_offset", voxel / 2 + pc_range[:3], persistent=False)

    def forward(self, batch_dict):
        """Args:
            batch_dict: ``voxel_features`` (M, P, 4), ``voxel_num_points`` (M,), ``voxel_coords`` (M, 4)
                as (agent, z, y, x).

        Returns:
            batch_dict with ``pillar_features`` (M, C) added.
        """
        features = batch_dict["voxel_features"]  # (M, P, 4)
        num_points = batch_dict["voxel_num_points"]  # (M,)
        coords = batch_dict["voxel_coords"]  # (M, 4) agent, z, y, x
        mask = torch.arange(features.shape[1], device=features.device).view(1, -1) < num_points.view(-1, 1)
        mask = mask.unsqueeze(-1).type_as(features)  # (M, P, 1), 1 for real points
        xyz = features[:, :, :3]
        n = num_points.type_as(features).clamp(min=1).view(-1, 1, 1)
        f_cluster = xyz - (xyz * mask).sum(dim=1, keepdim=True) / n  # (M, P, 3)
        centre = coords[:, 1:].flip(1).type_as(features) * self.voxel_size + self.centre_offset  # (M, 3) x,y,z
        f_center = xyz - centre.unsqueeze(1)  # (M, P, 3)
        raw = features if self.use_absolute_xyz else features[:, :, 3:]
        parts = [raw, f_cluster, f_center]
        if self.with_distance:
            parts.append(torch.norm(xyz, p=2, dim=2, keepdim=True))
        feats = torch.cat(parts, dim=-1)  # (M, P, 10)
        feats = feats * mask  # padded points -> 0
        for pfn in self.pfn_layers:
            feats = pfn(feats)
        batch_dict["pillar_features"] = feats.squeeze(1)  # (M, C)
        return batch_dict
