"""AttFuse (``att``): parameter-free scaled dot-product attention across agents per BEV cell."""
import math

import torch
import torch.nn as nn

from opencood.models.fuse_modules.warp import warp_to_ego_padded
from opencood.utils.config import Key, Schema
from opencood.utils.errors import ConfigError
from opencood.utils.registry import FUSION_MODULES


@FUSION_MODULES.register("att")
class AttFusion(nn.Module):
    """Warp agents into the ego frame, attend across agents at every cell, keep the ego row.

    For each cell the ego vector q attends over all agents' vectors k_j (including itself):
    out = sum_j softmax_j(q . k_j / sqrt(C)) k_j. Agents beyond ``record_len`` are masked out; cells outside
    an agent's view (zeros after warping) still take part, as in the reference.

    Args:
        args: the ``att`` section (see ``CONFIG``), or the int C.
        channels: C of the features it gets (the model's channel chain), used when ``feat_dim`` is absent.
    """

    CONFIG = Schema({
        "feat_dim": Key(int, None, "feature channels C (checked against the model; default: the model's)"),
    }, name="att")
    CHANNEL_KEY = "feat_dim"  # the section key that repeats the channel number (checked by the model)

    def __init__(self, args=None, channels=None):
        super().__init__()
        feat_dim = args if isinstance(args, int) else self.CONFIG.parse(args, "model.args.att").feat_dim
        self.feat_dim = feat_dim if feat_dim is not None else channels
        if self.feat_dim is None:
            raise ConfigError("model.args.att: missing key 'feat_dim'")
        self.scale = 1.0 / math.sqrt(self.feat_dim)

    def forward(self, inp):
        """Args:
            inp: :class:`~opencood.models.fuse_modules.fusion_input.FusionInput` (``features`` (N, C, H, W),
                ``record_len`` (B,), ``affine`` (B, L, L, 2, 3)).

        Returns:
            (B, C, H, W) fused ego-frame features, and ``{}``.
        """
        feats, mask = warp_to_ego_padded(inp.features, inp.record_len, inp.affine)  # (B, L, C, H, W), (B, L)
        score = torch.einsum("blchw,bchw->blhw", feats, feats[:, 0]) * self.scale  # (B, L, H, W), ego query
        score = score.masked_fill(~mask[:, :, None, None], float("-inf"))
        attn = torch.softmax(score, dim=1)  # (B, L, H, W), softmax over agents
        return torch.einsum("blhw,blchw->bchw", attn, feats), {}  # (B, C, H, W)
