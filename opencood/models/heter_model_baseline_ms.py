"""Multi-scale intermediate fusion (HEAL ``heter_model_baseline_ms``; CoAlign's fusion, spec baselines §B).

Per agent type mX: ``encoder_mX`` -> ``backbone_mX`` (one-level ResNet, level 0 = 64 @ H x W) ->
``aligner_mX``; agents re-stacked in batch order. The shared ``backbone`` (:class:`ResNetBEVBackbone`,
``fusion_backbone``) computes levels 1.. from level 0 per agent (its ``layer0`` is built, as in HEAL, but
level 0 is the agents' map itself); ``fusion_net.{l}`` fuses level l in the ego frame (``att`` with
``att.feat_dim`` one entry per level, ``max``; or one multi-scale ``where2comm`` module); the fused levels
are decoded (deblocks, concatenated), shrunk (``shrink_conv``) and fed to the heads.
With ``supervise_single`` the agents' level-0 maps also go through ``cls_head_single`` / ``reg_head_single``
/ ``dir_head_single`` (outputs ``*_preds_single``, trained on ``label_dict_single``); Where2comm's
confidence comes from ``cls_head_single``.
"""
from dataclasses import replace

import torch.nn as nn

from opencood.models.heads.anchor_head import conv_heads
from opencood.models.heter_model_baseline import AGENT_TYPE_RE, COMMON_KEYS, FeatureChain, _check_anchor_grid
from opencood.models.heter_pyramid_collab import PYRAMID_TYPE, HeterPyramidCollab, agents_output
from opencood.models.point_pillar_where2comm import agent_confidence
from opencood.models.sub_modules.base_bev_backbone_resnet import ResNetBEVBackbone
from opencood.models.sub_modules.downsample_conv import DownsampleConv
from opencood.models.sub_modules.feature_info import check_channels
from opencood.utils.config import REQUIRED, Key, LookupFailed, Schema, schema_of
from opencood.utils.errors import ConfigError
from opencood.utils.registry import FUSION_MODULES, MODELS


def _per_level_section(name):
    """Schema of ``model.args.<name>``: the fusion module's, its channel key also as a per-level list."""
    def pick(parent, value=None):
        if str(parent.get("fusion_method", "")).lower() != name:
            raise LookupFailed(f"key 'model.args.{name}' configures fusion_method '{name}' but "
                               f"model.args.fusion_method is '{parent.get('fusion_method')}'")
        cls = FUSION_MODULES.get(name)
        schema, key = schema_of(cls), getattr(cls, "CHANNEL_KEY", None)
        if schema is None or key is None:
            return schema
        return schema.extend({key: Key((int, list), None, "channels of each level (one per fusion_backbone level)")})
    return pick


def fusion_keys_ms():
    names = FUSION_MODULES.names()
    keys = {"fusion_method": Key(str, REQUIRED, "fusion applied at every level", choices=tuple(names))}
    keys.update({n: Key(dict, None, f"section of fusion_method '{n}'", schema=_per_level_section(n)) for n in names})
    return keys


MS_KEYS = {**{k: v for k, v in COMMON_KEYS.items() if k != "fusion_method" and k not in FUSION_MODULES},
           **fusion_keys_ms(), **{
    "supervise_single": Key(bool, False, "single-agent heads on the level-0 maps, trained on label_dict_single"),
    "in_head_single": Key(int, None, "channels into the single-agent heads (= the agents' level-0 channels)"),
    "fusion_backbone": Key(dict, REQUIRED, "shared ResNetBEVBackbone of the levels", schema=ResNetBEVBackbone.CONFIG),
    "shrink_header": Key(dict, None, "DownsampleConv after the decode", schema=DownsampleConv.CONFIG),
}}


def level_section(section, key, level, channels):
    """The fusion section of one level: a per-level list under ``key`` replaced by its entry."""
    section = dict(section or {})
    value = section.get(key)
    if isinstance(value, (list, tuple)):
        section[key] = value[level]
    elif key is not None and value is None:
        section[key] = channels
    return section


