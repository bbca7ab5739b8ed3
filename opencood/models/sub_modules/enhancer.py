"""GenComm Channel Enhancer: refines generated BEV features before fusion.

Only the sub-modules the reference actually runs are built (144,256 parameters at C=128): the reference
also constructed a window attention per block and two more blocks that never ran (564,924 parameters in
total), which forced DDP's ``find_unused_parameters=True``. Every parameter here gets a gradient.
"""
import torch
import torch.nn.functional as F
from torch import nn

from opencood.utils.config import Key, Schema


class PartialConv(nn.Module):
    """3x3 conv (no bias) on the first ``C // n_div`` channels; the rest pass through untouched."""

    def __init__(self, dim, n_div=4):
        super().__init__()
        self.dim_conv = dim // n_div
        self.conv = nn.Conv2d(self.dim_conv, self.dim_conv, 3, padding=1, bias=False)

    def forward(self, x):
        """x (N, C, H, W) -> (N, C, H, W)."""
        head, tail = torch.split(x, [self.dim_conv, x.shape[1] - self.dim_conv], dim=1)
        return torch.cat([self.conv(head), tail], dim=1)


class FRFN(nn.Module):
    """Feature-refinement feed-forward: partial conv, C->4C GELU, split into halves, depthwise-conv
    gate on one half, product, 2C->C.

    Args:
        dim: channels C.
        hidden: width of each gated half (2C).
    """

    def __init__(self, dim, hidden):
        super().__init__()
        self.pconv = PartialConv(dim)
        self.linear1 = nn.Linear(dim, 2 * hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.linear2 = nn.Linear(hidden, dim)

    def forward(self, x, hw):
        """x (N, HW, C) tokens of an (H, W) map -> (N, HW, C)."""
        n, _, c = x.shape
        h, w = hw
        x = self.pconv(x.transpose(1, 2).reshape(n, c, h, w)).flatten(2).transpose(1, 2)
        x1, x2 = F.gelu(self.linear1(x)).chunk(2, dim=-1)  # 2 x (N, HW, hidden)
        x1 = x1.transpose(1, 2).reshape(n, -1, h, w)  # (N, hidden, H, W)
        x1 = F.gelu(self.dwconv(x1)).flatten(2).transpose(1, 2)  # (N, HW, hidden)
        return self.linear2(x1 * x2)  # (N, HW, C)


class ChannelAttention(nn.Module):
    """Global-average-pool gate: Linear -> LayerNorm -> ReLU -> Linear -> sigmoid, per channel."""

    def __init__(self, dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, dim, bias=False)
        self.norm = nn.LayerNorm(dim)
        self.fc2 = nn.Linear(dim, dim, bias=False)

    def forward(self, x):
        """x (N, C, H, W) -> (N, C, H, W) channel-reweighted."""
        g = x.mean(dim=(2, 3))  # (N, C)
        g = torch.sigmoid(self.fc2(F.relu(self.norm(self.fc1(g)))))  # (N, C)
        return x * g[:, :, None, None]


class Enhancer(nn.Module):
    """Channel Enhancer applied to every agent's generated feature independently.

    Steps on tokens x (N, HW, C): ``x = x + LN1(x)`` (the reference's block, whose window attention
    is disabled, reduces to this residual LayerNorm); ``x = x + FRFN(LN2(x))``; then channel
    attention on the map.

    Args:
        in_ch: feature channels C (128; 256 on V2X-Real).
    """

    def __init__(self, in_ch=128):
        super().__init__()
        self.norm1 = nn.LayerNorm(in_ch)
        self.norm2 = nn.LayerNorm(in_ch)
        self.ffn = FRFN(in_ch, 2 * in_ch)
        self.channel_attn = ChannelAttention(in_ch)

    CONFIG = Schema({
        "in_ch": Key(int, 128, "feature channels C (checked against the model's features)"),
    }, name="enhancer")

    @classmethod
    def from_config(cls, cfg):
        """Build from the YAML section ``enhancer`` (see ``CONFIG``)."""
        return cls(in_ch=cls.CONFIG.parse(cfg, "model.args.enhancer").in_ch)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """Refine features.

        Args:
            feature: (N, C, H, W) generated BEV features.

        Returns:
            (N, C, H, W) enhanced features.
        """
        n, c, h, w = feature.shape
        x = feature.flatten(2).transpose(1, 2)  # (N, HW, C)
        x = x + self.norm1(x)
        x = x + self.ffn(self.norm2(x), (h, w))  # (N, HW, C)
        x = x.transpose(1, 2).reshape(n, c, h, w)  # (N, C, H, W)
        return self.channel_attn(x)
