"""Homogeneous PointPillars intermediate-fusion model (HEAL ``point_pillar_baseline`` layout).

pillar_vfe -> scatter -> backbone -> [shrink_conv] -> fusion_net (att | max) -> cls/reg/dir heads.
Reads ``processed_lidar`` (every agent's voxels, ``voxel_coords[:, 0]`` = agent index in the batch).
"""
import torch.nn as nn

from opencood.models.heter_model_baseline import build_fusion, build_heads
from opencood.models.sub_modules.base_bev_backbone import BaseBEVBackbone
from opencood.models.sub_modules.downsample_conv import DownsampleConv
from opencood.models.sub_modules.pillar_vfe import PillarVFE
from opencood.models.sub_modules.point_pillar_scatter import PointPillarScatter
from opencood.utils.errors import ConfigError
from opencood.utils.registry import MODELS
from opencood.utils.transformation_utils import normalize_pairwise_tfm


@MODELS.register("point_pillar_baseline", "point_pillar_intermediate", "point_pillar_opv2v",
                 "point_pillar_attfuse")
class PointPillarBaseline(nn.Module):
    """Classic PointPillars collaborative detector.

    Args:
        args: YAML ``model.args``: ``voxel_size``, ``lidar_range`` (metres), ``pillar_vfe``,
            ``point_pillar_scatter``, ``base_bev_backbone``, optional ``shrink_header``, ``fusion_method`` +
            its section, ``anchor_number`` (or ``anchor_num``), optional ``dir_args``.
    """

    def __init__(self, args):
        super().__init__()
        for key in ("voxel_size", "lidar_range", "pillar_vfe", "point_pillar_scatter", "base_bev_backbone"):
            if key not in args:
                raise ConfigError(f"model.args: missing key '{key}'")
        self.lidar_range = [float(v) for v in args["lidar_range"]]
        self.pillar_vfe = PillarVFE(args["pillar_vfe"], num_point_features=4,
                                    voxel_size=args["voxel_size"], point_cloud_range=self.lidar_range)
        self.scatter = PointPillarScatter(args["point_pillar_scatter"])
        self.backbone = BaseBEVBackbone(args["base_bev_backbone"], self.scatter.num_bev_features)
        out_channels = self.backbone.get_output_feature_dim()
        if "shrink_header" in args:
            self.shrink_conv = DownsampleConv(args["shrink_header"])
            out_channels = self.shrink_conv.out_channels
        self.fusion_net = build_fusion(args)
        anchor_number = args.get("anchor_number", args.get("anchor_num"))
        if anchor_number is None:
            raise ConfigError("model.args: missing key 'anchor_number'")
        self.cls_head, self.reg_head, dir_head = build_heads(out_channels, anchor_number, args.get("dir_args"))
        if dir_head is not None:
            self.dir_head = dir_head

    def forward(self, data_dict):
        """Args:
            data_dict: batch['ego'] with ``processed_lidar`` {voxel_features (V, P, 4), voxel_coords (V, 4),
                voxel_num_points (V,)}, ``record_len`` (B,), ``pairwise_t_matrix`` (B, L, L, 4, 4).

        Returns:
            {cls_preds (B, A, H', W'), reg_preds (B, 7A, H', W'), dir_preds (B, 2A, H', W'),
             fused_feature (B, C, H', W')}.
        """
        lidar = data_dict["processed_lidar"]
        record_len = data_dict["record_len"]
        batch_dict = {"voxel_features": lidar["voxel_features"], "voxel_coords": lidar["voxel_coords"],
                      "voxel_num_points": lidar["voxel_num_points"], "batch_size": int(record_len.sum().item())}
        batch_dict = self.scatter(self.pillar_vfe(batch_dict))
        feature = self.backbone(batch_dict["spatial_features"])  # (N, C, H/2, W/2)
        if hasattr(self, "shrink_conv"):
            feature = self.shrink_conv(feature)  # (N, C', H', W')
        r = self.lidar_range
        affine = normalize_pairwise_tfm(data_dict["pairwise_t_matrix"], r[4] - r[1], r[3] - r[0], 1)
        fused = self.fusion_net(feature, record_len, affine)  # (B, C', H', W')
        out = {"cls_preds": self.cls_head(fused), "reg_preds": self.reg_head(fused), "fused_feature": fused}
        if hasattr(self, "dir_head"):
            out["dir_preds"] = self.dir_head(fused)
        return out
