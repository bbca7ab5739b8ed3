"""V2X-ViT encoder: STTF warp -> depth x [V2X fusion block (HMSA + MSwin) + feed-forward], all pre-norm residual.

Tensors are agent-major channels-last (B, L, H, W, C) in the ego frame. The prior encoding
(B, L, H, W, 3) holds ``[velocity (m/s), delay (s), infrastructure flag]`` of each agent.
"""
import math

import torch
import torch.nn as nn

from opencood.models.fuse_modules.warp import agent_batch_index, warp_to_ego_padded
from opencood.models.sub_modules.hmsa import CavAttention, HGTCavAttention
from opencood.models.sub_modules.mswin import PyramidWindowAttention

FRAME_S = 0.1  # the delay unit of the relative temporal encoding (one 10 Hz frame)


class PreNorm(nn.Module):
    """``fn(LayerNorm(x), **kwargs)``."""

    def __init__(self, dim, fn):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x, **kwargs):
        return self.fn(self.norm(x), **kwargs)


class FeedForward(nn.Module):
    """Linear(C, mlp) - GELU - Dropout - Linear(mlp, C) - Dropout."""

    def __init__(self, dim, hidden_dim, dropout):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden_dim, dim), nn.Dropout(dropout))

    def forward(self, x):
        return self.net(x)


class RelTemporalEncoding(nn.Module):
    """Delay-aware positional encoding: x + Linear(sinusoid(delay_frames * ratio)).

    Args:
        dim: channels C.
        ratio: ``RTE_ratio`` (2: the table is indexed in 50 ms steps while delays come in 100 ms frames).
        max_len: rows of the sinusoid table.
    """

    def __init__(self, dim, ratio, max_len=100):
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32)[:, None]
        div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        table = torch.zeros(max_len, dim)
        table[:, 0::2] = torch.sin(position * div) / math.sqrt(dim)
        table[:, 1::2] = torch.cos(position * div) / math.sqrt(dim)
        self.emb = nn.Embedding.from_pretrained(table, freeze=True)
        self.lin = nn.Linear(dim, dim)
        self.ratio, self.max_len = ratio, max_len

    def forward(self, x, delay_s):
        """Args: x (B, L, H, W, C); delay_s (B, L) seconds. Returns (B, L, H, W, C)."""
        frames = torch.round(delay_s / FRAME_S).long() * self.ratio
        return x + self.lin(self.emb(frames.clamp(0, self.max_len - 1)))[:, :, None, None, :]


class STTF(nn.Module):
    """Spatial-temporal transformation: every agent's map resampled into the ego frame at the current time.

    The pairwise transforms come from each agent's pose at the time its data were captured, so a delayed
    collaborator's map is moved by T_{ego(now) <- agent(then)}: the spatial and the temporal correction in
    one warp. The ROI mask marks the ego cells each agent's (warped) map covers.
    """

    def forward(self, features, record_len, affine):
        """Args:
            features: (N, C, H, W) agent maps in their own frames.
            record_len: (B,) agents per sample.
            affine: (B, L, L, 2, 3) normalised pairwise affines.

        Returns:
            x (B, L', H, W, C), agent mask (B, L') bool, roi (B, L', H, W) float (1: covered).
        """
        warped, mask = warp_to_ego_padded(features, record_len, affine)  # (B, L', C, H, W)
        ones = features.new_ones(features.shape[0], 1, *features.shape[2:])
        roi, _ = warp_to_ego_padded(ones, record_len, affine)  # (B, L', 1, H, W)
        roi = (roi[:, :, 0] > 0.5).float() * mask[:, :, None, None]
        return warped.permute(0, 1, 3, 4, 2), mask, roi


