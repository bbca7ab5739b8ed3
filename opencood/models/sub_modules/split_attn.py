"""Split attention (ResNeSt-style radix softmax) that fuses V2X-ViT's three window-attention branches."""
import torch
import torch.nn as nn


class SplitAttn(nn.Module):
    """Weights three same-shape branches per agent and channel: GAP -> FC-LN-ReLU -> FC to 3C -> softmax
    across the branches (radix 3).

    Args:
        dim: channels C of each branch.
        radix: number of branches (3 in V2X-ViT).
    """

    def __init__(self, dim, radix=3):
        super().__init__()
        self.dim, self.radix = dim, radix
        self.fc1 = nn.Linear(dim, dim, bias=False)
        self.bn1 = nn.LayerNorm(dim)
        self.act1 = nn.ReLU()
        self.fc2 = nn.Linear(dim, dim * radix, bias=False)

    def forward(self, branches):
        """Args: branches: ``radix`` tensors (B, L, H, W, C).

        Returns:
            (B, L, H, W, C) = sum_r a_r * branch_r with a (B, L, 1, 1, C) per branch, softmax over r.
        """
        if len(branches) != self.radix:
            raise ValueError(f"SplitAttn expects {self.radix} branches, got {len(branches)}")
        stacked = torch.stack(branches, dim=-2)  # (B, L, H, W, R, C)
        gap = stacked.sum(dim=-2).mean(dim=(2, 3), keepdim=True)  # (B, L, 1, 1, C)
        logits = self.fc2(self.act1(self.bn1(self.fc1(gap))))  # (B, L, 1, 1, R*C)
        weights = torch.softmax(logits.unflatten(-1, (self.radix, self.dim)), dim=-2)  # (B, L, 1, 1, R, C)
        return (stacked * weights).sum(dim=-2)  # (B, L, H, W, C)
