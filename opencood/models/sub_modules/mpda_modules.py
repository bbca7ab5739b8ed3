"""MPDA's building blocks (ICRA'23; spec baselines §C4): learnable resizer, cross-domain transformer, domain
classifier behind a gradient-scaling (reversal) layer.

All maps are (n, C, H, W) BEV features on one agent's grid. Window/grid attention reuses CoBEVT's
:class:`~opencood.models.sub_modules.swap_fusion_modules.SwapFusionBlockMask` with a single "agent" (its
relative-position table then has (2w - 1)^2 rows, one 2-D window's offsets). Maps whose size is not a
multiple of the window are zero-padded at the bottom/right for the attention and cropped back.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from opencood.models.sub_modules.swap_fusion_modules import SwapFusionBlockMask
from opencood.utils.config import REQUIRED, Key, Schema

WG_ATT = Schema({
    "input_dim": Key(int, REQUIRED, "channels C (= the resizer's output_channel)", low=1),
    "mlp_dim": Key(int, 256, "hidden width of the feed-forwards", low=1),
    "window_size": Key(int, 2, "attention window w (cells)", low=1),
    "dim_head": Key(int, 32, "channels per head (heads = C / dim_head)", low=1),
    "drop_out": Key(float, 0.1, "dropout of attention output and feed-forward", low=0.0, high=1.0),
    "depth": Key(int, 1, "window+grid blocks", low=1),
}, name="wg_att")

RESIDUAL = Schema({
    "input_dim": Key(int, REQUIRED, "channels of the residual blocks (= output_channel)", low=1),
    "depth": Key(int, 2, "residual blocks (Conv3-BN-LeakyReLU-Conv3-BN + skip)", low=0),
}, name="residual")

RESIZER = Schema({
    "input_channel": Key(int, REQUIRED, "channels of a collaborator's feature (checked against the model's)", low=1),
    "output_channel": Key(int, REQUIRED, "channels after the 1x1 channel selector (= the ego feature's)", low=1),
    "wg_att": Key(dict, REQUIRED, "window/grid attention encoder, used twice", schema=WG_ATT),
    "residual": Key(dict, REQUIRED, "residual blocks after the resize", schema=RESIDUAL),
}, name="resizer")

CDT = Schema({
    "input_dim": Key(int, REQUIRED, "channels C (checked against the model's)", low=1),
    "window_size": Key(int, 2, "cross-attention window w (cells)", low=1),
    "heads": Key(int, 16, "attention heads", low=1),
    "dim_head": Key(int, 32, "channels per head (heads * dim_head need not equal C)", low=1),
    "depth": Key(int, 1, "cross-domain blocks", low=1),
}, name="cdt")

DOMAIN_CLASSIFIER = Schema({
    "hidden_dim": Key(int, 512, "channels of the 1x1 hidden layer", low=1),
    "gradient_scale": Key(float, -9.1, "factor the gradient is multiplied by on its way back into the features "
                                       "(negative: gradient reversal)"),
    "init_std": Key(float, 0.001, "std of the normal weight init (biases 0)", low=0.0),
}, name="domain_classifier")


def pad_to_multiple(x, window):
    """Zero-pad (n, C, H, W) at the bottom/right to multiples of ``window``; returns (padded, (H, W))."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % window, (-w) % window
    return (F.pad(x, (0, pw, 0, ph)) if ph or pw else x), (h, w)


class _GradientScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


class GradientScale(nn.Module):
    """Identity forward; the backward multiplies the gradient by ``scale`` (< 0: gradient reversal)."""

    def __init__(self, scale):
        super().__init__()
        self.scale = float(scale)

    def forward(self, x):
        return _GradientScale.apply(x, self.scale)


class DomainClassifier(nn.Module):
    """Per-cell domain logit: GradientScale -> Conv1x1 C->hidden -> ReLU -> Conv1x1 hidden->1.

    Args:
        channels: C of the features.
        hidden_dim, gradient_scale, init_std: see ``DOMAIN_CLASSIFIER``.
    """

    CONFIG = DOMAIN_CLASSIFIER

    def __init__(self, channels, hidden_dim=512, gradient_scale=-9.1, init_std=0.001):
        super().__init__()
        self.grad_scale = GradientScale(gradient_scale)
        self.conv1 = nn.Conv2d(channels, hidden_dim, 1)
        self.conv2 = nn.Conv2d(hidden_dim, 1, 1)
        for conv in (self.conv1, self.conv2):
            nn.init.normal_(conv.weight, std=init_std)
            nn.init.zeros_(conv.bias)

    def forward(self, x):
        """(n, C, H, W) -> (n, 1, H, W) logits (1 = ego domain)."""
        return self.conv2(F.relu(self.conv1(self.grad_scale(x))))


