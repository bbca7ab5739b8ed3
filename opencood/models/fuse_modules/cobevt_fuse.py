"""CoBEVT (``cobevt``): fused axial (window + grid) attention across agents (Xu et al., CoRL 2022)."""
from collections import OrderedDict

import torch.nn as nn

from opencood.models.fuse_modules.warp import warp_to_ego_padded
from opencood.models.sub_modules.swap_fusion_modules import SwapFusionBlockMask
from opencood.utils.config import REQUIRED, Key, Schema
from opencood.utils.errors import ConfigError
from opencood.utils.registry import FUSION_MODULES


@FUSION_MODULES.register("cobevt")
class CoBEVT(nn.Module):
    """Agents warped to the ego frame -> ``depth`` SwapFusion blocks -> mean over the present agents ->
    LayerNorm + Linear per cell.

    Args:
        args: the ``cobevt`` section (see ``CONFIG``).
        channels: C of the features (must equal ``input_dim``).
    """

    CONFIG = Schema({
        "input_dim": Key(int, REQUIRED, "feature channels C"),
        "mlp_dim": Key(int, REQUIRED, "feed-forward hidden width"),
        "agent_size": Key(int, 5, "most agents per sample (relative-position table; >= train_params.max_cav)"),
        "window_size": Key(int, 4, "window / grid side in cells (must divide the map)"),
        "dim_head": Key(int, 32, "channels per head (heads = input_dim // dim_head)"),
        "drop_out": Key(float, 0.1, "dropout"),
        "depth": Key(int, 3, "SwapFusion blocks"),
    }, name="cobevt")
    CHANNEL_KEY = "input_dim"

    def __init__(self, args=None, channels=None):
        super().__init__()
        if args is None:
            raise ConfigError("model.args: missing key 'model.args.cobevt' (section of fusion_method 'cobevt')")
        cfg = self.CONFIG.parse(args, "model.args.cobevt")
        if cfg.input_dim % cfg.dim_head:
            raise ConfigError(f"model.args.cobevt.dim_head {cfg.dim_head} does not divide input_dim {cfg.input_dim}")
        self.window_size = cfg.window_size
        self.layers = nn.ModuleList(SwapFusionBlockMask(cfg.input_dim, cfg.mlp_dim, cfg.dim_head, cfg.window_size,
                                                        cfg.agent_size, cfg.drop_out) for _ in range(cfg.depth))
        self.mlp_head = nn.Sequential(OrderedDict([("2", nn.LayerNorm(cfg.input_dim)),
                                                   ("3", nn.Linear(cfg.input_dim, cfg.input_dim))]))

    def forward(self, inp):
        """Args: inp: FusionInput (``features`` (N, C, H, W), ``record_len``, ``affine``).

        Returns:
            (B, C, H, W) fused ego map, and ``{}``.
        """
        h, w = inp.features.shape[-2:]
        if h % self.window_size or w % self.window_size:
            raise ConfigError(f"model.args.cobevt.window_size {self.window_size} does not divide the {h} x {w} "
                              f"feature map")
        x, mask = warp_to_ego_padded(inp.features, inp.record_len, inp.affine)  # (B, L, C, H, W), (B, L)
        for block in self.layers:
            x = block(x, mask)
        present = mask[:, :, None, None, None].to(x.dtype)
        mean = (x * present).sum(1) / present.sum(1)  # (B, C, H, W): mean over the present agents
        return self.mlp_head(mean.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous(), {}
