"""F-Cooper (``max``): element-wise max over the agents warped into the ego frame."""
import torch.nn as nn

from opencood.models.fuse_modules.warp import warp_to_ego_padded
from opencood.utils.config import Schema
from opencood.utils.registry import FUSION_MODULES


@FUSION_MODULES.register("max")
class MaxFusion(nn.Module):
    """Parameter-free max fusion.

    Args:
        args: the ``max`` section (no keys; may be None).
        channels: C of the features (unused).
    """

    CONFIG = Schema({}, name="max")
    CHANNEL_KEY = None

    def __init__(self, args=None, channels=None):
        super().__init__()
        self.CONFIG.parse(args, "model.args.max")

    def forward(self, inp):
        """Args: inp: FusionInput (``features`` (N, C, H, W), ``record_len`` (B,), ``affine`` (B, L, L, 2, 3)).

        Returns:
            (B, C, H, W) fused ego-frame features, and ``{}``.
        """
        feats, mask = warp_to_ego_padded(inp.features, inp.record_len, inp.affine)  # (B, L, C, H, W), (B, L)
        feats = feats.masked_fill(~mask[:, :, None, None, None], float("-inf"))
        return feats.max(dim=1)[0], {}  # (B, C, H, W)