def build_level_fusion(cfg, levels, source="config"):
    """The fusion of a multi-scale model: one module per level, or one multi-scale module.

    Args:
        cfg: parsed ``model.args`` (``fusion_method`` and its section).
        levels: [:class:`FeatureInfo`] of the levels.

    Returns:
        (``nn.ModuleList`` of per-level modules | the multi-scale module, True for the latter). A module whose
        section sets its ``MULTI_SCALE_KEY`` (``where2comm.multi_scale``) fuses all levels (``forward_levels``).
    """
    fusion_cls = FUSION_MODULES.get(cfg.fusion_method, source=source)
    section = cfg.get(cfg.fusion_method) or {}
    flag = getattr(fusion_cls, "MULTI_SCALE_KEY", None)
    if flag and section.get(flag):
        return fusion_cls(dict(section, num_filters=[lv.channels for lv in levels])), True
    key = getattr(fusion_cls, "CHANNEL_KEY", None)
    return nn.ModuleList(fusion_cls(level_section(section, key, i, lv.channels), channels=lv.channels)
                         for i, lv in enumerate(levels)), False


def fuse_levels(fusion_net, multi_level, levels, inp):
    """Fuse every level: ([(N, C_l, H_l, W_l)], FusionInput of level 0) -> ([(B, C_l, H_l, W_l)], aux)."""
    if multi_level:
        return fusion_net.forward_levels(levels, inp)
    fused, aux = [], {}
    for module, level in zip(fusion_net, levels):
        f, a = module(replace(inp, features=level))
        fused.append(f)
        aux.update(a)
    return fused, aux


def check_fusion_channels(cfg, levels, source):
    """A per-level channel list in the fusion section must have one entry per level, each equal."""
    key = getattr(FUSION_MODULES.get(cfg.fusion_method), "CHANNEL_KEY", None)
    value = (cfg.get(cfg.fusion_method) or {}).get(key) if key else None
    path = f"model.args.{cfg.fusion_method}.{key}"
    if isinstance(value, (list, tuple)):
        if len(value) != len(levels):
            raise ConfigError(f"{source}: {path} has {len(value)} entries but the backbone has {len(levels)} levels")
        for i, (v, lv) in enumerate(zip(value, levels)):
            check_channels(v, lv.by(f"backbone level {i}"), f"{path}[{i}]", source)


