"""CoAlign's single-agent PointPillars with an uncertainty head (``point_pillar_uncertainty``, spec §B CoAlign 2a).

pillar_vfe -> scatter -> backbone (BaseBEVBackbone) -> [shrink_conv] -> ``cls_head`` / ``reg_head`` /
``dir_head`` + ``unc_head``: a 1x1 conv with ``uncertainty_dim`` x A channels, the log-variances
s = log sigma^2 of (x, y[, yaw]) of every anchor's box (x/y in the anchor-normalised units of the box coding).
One agent per sample (late-fusion data: each agent on its own labels); its boxes and variances feed the pose
graph (``tools/pose_graph_pre_calc.py``).
"""
import torch.nn as nn

from opencood.models.base_model import CooperativeModel
from opencood.models.heads.anchor_head import build_detection_heads
from opencood.models.heter_model_baseline import _check_anchor_grid
from opencood.models.point_pillar_baseline import PointPillarBaseline
from opencood.models.sub_modules.base_bev_backbone import BaseBEVBackbone
from opencood.models.sub_modules.downsample_conv import DownsampleConv
from opencood.models.sub_modules.feature_info import check_channels
from opencood.models.sub_modules.point_pillar_encoder import (PointPillar, build_pillar_modules,
                                                              pillar_feature_info, pillars_to_bev)
from opencood.utils.config import Key, Schema
from opencood.utils.errors import DataError
from opencood.utils.registry import FUSION_MODULES, MODELS

UNCERTAINTY_KEYS = {
    **{k: v for k, v in PointPillarBaseline.CONFIG.keys.items()
       if k not in ("fusion_method", "comm_degradation") and k not in FUSION_MODULES},
    "uncertainty_dim": Key(int, 3, "log-variances per anchor: 2 (x, y) or 3 (x, y, yaw)", choices=(2, 3)),
}


@MODELS.register("point_pillar_uncertainty")
class PointPillarUncertainty(CooperativeModel):
    """Single-agent detector with per-anchor box uncertainties (names ``pillar_vfe.``, ``scatter.``,
    ``backbone.``, ``shrink_conv.``, ``cls_head.``, ``reg_head.``, ``dir_head.``, ``unc_head.``).

    Args:
        args: YAML ``model.args``: ``voxel_size``, ``lidar_range``, ``pillar_vfe``, ``point_pillar_scatter``,
            ``base_bev_backbone``, optional ``shrink_header``, ``anchor_number``, ``dir_args``,
            ``uncertainty_dim``.
    """

    CONFIG = Schema(UNCERTAINTY_KEYS, name="point_pillar_uncertainty")

    def __init__(self, args):
        super().__init__()
        self.source = args.get("_source", "config")
        args = dict(args, anchor_number=args.get("anchor_number", args.get("anchor_num")))
        cfg = self.CONFIG.parse(args, "model.args", self.source)
        pillar_cfg = PointPillar.CONFIG.parse({k: cfg[k] for k in PointPillar.CONFIG.keys if k in cfg},
                                              "model.args", self.source)
        self.pillar_vfe, self.scatter = build_pillar_modules(pillar_cfg, "model.args", self.source)
        stages = self.feature_chain(cfg, self.source)
        self.backbone = BaseBEVBackbone(cfg.base_bev_backbone, stages["encoder"].channels)
        if cfg.shrink_header is not None:
            self.shrink_conv = DownsampleConv(cfg.shrink_header, stages["backbone"].channels)
        channels = stages["output"].channels
        for name, head in build_detection_heads(channels, cfg, self.source).items():
            setattr(self, name, head)
        self.uncertainty_dim = int(cfg.uncertainty_dim)
        self.unc_head = nn.Conv2d(channels, self.uncertainty_dim * int(cfg.anchor_number), kernel_size=1)

    @classmethod
    def feature_chain(cls, args, source="config"):
        """Pillars -> backbone -> shrink infos (``{'encoder', 'backbone', 'output'}``), checked against the
        anchor grid and ``in_head``."""
        cfg = cls.CONFIG.parse(args, "model.args", source)
        pillar_cfg = PointPillar.CONFIG.parse({k: cfg[k] for k in PointPillar.CONFIG.keys if k in cfg},
                                              "model.args", source)
        enc = pillar_feature_info(pillar_cfg, "model.args", source).by("scatter")
        where = "model.args.base_bev_backbone"
        check_channels(cfg.base_bev_backbone.get("inplanes"), enc, f"{where}.inplanes", source)
        out = bb = BaseBEVBackbone.feature_info(cfg.base_bev_backbone, enc, where, source).by("backbone")
        if cfg.shrink_header is not None:
            where = "model.args.shrink_header"
            check_channels(cfg.shrink_header.get("input_dim"), bb, f"{where}.input_dim", source)
            out = DownsampleConv.feature_info(cfg.shrink_header, bb, where, source).by("shrink_conv")
        check_channels(cfg.in_head, out, "model.args.in_head", source)
        _check_anchor_grid(cfg, out, source)
        return {"encoder": enc, "backbone": bb, "output": out}

    def forward(self, data_dict):
        """Args: data_dict = batch['ego'] with ``processed_lidar`` (one agent per sample).

        Returns:
            ``cls_preds`` (B, A, H', W'), ``reg_preds`` (B, 7A, H', W'), ``dir_preds``, ``unc_preds``
            (B, uncertainty_dim * A, H', W') log-variances (channels anchor-major: [a0: x, y, yaw, a1: ...]).
        """
        if "processed_lidar" not in data_dict:
            raise DataError("batch: missing key 'processed_lidar'")
        n = int(data_dict["record_len"].sum().item()) if "record_len" in data_dict else 1
        x = self.backbone(pillars_to_bev(self.pillar_vfe, self.scatter, data_dict["processed_lidar"], n))
        if hasattr(self, "shrink_conv"):
            x = self.shrink_conv(x)  # (B, C, H', W')
        out = {"cls_preds": self.cls_head(x), "reg_preds": self.reg_head(x), "unc_preds": self.unc_head(x)}
        if hasattr(self, "dir_head"):
            out["dir_preds"] = self.dir_head(x)
        return out
