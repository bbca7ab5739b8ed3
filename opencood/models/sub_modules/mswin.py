"""V2X-ViT's multi-scale window attention (MSwin): window self-attention per agent at several window sizes."""
import torch
import torch.nn as nn

from opencood.models.sub_modules.split_attn import SplitAttn


def relative_indices(window_size):
    """(w^2, w^2, 2) long: relative (row, col) offset of every token pair of a w x w window, shifted to >= 0."""
    rows, cols = torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
    coords = torch.stack([rows.flatten(), cols.flatten()], dim=-1)  # (w^2, 2)
    return coords[None, :, :] - coords[:, None, :] + window_size - 1


class BaseWindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping w x w windows of each agent's map.

    Args:
        dim: channels C.
        heads: attention heads M.
        dim_head: channels per head.
        dropout: dropout after the output projection.
        window_size: w (must divide H and W).
        relative_pos_embedding: a learned bias per relative offset ((2w-1)^2 values) instead of one per
            token pair (w^4 values).
    """

    def __init__(self, dim, heads, dim_head, dropout, window_size, relative_pos_embedding):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.window_size, self.scale = heads, window_size, dim_head ** -0.5
        self.relative_pos_embedding = relative_pos_embedding
        if relative_pos_embedding:
            self.register_buffer("relative_indices", relative_indices(window_size), persistent=False)
            self.pos_embedding = nn.Parameter(torch.randn(2 * window_size - 1, 2 * window_size - 1))
        else:
            self.pos_embedding = nn.Parameter(torch.randn(window_size ** 2, window_size ** 2))
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))

    def position_bias(self):
        """(w^2, w^2) additive attention bias."""
        if self.relative_pos_embedding:
            idx = self.relative_indices
            return self.pos_embedding[idx[..., 0], idx[..., 1]]
        return self.pos_embedding

    def forward(self, x):
        """Args: x: (B, L, H, W, C). Returns (B, L, H, W, C)."""
        b, l, h, w, _ = x.shape
        ws, m = self.window_size, self.heads
        if h % ws or w % ws:
            raise ValueError(f"window size {ws} does not divide the {h} x {w} feature map")

        def windows(t):  # (B, L, H, W, M*c) -> (B, L, M, nWin, ws*ws, c)
            t = t.reshape(b, l, h // ws, ws, w // ws, ws, m, -1)
            return t.permute(0, 1, 6, 2, 4, 3, 5, 7).reshape(b, l, m, (h // ws) * (w // ws), ws * ws, -1)

        q, k, v = map(windows, self.to_qkv(x).chunk(3, dim=-1))
        dots = torch.einsum("blmnic,blmnjc->blmnij", q, k) * self.scale + self.position_bias()
        out = torch.einsum("blmnij,blmnjc->blmnic", dots.softmax(dim=-1), v)  # (B, L, M, nWin, ws*ws, c)
        out = out.reshape(b, l, m, h // ws, w // ws, ws, ws, -1).permute(0, 1, 3, 5, 4, 6, 2, 7)
        return self.to_out(out.reshape(b, l, h, w, -1))  # (B, L, H, W, C)


class PyramidWindowAttention(nn.Module):
    """Window attention at several window sizes (one branch each), fused by mean or split attention.

    Args:
        dim: channels C.
        heads, dim_heads, window_size: per-branch lists of equal length.
        dropout: dropout of each branch.
        relative_pos_embedding: see :class:`BaseWindowAttention`.
        fuse_method: ``naive`` (mean of the branches) or ``split_attn`` / ``split_attn128`` (SplitAttn over C).
    """

    def __init__(self, dim, heads, dim_heads, dropout, window_size, relative_pos_embedding, fuse_method):
        super().__init__()
        self.pwmsa = nn.ModuleList(BaseWindowAttention(dim, m, c, dropout, ws, relative_pos_embedding)
                                   for m, c, ws in zip(heads, dim_heads, window_size))
        self.fuse_method = fuse_method
        if fuse_method != "naive":
            self.split_attn = SplitAttn(dim, radix=len(self.pwmsa))

    def forward(self, x):
        """Args: x: (B, L, H, W, C). Returns (B, L, H, W, C)."""
        branches = [attn(x) for attn in self.pwmsa]
        if self.fuse_method == "naive":
            return sum(branches) / len(branches)
        return self.split_attn(branches)
