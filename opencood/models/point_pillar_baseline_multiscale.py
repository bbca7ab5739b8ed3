"""Homogeneous multi-scale PointPillars fusion (HEAL ``point_pillar_baseline_multiscale``; CoAlign's layout).

pillar_vfe -> scatter -> ``backbone`` (:class:`ResNetBEVBackbone`, every level per agent) -> ``fusion_net.{l}``
fuses level l in the ego frame (``att`` with ``att.feat_dim`` a list per level, ``max``, or a multi-scale
``where2comm``) -> decode (deblocks, concatenated) -> [``shrink_conv``] -> ``cls_head`` / ``reg_head`` /
``dir_head``. OpenCOOD's flat ``model.args`` and names. Multi-scale Where2comm takes its confidence from the
heads run on each agent's own decoded map.
"""
import torch.nn as nn

from opencood.models.heads.anchor_head import build_detection_heads
from opencood.models.heter_model_baseline import HeterModelBaseline, _check_anchor_grid
from opencood.models.heter_model_baseline_ms import (build_level_fusion, check_fusion_channels, fuse_levels,
                                                     fusion_keys_ms)
from opencood.models.point_pillar_baseline import PointPillarBaseline
from opencood.models.point_pillar_where2comm import agent_confidence
from opencood.models.sub_modules.base_bev_backbone_resnet import RESNET_BEV_KEYS, ResNetBEVBackbone
from opencood.models.sub_modules.downsample_conv import DownsampleConv
from opencood.models.sub_modules.feature_info import check_channels
from opencood.models.sub_modules.point_pillar_encoder import (PointPillar, build_pillar_modules,
                                                              pillar_feature_info, pillars_to_bev)
from opencood.utils.config import REQUIRED, Key, Schema
from opencood.utils.errors import DataError
from opencood.utils.registry import FUSION_MODULES, MODELS

BACKBONE = Schema({**RESNET_BEV_KEYS, "resnet": Key(bool, True, "ResNet levels (the only multi-scale backbone here)",
                                                   choices=(True,))}, name="base_bev_backbone")

MS_CLASSIC_KEYS = {
    **{k: v for k, v in PointPillarBaseline.CONFIG.keys.items()
       if k not in ("fusion_method", "comm_degradation") and k not in FUSION_MODULES},
    **fusion_keys_ms(),
    "base_bev_backbone": Key(dict, REQUIRED, "ResNet BEV backbone whose levels are fused", schema=BACKBONE),
}


@MODELS.register("point_pillar_baseline_multiscale")
class PointPillarBaselineMultiscale(HeterModelBaseline):
    """Classic multi-scale PointPillars collaborative detector (see module docstring).

    Args:
        args: YAML ``model.args``: ``voxel_size``, ``lidar_range``, ``pillar_vfe``, ``point_pillar_scatter``,
            ``base_bev_backbone`` (ResNet), optional ``shrink_header``, ``fusion_method`` + its section,
            ``anchor_number``, ``dir_args``.
    """

    CONFIG = Schema(MS_CLASSIC_KEYS, name="point_pillar_baseline_multiscale")

    def __init__(self, args):
        nn.Module.__init__(self)  # no per-type chain: one implicit type with classic names
        self.source = args.get("_source", "config")
        args = dict(args, anchor_number=args.get("anchor_number", args.get("anchor_num")))
        cfg = self.CONFIG.parse(args, "model.args", self.source)
        self.lidar_range = [float(v) for v in cfg.lidar_range]
        chain = self.feature_chain(cfg, self.source)
        self.feature = chain["output"]
        self.pillar_vfe, self.scatter = build_pillar_modules(_pillar_cfg(cfg, self.source), "model.args", self.source)
        self.backbone = ResNetBEVBackbone(_resnet_part(cfg.base_bev_backbone), chain["encoder"].channels)
        self.fusion_net, self.multi_level_fusion = build_level_fusion(cfg, chain["levels"], self.source)
        if cfg.shrink_header is not None:
            self.shrink_conv = DownsampleConv(cfg.shrink_header, self.backbone.num_bev_features)
        for name, head in build_detection_heads(self.feature.channels, cfg, self.source).items():
            setattr(self, name, head)

    @classmethod
    def feature_chain(cls, args, source="config"):
        """Pillars -> levels -> decode -> shrink (``{'encoder', 'levels', 'output'}``), channels checked."""
        cfg = cls.CONFIG.parse(dict(args), "model.args", source)
        enc = pillar_feature_info(_pillar_cfg(cfg, source), "model.args", source).by("scatter")
        where = "model.args.base_bev_backbone"
        resnet = _resnet_part(cfg.base_bev_backbone)
        check_channels(resnet.get("inplanes"), enc, f"{where}.inplanes", source)
        levels = ResNetBEVBackbone.level_infos(resnet, enc, where, source)
        check_fusion_channels(cfg, levels, source)
        out = ResNetBEVBackbone.feature_info(resnet, enc, where, source).by("backbone")
        if cfg.shrink_header is not None:
            check_channels(cfg.shrink_header.get("input_dim"), out, "model.args.shrink_header.input_dim", source)
            out = DownsampleConv.feature_info(cfg.shrink_header, out, "model.args.shrink_header", source)
            out = out.by("shrink_conv")
        check_channels(cfg.in_head, out, "model.args.in_head", source)
        _check_anchor_grid(cfg, out, source)
        return {"encoder": enc, "levels": levels, "output": out}

    def forward(self, data_dict):
        """Args: data_dict = batch['ego'] (``processed_lidar``, ``record_len``, ``pairwise_t_matrix``).

        Returns:
            ``cls_preds``, ``reg_preds``, ``dir_preds``, ``fused_feature``, ``comm_maps`` (the levels each
            collaborator sends) (+ the fusion's aux).
        """
        if "processed_lidar" not in data_dict:
            raise DataError("batch: missing key 'processed_lidar'")
        n_agents = int(data_dict["record_len"].sum().item())
        bev = pillars_to_bev(self.pillar_vfe, self.scatter, data_dict["processed_lidar"], n_agents)
        levels = list(self.backbone.get_multiscale_feature(bev))  # [(N, C_l, H_l, W_l)]
        inp = self.fusion_input(levels[0], data_dict)
        if self.multi_level_fusion:
            inp.confidence = agent_confidence(self.cls_head, self.shrink(self.backbone.decode_multiscale_feature(
                levels)))
            inp.confidence = nn.functional.adaptive_max_pool2d(inp.confidence, levels[0].shape[-2:])
        fused, aux = fuse_levels(self.fusion_net, self.multi_level_fusion, levels, inp)
        fused = self.shrink(self.backbone.decode_multiscale_feature(fused))  # (B, C, H', W')
        out = self.detect(fused)
        out["fused_feature"] = fused
        out["comm_maps"] = levels  # every level is warped and fused, so every level is sent (comm_volume)
        out.update(aux)
        return out

    def shrink(self, x):
        return self.shrink_conv(x) if hasattr(self, "shrink_conv") else x

    @property
    def has_unused_parameters(self):
        return False


def _pillar_cfg(cfg, source):
    return PointPillar.CONFIG.parse({k: cfg[k] for k in PointPillar.CONFIG.keys if k in cfg}, "model.args", source)


def _resnet_part(section):
    return {k: v for k, v in section.items() if k in RESNET_BEV_KEYS}

