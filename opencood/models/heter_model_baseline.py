"""Heterogeneous intermediate-fusion baseline (HEAL ``heter_model_baseline``).

Per agent type mX: ``encoder_mX`` -> ``backbone_mX`` (BaseBEVBackbone or identity) -> ``shrinker_mX``
(DownsampleConv) -> camera maps centre-cropped/zero-padded to the LiDAR grid; agents re-stacked in batch order;
``fusion_net`` (att | max) in the ego frame; 1x1 ``cls_head`` / ``reg_head`` / ``dir_head``.
Parameter names follow HEAL so stage-1 checkpoints merge and load by prefix.
"""
import re

import torch
import torch.nn as nn
import torchvision.transforms.functional as TF

from opencood.models.sub_modules.base_bev_backbone import BaseBEVBackbone
from opencood.models.sub_modules.downsample_conv import DownsampleConv
from opencood.utils.errors import ConfigError, DataError
from opencood.utils.registry import ENCODERS, FUSION_MODULES, MODELS
from opencood.utils.transformation_utils import normalize_pairwise_tfm

_MODALITY_RE = re.compile(r"^m\d+$")


def is_identity(backbone_args):
    """True when a ``backbone_args`` value means "no backbone" (``identity`` or ``{core_method: identity}``)."""
    if backbone_args is None:
        return True
    if isinstance(backbone_args, str):
        return backbone_args.lower() == "identity"
    return isinstance(backbone_args, dict) and str(backbone_args.get("core_method", "")).lower() == "identity"


def build_heads(in_head, anchor_number, dir_args):
    """1x1 detection heads: cls A, reg 7A, dir ``num_bins`` * A (None without ``dir_args``)."""
    cls_head = nn.Conv2d(in_head, anchor_number, kernel_size=1)
    reg_head = nn.Conv2d(in_head, 7 * anchor_number, kernel_size=1)
    dir_head = nn.Conv2d(in_head, dir_args["num_bins"] * anchor_number, kernel_size=1) if dir_args else None
    return cls_head, reg_head, dir_head


def build_fusion(args, where="model.args"):
    """Fusion module named by ``args['fusion_method']``, built from ``args[fusion_method]``."""
    if "fusion_method" not in args:
        raise ConfigError(f"{where}: missing key 'fusion_method'")
    method = args["fusion_method"]
    fusion_cls = FUSION_MODULES.get(method, source=f"{where}.fusion_method")
    return fusion_cls(args.get(method))


@MODELS.register("heter_model_baseline")
class HeterModelBaseline(nn.Module):
    """Heterogeneous collaborative detector.

    Args:
        args: YAML ``model.args``: ``lidar_range`` (metres, ego LiDAR frame), ``m1..mK`` (each
            ``{core_method, sensor_type, encoder_args, backbone_args, shrink_header, camera_mask_args?}``),
            ``fusion_method`` + its section (``att: {feat_dim}``), ``in_head``, ``anchor_number``, ``dir_args``.
    """

    def __init__(self, args):
        super().__init__()
        self.args = args
        if "lidar_range" not in args:
            raise ConfigError("model.args: missing key 'lidar_range'")
        self.lidar_range = [float(v) for v in args["lidar_range"]]
        self.modalities = sorted((k for k in args if _MODALITY_RE.match(str(k))), key=lambda m: int(m[1:]))
        if not self.modalities:
            raise ConfigError("model.args: no agent type sections (m1, m2, ...)")
        self.ego_modality = args.get("ego_modality", self.modalities[0])
        self.sensor_type = {}
        self.crop_ratio = {}  # camera: (ratio_H, ratio_W) = LiDAR half-extent / camera grid half-extent
        for m in self.modalities:
            self._build_agent_type(m, args[m])

        self.fusion_net = build_fusion(args)
        for key in ("in_head", "anchor_number"):
            if key not in args:
                raise ConfigError(f"model.args: missing key '{key}'")
        self.cls_head, self.reg_head, dir_head = build_heads(args["in_head"], args["anchor_number"],
                                                             args.get("dir_args"))
        if dir_head is not None:
            self.dir_head = dir_head

    def _build_agent_type(self, m, setting):
        where = f"model.args.{m}"
        for key in ("core_method", "encoder_args", "shrink_header"):
            if key not in setting:
                raise ConfigError(f"{where}: missing key '{key}'")
        sensor = setting.get("sensor_type", "lidar")
        self.sensor_type[m] = sensor
        encoder_cls = ENCODERS.get(setting["core_method"], source=f"{where}.core_method")
        setattr(self, f"encoder_{m}", encoder_cls(setting["encoder_args"]))
        backbone_args = setting.get("backbone_args")
        if is_identity(backbone_args):
            setattr(self, f"backbone_{m}", nn.Identity())
        else:
            setattr(self, f"backbone_{m}", BaseBEVBackbone(backbone_args, backbone_args.get("inplanes", 64)))
        setattr(self, f"shrinker_{m}", DownsampleConv(setting["shrink_header"]))
        if sensor == "camera":
            grid_conf = (setting.get("camera_mask_args") or {}).get("grid_conf") or \
                setting["encoder_args"].get("grid_conf")
            if grid_conf is None:
                raise ConfigError(f"{where}: missing key 'camera_mask_args.grid_conf' (camera BEV extent)")
            self.crop_ratio[m] = (self.lidar_range[4] / float(grid_conf["ybound"][1]),
                                  self.lidar_range[3] / float(grid_conf["xbound"][1]))

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

    def encode_modality(self, data_dict, modality):
        """Encoder -> backbone -> shrinker of one type, before the camera crop.

        Returns:
            (n_m, C, H, W) features of that type's agents, in batch order.
        """
        feature = getattr(self, f"encoder_{modality}")(data_dict, modality)  # (n_m, C0, H0, W0)
        feature = getattr(self, f"backbone_{modality}")(feature)  # (n_m, C1, H1, W1)
        return getattr(self, f"shrinker_{modality}")(feature)  # (n_m, C, H, W)

    def encode_agents(self, data_dict):
        """Features of every agent, each in its own frame, on the LiDAR grid.

        Returns:
            features (N, C, H, W) in batch (``agent_modality_list``) order, and ``aux``: dict of extra outputs
            (``depth_items_mX`` of depth-supervised camera encoders).
        """
        modality_list = self.agent_modalities(data_dict)
        per_type, aux = {}, {}
        for m in self.modalities:
            if m not in modality_list:
                continue
            per_type[m] = self.crop_to_lidar_grid(self.encode_modality(data_dict, m), m)
            depth_items = getattr(getattr(self, f"encoder_{m}"), "depth_items", None)
            if depth_items is not None:
                aux[f"depth_items_{m}"] = depth_items
        return self.stack_in_agent_order(per_type, modality_list), aux

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
            output dict with ``cls_preds``, ``reg_preds``, ``dir_preds`` and ``fused_feature`` (B, C, H, W).
        """
        fused = self.fusion_net(features, data_dict["record_len"], self.affine_matrix(data_dict))
        out = self.detect(fused)
        out["fused_feature"] = fused
        return out

    def forward(self, data_dict):
        """Args: data_dict = batch['ego']. Returns the output dict of :meth:`fuse_and_detect` (+ depth items)."""
        features, aux = self.encode_agents(data_dict)
        out = self.fuse_and_detect(features, data_dict)
        out.update(aux)
        return out
