"""Deformable Message Extractor (DME) of GenComm.

A collaborator compresses its BEV feature F (C_in channels, its own frame) into a 2-channel spatial
message M of the same resolution, which is what it sends to the ego (64 KiB instead of 4 MiB at
OPV2V-H geometry).
"""
import torch
from torch import nn
from torchvision.ops import DeformConv2d

from opencood.ops.deform_conv import deform_conv2d
from opencood.utils.config import Key, Schema


class MessageExtractor(nn.Module):
    """Deformable conv -> squeeze-excitation gate -> 2-layer 1x1 head.

    Parameter count: 103,028 for ``in_ch=128`` and 197,492 for ``in_ch=256`` (``out_ch=2``).

    Args:
        in_ch: channels of the BEV feature F (128 on OPV2V-H, 256 on V2X-Real).
        out_ch: message channels (2).
        mid_ch: channels of the deformable conv output (64).
    """

    def __init__(self, in_ch=128, out_ch=2, mid_ch=64):
        super().__init__()
        # One deformable group: (dx, dy) for each of the 3x3 kernel taps.
        self.offset_conv = nn.Conv2d(in_ch, 2 * 3 * 3, kernel_size=3, padding=1)
        self.deform_conv = DeformConv2d(in_ch, mid_ch, kernel_size=3, padding=1, bias=True)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(mid_ch, mid_ch // 2, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_ch // 2, mid_ch, kernel_size=1),
            nn.Sigmoid(),
        )
        self.head = nn.Sequential(
            nn.Conv2d(mid_ch, mid_ch, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_ch, out_ch, kernel_size=1),
        )

    CONFIG = Schema({
        "in_ch": Key(int, 128, "channels of the BEV feature F (checked against the model's features)"),
        "out_ch": Key(int, 2, "message channels M"),
    }, name="message_extractor")

    @classmethod
    def from_config(cls, cfg):
        """Build from the YAML section ``message_extractor`` (see ``CONFIG``)."""
        cfg = cls.CONFIG.parse(cfg, "model.args.message_extractor")
        return cls(in_ch=cfg.in_ch, out_ch=cfg.out_ch)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """Extract the message.

        Args:
            feature: (N, C_in, H, W) BEV features in each agent's own frame.

        Returns:
            (N, out_ch, H, W) message, unbounded real values (no output activation).
        """
        offset = self.offset_conv(feature)  # (N, 18, H, W)
        dc = self.deform_conv  # torchvision module (parameters, checkpoint names); fast kernel on CPU
        x = deform_conv2d(feature, offset, dc.weight, dc.bias, padding=1)  # (N, 64, H, W)
        x = x * self.gate(x)  # (N, 64, H, W) channel-gated
        return self.head(x)  # (N, out_ch, H, W)
