"""Small DDIM-style denoising UNet used by the GenComm feature generator.

The network takes the channel concatenation ``[message, noisy feature]`` and a diffusion step t and
predicts the clean feature (x0 parameterisation). With the GenComm config (ch 8, ch_mult [1, 1],
2 ResnetBlocks per level, 128 feature channels + 2 message channels) it has 43,176 parameters
(61,736 with 256 feature channels).

Parameter names follow the DDIM repository layout (``temb.dense.0``, ``conv_in``,
``down.0.block.0.norm1``, ``mid.block_1``, ``up.1.upsample.conv``, ``norm_out``, ``conv_out``).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from opencood.utils.config import Key, Schema


def timestep_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer diffusion steps (Transformer / DDPM form).

    Args:
        timesteps: (N,) integer steps.
        dim: embedding size (even or odd; odd sizes get a zero last column).

    Returns:
        (N, dim) float embedding ``[sin(t w_k), cos(t w_k)]`` with ``w_k = 10000^(-k/(dim/2-1))``.
    """
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float32, device=timesteps.device)
                     * (-math.log(10000.0) / (half - 1)))  # (half,)
    angle = timesteps.float()[:, None] * freq[None, :]  # (N, half)
    emb = torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)  # (N, 2*half)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1))
    return emb


def _norm(channels, groups):
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """GN -> swish -> conv3x3 (+ time projection) -> GN -> swish -> dropout -> conv3x3, residual.

    Args:
        in_ch: input channels.
        out_ch: output channels (a 1x1 ``nin_shortcut`` maps the input when they differ).
        temb_ch: time-embedding channels.
        dropout: dropout probability before the second conv.
        groups: GroupNorm groups.
    """

    def __init__(self, in_ch, out_ch, temb_ch, dropout, groups):
        super().__init__()
        self.norm1 = _norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb_proj = nn.Linear(temb_ch, out_ch)
        self.norm2 = _norm(out_ch, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x, temb):
        """x (N, in_ch, H, W), temb (N, temb_ch) -> (N, out_ch, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))  # (N, out, H, W)
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))  # (N, out, H, W)
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with a residual (built only at ``attn_resolutions``)."""

    def __init__(self, ch, groups):
        super().__init__()
        self.norm = _norm(ch, groups)
        self.q = nn.Conv2d(ch, ch, 1)
        self.k = nn.Conv2d(ch, ch, 1)
        self.v = nn.Conv2d(ch, ch, 1)
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x):
        """x (N, C, H, W) -> (N, C, H, W)."""
        n, c, h, w = x.shape
        y = self.norm(x)
        q = self.q(y).flatten(2).transpose(1, 2)  # (N, HW, C)
        k = self.k(y).flatten(2).transpose(1, 2)  # (N, HW, C)
        v = self.v(y).flatten(2).transpose(1, 2)  # (N, HW, C)
        out = F.scaled_dot_product_attention(q, k, v)  # (N, HW, C)
        return x + self.proj_out(out.transpose(1, 2).reshape(n, c, h, w))


class Downsample(nn.Module):
    """Halve the resolution: zero-pad (right, bottom) + conv3x3 stride 2, or 2x2 average pooling."""

    def __init__(self, ch, with_conv):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2) if with_conv else None

    def forward(self, x):
        """x (N, C, H, W) -> (N, C, H//2, W//2)."""
        if self.conv is None:
            return F.avg_pool2d(x, 2)
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double the resolution: nearest x2 (+ conv3x3)."""

    def __init__(self, ch, with_conv):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1) if with_conv else None

    def forward(self, x, size):
        """x (N, C, h, w) -> (N, C, *size) with ``size`` = the skip's (H, W) (2h, 2w for even maps)."""
        x = F.interpolate(x, size=size, mode="nearest")
        return x if self.conv is None else self.conv(x)


