"""HEAL's collaboration base (``heter_pyramid_collab``, spec baselines §C1): Pyramid Fusion.

Per agent type mX: ``encoder_mX`` -> ``backbone_mX`` (a one-level :class:`ResNetBEVBackbone`) ->
``aligner_mX`` (identity for the base type) -> camera maps cropped/padded onto the LiDAR grid; agents
re-stacked in batch order -> ``pyramid_backbone`` (:class:`PyramidFusion`: per level occupancy-weighted fusion
in the ego frame, decoded) -> ``shrink_conv`` -> ``cls_head`` / ``reg_head`` / ``dir_head``. The output dict
also carries ``occ_single_list`` (every agent's occupancy logits per level) for the pyramid loss.
Parameter names are HEAL's, so its checkpoints load by name.

Reusable parts for the heterogeneous stages (backward alignment, ``heter_pyramid_single``):
:data:`PYRAMID_TYPE` (the agent-type section), :data:`PYRAMID_KEYS` (``model.args``),
:meth:`HeterPyramidCollab.encode_type` (encoder -> backbone -> aligner), :meth:`HeterPyramidCollab.decode_and_detect`
(shrink + heads on a decoded pyramid map) and ``self.pyramid_backbone.forward_single``.
"""
import torch.nn as nn

from opencood.models.fuse_modules.pyramid_fuse import PyramidFusion, visible_square_mask
from opencood.models.heads.anchor_head import build_detection_heads
from opencood.models.heter_model_baseline import (AGENT_TYPE, AGENT_TYPE_RE, COMMON_KEYS, HeterModelBaseline,
                                                  FeatureChain, _check_anchor_grid, _common_output)
from opencood.models.sub_modules.base_bev_backbone_resnet import ResNetBEVBackbone
from opencood.models.sub_modules.degradation import MessageDegradation
from opencood.models.sub_modules.downsample_conv import DownsampleConv
from opencood.models.sub_modules.stamp_adapter import ConvNeXtAligner
from opencood.models.sub_modules.feature_info import check_channels
from opencood.utils.config import REQUIRED, Key, Schema
from opencood.utils.errors import ConfigError
from opencood.utils.registry import ENCODERS, FUSION_MODULES, MODELS

# name -> builder(args): identity (the base type) and HEAL's ConvNeXt aligner of the new types
ALIGNERS = {"identity": lambda args: nn.Identity(), "convnext": ConvNeXtAligner}

ALIGNER_ARGS = Schema({
    "core_method": Key(str, "identity", "feature aligner after the backbone (identity for the base type)"),
    "args": Key(dict, None, "the aligner's own keys (convnext: num_of_blocks, dim)"),
    "spatial_align": Key(bool, False, "HEAL's warp-based spatial alignment; only false (as every HEAL config)",
                         choices=(False,)),
}, name="aligner_args")

PYRAMID_TYPE = Schema({**{k: v for k, v in AGENT_TYPE.keys.items() if k not in ("backbone_args", "shrink_header")},
                       **{
    "backbone_args": Key(dict, REQUIRED, "ResNetBEVBackbone of the type (HEAL: one level, 64 channels)",
                         schema=ResNetBEVBackbone.CONFIG),
    "aligner_args": Key(dict, None, "aligner after the backbone", schema=ALIGNER_ARGS),
}}, name="pyramid agent type")

PYRAMID_KEYS = {**{k: v for k, v in COMMON_KEYS.items() if k != "fusion_method" and k not in FUSION_MODULES},
                **{
    "supervise_single": Key(bool, False, "build each agent's own labels (label_dict_single) for the "
                                         "per-level occupancy loss"),
    "fusion_backbone": Key(dict, REQUIRED, "the shared PyramidFusion", schema=PyramidFusion.CONFIG),
    "shrink_header": Key(dict, None, "DownsampleConv after the pyramid (HEAL: 3x3 s1 -> 256)",
                         schema=DownsampleConv.CONFIG),
}}


