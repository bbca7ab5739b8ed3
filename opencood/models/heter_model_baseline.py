"""Heterogeneous intermediate-fusion baseline (HEAL ``heter_model_baseline``).

Per agent type mX: ``encoder_mX`` -> ``backbone_mX`` (BaseBEVBackbone or identity) -> ``shrinker_mX``
(DownsampleConv) -> camera maps centre-cropped/zero-padded to the LiDAR grid; agents re-stacked in batch order;
``fusion_net`` (att | max | ...) in the ego frame; 1x1 ``cls_head`` / ``reg_head`` / ``dir_head``.
Parameter names follow HEAL so stage-1 checkpoints merge and load by prefix.

Extension points (methods built on this class override hooks, never the loop):

* :meth:`HeterModelBaseline.encode_type` ``(data_dict, m) -> (feature (n_m, C, h, w) on the type's own grid,
  aux)``: encoder -> backbone -> shrinker of one type; :meth:`run_encoder` is its first step.
* :meth:`HeterModelBaseline.type_outputs` ``(feature, m) -> {name: (n_m, ..., h, w)}``: extra per-type maps
  computed on the type's own grid (GenComm's message); they are cropped and re-stacked like the features.
* :meth:`HeterModelBaseline.feature_chain` (classmethod): the channel/stride chain of a config, without
  building modules; every hand-written channel number and the anchor stride are checked against it.
"""
import re
from dataclasses import dataclass

import torch
import torch.nn as nn
import torchvision.transforms.functional as TF

from opencood.models.base_model import CooperativeModel
from opencood.models.fuse_modules.fusion_input import FusionInput
from opencood.models.fuse_modules.warp import agent_batch_index
from opencood.models.sub_modules.base_bev_backbone import BaseBEVBackbone
from opencood.models.sub_modules.degradation import DEGRADATION, MessageDegradation
from opencood.models.sub_modules.downsample_conv import DownsampleConv
from opencood.models.heads.anchor_head import HEAD_MODEL_KEYS, build_detection_heads
from opencood.models.sub_modules.feature_info import check_channels, format_cell, same_cell
from opencood.utils.bev_grid import BEVGrid, CameraGrid
from opencood.utils.camera_utils import GRID_CONF
from opencood.utils.config import REQUIRED, Key, LookupFailed, Schema, registry_schema, schema_of
from opencood.utils.errors import ConfigError, DataError
from opencood.utils.heter_utils import parse_ego_modality
from opencood.utils.registry import ENCODERS, FUSION_MODULES, MODELS
from opencood.utils.transformation_utils import normalize_pairwise_tfm

AGENT_TYPE_RE = r"m\d+"
_MODALITY_RE = re.compile(AGENT_TYPE_RE)


def is_identity(backbone_args):
    """True when a ``backbone_args`` value means "no backbone" (``identity`` or ``{core_method: identity}``)."""
    if backbone_args is None:
        return True
    if isinstance(backbone_args, str):
        return backbone_args.lower() == "identity"
    return isinstance(backbone_args, dict) and str(backbone_args.get("core_method", "")).lower() == "identity"


def build_fusion(cfg, channels, source="config"):
    """Fusion module named by ``cfg.fusion_method``, built from ``cfg[fusion_method]`` for ``channels`` C."""
    fusion_cls = FUSION_MODULES.get(cfg.fusion_method, source=source)
    return fusion_cls(cfg.get(cfg.fusion_method), channels=channels)


# --- declared keys --------------------------------------------------------------------------------------

IDENTITY_BACKBONE = Schema({"core_method": Key(str, REQUIRED, "identity: no backbone", choices=("identity",))})


def _backbone_schema(parent, value=None):
    """``backbone_args``: BaseBEVBackbone keys, or the string / mapping ``identity``."""
    value = parent.get("backbone_args") if value is None else value
    if isinstance(value, str) and not is_identity(value):
        raise LookupFailed(f"backbone_args = {value!r}: should be a BaseBEVBackbone mapping or 'identity'")
    return IDENTITY_BACKBONE if is_identity(value) else BaseBEVBackbone.CONFIG


CAMERA_MASK_ARGS = Schema({
    "grid_conf": Key(dict, None, "camera BEV extent (x/y bounds) cropped/padded onto the LiDAR grid; default: "
                                 "encoder_args.grid_conf (must agree with it)",
                     schema=Schema({k: GRID_CONF.keys[k] for k in ("xbound", "ybound")})),
}, name="camera_mask_args")

