"""ResNet / ResNeXt BEV backbone (HEAL ``ResNetBEVBackbone``) with multi-scale get / decode methods.

Level i = one ResNet stage ``resnet.layer{i}``: ``layer_nums[i]`` residual blocks, the first of stride
``layer_strides[i]`` (a 1x1 conv + BN shortcut where the shape changes). Deblock i = ConvTranspose2d(k = s =
``upsample_strides[i]``) + BN + ReLU (a strided Conv2d below 1); the deblock outputs are concatenated.
Multi-scale fusion (Pyramid Fusion, CoAlign) calls :meth:`ResNetBEVBackbone.get_multiscale_feature`, fuses
each level, then :meth:`ResNetBEVBackbone.decode_multiscale_feature`.

Parameter names follow HEAL (``resnet.layer0.0.conv1.weight``, ``deblocks.0.0.weight``).
"""
import numpy as np
import torch
import torch.nn as nn

from opencood.models.sub_modules.base_bev_backbone import BaseBEVBackbone
from opencood.models.sub_modules.feature_info import conv_out
from opencood.utils.config import Key, Schema
from opencood.utils.errors import ConfigError


class BasicBlock(nn.Module):
    """Conv3x3(stride) + BN + ReLU + Conv3x3 + BN, plus the (projected) input, ReLU. Output ``planes``."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """ResNeXt bottleneck with expansion 1: Conv1x1 (-> width) + Conv3x3 (groups, stride) + Conv1x1
    (-> ``planes``), each with BN, ReLU between; width = planes * base_width / 64 * groups."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetModified(nn.Module):
    """ResNet stages without the stem: ``layer{i}`` = ``layer_nums[i]`` blocks, first of ``layer_strides[i]``.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layer_nums, layer_strides, num_filters: one entry per stage.
        inplanes: input channels.
        groups, width_per_group: ResNeXt cardinality and width (Bottleneck only).
    """

    def __init__(self, block, layer_nums, layer_strides, num_filters, inplanes=64, groups=1, width_per_group=64):
        super().__init__()
        self.inplanes = inplanes
        self.groups, self.base_width = groups, width_per_group
        self.num_levels = len(layer_nums)
        for i, (n, s, c) in enumerate(zip(layer_nums, layer_strides, num_filters)):
            setattr(self, f"layer{i}", self._make_layer(block, c, n, s))

    def _make_layer(self, block, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride,
                                                 bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, groups=self.groups, base_width=self.base_width)
                   for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        """Args: x (N, inplanes, H, W). Returns the tuple of every stage's output (N, num_filters[i], H_i, W_i)."""
        outs = []
        for i in range(self.num_levels):
            x = getattr(self, f"layer{i}")(x)
            outs.append(x)
        return tuple(outs)


RESNET_BEV_KEYS = {
    "layer_nums": Key(list, [], "residual blocks per level"),
    "layer_strides": Key(list, [], "stride of each level's first block"),
    "num_filters": Key(list, [], "channels of each level"),
    "upsample_strides": Key(list, [], "deblock stride per level (< 1: strided conv); empty: output = last level"),
    "num_upsample_filter": Key(list, [], "channels of each deblock (output C = their sum)"),
    "inplanes": Key(int, None, "input channels (checked; default: the input's)"),
}
_BASE_LIST_KEYS = ("layer_nums", "layer_strides", "num_filters", "upsample_strides", "num_upsample_filter")


