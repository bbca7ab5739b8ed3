"""Shrink header (HEAL ``DownsampleConv``): a chain of DoubleConv blocks reducing channels/resolution."""
import torch.nn as nn

from opencood.models.sub_modules.feature_info import conv_out
from opencood.utils.config import REQUIRED, Key, Schema
from opencood.utils.errors import ConfigError


class DoubleConv(nn.Module):
    """Conv(k, s, p) + ReLU + Conv3x3 (pad 1) + ReLU; parameters under ``double_conv.{0,2}``."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding):
        super().__init__()
        self.double_conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.double_conv(x)


class DownsampleConv(nn.Module):
    """One DoubleConv per entry of ``kernal_size`` / ``stride`` / ``padding`` / ``dim``.

    Args:
        config: the ``shrink_header`` section (see ``CONFIG``).
        in_channels: channels of the input map when ``input_dim`` is not written (the model passes the
            backbone's output channels; ``input_dim``, when written, must agree — checked by the model).
    """

    CONFIG = Schema({
        "kernal_size": Key(list, None, "(sic, HEAL spelling) kernel of each block's first conv"),
        "kernel_size": Key(list, None, "the same, spelt correctly (used when kernal_size is absent)"),
        "stride": Key(list, REQUIRED, "stride of each block's first conv"),
        "padding": Key(list, REQUIRED, "padding of each block's first conv"),
        "dim": Key(list, REQUIRED, "output channels of each block (the last = the shared feature C)"),
        "input_dim": Key(int, None, "input channels (checked against the backbone; default: the backbone's)"),
    }, name="shrink_header")

    def __init__(self, config, in_channels=None):
        super().__init__()
        cfg = self.blocks(config)
        in_dim = cfg.input_dim if cfg.input_dim is not None else in_channels
        if in_dim is None:
            raise ConfigError("shrink_header: missing key 'input_dim'")
        self.layers = nn.ModuleList()
        for k, s, p, d in zip(cfg.kernels, cfg.stride, cfg.padding, cfg.dim):
            self.layers.append(DoubleConv(in_dim, d, k, s, p))
            in_dim = d

    @classmethod
    def blocks(cls, config, where="shrink_header", source="config"):
        """Parsed section with ``kernels`` (either spelling); the four lists must have one entry per block."""
        cfg = cls.CONFIG.parse(config, where, source)
        cfg.kernels = cfg.kernal_size if cfg.kernal_size is not None else cfg.kernel_size
        if cfg.kernels is None:
            raise ConfigError(f"{source}: missing key '{where}.kernal_size'")
        lengths = {len(cfg.kernels), len(cfg.stride), len(cfg.padding), len(cfg.dim)}
        if len(lengths) != 1:
            raise ConfigError(f"{source}: {where}: kernal_size, stride, padding and dim differ in length")
        return cfg

    @classmethod
    def feature_info(cls, config, in_info, where="shrink_header", source="config"):
        """Output for an input :class:`FeatureInfo`: ``dim[-1]`` channels, cell x the product of the strides."""
        cfg = cls.blocks(config, where, source)
        size, scale = tuple(in_info.size), 1
        for k, s, p in zip(cfg.kernels, cfg.stride, cfg.padding):
            size, scale = tuple(conv_out(n, k, s, p) for n in size), scale * s
        return in_info.strided(cfg.dim[-1], scale, size)

    def forward(self, x):
        """Args: x (N, input_dim, H, W). Returns (N, dim[-1], H', W') (H' = H/2 for stride 2), non-negative."""
        for layer in self.layers:
            x = layer(x)
        return x