AGENT_TYPE = Schema({
    "core_method": Key(str, REQUIRED, "encoder registry name (point_pillar | second | lift_splat_shoot | ...)"),
    "sensor_type": Key(str, "lidar", "lidar | camera (camera maps are cropped/padded onto the LiDAR grid)",
                       choices=("lidar", "camera")),
    "encoder_args": Key(dict, REQUIRED, "the encoder's section (keys of the encoder core_method names)",
                        schema=registry_schema(ENCODERS, "core_method", "model.args.mX.core_method")),
    "backbone_args": Key((dict, str), None, "BaseBEVBackbone, or 'identity' / {core_method: identity} / absent: "
                                            "none", schema=_backbone_schema),
    "shrink_header": Key(dict, REQUIRED, "DownsampleConv onto the shared feature map", schema=DownsampleConv.CONFIG),
    "camera_mask_args": Key(dict, None, "camera types: the BEV extent to crop/pad", schema=CAMERA_MASK_ARGS),
}, name="agent type")


def _fusion_section(name):
    def pick(parent, value=None):
        method = str(parent.get("fusion_method", "")).lower()
        if method != name:
            raise LookupFailed(f"key 'model.args.{name}' configures fusion_method '{name}' but "
                               f"model.args.fusion_method is '{parent.get('fusion_method')}'")
        return schema_of(FUSION_MODULES.get(name))
    return pick


def fusion_keys():
    """``fusion_method`` and one ``model.args.<name>`` section per registered fusion module."""
    names = FUSION_MODULES.names()
    keys = {"fusion_method": Key(str, REQUIRED, "fusion registry name; its section is model.args.<name>",
                                 choices=tuple(names))}
    for name in names:
        keys[name] = Key(dict, None, f"section of fusion_method '{name}'", schema=_fusion_section(name))
    return keys


COMMON_KEYS = dict(fusion_keys(), **HEAD_MODEL_KEYS, **{
    "lidar_range": Key(list, REQUIRED, "derived (cav_lidar_range): [xmin, ymin, zmin, xmax, ymax, zmax] metres "
                                       "of the fused grid, ego LiDAR frame", length=6),
    "in_head": Key(int, None, "channels into the heads (checked; default: the fused feature's)"),
    "bn_momentum": Key(float, None, "read by train_utils.create_model: momentum of every BatchNorm (null: as "
                                    "built, 0.01 for the point/BEV backbones)"),
    "feature_stride": Key(int, None, "derived (postprocess.anchor_args.feature_stride): anchor cell in voxels; "
                                     "checked against the model's output cell"),
    "anchor_voxel_size": Key(list, None, "derived (preprocess.args.voxel_size): voxel [vx, vy, vz] metres of the "
                                         "anchor grid", length=3),
    "comm_degradation": Key(dict, None, "eval only: loss / noise / quantisation of what collaborators transmit "
                                        "(sub_modules/degradation.py)", schema=DEGRADATION),
})


@dataclass(frozen=True)
class FeatureChain:
    """The channel/stride chain of a model config.

    Attributes:
        stages: ``{m: {"encoder": FeatureInfo, "backbone": FeatureInfo | None, "shrinker": FeatureInfo | None}}``
            (None: identity), each on the type's own grid.
        crop_ratio: ``{m: (ratio_H, ratio_W)}`` of camera types (LiDAR half-extent / camera half-extent).
        output: :class:`FeatureInfo` every type delivers on the LiDAR grid = what fusion and the heads get.
    """

    stages: dict
    crop_ratio: dict
    output: object


