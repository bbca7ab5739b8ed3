"""F-Cooper (``max``): element-wise max over the agents warped into the ego frame."""
import torch.nn as nn

from opencood.models.fuse_modules.warp import warp_to_ego_padded
from opencood.utils.registry import FUSION_MODULES


@FUSION_MODULES.register("max")
class MaxFusion(nn.Module):
    """Parameter-free max fusion.

    Args:
        args: unused section of the YAML (may be None).
    """

    def __init__(self, args=None):
        super().__init__()

    def forward(self, x, record_len, affine_matrix):
        """Args: x (N, C, H, W), record_len (B,), affine_matrix (B, L, L, 2, 3). Returns (B, C, H, W)."""
        feats, mask = warp_to_ego_padded(x, record_len, affine_matrix)  # (B, L, C, H, W), (B, L)
        feats = feats.masked_fill(~mask[:, :, None, None, None], float("-inf"))
        return feats.max(dim=1)[0]  # (B, C, H, W)
