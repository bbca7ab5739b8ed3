"""2-D BEV backbone of PointPillars/SECOND: strided conv levels + transposed-conv upsampling, concatenated.

Parameter names follow HEAL (``blocks.{level}.{layer}``, ``deblocks.{level}.{layer}``).
"""
import numpy as np
import torch
import torch.nn as nn


def _bn(channels):
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class BaseBEVBackbone(nn.Module):
    """Multi-level BEV CNN.

    Level i = ZeroPad2d(1) + Conv3x3 stride ``layer_strides[i]`` + BN + ReLU, then ``layer_nums[i]`` x
    (Conv3x3 + BN + ReLU). Deblock i = ConvTranspose2d(k = s = ``upsample_strides[i]``) + BN + ReLU (a strided
    Conv2d when the stride is < 1). Deblock outputs are concatenated along channels; one extra upsample stride
    adds a final deblock on the concatenation.

    Args:
        model_cfg: ``{layer_nums, layer_strides, num_filters, upsample_strides, num_upsample_filter}``
            (the last two may be absent: output = last level).
        input_channels: channels of the input map (``inplanes``, 64 for pillars).
    """

    def __init__(self, model_cfg, input_channels):
        super().__init__()
        layer_nums = list(model_cfg.get("layer_nums", []))
        layer_strides = list(model_cfg.get("layer_strides", []))
        num_filters = list(model_cfg.get("num_filters", []))
        upsample_strides = list(model_cfg.get("upsample_strides", []))
        num_upsample_filters = list(model_cfg.get("num_upsample_filter", []))
        if not (len(layer_nums) == len(layer_strides) == len(num_filters)):
            raise ValueError("base_bev_backbone: layer_nums, layer_strides and num_filters differ in length")
        if len(upsample_strides) != len(num_upsample_filters):
            raise ValueError("base_bev_backbone: upsample_strides and num_upsample_filter differ in length")

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