@MODELS.register("heter_model_baseline")
class HeterModelBaseline(CooperativeModel):
    """Heterogeneous collaborative detector.

    Args:
        args: YAML ``model.args`` (see ``CONFIG``): ``lidar_range`` (metres, ego LiDAR frame), ``m1..mK``
            (each ``{core_method, sensor_type, encoder_args, backbone_args, shrink_header, camera_mask_args?}``),
            ``fusion_method`` + its section, ``in_head``, ``anchor_number``, ``dir_args``. An optional
            ``_source`` (the config file) is used in error messages.
    """

    CONFIG = Schema(COMMON_KEYS, patterns={AGENT_TYPE_RE: Key(dict, None, "an agent type", schema=AGENT_TYPE)},
                    name="heter_model_baseline")
    TRANSMITTED = "feature"  # what a collaborator sends: its BEV feature map (GenComm: its "message")

    def __init__(self, args):
        super().__init__()
        self.source = args.get("_source", "config")
        cfg = self.CONFIG.parse(args, "model.args", self.source)
        self.lidar_range = [float(v) for v in cfg.lidar_range]
        chain = self.feature_chain(cfg, self.source)
        self.modalities = list(chain.stages)
        self.crop_ratio = dict(chain.crop_ratio)  # camera: (ratio_H, ratio_W) = LiDAR / camera half-extent
        self.feature = chain.output  # FeatureInfo of the map fusion gets
        for m, section in self.agent_type_configs(cfg).items():
            self.build_agent_type(m, self.parse_agent_type(m, section, self.source), chain.stages[m])
        self.fusion_net = build_fusion(cfg, self.feature.channels, self.source)
        self.degradation = MessageDegradation.from_args(cfg.comm_degradation, self.source)
        if cfg.anchor_number is None:
            raise ConfigError(f"{self.source}: missing key 'model.args.anchor_number'")
        for name, head in build_detection_heads(self.feature.channels, cfg, self.source).items():
            setattr(self, name, head)  # top-level: checkpoint keys cls_head., reg_head., dir_head.

    def ego_types_of(self, ego_modality):
        """``model.args.ego_modality`` (``'m1'`` or ``'m1&m2'``) as a list of this model's agent types; a type
        without a section in ``model.args`` is a one-line ConfigError."""
        types = parse_ego_modality(ego_modality)
        missing = [m for m in types if m not in self.modalities]
        if missing:
            raise ConfigError(f"{self.source}: model.args.ego_modality: ego type '{missing[0]}' has no section in "
                              f"model.args (known: {self.modalities})")
        return types

    # --- the chain (classmethods: no modules built) ---------------------------------------------------

    @classmethod
    def module_attr(cls, stage, m):
        """Attribute (and state-dict prefix) of a per-type stage: ``encoder_m1``, ``backbone_m1``, ``shrinker_m1``."""
        return f"{stage}_{m}"

    @classmethod
    def section_path(cls, m, section):
        """Dotted YAML path of a type's section, for messages (``model.args.m1.shrink_header``)."""
        return f"model.args.{m}.{section}"

    @classmethod
    def agent_type_configs(cls, cfg):
        """``{m: raw agent-type section}`` in type order (m1, m2, ...)."""
        types = sorted((k for k in cfg if _MODALITY_RE.fullmatch(str(k))), key=lambda m: int(m[1:]))
        if not types:
            raise ConfigError(f"{cfg.get('_source', 'config')}: model.args: no agent type sections (m1, m2, ...)")
        return {m: cfg[m] for m in types}

    @classmethod
    def parse_agent_type(cls, m, section, source="config"):
        return AGENT_TYPE.parse(section, f"model.args.{m}", source)

    @classmethod
    def type_chain(cls, m, tcfg, source="config"):
        """Encoder -> backbone -> shrinker infos of one type; hand-written input channels are checked."""
        enc_where = cls.section_path(m, "encoder_args")
        encoder_cls = ENCODERS.get(tcfg.core_method, source=source)
        info = encoder_cls.feature_info(tcfg.encoder_args, enc_where, source).by(cls.module_attr("encoder", m))
        stages = {"encoder": info, "backbone": None, "shrinker": None}
        if not is_identity(tcfg.backbone_args):
            where = cls.section_path(m, "backbone_args")
            check_channels(tcfg.backbone_args.get("inplanes"), info, f"{where}.inplanes", source)
            info = BaseBEVBackbone.feature_info(tcfg.backbone_args, info, where, source)
            stages["backbone"] = info = info.by(cls.module_attr("backbone", m))
        if tcfg.shrink_header is not None:
            where = cls.section_path(m, "shrink_header")
            check_channels(tcfg.shrink_header.get("input_dim"), info, f"{where}.input_dim", source)
            info = DownsampleConv.feature_info(tcfg.shrink_header, info, where, source)
            stages["shrinker"] = info.by(cls.module_attr("shrinker", m))
        return stages

    @classmethod
    def camera_grid(cls, m, tcfg, source="config"):
        """The x/y extent of a camera type's map: ``camera_mask_args.grid_conf`` or ``encoder_args.grid_conf``."""
        own = tcfg.encoder_args.get("grid_conf")
        mask = (tcfg.camera_mask_args or {}).get("grid_conf")
        if own is not None and mask is not None and any(
                [float(v) for v in own[k]] != [float(v) for v in mask[k]] for k in ("xbound", "ybound")):
            raise ConfigError(f"{source}: model.args.{m}.camera_mask_args.grid_conf x/y bounds differ from "
                              f"{cls.section_path(m, 'encoder_args')}.grid_conf")
        grid_conf = mask if mask is not None else own
        if grid_conf is None:
            raise ConfigError(f"{source}: missing key 'model.args.{m}.camera_mask_args.grid_conf' (camera BEV extent)")
        return CameraGrid(tuple(grid_conf["xbound"]), tuple(grid_conf["ybound"]))

    @classmethod
    def channel_keys(cls, cfg):
        """``[(dotted path, declared value or None)]`` of every key that repeats the fused feature channels."""
        fusion_cls = FUSION_MODULES.get(cfg.fusion_method)
        section, key = cfg.get(cfg.fusion_method) or {}, getattr(fusion_cls, "CHANNEL_KEY", None)
        keys = [("model.args.in_head", cfg.in_head)]
        if key is not None:
            keys.insert(0, (f"model.args.{cfg.fusion_method}.{key}", section.get(key)))
        return keys

    @classmethod
    def feature_chain(cls, args, source="config"):
        """The channel/stride chain of ``model.args``, checked, without building any module.

        Every agent type must deliver the same (C, H, W) at the same cell size on the LiDAR grid; every
        hand-written channel number (``backbone_args.inplanes``, ``shrink_header.input_dim``,
        :meth:`channel_keys`) must equal what reaches it; with the derived ``feature_stride`` and
        ``anchor_voxel_size`` the output cell and map size must be the anchor grid's.

        Args:
            args: ``model.args`` (raw or parsed).
            source: config file name for messages.

        Returns:
            :class:`FeatureChain`.

        Raises:
            ConfigError: one line naming the key, the written value and the produced one.
        """
        cfg = cls.CONFIG.parse(args, "model.args", source)
        stages, crops, outputs = {}, {}, {}
        for m, section in cls.agent_type_configs(cfg).items():
            tcfg = cls.parse_agent_type(m, section, source)
            stages[m] = cls.type_chain(m, tcfg, source)
            out = stages[m]["shrinker"] or stages[m]["backbone"] or stages[m]["encoder"]
            if tcfg.sensor_type == "camera":
                crops[m] = cls.camera_grid(m, tcfg, source).crop_ratio(cfg.lidar_range)
                out = out.strided(out.channels, 1, [int(round(n * r)) for n, r in zip(out.size, crops[m])])
            outputs[m] = out
        output = _common_output(outputs, source)
        for path, declared in cls.channel_keys(cfg):
            check_channels(declared, output, path, source)
        _check_anchor_grid(cfg, output, source)
        return FeatureChain(stages, crops, output)

    # --- building -------------------------------------------------------------------------------------

    def build_agent_type(self, m, tcfg, stages):
        """Encoder, backbone (or identity) and shrinker of type ``m``, input channels from the chain."""
        self.build_encoder(m, tcfg)
        if stages["backbone"] is None:
            backbone = nn.Identity()
        else:
            backbone = BaseBEVBackbone(tcfg.backbone_args, stages["encoder"].channels)
        setattr(self, self.module_attr("backbone", m), backbone)
        before = stages["backbone"] or stages["encoder"]
        shrinker = nn.Identity() if stages["shrinker"] is None else DownsampleConv(tcfg.shrink_header,
                                                                                   before.channels)
        setattr(self, self.module_attr("shrinker", m), shrinker)

    def build_encoder(self, m, tcfg):
        """``encoder_m`` = the ``core_method`` encoder built from ``encoder_args``."""
        encoder_cls = ENCODERS.get(tcfg.core_method, source=self.source)
        setattr(self, self.module_attr("encoder", m), encoder_cls(tcfg.encoder_args))

    # --- forward ----------------------------------------------------------------------------------------

    def agent_modalities(self, data_dict):
        """Per-agent type list in batch order (all agents = the single type when the batch has no list)."""
        modality_list = data_dict.get("agent_modality_list")
        if modality_list is None:
            if len(self.modalities) != 1:
                raise DataError("batch: missing key 'agent_modality_list' for a model with several agent types")
            return [self.modalities[0]] * int(data_dict["record_len"].sum().item())
        unknown = sorted(set(modality_list) - set(self.modalities))
        if unknown:
            raise DataError(f"batch: agent_modality_list has types {unknown} that model.args does not define "
                            f"(known: {self.modalities})")
        return list(modality_list)

    def crop_to_lidar_grid(self, feature, modality):
        """Centre-crop / zero-pad a camera map to the LiDAR grid; LiDAR maps pass through.

        Args:
            feature: (n, C, H, W) map of ``modality`` (same cell size as the LiDAR map).

        Returns:
            (n, C, round(H * ratio_H), round(W * ratio_W)) for cameras, else ``feature``.
        """
        if modality not in self.crop_ratio:
            return feature
        ratio_h, ratio_w = self.crop_ratio[modality]
        h, w = feature.shape[-2:]
        return TF.center_crop(feature, [int(round(h * ratio_h)), int(round(w * ratio_w))])

    def run_encoder(self, data_dict, m):
        """``encoder_m(data_dict, m)`` -> ((n_m, C0, H0, W0) raw BEV map, aux dict of extra outputs)."""
        return getattr(self, self.module_attr("encoder", m))(data_dict, m)

    def encode_type(self, data_dict, m):
        """Hook: encoder -> backbone -> shrinker of one type, on the type's own grid (before the camera crop).

        Returns:
            (n_m, C, h, w) features of that type's agents in batch order, and the encoder's aux dict.
        """
        feature, aux = self.run_encoder(data_dict, m)  # (n_m, C0, H0, W0)
        feature = getattr(self, self.module_attr("backbone", m))(feature)  # (n_m, C1, H1, W1)
        return getattr(self, self.module_attr("shrinker", m))(feature), aux  # (n_m, C, h, w)

    def type_outputs(self, feature, m):
        """Hook: extra per-type maps computed from the type's features on its own grid (none here).

        Args:
            feature: (n_m, C, h, w) from :meth:`encode_type`.

        Returns:
            ``{name: (n_m, C', h, w)}``; cropped onto the LiDAR grid and re-stacked like the features.
        """
        return {}

    def encode_agents(self, data_dict):
        """Features (and :meth:`type_outputs`) of every agent, each in its own frame, on the LiDAR grid.

        Returns:
            features (N, C, H, W) in batch (``agent_modality_list``) order; ``extras`` ``{name: (N, C', H, W)}``
            from :meth:`type_outputs`; ``aux`` ``{key_mX: ...}`` from the encoders (``depth_items_mX``).
        """
        modality_list = self.agent_modalities(data_dict)
        present = set(modality_list)
        per_type, aux = {}, {}
        for m in self.modalities:
            if m not in present:
                continue
            feature, type_aux = self.encode_type(data_dict, m)  # (n_m, C, h, w) own grid
            outputs = {"feature": feature, **self.type_outputs(feature, m)}
            per_type[m] = {name: self.crop_to_lidar_grid(t, m) for name, t in outputs.items()}  # (n_m, ., H, W)
            aux.update({f"{key}_{m}": value for key, value in type_aux.items()})
        names = next(iter(per_type.values()))
        stacked = {name: self.stack_in_agent_order({m: out[name] for m, out in per_type.items()}, modality_list)
                   for name in names}
        self.degrade_transmitted(stacked, data_dict, aux)
        return stacked.pop("feature"), stacked, aux

    def degrade_transmitted(self, stacked, data_dict, aux):
        """Eval only: degrade the collaborators' rows of the transmitted tensor ``stacked[TRANSMITTED]`` in
        place (``model.args.comm_degradation``); ``aux['message_bits']`` tells ``comm_volume`` the bits per
        value when quantised."""
        if self.training or not self.degradation.active:
            return
        sent = stacked[self.TRANSMITTED]  # (N, C', H, W)
        _, local_idx = agent_batch_index(data_dict["record_len"].to(sent.device), total=sent.shape[0])
        stacked[self.TRANSMITTED] = self.degradation(sent, local_idx == 0)
        if self.degradation.message_bits is not None:
            aux["message_bits"] = self.degradation.message_bits

    @staticmethod
    def stack_in_agent_order(per_type, modality_list):
        """Re-stack per-type tensors ``{m: (n_m, ...)}`` into (N, ...) following ``modality_list``."""
        first = next(iter(per_type.values()))
        shapes = {m: tuple(t.shape[1:]) for m, t in per_type.items()}
        if len(set(shapes.values())) != 1:
            raise ConfigError(f"model.args: agent types give different feature shapes {shapes}; "
                              f"check shrink_header dims and ranges")
        if len(per_type) == 1 and first.shape[0] == len(modality_list):
            return first  # one agent type: already in batch order
        out = first.new_zeros((len(modality_list),) + tuple(first.shape[1:]))
        for m, t in per_type.items():
            idx = torch.tensor([i for i, mm in enumerate(modality_list) if mm == m])
            out = out.index_copy(0, idx.to(t.device, non_blocking=True), t)
        return out

    def affine_matrix(self, data_dict):
        """(B, L, L, 2, 3) normalised pairwise affines from ``pairwise_t_matrix`` (metres, ratio 1)."""
        r = self.lidar_range
        return normalize_pairwise_tfm(data_dict["pairwise_t_matrix"], r[4] - r[1], r[3] - r[0], 1)

    def fusion_input(self, features, data_dict):
        """The :class:`FusionInput` of a batch: agent features (N, C, H, W) + the batch's geometry."""
        return FusionInput(features=features, record_len=data_dict["record_len"],
                           affine=self.affine_matrix(data_dict),
                           pairwise_t_matrix=data_dict["pairwise_t_matrix"],
                           agent_types=data_dict.get("agent_modality_list"),
                           prior=data_dict.get("agent_prior"),  # (N, 3) [delay s, speed m/s, infrastructure]
                           lidar_range=tuple(self.lidar_range), cell=self.feature.cell)

    def detect(self, fused):
        """Heads on a fused map (B, in_head, H', W') -> {cls_preds (B,A,H',W'), reg_preds, dir_preds}."""
        out = {"cls_preds": self.cls_head(fused), "reg_preds": self.reg_head(fused)}
        if hasattr(self, "dir_head"):
            out["dir_preds"] = self.dir_head(fused)
        return out

    def fuse_and_detect(self, features, data_dict):
        """Fuse agents into the ego frame and run the heads.

        Args:
            features: (N, C, H, W) agent features in batch order, each in its own frame.
            data_dict: batch['ego'] (``record_len`` (B,), ``pairwise_t_matrix`` (B, L, L, 4, 4)).

        Returns:
            output dict with ``cls_preds``, ``reg_preds``, ``dir_preds``, ``fused_feature`` (B, C, H, W) and
            the fusion module's aux outputs.
        """
        fused, fusion_aux = self.fusion_net(self.fusion_input(features, data_dict))  # (B, C, H, W)
        out = self.detect(fused)
        out["fused_feature"] = fused
        out.update(fusion_aux)
        return out

    def forward(self, data_dict):
        """Args: data_dict = batch['ego']. Returns the output dict of :meth:`fuse_and_detect` (+ depth items)."""
        features, _, aux = self.encode_agents(data_dict)  # (N, C, H, W)
        out = self.fuse_and_detect(features, data_dict)
        out.update(aux)
        return out