class DiffusionUNet(nn.Module):
    """x0-predicting UNet conditioned on a spatial message.

    Args:
        in_channels: feature channels C (the noisy input and the output).
        cond_channels: message channels concatenated in front of the noisy feature (2).
        out_ch: output channels (C).
        ch: base width (8).
        ch_mult: width multiplier per resolution level ((1, 1) = two levels, one downsample).
        num_res_blocks: ResnetBlocks per level on the down path (up path uses one more).
        attn_resolutions: nominal resolutions at which an AttnBlock follows each ResnetBlock.
        dropout: dropout inside ResnetBlocks.
        resamp_with_conv: convolutional down/up-sampling (else pooling / plain nearest).
        resolution: nominal input resolution, halved at each downsample, compared with
            ``attn_resolutions``. The reference fixes it at 128, so its ``attn_resolutions: [16]``
            never builds an attention block; we keep that (it is a nominal value, not the map size).
        groups: GroupNorm groups (4: the width of 8 channels rules out the usual 32).
    """

    def __init__(self, in_channels=128, cond_channels=2, out_ch=128, ch=8, ch_mult=(1, 1),
                 num_res_blocks=2, attn_resolutions=(16,), dropout=0.0, resamp_with_conv=True,
                 resolution=128, groups=4):
        super().__init__()
        self.ch = ch
        self.temb_ch = 4 * ch
        self.num_res_blocks = num_res_blocks
        ch_mult = tuple(ch_mult)
        in_ch_mult = (1,) + ch_mult
        attn_resolutions = set(attn_resolutions or ())

        self.temb = nn.Module()
        self.temb.dense = nn.ModuleList([nn.Linear(ch, self.temb_ch),
                                         nn.Linear(self.temb_ch, self.temb_ch)])
        self.conv_in = nn.Conv2d(in_channels + cond_channels, ch, 3, padding=1)

        cur_res = resolution
        self.down = nn.ModuleList()
        block_in = ch
        for level, mult in enumerate(ch_mult):
            stage = nn.Module()
            stage.block = nn.ModuleList()
            stage.attn = nn.ModuleList()
            block_in = ch * in_ch_mult[level]
            block_out = ch * mult
            for _ in range(num_res_blocks):
                stage.block.append(ResnetBlock(block_in, block_out, self.temb_ch, dropout, groups))
                block_in = block_out
                if cur_res in attn_resolutions:
                    stage.attn.append(AttnBlock(block_in, groups))
            if level != len(ch_mult) - 1:
                stage.downsample = Downsample(block_in, resamp_with_conv)
                cur_res //= 2
            self.down.append(stage)

        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, self.temb_ch, dropout, groups)
        self.mid.block_2 = ResnetBlock(block_in, block_in, self.temb_ch, dropout, groups)

        up_stages = []
        for level in reversed(range(len(ch_mult))):
            stage = nn.Module()
            stage.block = nn.ModuleList()
            stage.attn = nn.ModuleList()
            block_out = ch * ch_mult[level]
            for i in range(num_res_blocks + 1):
                skip_in = ch * (in_ch_mult[level] if i == num_res_blocks else ch_mult[level])
                stage.block.append(ResnetBlock(block_in + skip_in, block_out, self.temb_ch,
                                               dropout, groups))
                block_in = block_out
                if cur_res in attn_resolutions:
                    stage.attn.append(AttnBlock(block_in, groups))
            if level != 0:
                stage.upsample = Upsample(block_in, resamp_with_conv)
                cur_res *= 2
            up_stages.insert(0, stage)
        self.up = nn.ModuleList(up_stages)

        self.norm_out = _norm(block_in, groups)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, padding=1)

    CONFIG = Schema({
        "in_channels": Key(int, 128, "feature channels C (checked against the model's features)"),
        "out_ch": Key(int, None, "output channels (default and required value: in_channels)"),
        "ch": Key(int, 8, "base width"),
        "ch_mult": Key(list, [1, 1], "width multiplier per resolution level"),
        "num_res_blocks": Key(int, 2, "ResnetBlocks per level on the down path (up path: one more)"),
        "attn_resolutions": Key(list, [16], "nominal resolutions with an AttnBlock (none at the nominal 128)"),
        "dropout": Key(float, 0.0, "dropout inside ResnetBlocks"),
        "resamp_with_conv": Key(bool, True, "convolutional down/up-sampling (else pooling / nearest)"),
        "resolution": Key(int, 128, "nominal input resolution compared with attn_resolutions"),
        "num_groups": Key(int, 4, "GroupNorm groups"),
    }, name="gencomm.model")

    @classmethod
    def from_config(cls, cfg, cond_channels=2):
        """Build from the YAML section ``gencomm.model`` (see ``CONFIG``; HEAL's ``embed_dim`` has no effect,
        as in the reference, and is on the legacy-key list)."""
        cfg = cls.CONFIG.parse(cfg, "model.args.gencomm.model")
        return cls(in_channels=cfg.in_channels, cond_channels=cond_channels,
                   out_ch=cfg.out_ch if cfg.out_ch is not None else cfg.in_channels,
                   ch=cfg.ch, ch_mult=tuple(cfg.ch_mult), num_res_blocks=cfg.num_res_blocks,
                   attn_resolutions=tuple(cfg.attn_resolutions), dropout=cfg.dropout,
                   resamp_with_conv=cfg.resamp_with_conv, resolution=cfg.resolution, groups=cfg.num_groups)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predict the clean feature.

        Args:
            x: (N, cond_channels + in_channels, H, W) = ``cat([message, x_t], 1)``.
            t: (N,) integer diffusion steps.

        Returns:
            (N, out_ch, H, W) predicted x0.
        """
        temb = timestep_embedding(t, self.ch)  # (N, ch)
        temb = self.temb.dense[1](F.silu(self.temb.dense[0](temb)))  # (N, 4ch)

        hs = [self.conv_in(x)]  # (N, ch, H, W)
        for stage in self.down:
            for i, block in enumerate(stage.block):
                h = block(hs[-1], temb)
                if len(stage.attn) > 0:
                    h = stage.attn[i](h)
                hs.append(h)
            if hasattr(stage, "downsample"):
                hs.append(stage.downsample(hs[-1]))  # (N, C, H/2, W/2)

        h = self.mid.block_2(self.mid.block_1(hs[-1], temb), temb)

        for level in reversed(range(len(self.up))):
            stage = self.up[level]
            for i, block in enumerate(stage.block):
                h = block(torch.cat([h, hs.pop()], dim=1), temb)  # skip concat
                if len(stage.attn) > 0:
                    h = stage.attn[i](h)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h, hs[-1].shape[-2:])

        return self.conv_out(F.silu(self.norm_out(h)))  # (N, out_ch, H, W)
