"""CoBEVT's fused axial attention (SwapFusion): window attention then grid attention over agents x tokens."""
import torch
import torch.nn as nn


def relative_position_index(agent_size, window_size):
    """(n, n) long, n = agent_size * w^2: index of the (agent, row, col) offset of every token pair."""
    a, w = agent_size, window_size
    coords = torch.stack(torch.meshgrid(torch.arange(a), torch.arange(w), torch.arange(w), indexing="ij"))
    flat = coords.flatten(1)  # (3, n)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0)  # (n, n, 3)
    rel = rel + torch.tensor([a - 1, w - 1, w - 1])
    return rel[..., 0] * (2 * w - 1) ** 2 + rel[..., 1] * (2 * w - 1) + rel[..., 2]


class Attention(nn.Module):
    """Multi-head attention over the tokens (agent, w1, w2) of each window, with a learned 3-D relative
    position bias; absent agents are masked out as keys.

    Args:
        dim: channels C; heads = C // dim_head.
        dim_head: channels per head.
        dropout: dropout after the output projection.
        agent_size: most agents a sample may have (size of the bias table).
        window_size: w.
    """

    def __init__(self, dim, dim_head, dropout, agent_size, window_size):
        super().__init__()
        self.heads, self.scale = dim // dim_head, dim_head ** -0.5
        self.agent_size = agent_size
        self.to_qkv = nn.Linear(dim, dim * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim, bias=False), nn.Dropout(dropout))
        self.relative_position_bias_table = nn.Embedding((2 * window_size - 1) ** 2 * (2 * agent_size - 1),
                                                         self.heads)
        self.register_buffer("relative_position_index", relative_position_index(agent_size, window_size),
                             persistent=False)

    def forward(self, x, mask):
        """Args: x (B, L, X, Y, w, w, C); mask (B, L) bool. Returns (B, L, X, Y, w, w, C)."""
        b, l, nx, ny, w1, w2, c = x.shape
        if l > self.agent_size:
            raise ValueError(f"CoBEVT agent_size {self.agent_size} is smaller than the {l} agents of the batch")
        tokens = x.permute(0, 2, 3, 1, 4, 5, 6).reshape(b * nx * ny, l * w1 * w2, c)  # (B X Y, L w w, C)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in self.to_qkv(tokens).chunk(3, -1))
        n = l * w1 * w2
        bias = self.relative_position_bias_table(self.relative_position_index[:n, :n]).permute(2, 0, 1)  # (h, n, n)
        sim = torch.einsum("bhid,bhjd->bhij", q * self.scale, k) + bias
        keys = mask[:, None, None, :, None].expand(b, nx, ny, l, w1 * w2).reshape(b * nx * ny, 1, 1, n)
        attn = torch.softmax(sim.masked_fill(~keys, float("-inf")), dim=-1)
        out = torch.einsum("bhij,bhjd->bhid", attn, v).transpose(1, 2).reshape(b, nx, ny, l, w1, w2, c)
        return self.to_out(out.permute(0, 3, 1, 2, 4, 5, 6))


class PreNormResidual(nn.Module):
    """``fn(LayerNorm(x), **kwargs) + x``."""

    def __init__(self, dim, fn):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x, **kwargs):
        return self.fn(self.norm(x), **kwargs) + x


class FeedForward(nn.Module):
    """Linear(C, mlp) - GELU - Dropout - Linear(mlp, C) - Dropout."""

    def __init__(self, dim, mlp_dim, dropout):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_dim, dim), nn.Dropout(dropout))

    def forward(self, x):
        return self.net(x)


class SwapFusionBlockMask(nn.Module):
    """Window attention (local w x w patches) then grid attention (a w x w grid strided over the whole map),
    each followed by a feed-forward; every step pre-norm residual, tokens of all agents attend jointly.

    Args: input_dim, mlp_dim, dim_head, window_size, agent_size, drop_out: see :class:`Attention`.
    """

    def __init__(self, input_dim, mlp_dim, dim_head, window_size, agent_size, drop_out):
        super().__init__()
        self.window_size = window_size
        self.window_attention = PreNormResidual(input_dim, Attention(input_dim, dim_head, drop_out, agent_size,
                                                                     window_size))
        self.window_ffd = PreNormResidual(input_dim, FeedForward(input_dim, mlp_dim, drop_out))
        self.grid_attention = PreNormResidual(input_dim, Attention(input_dim, dim_head, drop_out, agent_size,
                                                                   window_size))
        self.grid_ffd = PreNormResidual(input_dim, FeedForward(input_dim, mlp_dim, drop_out))

    def forward(self, x, mask):
        """Args: x (B, L, C, H, W) ego-frame agent maps; mask (B, L) bool. Returns (B, L, C, H, W)."""
        b, l, c, h, w = x.shape
        ws = self.window_size
        # window: cell (X*ws + w1, Y*ws + w2) -> window (X, Y), token (w1, w2)
        t = x.reshape(b, l, c, h // ws, ws, w // ws, ws).permute(0, 1, 3, 5, 4, 6, 2)  # (B, L, X, Y, w1, w2, C)
        t = self.window_ffd(self.window_attention(t, mask=mask))
        x = t.permute(0, 1, 6, 2, 4, 3, 5).reshape(b, l, c, h, w)
        # grid: cell (w1 * X' + X, w2 * Y' + Y) -> group (X, Y), token (w1, w2), X' = h // ws
        t = x.reshape(b, l, c, ws, h // ws, ws, w // ws).permute(0, 1, 4, 6, 3, 5, 2)  # (B, L, X, Y, w1, w2, C)
        t = self.grid_ffd(self.grid_attention(t, mask=mask))
        return t.permute(0, 1, 6, 4, 2, 5, 3).reshape(b, l, c, h, w)
