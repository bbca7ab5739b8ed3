"""Homogeneous PointPillars intermediate-fusion model (HEAL ``point_pillar_baseline`` layout).

A one-type case of :class:`HeterModelBaseline` with OpenCOOD's flat ``model.args`` and module names:
pillar_vfe -> scatter -> backbone -> [shrink_conv] -> fusion_net (att | max) -> cls/reg/dir heads.
Reads ``processed_lidar`` (every agent's voxels, ``voxel_coords[:, 0]`` = agent index in the batch).
"""
from opencood.models.heter_model_baseline import AGENT_TYPE, COMMON_KEYS, HeterModelBaseline
from opencood.models.sub_modules.base_bev_backbone import BaseBEVBackbone
from opencood.models.sub_modules.downsample_conv import DownsampleConv
from opencood.models.sub_modules.point_pillar_encoder import (PILLAR_KEYS, PointPillar, build_pillar_modules,
                                                              pillars_to_bev)
from opencood.utils.config import REQUIRED, Key, Schema
from opencood.utils.errors import DataError
from opencood.utils.registry import MODELS

ONLY_TYPE = "m1"  # the implicit agent type
CLASSIC_NAMES = {"encoder": "scatter", "backbone": "backbone", "shrinker": "shrink_conv"}
CLASSIC_SECTIONS = {"encoder_args": "model.args", "backbone_args": "model.args.base_bev_backbone",
                    "shrink_header": "model.args.shrink_header"}
CLASSIC_TYPE = AGENT_TYPE.extend({
    "shrink_header": Key(dict, None, "optional DownsampleConv", schema=DownsampleConv.CONFIG),
})


@MODELS.register("point_pillar_baseline", "point_pillar_intermediate", "point_pillar_opv2v",
                 "point_pillar_attfuse")
class PointPillarBaseline(HeterModelBaseline):
    """Classic PointPillars collaborative detector (state-dict names ``pillar_vfe.``, ``backbone.``,
    ``shrink_conv.``, ``fusion_net.``, ``cls_head.``, ``reg_head.``, ``dir_head.``).

    Args:
        args: YAML ``model.args`` (see ``CONFIG``): ``voxel_size``, ``lidar_range`` (metres), ``pillar_vfe``,
            ``point_pillar_scatter``, ``base_bev_backbone``, optional ``shrink_header``, ``fusion_method`` +
            its section, ``anchor_number`` (or ``anchor_num``), optional ``dir_args``.
    """

    CONFIG = Schema({**COMMON_KEYS, **PILLAR_KEYS, **{
        "lidar_range": COMMON_KEYS["lidar_range"],
        "base_bev_backbone": Key(dict, REQUIRED, "BEV backbone", schema=BaseBEVBackbone.CONFIG),
        "shrink_header": Key(dict, None, "optional DownsampleConv after the backbone", schema=DownsampleConv.CONFIG),
        "anchor_num": Key(int, None, "OpenCOOD's name of anchor_number"),
        "grid_size": Key(list, None, "derived (yaml loader): [nx, ny, nz] pillar grid; recomputed from "
                                     "lidar_range / voxel_size", length=3),
        "compression": Key(int, 0, "OpenCOOD's naive feature compressor is not built: only 0", choices=(0,)),
        "backbone_fix": Key(bool, False, "OpenCOOD's backbone freezing is not built: only false",
                            choices=(False,)),
    }}, name="point_pillar_baseline")

    def __init__(self, args):
        super().__init__(dict(args, anchor_number=args.get("anchor_number", args.get("anchor_num"))))

    @classmethod
    def module_attr(cls, stage, m):
        return CLASSIC_NAMES[stage]

    @classmethod
    def section_path(cls, m, section):
        return CLASSIC_SECTIONS[section]

    @classmethod
    def agent_type_configs(cls, cfg):
        """The one implicit type, assembled from the flat keys."""
        return {ONLY_TYPE: {"core_method": "point_pillar", "sensor_type": "lidar",
                            "encoder_args": {key: cfg[key] for key in PILLAR_KEYS},
                            "backbone_args": cfg.base_bev_backbone, "shrink_header": cfg.shrink_header}}

    @classmethod
    def parse_agent_type(cls, m, section, source="config"):
        return CLASSIC_TYPE.parse(section, "model.args", source)

    def build_encoder(self, m, tcfg):
        """``pillar_vfe`` and ``scatter`` as top-level modules (OpenCOOD's checkpoint names)."""
        cfg = PointPillar.CONFIG.parse(tcfg.encoder_args, "model.args", self.source)
        self.pillar_vfe, self.scatter = build_pillar_modules(cfg, "model.args", self.source)

    def run_encoder(self, data_dict, m):
        """PillarVFE + scatter of ``processed_lidar`` -> (N, C, ny, nx), ``{}``."""
        if "processed_lidar" not in data_dict:
            raise DataError("batch: missing key 'processed_lidar'")
        n_agents = int(data_dict["record_len"].sum().item())
        return pillars_to_bev(self.pillar_vfe, self.scatter, data_dict["processed_lidar"], n_agents), {}
