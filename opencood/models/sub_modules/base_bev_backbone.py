"""2-D BEV backbone of PointPillars/SECOND: strided conv levels + transposed-conv upsampling, concatenated.

Parameter names follow HEAL (``blocks.{level}.{layer}``, ``deblocks.{level}.{layer}``).
"""
import numpy as np
import torch
import torch.nn as nn

from opencood.models.sub_modules.feature_info import conv_out
from opencood.utils.config import Key, Schema
from opencood.utils.errors import ConfigError


def _bn(channels):
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class BaseBEVBackbone(nn.Module):
    """Multi-level BEV CNN.

    Level i = ZeroPad2d(1) + Conv3x3 stride ``layer_strides[i]`` + BN + ReLU, then ``layer_nums[i]`` x
    (Conv3x3 + BN + ReLU). Deblock i = ConvTranspose2d(k = s = ``upsample_strides[i]``) + BN + ReLU (a strided
    Conv2d when the stride is < 1). Deblock outputs are concatenated along channels; one extra upsample stride
    adds a final deblock on the concatenation.

    Args:
        model_cfg: the ``backbone_args`` / ``base_bev_backbone`` section (see ``CONFIG``; the upsampling lists
            may be absent: output = last level).
        input_channels: channels of the input map (64 for pillars).
    """

    CONFIG = Schema({
        "layer_nums": Key(list, [], "extra conv3x3 layers per level"),
        "layer_strides": Key(list, [], "stride of each level's first conv"),
        "num_filters": Key(list, [], "channels of each level"),
        "upsample_strides": Key(list, [], "deblock stride per level (< 1: strided conv); more entries than "
                                          "levels add a final deblock on the concatenation"),
        "num_upsample_filter": Key(list, [], "channels of each deblock (output C = their sum)"),
        "inplanes": Key(int, None, "input channels (checked against the encoder; default: the encoder's)"),
    }, name="base_bev_backbone")

    def __init__(self, model_cfg, input_channels):
        super().__init__()
        cfg = self.lists(model_cfg)
        layer_nums, layer_strides, num_filters = cfg.layer_nums, cfg.layer_strides, cfg.num_filters
        upsample_strides, num_upsample_filters = cfg.upsample_strides, cfg.num_upsample_filter

        in_filters = [input_channels] + num_filters[:-1]
        self.blocks = nn.ModuleList()
        self.deblocks = nn.ModuleList()
        for i, n_layers in enumerate(layer_nums):
            layers = [nn.ZeroPad2d(1),
                      nn.Conv2d(in_filters[i], num_filters[i], 3, stride=layer_strides[i], padding=0, bias=False),
                      _bn(num_filters[i]), nn.ReLU()]
            for _ in range(n_layers):
                layers += [nn.Conv2d(num_filters[i], num_filters[i], 3, padding=1, bias=False),
                           _bn(num_filters[i]), nn.ReLU()]
            self.blocks.append(nn.Sequential(*layers))
            if upsample_strides:
                self.deblocks.append(self._deblock(num_filters[i], num_upsample_filters[i], upsample_strides[i]))

        out_channels = sum(num_upsample_filters) if num_upsample_filters else (num_filters[-1] if num_filters
                                                                              else input_channels)
        if len(upsample_strides) > len(layer_nums):
            self.deblocks.append(self._deblock(out_channels, out_channels, upsample_strides[-1]))
        self.num_bev_features = out_channels

    @staticmethod
    def _deblock(c_in, c_out, stride):
        if stride >= 1:
            stride = int(stride)
            conv = nn.ConvTranspose2d(c_in, c_out, stride, stride=stride, bias=False)
        else:
            k = int(np.round(1 / stride))
            conv = nn.Conv2d(c_in, c_out, k, stride=k, bias=False)
        return nn.Sequential(conv, _bn(c_out), nn.ReLU())

    def get_output_feature_dim(self):
        return self.num_bev_features

    @classmethod
    def lists(cls, model_cfg, where="base_bev_backbone", source="config"):
        """Parsed section whose level lists agree in length (ConfigError otherwise)."""
        cfg = cls.CONFIG.parse(model_cfg, where, source)
        if not len(cfg.layer_nums) == len(cfg.layer_strides) == len(cfg.num_filters):
            raise ConfigError(f"{source}: {where}: layer_nums, layer_strides and num_filters differ in length")
        if len(cfg.upsample_strides) != len(cfg.num_upsample_filter):
            raise ConfigError(f"{source}: {where}: upsample_strides and num_upsample_filter differ in length")
        return cfg

    @classmethod
    def feature_info(cls, model_cfg, in_info, where="base_bev_backbone", source="config"):
        """Output of the backbone for an input :class:`FeatureInfo` (input channels are not checked here).

        Level i: a padded 3x3 conv of stride ``layer_strides[i]``; deblock i scales by ``upsample_strides[i]``;
        every deblock output must have the same size (they are concatenated). Output cell = input cell x
        ``prod(layer_strides[:i+1]) / upsample_strides[i]`` (the same for every i), i.e.
        ``layer_strides[0] / upsample_strides[0]``.
        """
        cfg = cls.lists(model_cfg, where, source)
        size, scale, outs = tuple(in_info.size), 1.0, []  # scale: cell size relative to the input's
        for i, stride in enumerate(cfg.layer_strides):
            size, scale = tuple(conv_out(n, 3, stride, 1) for n in size), scale * stride
            if cfg.upsample_strides:
                outs.append(_upsampled(size, scale, cfg.upsample_strides[i]))
        if outs:
            if len(set(outs)) != 1:
                raise ConfigError(f"{source}: {where}: the levels' upsampled maps differ in (H, W, stride) "
                                  f"{sorted(set(outs))}; check layer_strides / upsample_strides")
            *size, scale = outs[0]
        if len(cfg.upsample_strides) > len(cfg.layer_strides):  # final deblock on the concatenation
            *size, scale = _upsampled(size, scale, cfg.upsample_strides[-1])
        channels = (sum(cfg.num_upsample_filter) if cfg.num_upsample_filter
                    else (cfg.num_filters[-1] if cfg.num_filters else in_info.channels))
        return in_info.strided(channels, scale, size)

    def forward(self, x):
        """Args: x (N, C_in, H, W). Returns (N, sum(num_upsample_filter), H / s0 * u0, W / s0 * u0)."""
        ups = []
        for i, block in enumerate(self.blocks):
            x = block(x)  # (N, num_filters[i], H_i, W_i)
            if self.deblocks:
                ups.append(self.deblocks[i](x))  # (N, num_upsample_filter[i], H', W')
        if ups:
            x = torch.cat(ups, dim=1) if len(ups) > 1 else ups[0]  # (N, sum up filters, H', W')
        if len(self.deblocks) > len(self.blocks):
            x = self.deblocks[-1](x)
        return x


def _upsampled(size, scale, stride):
    """(H, W, scale) after a deblock of ``stride``: ConvTranspose k = s (x s), or a strided conv (k = 1/s)."""
    if stride >= 1:
        s = int(stride)
        return size[0] * s, size[1] * s, scale / s
    k = int(np.round(1 / stride))
    return conv_out(size[0], k, k, 0), conv_out(size[1], k, k, 0), scale * k