class ResNetBEVBackbone(nn.Module):
    """ResNet BEV backbone with multi-scale access.

    Args:
        model_cfg: the backbone section (see ``CONFIG``).
        input_channels: channels of the input map when ``inplanes`` is not written.
        block: residual block class (:class:`Bottleneck` for ResNeXt).
        block_kwargs: ``groups`` / ``width_per_group`` for the block.
    """

    CONFIG = Schema(RESNET_BEV_KEYS, name="resnet_bev_backbone")

    def __init__(self, model_cfg, input_channels=64, block=BasicBlock, **block_kwargs):
        super().__init__()
        cfg = self.lists(model_cfg)
        inplanes = cfg.inplanes if cfg.inplanes is not None else input_channels
        self.num_levels = len(cfg.layer_nums)
        self.resnet = ResNetModified(block, cfg.layer_nums, cfg.layer_strides, cfg.num_filters, inplanes,
                                     **block_kwargs)
        self.deblocks = nn.ModuleList(
            self._deblock(c, u, s) for c, u, s in zip(cfg.num_filters, cfg.num_upsample_filter,
                                                      cfg.upsample_strides))
        self.level_channels = list(cfg.num_filters)
        self.num_bev_features = sum(cfg.num_upsample_filter) if cfg.num_upsample_filter else cfg.num_filters[-1]

    @staticmethod
    def _deblock(c_in, c_out, stride):
        if stride >= 1:
            conv = nn.ConvTranspose2d(c_in, c_out, int(stride), stride=int(stride), bias=False)
        else:
            k = int(np.round(1 / stride))
            conv = nn.Conv2d(c_in, c_out, k, stride=k, bias=False)
        return nn.Sequential(conv, nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.01), nn.ReLU())

    @classmethod
    def lists(cls, model_cfg, where="backbone_args", source="config"):
        """Parsed section with level lists of equal length (ConfigError otherwise; at least one level)."""
        cfg = cls.CONFIG.parse(model_cfg, where, source)
        BaseBEVBackbone.lists({k: cfg[k] for k in _BASE_LIST_KEYS}, where, source)
        if not cfg.layer_nums:
            raise ConfigError(f"{source}: {where}.layer_nums: at least one level is needed")
        return cfg

    @classmethod
    def feature_info(cls, model_cfg, in_info, where="backbone_args", source="config"):
        """Output :class:`FeatureInfo` (a strided 3x3 conv per level, as BaseBEVBackbone's levels)."""
        cfg = cls.lists(model_cfg, where, source)
        return BaseBEVBackbone.feature_info({k: cfg[k] for k in _BASE_LIST_KEYS}, in_info, where, source)

    @classmethod
    def level_infos(cls, model_cfg, in_info, where="backbone_args", source="config"):
        """[:class:`FeatureInfo`] of every level's output (before the deblocks)."""
        cfg = cls.lists(model_cfg, where, source)
        infos, size, info = [], tuple(in_info.size), in_info
        for c, s in zip(cfg.num_filters, cfg.layer_strides):
            size = tuple(conv_out(n, 3, s, 1) for n in size)
            info = info.strided(c, s, size)
            infos.append(info)
        return infos

    def get_multiscale_feature(self, spatial_features):
        """Args: (N, C_in, H, W). Returns the tuple of level outputs (N, num_filters[i], H_i, W_i)."""
        return self.resnet(spatial_features)

    def get_layer_i_feature(self, spatial_features, layer_i):
        """Level ``layer_i`` alone on its input (N, C_{i-1}, H_{i-1}, W_{i-1})."""
        return getattr(self.resnet, f"layer{layer_i}")(spatial_features)

    def decode_multiscale_feature(self, x):
        """Deblock every level and concatenate: list of (N, num_filters[i], H_i, W_i) -> (N, sum up, H', W').

        Without deblocks the last level is returned.
        """
        if not len(self.deblocks):
            return x[-1]
        ups = [deblock(x[i]) for i, deblock in enumerate(self.deblocks)]  # (N, num_upsample_filter[i], H', W')
        return torch.cat(ups, dim=1) if len(ups) > 1 else ups[0]

    def forward(self, spatial_features):
        """Args: (N, C_in, H, W). Returns the decoded (N, num_bev_features, H', W')."""
        return self.decode_multiscale_feature(self.get_multiscale_feature(spatial_features))
