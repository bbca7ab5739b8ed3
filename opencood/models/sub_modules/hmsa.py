"""V2X-ViT's heterogeneous multi-agent self-attention (HMSA): per BEV cell, attention across agents.

Agent types (0 = vehicle, 1 = infrastructure) pick the Q/K/V/output projections; the relation of a pair
(type_i * num_types + type_j) picks a bilinear attention matrix W_att and a message matrix W_msg per head.
"""
import torch
import torch.nn as nn


def _masked_softmax(scores, mask):
    """Softmax over the last axis with ``mask`` (broadcastable, 0 = masked) cells at -inf."""
    return torch.softmax(scores.masked_fill(mask == 0, float("-inf")), dim=-1)


class HGTCavAttention(nn.Module):
    """Heterogeneous attention across agents (heterogeneous-graph-transformer style).

    score_ij = q_i^T W_att[r(i, j)] k_j / sqrt(c); message_ij = W_msg[r(i, j)]^T v_j; out_i = a_{t(i)}(
    sum_j softmax_j(score_ij) message_ij), per head, with q/k/v/a the projections of each agent's own type.

    Args:
        dim: channels C.
        heads: heads M.
        dim_head: channels c per head.
        dropout: dropout on the output.
        num_types: agent types (2: vehicle, infrastructure).
    """

    def __init__(self, dim, heads, dim_head, dropout, num_types=2):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head, self.num_types, self.scale = heads, dim_head, num_types, dim_head ** -0.5
        self.k_linears = nn.ModuleList(nn.Linear(dim, inner) for _ in range(num_types))
        self.q_linears = nn.ModuleList(nn.Linear(dim, inner) for _ in range(num_types))
        self.v_linears = nn.ModuleList(nn.Linear(dim, inner) for _ in range(num_types))
        self.a_linears = nn.ModuleList(nn.Linear(inner, dim) for _ in range(num_types))
        relations = num_types * num_types
        self.relation_att = nn.Parameter(torch.empty(relations, heads, dim_head, dim_head))
        self.relation_msg = nn.Parameter(torch.empty(relations, heads, dim_head, dim_head))
        nn.init.xavier_uniform_(self.relation_att)
        nn.init.xavier_uniform_(self.relation_msg)
        self.drop_out = nn.Dropout(dropout)

    def typed(self, linears, x, types):
        """Apply each agent's type-specific Linear. x (B, L, H, W, C_in), types (B, L) long -> (B, L, H, W, C_out)."""
        out = None
        for t, linear in enumerate(linears):
            y = linear(x)
            sel = (types == t)[:, :, None, None, None]
            out = torch.where(sel, y, out) if out is not None else y * sel
        return out

    def heads_last(self, t):
        """(B, L, H, W, M*c) -> (B, M, H, W, L, c)."""
        b, l, h, w, _ = t.shape
        return t.reshape(b, l, h, w, self.heads, self.dim_head).permute(0, 4, 2, 3, 1, 5)

    def forward(self, x, mask, prior_encoding):
        """Args:
            x: (B, L, H, W, C) agent features (ego frame).
            mask: (B, H, W, 1, L) 1 where agent j is present and sees the cell.
            prior_encoding: (B, L, H, W, 3) ``[velocity, delay, infrastructure flag]``.

        Returns:
            (B, L, H, W, C).
        """
        types = prior_encoding[:, :, 0, 0, 2].round().long().clamp(0, self.num_types - 1)  # (B, L)
        q, k, v = (self.heads_last(self.typed(lin, x, types))  # (B, M, H, W, L, c)
                   for lin in (self.q_linears, self.k_linears, self.v_linears))
        scores, messages = [], []
        for ti in range(self.num_types):  # one pass per query type: W[r(ti, t_j)] for every key j
            rel = ti * self.num_types + types  # (B, L) relation index of (query type ti, key j)
            w_att = self.relation_att[rel].permute(0, 2, 1, 3, 4)  # (B, M, L, c, c)
            w_msg = self.relation_msg[rel].permute(0, 2, 1, 3, 4)  # (B, M, L, c, c)
            k_rel = torch.einsum("bmjpq,bmhwjq->bmhwjp", w_att, k)  # W_att k_j
            scores.append(torch.einsum("bmhwip,bmhwjp->bmhwij", q, k_rel) * self.scale)  # (B, M, H, W, L, L)
            messages.append(torch.einsum("bmjpc,bmhwjp->bmhwjc", w_msg, v))  # (B, M, H, W, L, c)
        query_type = types[:, None, None, None, :, None]  # (B, 1, 1, 1, L, 1)
        score = torch.zeros_like(scores[0])
        for ti in range(self.num_types):
            score = torch.where(query_type == ti, scores[ti], score)
        attn = _masked_softmax(score, mask.unsqueeze(1))  # (B, M, H, W, L, L)
        out = sum(torch.einsum("bmhwij,bmhwjc->bmhwic", attn * (query_type == ti), messages[ti])
                  for ti in range(self.num_types))  # (B, M, H, W, L, c)
        b, m, h, w, l, c = out.shape
        out = out.permute(0, 4, 2, 3, 1, 5).reshape(b, l, h, w, m * c)  # (B, L, H, W, M*c)
        return self.drop_out(self.typed(self.a_linears, out, types))


class CavAttention(nn.Module):
    """Homogeneous attention across agents per cell (``use_hetero: false``): shared Q/K/V and output.

    Args: dim, heads, dim_head, dropout: as :class:`HGTCavAttention`.
    """

    def __init__(self, dim, heads, dim_head, dropout):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head, self.scale = heads, dim_head, dim_head ** -0.5
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))

    def forward(self, x, mask, prior_encoding):
        """Same arguments and output as :meth:`HGTCavAttention.forward` (``prior_encoding`` unused)."""
        b, l, h, w, _ = x.shape
        q, k, v = (t.reshape(b, l, h, w, self.heads, self.dim_head).permute(0, 4, 2, 3, 1, 5)
                   for t in self.to_qkv(x).chunk(3, dim=-1))  # (B, M, H, W, L, c)
        attn = _masked_softmax(torch.einsum("bmhwic,bmhwjc->bmhwij", q, k) * self.scale, mask.unsqueeze(1))
        out = torch.einsum("bmhwij,bmhwjc->bmhwic", attn, v).permute(0, 4, 2, 3, 1, 5).reshape(b, l, h, w, -1)
        return self.to_out(out)  # (B, L, H, W, C)