def _common_output(outputs, source):
    """The one (C, H, W) and cell every agent type delivers (ConfigError naming each type's otherwise)."""
    first = next(iter(outputs.values()))
    if any(o.shape != first.shape or not same_cell(o.cell, first.cell) for o in outputs.values()):
        shapes = "; ".join(f"{m} ({o.producer}) {o.channels} x {o.size[0]} x {o.size[1]} at {format_cell(o.cell)}"
                           for m, o in outputs.items())
        raise ConfigError(f"{source}: model.args: agent types give different feature maps: {shapes}; "
                          f"check shrink_header dims and ranges")
    return first


def _check_anchor_grid(cfg, output, source):
    """With the derived ``feature_stride`` / ``anchor_voxel_size``: output cell and size = the anchor grid's."""
    if cfg.feature_stride is None or cfg.anchor_voxel_size is None:
        return
    grid = BEVGrid(cfg.lidar_range, cfg.anchor_voxel_size, cfg.feature_stride)
    anchors = (f"postprocess.anchor_args.feature_stride {grid.feature_stride} x voxel "
               f"{format_cell(grid.voxel_size[:2])}")
    if not same_cell(output.cell, grid.feature_cell):
        raise ConfigError(f"{source}: {output.producer} outputs cells of {format_cell(output.cell)} but "
                          f"{anchors} = {format_cell(grid.feature_cell)}")
    if tuple(output.size) != tuple(grid.feature_shape):
        raise ConfigError(f"{source}: {output.producer} outputs a {output.size[0]} x {output.size[1]} map but "
                          f"the anchor grid ({anchors}) is {grid.feature_shape[0]} x {grid.feature_shape[1]}")
