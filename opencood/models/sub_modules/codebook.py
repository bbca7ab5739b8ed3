"""CodeFilling's residual multi-segment codebook quantizer (spec baselines §C3; the reference's ``UMGMQuantizer``).

Works on per-cell feature vectors x in R^C (every BEV cell of every agent, flattened to (n, C)). There are
``levels`` residual levels; level k holds a codebook of ``seg_num`` segments x ``dict_size`` codewords of
C / seg_num values each and a learned temperature per segment.

Encoding, level k (input r_0 = x)::

    z_k     = encoder_k(r_k)                                   Linear C -> C
    logit_k = -||split(quant_head_k(z_k)) - c_k||^2 / sqrt(K) * temperature_k     (n, seg_num, K)
    onehot  = hard Gumbel-softmax(logit_k, tau = 1) (training, straight-through)
              | one-hot(argmax logit_k)               (eval: the nearest codeword, deterministic)
    q_k     = onehot @ c_k                             (n, C): the chosen codewords, segments concatenated
    r_{k+1} = latent_head_k(z_k) - q_k                 (not on the last level)

Decoding runs last level first: ``x̂_k = restore_head_k(dequant_head_k(q_k) [+ side_head_k(x̂_{k+1})])``;
x̂ = x̂_0. What a sender transmits are the indices ``argmax onehot`` = levels x seg_num integers in
[0, dict_size) per cell, i.e. ``levels * seg_num * ceil(log2 dict_size)`` bits per cell (24 with the
reference's 3 x 2 x 16); the receiver holds the same codebooks and decoder. ``code_loss`` = MSE(x̂, sg(x)).

Codebook init: N(0, sqrt(2 seg_num / (5 C))) ("SmallInit"); temperatures start at 1 and are kept >= 1e-6.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from opencood.utils.config import Key, Schema
from opencood.utils.errors import ConfigError

TEMPERATURE_FLOOR = 1e-6

CODEBOOK = Schema({
    "seg_num": Key(int, 2, "segments per vector (each gets its own codewords); must divide channel", low=1),
    "dict_size": Key(int, 16, "codewords per segment and level (K); each index costs ceil(log2 K) bits", low=2),
    "levels": Key(int, 3, "residual quantisation levels", low=1),
    "r": Key(int, None, "the reference's name of levels (it always built 3); must equal levels when given", low=1),
    "channel": Key(int, None, "vector length C (checked: must equal the feature channels; default: them)", low=1),
}, name="codebook")


class _LowerBound(torch.autograd.Function):
    """max(x, bound); the gradient passes where x >= bound or where it would push x up."""

    @staticmethod
    def forward(ctx, x, bound):
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp_min(bound)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        passes = (x >= ctx.bound) | (grad < 0)
        return grad * passes.to(grad.dtype), None


class CodebookLevel(nn.Module):
    """One residual level: its codebook, temperatures and six (four on the last level) C -> C linears."""

    def __init__(self, channels, seg_num, dict_size, last):
        super().__init__()
        self.seg_num, self.dict_size, self.seg_dim = seg_num, dict_size, channels // seg_num
        std = math.sqrt(2.0 / (5.0 * channels / seg_num))
        self.codebook = nn.Parameter(torch.randn(seg_num, dict_size, self.seg_dim) * std)  # (m, K, d)
        self.temperature = nn.Parameter(torch.ones(seg_num, 1))  # (m, 1)
        self.encoder = nn.Linear(channels, channels)
        self.quant_head = nn.Linear(channels, channels)
        self.latent_head = None if last else nn.Linear(channels, channels)
        self.dequant_head = nn.Linear(channels, channels)
        self.side_head = None if last else nn.Linear(channels, channels)
        self.restore_head = nn.Linear(channels, channels)

    def logits(self, v):
        """(n, C) -> (n, m, K): -squared distance of each segment to each codeword / sqrt(K) x temperature."""
        seg = v.view(v.shape[0], self.seg_num, self.seg_dim)  # (n, m, d)
        dist = (seg.pow(2).sum(-1, keepdim=True) + self.codebook.pow(2).sum(-1)[None]
                - 2 * torch.einsum("nmd,mkd->nmk", seg, self.codebook))  # (n, m, K)
        temperature = _LowerBound.apply(self.temperature, TEMPERATURE_FLOOR)  # (m, 1)
        return -dist / math.sqrt(self.dict_size) * temperature

    def codewords(self, onehot):
        """(n, m, K) one-hot (or straight-through soft one-hot) -> (n, C) concatenated codewords."""
        return torch.einsum("nmk,mkd->nmd", onehot, self.codebook).reshape(onehot.shape[0], -1)

    def encode(self, r, sample):
        """Args: r (n, C) residual; sample: Gumbel sampling (training) else argmax.

        Returns:
            q (n, C) chosen codewords, next residual (n, C) or None, indices (n, m) long.
        """
        z = self.encoder(r)
        logit = self.logits(self.quant_head(z))  # (n, m, K)
        if sample:
            onehot = F.gumbel_softmax(logit, tau=1.0, hard=True, dim=-1)  # straight-through
        else:
            onehot = F.one_hot(logit.argmax(-1), self.dict_size).to(logit.dtype)
        idx = onehot.argmax(-1)  # (n, m): what is transmitted
        q = self.codewords(onehot)
        residual = None if self.latent_head is None else self.latent_head(z) - q
        return q, residual, idx

    def decode(self, q, finer):
        """x̂ of this level from its codewords q (n, C) and the next level's x̂ (n, C) or None."""
        x = self.dequant_head(q)
        if self.side_head is not None:
            x = x + self.side_head(finer)
        return self.restore_head(x)


