"""DiscoNet's fusion (``disconet``): per-cell edge weights from a PixelWeightLayer, softmax over agents
(Li et al., NeurIPS 2021). The reference repository imports ``disco_fuse.PixelWeightLayer`` without shipping
it; it is built here as the paper and HEAL/OpenCOOD describe (docs/differences.md)."""
import torch
import torch.nn as nn

from opencood.models.fuse_modules.warp import warp_to_ego_padded
from opencood.utils.config import Key, Schema
from opencood.utils.errors import ConfigError
from opencood.utils.registry import FUSION_MODULES


class PixelWeightLayer(nn.Module):
    """Edge-weight logits of one (collaborator, ego) pair per cell: 1x1 convs 2C -> 128 -> 32 -> 8 -> 1, each
    followed by BatchNorm + ReLU except the last (ReLU only).

    Args:
        channel: C of each of the two concatenated maps.
    """

    def __init__(self, channel):
        super().__init__()
        self.conv1_1 = nn.Conv2d(channel * 2, 128, kernel_size=1)
        self.bn1_1 = nn.BatchNorm2d(128)
        self.conv1_2 = nn.Conv2d(128, 32, kernel_size=1)
        self.bn1_2 = nn.BatchNorm2d(32)
        self.conv1_3 = nn.Conv2d(32, 8, kernel_size=1)
        self.bn1_3 = nn.BatchNorm2d(8)
        self.conv1_4 = nn.Conv2d(8, 1, kernel_size=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        """Args: x (n, 2C, H, W) = [warped h_j ; h_ego]. Returns (n, 1, H, W) logits."""
        x = self.relu(self.bn1_1(self.conv1_1(x)))
        x = self.relu(self.bn1_2(self.conv1_2(x)))
        x = self.relu(self.bn1_3(self.conv1_3(x)))
        return self.relu(self.conv1_4(x))


@FUSION_MODULES.register("disconet")
class DiscoFusion(nn.Module):
    """fused = sum_j softmax_j(PixelWeightLayer([h_j->ego ; h_ego])) * h_j->ego, over the present agents.

    Args:
        args: the ``disconet`` section (see ``CONFIG``), or None (then ``channels``).
        channels: C of the features (the model's channel chain).
    """

    CONFIG = Schema({
        "feat_dim": Key(int, None, "feature channels C (checked against the model; default: the model's)"),
    }, name="disconet")
    CHANNEL_KEY = "feat_dim"

    def __init__(self, args=None, channels=None):
        super().__init__()
        feat_dim = self.CONFIG.parse(args, "model.args.disconet").feat_dim
        feat_dim = feat_dim if feat_dim is not None else channels
        if feat_dim is None:
            raise ConfigError("model.args.disconet: missing key 'feat_dim'")
        self.pixel_weight_layer = PixelWeightLayer(feat_dim)

    def forward(self, inp):
        """Args: inp: FusionInput (``features`` (N, C, H, W), ``record_len``, ``affine``).

        Returns:
            (B, C, H, W) fused ego map, and ``{}``.
        """
        feats, mask = warp_to_ego_padded(inp.features, inp.record_len, inp.affine)  # (B, L, C, H, W), (B, L)
        b, l, c, h, w = feats.shape
        pairs = torch.cat([feats, feats[:, :1].expand(-1, l, -1, -1, -1)], dim=2)  # (B, L, 2C, H, W)
        present = mask.flatten()  # the BatchNorm statistics see only real agents
        logits = feats.new_full((b * l, 1, h, w), float("-inf"))
        logits[present] = self.pixel_weight_layer(pairs.flatten(0, 1)[present])
        weight = torch.softmax(logits.view(b, l, 1, h, w), dim=1)  # (B, L, 1, H, W), softmax over agents
        return (weight * feats).sum(dim=1), {}  # (B, C, H, W)
