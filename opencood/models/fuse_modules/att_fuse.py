"""AttFuse (``att``): parameter-free scaled dot-product attention across agents per BEV cell."""
import math

import torch
import torch.nn as nn

from opencood.models.fuse_modules.warp import warp_to_ego_padded
from opencood.utils.registry import FUSION_MODULES


@FUSION_MODULES.register("att")
class AttFusion(nn.Module):
    """Warp agents into the ego frame, attend across agents at every cell, keep the ego row.

    For each cell the ego vector q attends over all agents' vectors k_j (including itself):
    out = sum_j softmax_j(q . k_j / sqrt(C)) k_j. Agents beyond ``record_len`` are masked out; cells outside
    an agent's view (zeros after warping) still take part, as in the reference.

    Args:
        args: ``{feat_dim: C}`` (or the int C).
    """

    def __init__(self, args):
        super().__init__()
        self.feat_dim = int(args["feat_dim"] if isinstance(args, dict) else args)
        self.scale = 1.0 / math.sqrt(self.feat_dim)

    def forward(self, x, record_len, affine_matrix):
        """Args:
            x: (N, C, H, W) agent features, each in its own frame.
            record_len: (B,) long.
            affine_matrix: (B, L, L, 2, 3) normalised pairwise affines.

        Returns:
            (B, C, H, W) fused ego-frame features.
        """
        feats, mask = warp_to_ego_padded(x, record_len, affine_matrix)  # (B, L, C, H, W), (B, L)
        score = torch.einsum("blchw,bchw->blhw", feats, feats[:, 0]) * self.scale  # (B, L, H, W), ego query
        score = score.masked_fill(~mask[:, :, None, None], float("-inf"))
        attn = torch.softmax(score, dim=1)  # (B, L, H, W), softmax over agents
        return torch.einsum("blhw,blchw->bchw", attn, feats)  # (B, C, H, W)
