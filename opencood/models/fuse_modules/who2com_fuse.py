"""Who2com (``who2com``) as in HEAL: parameter-free attention over the warped agents, then a 3x3 conv on
[ego ; fused] (Liu et al., ICRA 2020; the handshake is replaced by attention over every collaborator)."""
import torch
import torch.nn as nn

from opencood.models.fuse_modules.att_fuse import AttFusion
from opencood.utils.config import Key, Schema
from opencood.utils.errors import ConfigError
from opencood.utils.registry import FUSION_MODULES


@FUSION_MODULES.register("who2com")
class Who2comFusion(nn.Module):
    """fused = Conv3x3(2C -> C)([h_ego ; AttFuse(warped agents)]).

    Args:
        args: the ``who2com`` section (see ``CONFIG``), or None (then ``channels`` is used).
        channels: C of the features (the model's channel chain).
    """

    CONFIG = Schema({
        "feat_dim": Key(int, None, "feature channels C (checked against the model; default: the model's)"),
    }, name="who2com")
    CHANNEL_KEY = "feat_dim"

    def __init__(self, args=None, channels=None):
        super().__init__()
        feat_dim = self.CONFIG.parse(args, "model.args.who2com").feat_dim
        feat_dim = feat_dim if feat_dim is not None else channels
        if feat_dim is None:
            raise ConfigError("model.args.who2com: missing key 'feat_dim'")
        self.att = AttFusion(feat_dim)
        self.decode_layer = nn.Conv2d(2 * feat_dim, feat_dim, kernel_size=3, stride=1, padding=1)

    def forward(self, inp):
        """Args: inp: FusionInput (``features`` (N, C, H, W), ``record_len``, ``affine``).

        Returns:
            (B, C, H, W) fused ego map, and ``{}``.
        """
        attended, _ = self.att(inp)  # (B, C, H, W) ego row of the per-cell attention
        ego = inp.features[torch.cumsum(inp.record_len.long(), 0) - inp.record_len.long()]  # (B, C, H, W)
        return self.decode_layer(torch.cat([ego, attended], dim=1)), {}