class MapHead(nn.Module):
    """Per-cell LayerNorm + Linear C -> C on (n, C, H, W)."""

    def __init__(self, dim):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.linear = nn.Linear(dim, dim)

    def forward(self, x):
        return self.linear(self.norm(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)


class WindowGridEncoder(nn.Module):
    """Self-attention of one agent's map: ``depth`` x (window attention + FFN, grid attention + FFN), then
    LayerNorm + Linear (MPDA's ``SwapFusionEncoder``).

    Args:
        args: the ``wg_att`` section (see ``WG_ATT``).
    """

    def __init__(self, args):
        super().__init__()
        cfg = WG_ATT.parse(args, "wg_att")
        self.window = cfg.window_size
        self.blocks = nn.ModuleList(SwapFusionBlockMask(cfg.input_dim, cfg.mlp_dim, cfg.dim_head, cfg.window_size,
                                                        1, cfg.drop_out) for _ in range(cfg.depth))
        self.head = MapHead(cfg.input_dim)

    def forward(self, x):
        """(n, C, H, W) -> (n, C, H, W)."""
        padded, (h, w) = pad_to_multiple(x, self.window)
        t = padded[:, None]  # (n, 1, C, H', W'): one agent per map
        present = torch.ones(t.shape[:2], dtype=torch.bool, device=x.device)
        for block in self.blocks:
            t = block(t, present)
        return self.head(t[:, 0, :, :h, :w])


class ResidualBlock(nn.Module):
    """x + BN(Conv3(LeakyReLU(BN(Conv3(x)))))."""

    def __init__(self, dim):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1), nn.BatchNorm2d(dim), nn.LeakyReLU(),
                                  nn.Conv2d(dim, dim, 3, padding=1), nn.BatchNorm2d(dim))

    def forward(self, x):
        return x + self.body(x)


class LearnableResizer(nn.Module):
    """A collaborator's map -> the ego's channels and size (MPDA's learnable resizer)::

        p  = Conv1x1(x)                                   (n, C_out, h, w)
        a  = resize(wg_att_1(p), ego size)                bilinear, align_corners False
        b  = wg_att_2(res_blocks(a) + a)
        out = resize(p, ego size) + b                     (n, C_out, H, W)

    Args:
        args: the ``resizer`` section (see ``RESIZER``).
    """

    CONFIG = RESIZER

    def __init__(self, args, where="model.args.resizer", source="config"):
        super().__init__()
        cfg = self.CONFIG.parse(args, where, source)
        self.channel_selector = nn.Conv2d(cfg.input_channel, cfg.output_channel, 1)
        self.wg_att_1 = WindowGridEncoder(cfg.wg_att)
        self.wg_att_2 = WindowGridEncoder(cfg.wg_att)
        self.res_blocks = nn.Sequential(*[ResidualBlock(cfg.residual.input_dim) for _ in range(cfg.residual.depth)])

    def forward(self, x, size):
        """Args: x (n, C_in, h, w) collaborator maps; size (H, W) of the ego map. Returns (n, C_out, H, W)."""
        p = self.channel_selector(x)
        a = F.interpolate(self.wg_att_1(p), size=tuple(size), mode="bilinear", align_corners=False)
        b = self.wg_att_2(self.res_blocks(a) + a)
        return F.interpolate(p, size=tuple(size), mode="bilinear", align_corners=False) + b


