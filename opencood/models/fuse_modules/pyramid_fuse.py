"""HEAL's Pyramid Fusion (spec baselines §C1): occupancy-weighted multi-scale fusion on a ResNeXt backbone.

At every level l of the shared ``pyramid_backbone`` each agent predicts a foreground-occupancy logit
o = Conv1x1(C_l -> 1) (``single_head_{l}``) from its own level-l map. Score = sigmoid(o) + 1e-4; features
and scores are warped into the ego frame; cells a score does not reach (zero after warping) get -inf, a
softmax over the agents turns the scores into weights (NaN where no agent sees the cell -> 0), and the fused
level map is sum_j w_j * feature_j. The fused levels are decoded (deblocks, concatenated) as one map.
"""
import torch
import torch.nn as nn

from opencood.models.fuse_modules.warp import warp_to_ego_padded
from opencood.models.sub_modules.base_bev_backbone_resnet import (RESNET_BEV_KEYS, BasicBlock, Bottleneck,
                                                                  ResNetBEVBackbone)
from opencood.utils.config import Key, Schema

SCORE_EPS = 1e-4  # added to sigmoid(occupancy) so an observed cell always has a positive weight


def weighted_fuse(features, scores, record_len, affine):
    """Occupancy-weighted sum over agents in the ego frame.

    Args:
        features: (N, C, H, W) agent maps, each in its own frame, samples in ``record_len`` order.
        scores: (N, 1, H, W) positive per-agent weights (sigmoid(occupancy) + eps); 0 = not sent.
        record_len: (B,) agents per sample.
        affine: (B, L, L, 2, 3) normalised pairwise affines.

    Returns:
        (B, C, H, W) fused maps.
    """
    feats, mask = warp_to_ego_padded(features, record_len, affine)  # (B, L', C, H, W), (B, L')
    score, _ = warp_to_ego_padded(scores, record_len, affine)  # (B, L', 1, H, W)
    score = score.masked_fill(score == 0, float("-inf"))
    score = score.masked_fill(~mask[:, :, None, None, None], float("-inf"))
    weight = torch.nan_to_num(torch.softmax(score, dim=1), nan=0.0)  # (B, L', 1, H, W), 0 where nobody sees
    return (weight * feats).sum(dim=1)  # (B, C, H, W)


def visible_square_mask(size, crop_ratio, device):
    """(1, 1, H, W) mask of the centred (ratio_H * H) x (ratio_W * W) box a camera's BEV map covers.

    ``crop_ratio`` > 1 means the camera map is smaller than the LiDAR grid (zero-padded outside).
    """
    h, w = size
    vis_h, vis_w = min(h, int(round(h / crop_ratio[0]))), min(w, int(round(w / crop_ratio[1])))
    mask = torch.zeros(1, 1, h, w, device=device)
    top, left = (h - vis_h) // 2, (w - vis_w) // 2
    mask[..., top:top + vis_h, left:left + vis_w] = 1
    return mask


class PyramidFusion(ResNetBEVBackbone):
    """Shared multi-scale backbone with per-level occupancy heads and weighted fusion (``pyramid_backbone``).

    Args:
        model_cfg: the ``fusion_backbone`` section (see ``CONFIG``).
        input_channels: channels of the agents' maps when ``inplanes`` is not written.
    """

    CONFIG = Schema({**RESNET_BEV_KEYS, **{
        "resnext": Key(bool, True, "ResNeXt bottlenecks (expansion 1, 32 groups, width 4) instead of basic blocks"),
        "align_corners": Key(bool, False, "HEAL's grid_sample flag; only false (the warp uses align_corners=False)",
                             choices=(False,)),
    }}, name="fusion_backbone")

    def __init__(self, model_cfg, input_channels=64):
        cfg = self.CONFIG.parse(model_cfg, "model.args.fusion_backbone")
        resnet_cfg = {k: cfg[k] for k in RESNET_BEV_KEYS}
        if cfg.resnext:
            super().__init__(resnet_cfg, input_channels, Bottleneck, groups=32, width_per_group=4)
        else:
            super().__init__(resnet_cfg, input_channels, BasicBlock)
        for i, c in enumerate(self.level_channels):
            setattr(self, f"single_head_{i}", nn.Conv2d(c, 1, kernel_size=1))

    def occupancy(self, feature_list):
        """[(N, 1, H_l, W_l)] occupancy logits of every level."""
        return [getattr(self, f"single_head_{i}")(f) for i, f in enumerate(feature_list)]

    def forward_single(self, spatial_features):
        """Single-agent pass (HEAL's backward alignment trains new types through it).

        Args:
            spatial_features: (N, C_in, H, W).

        Returns:
            decoded (N, num_bev_features, H', W') and the occupancy logits [(N, 1, H_l, W_l)].
        """
        feature_list = self.get_multiscale_feature(spatial_features)
        return self.decode_multiscale_feature(feature_list), self.occupancy(feature_list)

    def forward_collab(self, spatial_features, record_len, affine, camera_masks=None):
        """Collaborative pass: fuse every level with its occupancy weights, then decode.

        Args:
            spatial_features: (N, C_in, H, W) agents' maps, each in its own frame.
            record_len: (B,) agents per sample.
            affine: (B, L, L, 2, 3) normalised pairwise affines.
            camera_masks: optional (N, 1, H, W) visibility of each agent's own map (1 = its sensors see the
                cell); scores outside are zeroed (HEAL does this for camera agents at inference).

        Returns:
            fused decoded (B, num_bev_features, H', W') and the per-agent occupancy logits [(N, 1, H_l, W_l)].
        """
        feature_list = self.get_multiscale_feature(spatial_features)  # [(N, C_l, H_l, W_l)]
        occ_list = self.occupancy(feature_list)
        fused = []
        for feature, occ in zip(feature_list, occ_list):
            score = torch.sigmoid(occ) + SCORE_EPS  # (N, 1, H_l, W_l)
            if camera_masks is not None:
                score = score * nn.functional.interpolate(camera_masks, size=score.shape[-2:], mode="nearest")
            fused.append(weighted_fuse(feature, score, record_len, affine))  # (B, C_l, H_l, W_l)
        return self.decode_multiscale_feature(fused), occ_list