class ResidualCodebookQuantizer(nn.Module):
    """Multi-level residual codebook quantizer (see module docstring).

    Args:
        channels: C, the vector length (feature channels).
        seg_num: segments per vector (must divide C).
        dict_size: K codewords per segment and level.
        levels: residual levels.
    """

    CONFIG = CODEBOOK

    def __init__(self, channels, seg_num=2, dict_size=16, levels=3):
        super().__init__()
        if channels % seg_num:
            raise ValueError(f"codebook: seg_num {seg_num} does not divide the {channels} channels")
        self.channels, self.seg_num, self.dict_size, self.levels = channels, seg_num, dict_size, levels
        self.level_modules = nn.ModuleList(CodebookLevel(channels, seg_num, dict_size, last=(k == levels - 1))
                                           for k in range(levels))

    @classmethod
    def from_config(cls, args, channels, where="model.args.codebook", source="config"):
        """Build from the ``codebook`` section for features of ``channels`` C (one-line ConfigError on a
        ``channel`` that is not C, a seg_num that does not divide C, or ``r`` != ``levels``)."""
        cfg = cls.CONFIG.parse(args, where, source)
        if cfg.channel is not None and cfg.channel != channels:
            raise ConfigError(f"{source}: {where}.channel = {cfg.channel} but the features reaching the codebook "
                              f"have {channels} channels")
        given = (args or {}).get("levels")
        if cfg.r is not None and given is not None and cfg.r != given:
            raise ConfigError(f"{source}: {where}.r = {cfg.r} differs from {where}.levels = {given}")
        levels = cfg.r if cfg.r is not None and given is None else cfg.levels
        if channels % cfg.seg_num:
            raise ConfigError(f"{source}: {where}.seg_num = {cfg.seg_num} does not divide the {channels} feature "
                              f"channels")
        return cls(channels, cfg.seg_num, cfg.dict_size, levels)

    @property
    def codes_per_cell(self):
        """Indices one cell costs: levels x seg_num."""
        return self.levels * self.seg_num

    @property
    def bits_per_cell(self):
        """Transmitted bits per cell: levels x seg_num x ceil(log2 dict_size)."""
        return self.codes_per_cell * math.ceil(math.log2(self.dict_size))

    def encode(self, x, sample=False):
        """(n, C) -> [(n, C) codewords of each level], (n, levels * seg_num) long indices (level-major)."""
        qs, idx, r = [], [], x
        for level in self.level_modules:
            q, r, i = level.encode(r, sample)
            qs.append(q)
            idx.append(i)
        return qs, torch.cat(idx, dim=1)

    def codewords_of(self, indices):
        """Receiver side: (n, levels * seg_num) indices -> [(n, C) codewords of each level]."""
        out = []
        for k, level in enumerate(self.level_modules):
            i = indices[:, k * self.seg_num:(k + 1) * self.seg_num]  # (n, m)
            out.append(level.codewords(F.one_hot(i, self.dict_size).to(level.codebook.dtype)))
        return out

    def decode(self, qs):
        """[(n, C) codewords per level] -> (n, C) reconstruction (last level first)."""
        x = None
        for level, q in zip(reversed(self.level_modules), reversed(qs)):
            x = level.decode(q, x)
        return x

    def forward(self, features):
        """Quantise and reconstruct feature maps.

        Args:
            features: (N, C, H, W).

        Returns:
            reconstruction (N, C, H, W), indices (N, levels * seg_num, H, W) long in [0, dict_size),
            code_loss (0-d) = MSE(reconstruction, features.detach()).
        """
        n, c, h, w = features.shape
        if c != self.channels:
            raise ValueError(f"codebook: built for {self.channels} channels, got features of {c}")
        x = features.permute(0, 2, 3, 1).reshape(-1, c)  # (N H W, C)
        qs, idx = self.encode(x, sample=self.training)
        x_hat = self.decode(qs)  # (N H W, C)
        code_loss = F.mse_loss(x_hat, x.detach())
        rec = x_hat.view(n, h, w, c).permute(0, 3, 1, 2).contiguous()
        return rec, idx.view(n, h, w, -1).permute(0, 3, 1, 2).contiguous(), code_loss
