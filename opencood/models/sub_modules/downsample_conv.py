"""Shrink header (HEAL ``DownsampleConv``): a chain of DoubleConv blocks reducing channels/resolution."""
import torch.nn as nn


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
        config: ``{kernal_size: [3], stride: [2], padding: [1], dim: [128], input_dim: 384}``
            (HEAL's spelling ``kernal_size``; ``kernel_size`` accepted too).
    """

    def __init__(self, config):
        super().__init__()
        kernels = config.get("kernal_size", config.get("kernel_size"))
        in_dim = config["input_dim"]
        self.layers = nn.ModuleList()
        for k, s, p, d in zip(kernels, config["stride"], config["padding"], config["dim"]):
            self.layers.append(DoubleConv(in_dim, d, k, s, p))
            in_dim = d
        self.out_channels = in_dim

    def forward(self, x):
        """Args: x (N, input_dim, H, W). Returns (N, dim[-1], H', W') (H' = H/2 for stride 2), non-negative."""
        for layer in self.layers:
            x = layer(x)
        return x