class V2XFusionBlock(nn.Module):
    """``num_blocks`` x [x += HMSA(LN x); x += MSwin(LN x)]."""

    def __init__(self, num_blocks, cav_cfg, win_cfg):
        super().__init__()
        dim = cav_cfg.dim
        self.layers = nn.ModuleList()
        for _ in range(num_blocks):
            att = (HGTCavAttention(dim, cav_cfg.heads, cav_cfg.dim_head, cav_cfg.dropout) if cav_cfg.use_hetero
                   else CavAttention(dim, cav_cfg.heads, cav_cfg.dim_head, cav_cfg.dropout))
            window = PyramidWindowAttention(dim, win_cfg.heads, win_cfg.dim_head, win_cfg.dropout,
                                            win_cfg.window_size, win_cfg.relative_pos_embedding,
                                            win_cfg.fusion_method)
            self.layers.append(nn.ModuleList([PreNorm(dim, att), PreNorm(dim, window)]))

    def forward(self, x, mask, prior_encoding):
        """Args: x (B, L, H, W, C); mask (B, H, W, 1, L); prior_encoding (B, L, H, W, 3). Returns x."""
        for cav_attn, window_attn in self.layers:
            x = cav_attn(x, mask=mask, prior_encoding=prior_encoding) + x
            x = window_attn(x) + x
        return x


class V2XTEncoder(nn.Module):
    """STTF + [RTE] + depth x (V2X fusion block, pre-norm feed-forward).

    ``prior_feed`` (Linear(C + 3, C)) is built as in the reference, whose forward never calls it; it is kept
    (frozen) so the reference's parameter names and count hold (see docs/differences.md).

    Args:
        cfg: the parsed ``encoder`` section (see ``V2XViTFusion.CONFIG``).
    """

    def __init__(self, cfg):
        super().__init__()
        cav, win, ff = cfg.cav_att_config, cfg.pwindow_att_config, cfg.feed_forward
        self.use_roi_mask = cfg.use_roi_mask
        self.sttf = STTF()
        self.prior_feed = nn.Linear(cav.dim + 3, cav.dim)
        self.prior_feed.requires_grad_(False)
        self.rte = RelTemporalEncoding(cav.dim, cav.RTE_ratio) if cav.use_RTE else None
        self.layers = nn.ModuleList(
            nn.ModuleList([V2XFusionBlock(cfg.num_blocks, cav, win),
                           PreNorm(cav.dim, FeedForward(cav.dim, ff.mlp_dim, ff.dropout))])
            for _ in range(cfg.depth))

    def forward(self, features, record_len, affine, prior):
        """Args:
            features: (N, C, H, W) agent maps in their own frames.
            record_len: (B,); affine: (B, L, L, 2, 3).
            prior: (N, 3) ``[delay s, speed m/s, infrastructure 0/1]`` per agent (``FusionInput.prior``).

        Returns:
            (B, L', H, W, C) every agent's refined map in the ego frame.
        """
        x, mask, roi = self.sttf(features, record_len, affine)  # (B, L', H, W, C)
        b, l, h, w, _ = x.shape
        sample_idx, local_idx = agent_batch_index(record_len, total=features.shape[0])
        padded = prior.new_zeros(b, l, 3)
        padded[sample_idx, local_idx] = prior[:, [1, 0, 2]]  # reference order [velocity, delay, infra]
        prior_encoding = padded[:, :, None, None, :].expand(-1, -1, h, w, -1)  # (B, L', H, W, 3)
        if self.rte is not None:
            x = self.rte(x, prior_encoding[:, :, 0, 0, 1])
        com = roi if self.use_roi_mask else mask[:, :, None, None].float().expand_as(roi)  # (B, L', H, W)
        com = com.permute(0, 2, 3, 1)[:, :, :, None, :]  # (B, H, W, 1, L')
        for block, ff in self.layers:
            x = block(x, mask=com, prior_encoding=prior_encoding)
            x = ff(x) + x
        return x


class V2XTransformer(nn.Module):
    """The encoder, then the ego slice: (N, C, H, W) agents -> (B, H, W, C)."""

    def __init__(self, cfg):
        super().__init__()
        self.encoder = V2XTEncoder(cfg.encoder)

    def forward(self, features, record_len, affine, prior):
        return self.encoder(features, record_len, affine, prior)[:, 0]  # (B, H, W, C)
