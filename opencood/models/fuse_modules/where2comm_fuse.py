"""Where2comm (``where2comm``, spec baselines §B): confidence-masked messages, then per-cell fusion.

Every collaborator multiplies its map by its communication mask (:class:`Communication`: confidence from
its own detection head > ``thre``; the ego sends everything) BEFORE the maps are warped into the ego
frame, so only the requested cells travel. The warped agents are aggregated per cell by
``agg_operator.mode``: ``ATTEN`` (parameter-free scaled dot-product attention with the ego as query),
``MAX`` (element-wise max) or ``Transformer`` (:class:`EncodeLayer`: 8-head attention of the ego query over
all agents + residual/LayerNorm + FFN C->C->C + residual/LayerNorm). With ``multi_scale`` one aggregator per
level (``fuse_modules.{l}``) fuses the levels of a multi-scale model; each level's mask is the level-0 mask
max-pooled to its size. ``aux['comm_rate']`` is the fraction of collaborator cells sent,
``aux['comm_mask']`` the (N, 1, H, W) masks.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from opencood.models.comm_modules.where2comm import COMMUNICATION, Communication
from opencood.models.fuse_modules.warp import warp_to_ego_padded
from opencood.utils.config import Key, Schema
from opencood.utils.errors import ConfigError, DataError
from opencood.utils.registry import FUSION_MODULES

AGG_OPERATOR = Schema({
    "mode": Key(str, "ATTEN", "per-cell aggregation of the warped agents", choices=("ATTEN", "MAX", "Transformer")),
    "feature_dim": Key(int, None, "channels (checked against the model; default: the model's)"),
    "n_head": Key(int, 8, "Transformer: attention heads"),
    "with_spe": Key(bool, False, "Transformer: spatial positional encoding (not built: only false)", choices=(False,)),
    "with_scm": Key(bool, False, "Transformer: confidence-weighted attention (not built: only false)",
                    choices=(False,)),
}, name="agg_operator")


class EncodeLayer(nn.Module):
    """Ego query attends over all agents at one cell; residual + LayerNorm, FFN C->C->C, residual + LayerNorm.

    Args:
        channels: C.
        n_head: attention heads.
        dropout: dropout of attention output and FFN.
    """

    def __init__(self, channels, n_head=8, dropout=0.0):
        super().__init__()
        self.attn = nn.MultiheadAttention(channels, n_head, dropout)
        self.linear1 = nn.Linear(channels, channels)
        self.linear2 = nn.Linear(channels, channels)
        self.norm1 = nn.LayerNorm(channels)
        self.norm2 = nn.LayerNorm(channels)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.relu = nn.ReLU()

    def forward(self, q, kv, key_padding_mask=None):
        """Args: q (1, M, C) ego vectors, kv (L, M, C) agents' vectors (M = cells), key_padding_mask (M, L)
        True for absent agents. Returns (1, M, C)."""
        context, _ = self.attn(q, kv, kv, key_padding_mask=key_padding_mask, need_weights=False)
        out = self.norm1(q + self.dropout1(context))
        return self.norm2(out + self.dropout2(self.linear2(self.relu(self.linear1(out)))))


class Aggregator(nn.Module):
    """Per-cell fusion of warped agents (B, L, C, H, W) with presence mask (B, L) -> (B, C, H, W)."""

    def __init__(self, mode, channels, n_head=8, dropout=0.0):
        super().__init__()
        self.mode = mode
        self.scale = 1.0 / math.sqrt(channels)
        if mode == "Transformer":
            self.encode_layer = EncodeLayer(channels, n_head, dropout)

    def forward(self, feats, mask):
        if self.mode == "MAX":
            return feats.masked_fill(~mask[:, :, None, None, None], float("-inf")).max(dim=1)[0]
        if self.mode == "ATTEN":
            score = torch.einsum("blchw,bchw->blhw", feats, feats[:, 0]) * self.scale  # (B, L, H, W)
            attn = torch.softmax(score.masked_fill(~mask[:, :, None, None], float("-inf")), dim=1)
            return torch.einsum("blhw,blchw->bchw", attn, feats)
        b, n, c, h, w = feats.shape
        kv = feats.permute(1, 0, 3, 4, 2).reshape(n, b * h * w, c)  # (L, B*H*W, C)
        pad = (~mask).repeat_interleave(h * w, dim=0)  # (B*H*W, L)
        out = self.encode_layer(kv[:1], kv, pad)  # (1, B*H*W, C)
        return out.reshape(b, h, w, c).permute(0, 3, 1, 2)  # (B, C, H, W)


@FUSION_MODULES.register("where2comm")
class Where2commFusion(nn.Module):
    """Where2comm fusion (see module docstring).

    Args:
        args: the ``where2comm`` section (see ``CONFIG``).
        channels: C of the features (single scale) when ``in_channels`` is absent.
    """

    CONFIG = Schema({
        "in_channels": Key(int, None, "feature channels C (checked against the model; default: the model's)"),
        "n_head": Key(int, 8, "attention heads of the Transformer aggregator (agg_operator.n_head wins)"),
        "dropout_rate": Key(float, 0.0, "dropout of the Transformer aggregator"),
        "communication": Key(dict, {}, "confidence masks", schema=COMMUNICATION),
        "agg_operator": Key(dict, {}, "per-cell aggregation", schema=AGG_OPERATOR),
        "multi_scale": Key(bool, False, "fuse every level of a multi-scale model (one aggregator per level)"),
        "num_filters": Key(list, None, "multi_scale: channels of each level"),
        "layer_nums": Key(list, None, "multi_scale: the backbone's blocks per level (one entry per level)"),
    }, name="where2comm")
    CHANNEL_KEY = "in_channels"
    MULTI_SCALE_KEY = "multi_scale"

    def __init__(self, args=None, channels=None):
        super().__init__()
        source = (args or {}).get("_source", "config")
        cfg = self.CONFIG.parse(args, "model.args.where2comm", source)
        self.communication = Communication(cfg.communication, source=source)
        self.multi_scale = bool(cfg.multi_scale)
        agg = cfg.agg_operator
        n_head = agg.n_head if "n_head" in (args or {}).get("agg_operator", {}) else cfg.n_head
        if self.multi_scale:
            if not cfg.num_filters:
                raise ConfigError(f"{source}: model.args.where2comm.multi_scale needs 'num_filters' (one per level)")
            self.fuse_modules = nn.ModuleList(Aggregator(agg.mode, c, n_head, cfg.dropout_rate)
                                              for c in cfg.num_filters)
        else:
            c = cfg.in_channels or agg.feature_dim or channels
            if c is None:
                raise ConfigError(f"{source}: missing key 'model.args.where2comm.in_channels'")
            self.fuse_modules = nn.ModuleList([Aggregator(agg.mode, c, n_head, cfg.dropout_rate)])

    def masks(self, inp):
        """(N, 1, H, W) communication masks and the rate, from ``inp.confidence``."""
        if inp.confidence is None:
            raise DataError("where2comm: the model passes no confidence maps (FusionInput.confidence); use a "
                            "model that computes them (point_pillar_where2comm, heter_model_baseline_ms)")
        return self.communication(inp.confidence, inp.record_len)

    def forward(self, inp):
        """Args: inp: FusionInput (``features`` (N, C, H, W), ``confidence`` (N, 1, H, W), geometry).

        Returns:
            (B, C, H, W) fused ego-frame map, ``{'comm_rate': 0-d, 'comm_mask': (N, 1, H, W)}``.
        """
        masks, rate = self.masks(inp)
        fused = self.fuse_level(0, inp.features, masks, inp)
        return fused, {"comm_rate": rate, "comm_mask": masks}

    def fuse_level(self, level, features, masks, inp):
        """Mask (max-pooled to the level's size), warp and aggregate one level: (N, C_l, H_l, W_l) -> (B, ...)."""
        if masks.shape[-2:] != features.shape[-2:]:
            masks = F.adaptive_max_pool2d(masks, features.shape[-2:])
        feats, present = warp_to_ego_padded(features * masks, inp.record_len, inp.affine)
        return self.fuse_modules[level](feats, present)

    def forward_levels(self, level_features, inp):
        """Multi-scale: fuse each level [(N, C_l, H_l, W_l)] -> ([(B, C_l, H_l, W_l)], aux)."""
        masks, rate = self.masks(inp)
        fused = [self.fuse_level(i, f, masks, inp) for i, f in enumerate(level_features)]
        return fused, {"comm_rate": rate, "comm_mask": masks}