@MODELS.register("heter_pyramid_collab")
class HeterPyramidCollab(HeterModelBaseline):
    """Pyramid Fusion collaborative detector (see module docstring).

    Args:
        args: YAML ``model.args``: ``lidar_range``, ``m1..mK`` (``core_method``, ``sensor_type``,
            ``encoder_args``, ``backbone_args``, ``aligner_args``, ``camera_mask_args``), ``fusion_backbone``,
            ``shrink_header``, ``in_head``, ``anchor_number``, ``dir_args``, ``supervise_single``.
    """

    CONFIG = Schema(PYRAMID_KEYS,
                    patterns={AGENT_TYPE_RE: Key(dict, None, "an agent type", schema=PYRAMID_TYPE)},
                    name="heter_pyramid_collab")

    def __init__(self, args):
        nn.Module.__init__(self)  # HeterModelBaseline.__init__ would build a single-scale fusion_net
        self.source = args.get("_source", "config")
        cfg = self.CONFIG.parse(args, "model.args", self.source)
        self.lidar_range = [float(v) for v in cfg.lidar_range]
        chain = self.feature_chain(cfg, self.source)
        self.modalities = list(chain.stages)
        self.crop_ratio = dict(chain.crop_ratio)
        self.feature = chain.output
        for m, section in self.agent_type_configs(cfg).items():
            self.build_agent_type(m, self.parse_agent_type(m, section, self.source), chain.stages[m])
        self.degradation = MessageDegradation.from_args(cfg.comm_degradation, self.source)
        self.build_shared(cfg, chain)
        if cfg.shrink_header is not None:
            self.shrink_conv = DownsampleConv(cfg.shrink_header, self.shared_channels)
        for name, head in build_detection_heads(self.feature.channels, cfg, self.source).items():
            setattr(self, name, head)

    def build_shared(self, cfg, chain):
        """The shared multi-scale part after the agents: ``pyramid_backbone`` (sets ``shared_channels``, the
        decoded map's C)."""
        self.pyramid_backbone = PyramidFusion(cfg.fusion_backbone, chain.stages["_agents"].channels)
        self.shared_channels = self.pyramid_backbone.num_bev_features

    # --- the chain ------------------------------------------------------------------------------------

    @classmethod
    def parse_agent_type(cls, m, section, source="config"):
        return PYRAMID_TYPE.parse(section, f"model.args.{m}", source)

    @classmethod
    def type_chain(cls, m, tcfg, source="config"):
        """Encoder -> ResNet backbone infos (the aligner keeps the shape); ``shrinker`` is None."""
        encoder_cls = ENCODERS.get(tcfg.core_method, source=source)
        info = encoder_cls.feature_info(tcfg.encoder_args, cls.section_path(m, "encoder_args"), source)
        info = info.by(cls.module_attr("encoder", m))
        where = cls.section_path(m, "backbone_args")
        check_channels(tcfg.backbone_args.get("inplanes"), info, f"{where}.inplanes", source)
        out = ResNetBEVBackbone.feature_info(tcfg.backbone_args, info, where, source)
        return {"encoder": info, "backbone": out.by(cls.module_attr("backbone", m)), "shrinker": None}

    @classmethod
    def feature_chain(cls, args, source="config"):
        """Types' maps (equal on the LiDAR grid) -> pyramid levels -> decode -> shrink = the heads' input.

        Returns:
            :class:`FeatureChain`; ``stages['_agents']`` is the map every agent hands to the pyramid.
        """
        cfg = cls.CONFIG.parse(args, "model.args", source)
        stages, crops, agents = agents_output(cls, cfg, source)
        where = "model.args.fusion_backbone"
        check_channels(cfg.fusion_backbone.get("inplanes"), agents, f"{where}.inplanes", source)
        out = ResNetBEVBackbone.feature_info(_resnet_part(cfg.fusion_backbone), agents, where, source)
        out = out.by("pyramid_backbone")
        if cfg.shrink_header is not None:
            where = "model.args.shrink_header"
            check_channels(cfg.shrink_header.get("input_dim"), out, f"{where}.input_dim", source)
            out = DownsampleConv.feature_info(cfg.shrink_header, out, where, source).by("shrink_conv")
        check_channels(cfg.in_head, out, "model.args.in_head", source)
        _check_anchor_grid(cfg, out, source)
        return FeatureChain({**stages, "_agents": agents}, crops, out)

    # --- building -------------------------------------------------------------------------------------

    def build_agent_type(self, m, tcfg, stages):
        """``encoder_m``, ``backbone_m`` (ResNetBEVBackbone), ``aligner_m``."""
        self.build_encoder(m, tcfg)
        setattr(self, self.module_attr("backbone", m),
                ResNetBEVBackbone(tcfg.backbone_args, stages["encoder"].channels))
        aligner = tcfg.aligner_args or ALIGNER_ARGS.parse({}, f"model.args.{m}.aligner_args")
        if aligner.core_method not in ALIGNERS:
            raise ConfigError(f"{self.source}: unknown model.args.{m}.aligner_args.core_method "
                              f"'{aligner.core_method}'; known: {', '.join(sorted(ALIGNERS))}")
        setattr(self, self.module_attr("aligner", m), ALIGNERS[aligner.core_method](aligner.args or {}))

    # --- forward ----------------------------------------------------------------------------------------

    def encode_type(self, data_dict, m):
        """Encoder -> backbone -> aligner of one type on its own grid: (n_m, C, h, w), encoder aux."""
        feature, aux = self.run_encoder(data_dict, m)  # (n_m, C0, H0, W0)
        feature = getattr(self, self.module_attr("backbone", m))(feature)  # (n_m, 64, h, w)
        return getattr(self, self.module_attr("aligner", m))(feature), aux

    def camera_masks(self, features, data_dict):
        """(N, 1, H, W) visibility of camera agents' maps at inference (None in training / LiDAR only)."""
        if self.training or not self.crop_ratio:
            return None
        modality_list = self.agent_modalities(data_dict)
        if not any(m in self.crop_ratio for m in modality_list):
            return None
        masks = features.new_ones(features.shape[0], 1, *features.shape[-2:])
        for i, m in enumerate(modality_list):
            if m in self.crop_ratio:
                masks[i] = visible_square_mask(features.shape[-2:], self.crop_ratio[m], features.device)[0]
        return masks

    def decode_and_detect(self, decoded):
        """``shrink_conv`` (if any) and the heads on a decoded pyramid map (B, 384, H', W')."""
        if hasattr(self, "shrink_conv"):
            decoded = self.shrink_conv(decoded)  # (B, in_head, H', W')
        out = self.detect(decoded)
        out["fused_feature"] = decoded
        return out

    def fuse_and_detect(self, features, data_dict):
        """Pyramid fusion of the agents (N, 64, H, W) in the ego frame, then shrink and heads.

        Returns:
            ``cls_preds``, ``reg_preds``, ``dir_preds``, ``fused_feature``, ``occ_single_list``
            [(N, 1, H_l, W_l)] per level and ``comm_maps`` [features] (the pyramid levels are the ego's
            own computation on what it received).
        """
        fused, occ = self.pyramid_backbone.forward_collab(features, data_dict["record_len"],
                                                          self.affine_matrix(data_dict),
                                                          self.camera_masks(features, data_dict))
        out = self.decode_and_detect(fused)
        out["occ_single_list"] = occ
        out["comm_maps"] = [features]  # what a collaborator sends: its level-0 map (utils/comm_volume.py)
        return out


def agents_output(model_cls, cfg, source):
    """Every type's encoder/backbone chain and the one map all agents hand to the shared fusion backbone.

    Returns:
        (stages ``{m: {...}}``, camera crop ratios ``{m: (r_H, r_W)}``, :class:`FeatureInfo` on the LiDAR grid).
    """
    stages, crops, outputs = {}, {}, {}
    for m, section in model_cls.agent_type_configs(cfg).items():
        tcfg = model_cls.parse_agent_type(m, section, source)
        stages[m] = model_cls.type_chain(m, tcfg, source)
        out = stages[m]["backbone"]
        if tcfg.sensor_type == "camera":
            crops[m] = model_cls.camera_grid(m, tcfg, source).crop_ratio(cfg.lidar_range)
            out = out.strided(out.channels, 1, [int(round(n * r)) for n, r in zip(out.size, crops[m])])
        outputs[m] = out
    return stages, crops, _common_output(outputs, source)


def _resnet_part(section):
    """The ResNetBEVBackbone keys of a ``fusion_backbone`` section."""
    return {k: v for k, v in section.items() if k in ResNetBEVBackbone.CONFIG.keys}
