"""PIXOR (OpenCOOD ``pixor``; spec baselines §A4): a one-stage BEV detector on an occupancy + intensity image.

bev_input (B, nz + 1, H, W) -> backbone (2 x conv3x3 32, four residual Bottleneck stages [3, 6, 6, 3] of widths
24 / 48 / 64 / 96 (x4 expansion), stride 2 each; FPN from strides 16 and 8 back to 4) -> header (4 x conv3x3 96
+ BN + ReLU) -> cls (1) and reg (6: cos θ, sin θ, dx, dy, log w, log l, normalised, see
``data_utils/post_processor/bev_postprocessor.py``) at stride 4. Reads ``processed_lidar['bev_input']``
(``BevPreprocessor``); one detector per sample (early fusion) or per agent (late fusion).
"""
import math

import torch.nn as nn

from opencood.models.base_model import CooperativeModel
from opencood.utils.bev_grid import grid_size
from opencood.utils.config import REQUIRED, Key, Schema
from opencood.utils.errors import ConfigError, DataError
from opencood.utils.registry import MODELS

OUTPUT_STRIDE = 4
EXPANSION = 4


def conv3x3(c_in, c_out, stride=1, bias=False):
    return nn.Conv2d(c_in, c_out, 3, stride, 1, bias=bias)


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1x1 -> 3x3 (stride) -> 1x1 (x4 channels), BN after each, residual, ReLU."""

    def __init__(self, c_in, planes, stride=1):
        super().__init__()
        c_out = planes * EXPANSION
        self.body = nn.Sequential(
            nn.Conv2d(c_in, planes, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
            conv3x3(planes, planes, stride), nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
            nn.Conv2d(planes, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.downsample = None if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(self.body(x) + residual)


class BackBone(nn.Module):
    """Residual stages + a two-step FPN to stride 4 (96 channels at OpenCOOD's widths)."""

    def __init__(self, in_channels, layer_nums=(3, 6, 6, 3), planes=(24, 48, 64, 96)):
        super().__init__()
        self.stem = nn.Sequential(conv3x3(in_channels, 32), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
                                  conv3x3(32, 32), nn.BatchNorm2d(32), nn.ReLU(inplace=True))
        stages, c_in = [], 32
        for n, p in zip(layer_nums, planes):
            stages.append(nn.Sequential(*[Bottleneck(c_in if i == 0 else p * EXPANSION, p, 2 if i == 0 else 1)
                                          for i in range(n)]))
            c_in = p * EXPANSION
        self.stages = nn.ModuleList(stages)
        c3, c4, c5 = (p * EXPANSION for p in planes[1:])
        self.lat5 = nn.Conv2d(c5, 196, 1)
        self.lat4 = nn.Conv2d(c4, 128, 1)
        self.lat3 = nn.Conv2d(c3, 96, 1)
        self.up5 = nn.ConvTranspose2d(196, 128, 3, 2, 1, output_padding=1)
        self.up4 = nn.ConvTranspose2d(128, 96, 3, 2, 1, output_padding=1)
        self.out_channels = 96

    def forward(self, x):
        x = self.stem(x)  # (B, 32, H, W)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)  # strides 2, 4, 8, 16
        _, c3, c4, c5 = feats
        p4 = self.lat4(c4) + self.up5(self.lat5(c5))  # (B, 128, H/8, W/8)
        return self.lat3(c3) + self.up4(p4)  # (B, 96, H/4, W/4)


class Header(nn.Module):
    """4 x (conv3x3 + BN + ReLU), then cls (1) and reg (6) conv3x3 heads; cls bias from the prior probability."""

    def __init__(self, channels=96, cls_prior_prob=0.01):
        super().__init__()
        self.body = nn.Sequential(*[m for _ in range(4) for m in (conv3x3(channels, channels),
                                                                   nn.BatchNorm2d(channels), nn.ReLU(inplace=True))])
        self.cls_head = conv3x3(channels, 1, bias=True)
        self.reg_head = conv3x3(channels, 6, bias=True)
        nn.init.constant_(self.cls_head.bias, -math.log((1 - cls_prior_prob) / cls_prior_prob))

    def forward(self, x):
        x = self.body(x)
        return self.cls_head(x), self.reg_head(x)


@MODELS.register("pixor")
class PIXOR(CooperativeModel):
    """PIXOR single-agent detector.

    Args:
        args: YAML ``model.args`` (see ``CONFIG``).
    """

    CONFIG = Schema({
        "voxel_size": Key(list, REQUIRED, "BEV pixel [vx, vy, vz] metres (= the BevPreprocessor's)", length=3),
        "lidar_range": Key(list, REQUIRED, "[xmin, ymin, zmin, xmax, ymax, zmax] metres", length=6),
        "layer_nums": Key(list, [3, 6, 6, 3], "Bottleneck blocks per residual stage", length=4),
        "planes": Key(list, [24, 48, 64, 96], "bottleneck widths per stage (outputs x4)", length=4),
        "cls_prior_prob": Key(float, 0.01, "initial foreground probability of the cls head"),
        "bn_momentum": Key(float, None, "read by train_utils.create_model: momentum of every BatchNorm"),
        "feature_stride": Key(int, None, "derived: output cell in pixels; must be 4"),
        "anchor_voxel_size": Key(list, None, "derived: pixel of the output grid", length=3),
        "anchor_number": Key(int, None, "derived from postprocess; unused (no anchors)"),
    }, name="pixor")

    def __init__(self, args):
        super().__init__()
        source = args.get("_source", "config")
        cfg = self.CONFIG.parse(args, "model.args", source)
        if cfg.feature_stride is not None and cfg.feature_stride != OUTPUT_STRIDE:
            raise ConfigError(f"{source}: postprocess.anchor_args.feature_stride = {cfg.feature_stride} but PIXOR "
                              f"outputs every {OUTPUT_STRIDE} pixels")
        nx, ny, nz = (int(v) for v in grid_size(cfg.lidar_range, cfg.voxel_size))
        if nx % 16 or ny % 16:
            raise ConfigError(f"{source}: model.args: the {ny} x {nx} BEV image must be a multiple of 16 "
                              f"(four stride-2 stages)")
        self.backbone = BackBone(nz + 1, cfg.layer_nums, cfg.planes)
        self.header = Header(self.backbone.out_channels, cfg.cls_prior_prob)

    def forward(self, data_dict):
        """Args: data_dict = batch['ego'] with ``processed_lidar['bev_input']`` (B, nz + 1, H, W).

        Returns:
            ``cls_preds`` (B, 1, H/4, W/4), ``reg_preds`` (B, 6, H/4, W/4), ``fused_feature`` (B, 96, H/4, W/4).
        """
        bev = data_dict.get("processed_lidar", {}).get("bev_input")
        if bev is None:
            raise DataError("batch: missing key 'processed_lidar.bev_input' (preprocess.core_method BevPreprocessor)")
        feature = self.backbone(bev)
        cls_preds, reg_preds = self.header(feature)
        return {"cls_preds": cls_preds, "reg_preds": reg_preds, "fused_feature": feature}