class CrossAttention(nn.Module):
    """Multi-head attention of query tokens over key/value tokens of the same window/grid group; q, k, v each
    pass their own LayerNorm + Linear C -> heads * dim_head; output Linear back to C, plus ``skip``."""

    def __init__(self, dim, heads, dim_head, qkv_bias=True):
        super().__init__()
        self.heads, self.scale = heads, dim_head ** -0.5
        inner = heads * dim_head
        self.to_q = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, inner, bias=qkv_bias))
        self.to_k = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, inner, bias=qkv_bias))
        self.to_v = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, inner, bias=qkv_bias))
        self.proj = nn.Linear(inner, dim)

    def forward(self, q, kv, skip):
        """Args: q, kv, skip (G, T, C) tokens of G groups of T cells. Returns (G, T, C)."""
        def split(t):
            return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (G, heads, T, d)
        qh, kh, vh = split(self.to_q(q)), split(self.to_k(kv)), split(self.to_v(kv))
        att = torch.softmax(torch.einsum("ghqd,ghkd->ghqk", qh * self.scale, kh), dim=-1)
        out = torch.einsum("ghqk,ghkd->ghqd", att, vh).transpose(1, 2).flatten(2)  # (G, T, inner)
        return self.proj(out) + skip


def _windows(x, w):
    """(n, H, W, C) -> (n * H/w * W/w, w*w, C): cells (X*w + i, Y*w + j) grouped by window (X, Y)."""
    n, h, wd, c = x.shape
    return x.reshape(n, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, c)


def _unwindows(t, n, h, wd, w):
    c = t.shape[-1]
    return t.reshape(n, h // w, wd // w, w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(n, h, wd, c)


def _grids(x, w):
    """(n, H, W, C) -> (n * H/w * W/w, w*w, C): cells (i * H/w + X, j * W/w + Y) grouped by (X, Y)."""
    n, h, wd, c = x.shape
    return x.reshape(n, w, h // w, w, wd // w, c).permute(0, 2, 4, 1, 3, 5).reshape(-1, w * w, c)


def _ungrids(t, n, h, wd, w):
    c = t.shape[-1]
    return t.reshape(n, h // w, wd // w, w, w, c).permute(0, 3, 1, 4, 2, 5).reshape(n, h, wd, c)


class CrossDomainBlock(nn.Module):
    """Collaborator queries attend to the ego map: window cross-attention + MLP, grid cross-attention + MLP
    (each MLP pre-LayerNorm residual, C -> 2C -> C with GELU), then LayerNorm."""

    def __init__(self, dim, heads, dim_head, window):
        super().__init__()
        self.window = window
        self.cross_win_1 = CrossAttention(dim, heads, dim_head)
        self.cross_win_2 = CrossAttention(dim, heads, dim_head)
        self.prenorm1, self.prenorm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.mlp_1 = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.mlp_2 = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.post_norm = nn.LayerNorm(dim)

    def forward(self, ego, query):
        """Args: ego, query (n, H, W, C) with H, W multiples of the window. Returns (n, H, W, C)."""
        n, h, w, _ = query.shape
        ws = self.window
        q = _windows(query, ws)
        q = _unwindows(self.cross_win_1(q, _windows(ego, ws), q), n, h, w, ws)
        q = q + self.mlp_1(self.prenorm1(q))
        g = _grids(q, ws)
        q = _ungrids(self.cross_win_2(g, _grids(ego, ws), g), n, h, w, ws)
        q = q + self.mlp_2(self.prenorm2(q))
        return self.post_norm(q)


class CrossDomainTransformer(nn.Module):
    """MPDA's cross-domain transformer (CDT): ``depth`` cross-domain blocks with Q = the (resized)
    collaborator map and K = V = its ego's map, then LayerNorm + Linear.

    Args:
        args: the ``cdt`` section (see ``CDT``).
    """

    CONFIG = CDT

    def __init__(self, args, where="model.args.cdt", source="config"):
        super().__init__()
        cfg = self.CONFIG.parse(args, where, source)
        self.window = cfg.window_size
        self.blocks = nn.ModuleList(CrossDomainBlock(cfg.input_dim, cfg.heads, cfg.dim_head, cfg.window_size)
                                    for _ in range(cfg.depth))
        self.head = MapHead(cfg.input_dim)

    def forward(self, ego, collaborator):
        """Args: ego, collaborator (n, C, H, W) (row i = collaborator i and its sample's ego). Returns (n, C, H, W)."""
        q, (h, w) = pad_to_multiple(collaborator, self.window)
        kv, _ = pad_to_multiple(ego, self.window)
        q, kv = q.permute(0, 2, 3, 1), kv.permute(0, 2, 3, 1)  # (n, H', W', C)
        for block in self.blocks:
            q = block(kv, q)
        return self.head(q.permute(0, 3, 1, 2)[..., :h, :w])