@MODELS.register("heter_model_baseline_ms")
class HeterModelBaselineMs(HeterPyramidCollab):
    """Multi-scale collaborative detector (see module docstring).

    Args:
        args: YAML ``model.args``: ``lidar_range``, ``m1..mK`` (as :class:`HeterPyramidCollab`),
            ``fusion_method`` + its section (``att.feat_dim`` a list per level), ``fusion_backbone``,
            ``shrink_header``, ``in_head``, ``anchor_number``, ``dir_args``, ``supervise_single``,
            ``in_head_single``.
    """

    CONFIG = Schema(MS_KEYS, patterns={AGENT_TYPE_RE: Key(dict, None, "an agent type", schema=PYRAMID_TYPE)},
                    name="heter_model_baseline_ms")

    def build_shared(self, cfg, chain):
        """The shared ``backbone``, the per-level ``fusion_net`` and (``supervise_single``) the single heads."""
        agents = chain.stages["_agents"]
        self.backbone = ResNetBEVBackbone(cfg.fusion_backbone, agents.channels)
        self.shared_channels = self.backbone.num_bev_features
        self.build_fusion(cfg, chain.stages["_levels"])
        self.supervise_single = bool(cfg.supervise_single)
        if self.supervise_single:
            check_channels(cfg.in_head_single, agents, "model.args.in_head_single", self.source)
            num_bins = (cfg.dir_args or {}).get("num_bins")
            for name, head in conv_heads(agents.channels, int(cfg.anchor_number), num_bins).items():
                setattr(self, f"{name}_single", head)
        if self.multi_level_fusion and not self.supervise_single:
            raise ConfigError(f"{self.source}: model.args.{cfg.fusion_method}: multi-scale Where2comm needs the "
                              f"single-agent heads for its confidence maps (model.args.supervise_single: true)")

    def build_fusion(self, cfg, levels):
        """``fusion_net`` for the levels (see :func:`build_level_fusion`)."""
        self.fusion_net, self.multi_level_fusion = build_level_fusion(cfg, levels, self.source)

    @property
    def has_unused_parameters(self):
        """``backbone.resnet.layer0`` is built (HEAL's checkpoint layout) but level 0 is the agents' map."""
        return True

    @classmethod
    def feature_chain(cls, args, source="config"):
        """Agents' maps (level 0) -> levels 1.. -> decode -> shrink = the heads' input; per-level channels
        checked against the fusion section's channel list."""
        cfg = cls.CONFIG.parse(args, "model.args", source)
        stages, crops, agents = agents_output(cls, cfg, source)
        where = "model.args.fusion_backbone"
        backbone = ResNetBEVBackbone.lists(cfg.fusion_backbone, where, source)
        if int(backbone.layer_strides[0]) != 1 or int(backbone.num_filters[0]) != agents.channels:
            raise ConfigError(f"{source}: {where}: level 0 is the agents' map ({agents.channels} channels), so "
                              f"layer_strides[0] must be 1 and num_filters[0] {agents.channels}")
        levels = ResNetBEVBackbone.level_infos(cfg.fusion_backbone, agents, where, source)
        check_fusion_channels(cfg, levels, source)
        out = ResNetBEVBackbone.feature_info(cfg.fusion_backbone, agents, where, source).by("backbone")
        if cfg.shrink_header is not None:
            where = "model.args.shrink_header"
            check_channels(cfg.shrink_header.get("input_dim"), out, f"{where}.input_dim", source)
            out = DownsampleConv.feature_info(cfg.shrink_header, out, where, source).by("shrink_conv")
        check_channels(cfg.in_head, out, "model.args.in_head", source)
        _check_anchor_grid(cfg, out, source)
        return FeatureChain({**stages, "_agents": agents, "_levels": levels}, crops, out)

    # --- forward ----------------------------------------------------------------------------------------

    def levels(self, features):
        """[(N, C_l, H_l, W_l)]: level 0 = the agents' maps, level l = ``backbone.layer{l}`` of level l-1."""
        out = [features]
        for i in range(1, self.backbone.num_levels):
            out.append(self.backbone.get_layer_i_feature(out[-1], i))
        return out

    def fuse_and_detect(self, features, data_dict):
        """Single heads (optional), per-level fusion, decode, shrink, heads.

        Returns:
            ``cls_preds``, ``reg_preds``, ``dir_preds``, ``fused_feature``, ``comm_maps`` (the levels each
            collaborator sends) (+ ``*_preds_single``, fusion aux).
        """
        out = {}
        if self.supervise_single:
            out.update({f"{k}_single": v for k, v in self.detect_single(features).items()})
        inp = self.fusion_input(features, data_dict)
        if self.supervise_single:
            inp.confidence = agent_confidence(self.cls_head_single, features)
        levels = self.levels(features)  # [(N, C_l, H_l, W_l)]
        fused, fusion_aux = fuse_levels(self.fusion_net, self.multi_level_fusion, levels, inp)
        out.update(self.decode_and_detect(self.backbone.decode_multiscale_feature(fused)))
        out.update(fusion_aux)
        out["comm_maps"] = levels  # every level is warped and fused, so every level is sent (comm_volume)
        return out

    def detect_single(self, features):
        """Single-agent heads on the agents' level-0 maps (N, C0, H, W)."""
        out = {"cls_preds": self.cls_head_single(features), "reg_preds": self.reg_head_single(features)}
        if hasattr(self, "dir_head_single"):
            out["dir_preds"] = self.dir_head_single(features)
        return out

    def training_step(self, batch, criterion, forward=None):
        """Loss on the fused labels, plus (``supervise_single``) the same loss of the single heads on
        ``label_dict_single`` (suffix ``_single``)."""
        ego = batch["ego"]
        output = (forward or self)(ego)
        total, terms = criterion.loss_and_terms(output, ego)
        if self.supervise_single:
            total = total + criterion(output, ego["label_dict_single"], suffix="_single")
            terms.update({k: v for k, v in criterion.loss_tensors.items() if k.endswith("_single")})
            terms["total_loss"] = total.detach()
        return total, terms
