"""STAMP's adapters and reverters (spec baselines §C2) and the ConvNeXt block (also HEAL's ``convnext`` aligner).

An adapter ``A_m`` maps a type-m BEV feature into the protocol space, a reverter ``R_m`` maps a protocol feature
back into type m's space; both are the same modules, built by name from the ``ADAPTERS`` registry
(``model.args.mX.adapter`` / ``.reverter`` = ``{core_method, args}``)::

    (N, C_in, H, W) -> Conv1x1 C_in->dim -> body (num_of_blocks blocks at dim) -> Conv1x1 dim->C_out -> (N, C_out, H, W)

Bodies: ``adapterconvnext`` (ConvNeXt blocks, the default), ``adapterconv`` (Conv3x3-BN-ReLU), ``adapterfc``
(per-cell Linear-ReLU, i.e. 1x1 convs), ``adapteratt`` (window multi-head self-attention + MLP, pre-norm),
``adapterdsa`` (single-scale deformable self-attention in pure PyTorch: each cell samples ``num_points``
bilinear values per head around itself, offsets in cells); ``identity`` passes the map through (C_in = C_out).
Every type here hands its map on the one shared LiDAR grid (the model's feature chain checks it), so
``in/out_feature_shape`` must be that grid: the reference's resize between grids never has work to do and is
not built; the reference's ``smoothing`` conv and padding, built but never called, are not built either.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from opencood.utils.config import REQUIRED, Key, Schema
from opencood.utils.errors import ConfigError
from opencood.utils.registry import ADAPTERS

SUBMODULE_ARGS = Schema({
    "num_of_blocks": Key(int, 3, "blocks of the body", low=0),
    "dim": Key(int, 64, "channels inside the body", low=1),
    "num_heads": Key(int, 4, "adapteratt / adapterdsa: attention heads (dim divisible by it)", low=1),
    "window_size": Key(int, 8, "adapteratt: square window (cells) of the self-attention", low=1),
    "num_points": Key(int, 4, "adapterdsa: sampling points per head and cell", low=1),
    "mlp_ratio": Key(int, 4, "adapteratt / adapterdsa / adapterconvnext: hidden width of the MLP / dim", low=1),
}, name="adapter submodule_args")

ADAPTER_ARGS = Schema({
    "in_channels": Key(int, None, "C_in (checked against the feature chain; default: the shared feature's)"),
    "out_channels": Key(int, None, "C_out (checked; default: the shared feature's)"),
    "in_cav_lidar_range": Key(list, None, "reference: range of the input map, metres (must equal the output's)",
                              length=6),
    "out_cav_lidar_range": Key(list, None, "reference: range of the output map, metres", length=6),
    "in_feature_shape": Key(list, None, "reference: (H, W) of the input map; its ratio to out_feature_shape is the "
                                        "resize factor, which must be 1 here", length=2),
    "out_feature_shape": Key(list, None, "reference: (H, W) of the output map", length=2),
    "submodule_args": Key(dict, {}, "the body", schema=SUBMODULE_ARGS),
}, name="adapter args")

ADAPTER = Schema({
    "core_method": Key(str, "adapterconvnext", "ADAPTERS name: adapterconvnext | adapterconv | adapterfc | "
                                               "adapteratt | adapterdsa | identity"),
    "args": Key(dict, {}, "the adapter's keys", schema=ADAPTER_ARGS),
}, name="adapter")


def build_adapter(section, feature, where, source="config"):
    """An adapter / reverter from its YAML section, checked against the shared feature map.

    Args:
        section: ``{core_method, args}`` (``model.args.mX.adapter``).
        feature: :class:`FeatureInfo` of the shared map (C, H, W) every type hands to fusion.
        where: dotted YAML path for messages.
        source: config file for messages.
    """
    cfg = ADAPTER.parse(section, where, source)
    args = cfg.args
    for key in ("in_channels", "out_channels"):
        if args[key] is not None and int(args[key]) != feature.channels:
            raise ConfigError(f"{source}: {where}.args.{key} = {args[key]} but the shared feature has "
                              f"{feature.channels} channels")
    for a, b in (("in_feature_shape", "out_feature_shape"), ("in_cav_lidar_range", "out_cav_lidar_range")):
        if args[a] is not None and args[b] is not None and [float(v) for v in args[a]] != [float(v) for v in args[b]]:
            raise ConfigError(f"{source}: {where}.args.{a} {list(args[a])} != {b} {list(args[b])}: every type hands "
                              f"its map on the one shared grid ({feature.size[0]} x {feature.size[1]}), there is "
                              f"nothing to resize")
    cls = ADAPTERS.get(cfg.core_method, source=source)
    return cls(feature.channels, feature.channels, args.submodule_args)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over C of a (N, C, H, W) map (parameters ``weight``, ``bias`` of size C)."""

    def __init__(self, dim):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7 -> LayerNorm -> Linear dim->r*dim -> GELU -> Linear -> layer scale -> + x.

    Parameters: 49d + d (dwconv) + 2d (norm) + r d^2 + r d (pw1) + r d^2 + d (pw2) + d (gamma).
    """

    def __init__(self, dim, mlp_ratio=4, layer_scale=1e-6):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, mlp_ratio * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(mlp_ratio * dim, dim)
        self.gamma = nn.Parameter(layer_scale * torch.ones(dim))

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)  # (N, H, W, d)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y)))) * self.gamma
        return x + y.permute(0, 3, 1, 2)  # (N, d, H, W)


class ConvBlock(nn.Sequential):
    """Conv3x3 (no bias) -> BatchNorm -> ReLU at ``dim`` channels."""

    def __init__(self, dim):
        super().__init__(nn.Conv2d(dim, dim, 3, padding=1, bias=False), nn.BatchNorm2d(dim), nn.ReLU(inplace=True))


class FCBlock(nn.Sequential):
    """Per-cell Linear dim->dim (a 1x1 conv) -> ReLU."""

    def __init__(self, dim):
        super().__init__(nn.Conv2d(dim, dim, 1), nn.ReLU(inplace=True))


class MLP(nn.Sequential):
    def __init__(self, dim, ratio):
        super().__init__(nn.Linear(dim, ratio * dim), nn.GELU(), nn.Linear(ratio * dim, dim))


class WindowAttentionBlock(nn.Module):
    """Pre-norm multi-head self-attention inside square windows, then a pre-norm MLP (both residual).

    The map is zero-padded to a multiple of ``window_size`` (padded cells are masked out of the keys).
    """

    def __init__(self, dim, num_heads, window_size, mlp_ratio=4):
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"adapter submodule_args: dim {dim} is not divisible by num_heads {num_heads}")
        self.window = window_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio)

    def forward(self, x):
        n, c, h, w = x.shape
        s = self.window
        ph, pw = (-h) % s, (-w) % s
        valid = x.new_ones(n, 1, h, w)
        x = F.pad(x, (0, pw, 0, ph))  # (N, C, H+ph, W+pw)
        valid = F.pad(valid, (0, pw, 0, ph))
        hh, ww = (h + ph) // s, (w + pw) // s

        def windows(t):  # (N, C', Hp, Wp) -> (N * hh * ww, s*s, C')
            t = t.view(t.shape[0], t.shape[1], hh, s, ww, s).permute(0, 2, 4, 3, 5, 1)
            return t.reshape(-1, s * s, t.shape[-1])

        tokens, keep = windows(x), windows(valid)[..., 0] > 0  # (M, s*s, C), (M, s*s)
        y = self.norm1(tokens)
        attn, _ = self.attn(y, y, y, key_padding_mask=~keep, need_weights=False)
        tokens = tokens + torch.nan_to_num(attn)  # a fully padded window attends to nothing
        tokens = tokens + self.mlp(self.norm2(tokens))
        out = tokens.reshape(n, hh, ww, s, s, c).permute(0, 5, 1, 3, 2, 4).reshape(n, c, hh * s, ww * s)
        return out[..., :h, :w]


class DeformableAttentionBlock(nn.Module):
    """Single-scale deformable self-attention (pure PyTorch ``grid_sample``), then an MLP; pre-norm, residual.

    Each cell q predicts, per head, ``num_points`` offsets (in cells) around itself and softmax weights; the
    value map of that head is sampled bilinearly there (zeros outside) and the weighted samples summed.
    Offsets and weights start at zero (each head first averages its cell's value).
    """

    def __init__(self, dim, num_heads, num_points, mlp_ratio=4):
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"adapter submodule_args: dim {dim} is not divisible by num_heads {num_heads}")
        self.heads, self.points = num_heads, num_points
        self.norm1 = ChannelLayerNorm(dim)
        self.offsets = nn.Conv2d(dim, num_heads * num_points * 2, 1)
        self.weights = nn.Conv2d(dim, num_heads * num_points, 1)
        self.value = nn.Conv2d(dim, dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)
        for conv in (self.offsets, self.weights):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio)

    def attend(self, x):
        n, c, h, w = x.shape
        g, p = self.heads, self.points
        offsets = self.offsets(x).reshape(n, g, p, 2, h, w)  # (N, G, P, [dx, dy], H, W) cells
        weights = self.weights(x).reshape(n, g, p, h, w).softmax(dim=2)  # (N, G, P, H, W)
        value = self.value(x).reshape(n * g, c // g, h, w)  # (N*G, C/G, H, W)
        ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=x.device, dtype=x.dtype)  # cell centres,
        xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=x.device, dtype=x.dtype)  # align_corners=False
        ref = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=0)  # (2, H, W) [x, y]
        scale = torch.tensor([2.0 / w, 2.0 / h], device=x.device, dtype=x.dtype).view(1, 1, 1, 2, 1, 1)
        grid = ref.view(1, 1, 1, 2, h, w) + offsets * scale  # (N, G, P, 2, H, W) normalised
        grid = grid.permute(0, 1, 4, 5, 2, 3).reshape(n * g, h * w, p, 2)  # (N*G, H*W, P, 2)
        sampled = F.grid_sample(value, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        sampled = sampled.view(n, g, c // g, h, w, p)  # (N, G, C/G, H, W, P)
        out = (sampled * weights.permute(0, 1, 3, 4, 2).unsqueeze(2)).sum(dim=-1)  # (N, G, C/G, H, W)
        return self.proj(out.reshape(n, c, h, w))

    def forward(self, x):
        x = x + self.attend(self.norm1(x))  # (N, C, H, W)
        y = x.permute(0, 2, 3, 1)
        return x + self.mlp(self.norm2(y)).permute(0, 3, 1, 2)


class Adapter(nn.Module):
    """Conv1x1 in->dim, ``body`` (``num_of_blocks`` blocks), Conv1x1 dim->out (parameters ``proj_in``,
    ``body.{i}``, ``proj_out``).

    Args:
        in_channels, out_channels: C_in, C_out.
        sub: parsed ``submodule_args``.
    """

    def __init__(self, in_channels, out_channels, sub):
        super().__init__()
        sub = SUBMODULE_ARGS.parse(sub, "adapter.args.submodule_args")
        self.proj_in = nn.Conv2d(in_channels, sub.dim, 1)
        self.body = nn.Sequential(*[self.block(sub) for _ in range(sub.num_of_blocks)])
        self.proj_out = nn.Conv2d(sub.dim, out_channels, 1)

    def block(self, sub):
        raise NotImplementedError

    def forward(self, x):
        """(N, C_in, H, W) -> (N, C_out, H, W)."""
        return self.proj_out(self.body(self.proj_in(x)))


@ADAPTERS.register("adapterconvnext")
class AdapterConvNeXt(Adapter):
    def block(self, sub):
        return ConvNeXtBlock(sub.dim, sub.mlp_ratio)


@ADAPTERS.register("adapterconv")
class AdapterConv(Adapter):
    def block(self, sub):
        return ConvBlock(sub.dim)


@ADAPTERS.register("adapterfc")
class AdapterFC(Adapter):
    def block(self, sub):
        return FCBlock(sub.dim)


@ADAPTERS.register("adapteratt")
class AdapterAtt(Adapter):
    def block(self, sub):
        return WindowAttentionBlock(sub.dim, sub.num_heads, sub.window_size, sub.mlp_ratio)


@ADAPTERS.register("adapterdsa")
class AdapterDSA(Adapter):
    def block(self, sub):
        return DeformableAttentionBlock(sub.dim, sub.num_heads, sub.num_points, sub.mlp_ratio)


@ADAPTERS.register("identity")
class IdentityAdapter(nn.Identity):
    """No adapter: the map passes unchanged (C_in must equal C_out)."""

    def __init__(self, in_channels, out_channels, sub=None):
        super().__init__()
        if in_channels != out_channels:
            raise ConfigError(f"identity adapter: in_channels {in_channels} != out_channels {out_channels}")


class ConvNeXtAligner(nn.Sequential):
    """HEAL's ``convnext`` aligner after a type's backbone: ``num_of_blocks`` ConvNeXt blocks at ``dim`` = the
    backbone's channels (parameters ``{i}.*``)."""

    CONFIG = Schema({
        "num_of_blocks": Key(int, 3, "ConvNeXt blocks", low=1),
        "dim": Key(int, REQUIRED, "channels (= the type's backbone output)"),
    }, name="convnext aligner args")

    def __init__(self, args):
        cfg = self.CONFIG.parse(args, "aligner_args.args")
        super().__init__(*[ConvNeXtBlock(cfg.dim) for _ in range(cfg.num_of_blocks)])
