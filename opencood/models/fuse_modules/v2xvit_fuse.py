"""V2X-ViT (``v2xvit``): heterogeneous multi-agent attention + multi-scale window attention (Xu et al., ECCV 2022)."""
import torch.nn as nn

from opencood.models.sub_modules.v2xvit_basic import V2XTransformer
from opencood.utils.config import REQUIRED, Key, Schema
from opencood.utils.errors import ConfigError
from opencood.utils.registry import FUSION_MODULES

CAV_ATT = Schema({
    "dim": Key(int, REQUIRED, "channels C (= the fused feature channels)"),
    "use_hetero": Key(bool, True, "agent-type-specific projections and relation-specific attention (HMSA); "
                                  "false: one shared attention"),
    "use_RTE": Key(bool, False, "add the delay-aware relative temporal encoding"),
    "RTE_ratio": Key(int, 2, "RTE table steps per 100 ms frame of delay"),
    "heads": Key(int, 8, "attention heads"),
    "dim_head": Key(int, 32, "channels per head"),
    "dropout": Key(float, 0.3, "dropout on the attention output"),
}, name="cav_att_config")

PWINDOW_ATT = Schema({
    "dim": Key(int, REQUIRED, "channels C (= cav_att_config.dim)"),
    "heads": Key(list, [16, 8, 4], "heads of each window branch"),
    "dim_head": Key(list, [16, 32, 64], "channels per head of each branch"),
    "dropout": Key(float, 0.3, "dropout of each branch"),
    "window_size": Key(list, [4, 8, 16], "window side of each branch, in cells (must divide the map)"),
    "relative_pos_embedding": Key(bool, True, "learned relative-position bias"),
    "fusion_method": Key(str, "split_attn", "branch fusion: split_attn | split_attn128 (both SplitAttn over C) "
                                            "| naive (mean)", choices=("split_attn", "split_attn128", "naive")),
}, name="pwindow_att_config")

ENCODER = Schema({
    "sttf": Key(dict, None, "spatial-temporal transform (its voxel_size / downsample_rate are not needed: the "
                            "warp uses the metric pairwise transforms)", schema=Schema({}, name="sttf")),
    "use_roi_mask": Key(bool, True, "mask attention to the cells each agent's warped map covers"),
    "cav_att_config": Key(dict, REQUIRED, "HMSA", schema=CAV_ATT),
    "pwindow_att_config": Key(dict, REQUIRED, "multi-scale window attention", schema=PWINDOW_ATT),
    "feed_forward": Key(dict, REQUIRED, "feed-forward", schema=Schema({
        "mlp_dim": Key(int, REQUIRED, "hidden width"),
        "dropout": Key(float, 0.3, "dropout"),
    }, name="feed_forward")),
    "num_blocks": Key(int, 1, "HMSA + MSwin pairs per fusion block"),
    "depth": Key(int, 3, "fusion block + feed-forward layers"),
}, name="encoder")


@FUSION_MODULES.register("v2xvit")
class V2XViTFusion(nn.Module):
    """Every agent warped to the ego frame (STTF), refined jointly by ``depth`` layers, the ego map returned.

    Args:
        args: the ``v2xvit`` section ``{transformer: {encoder: ...}}`` (see ``CONFIG``).
        channels: C of the features it gets; must equal ``cav_att_config.dim`` and ``pwindow_att_config.dim``.
    """

    CONFIG = Schema({
        "transformer": Key(dict, REQUIRED, "the V2X-ViT transformer", schema=Schema({
            "encoder": Key(dict, REQUIRED, "its encoder", schema=ENCODER),
        }, name="transformer")),
    }, name="v2xvit")
    CHANNEL_KEY = None  # the channel number sits deeper (encoder.*.dim): checked here

    def __init__(self, args=None, channels=None):
        super().__init__()
        if args is None:
            raise ConfigError("model.args: missing key 'model.args.v2xvit' (section of fusion_method 'v2xvit')")
        cfg = self.CONFIG.parse(args, "model.args.v2xvit")
        enc = cfg.transformer.encoder
        for sub in ("cav_att_config", "pwindow_att_config"):
            if channels is not None and enc[sub].dim != channels:
                raise ConfigError(f"model.args.v2xvit.transformer.encoder.{sub}.dim = {enc[sub].dim} but the "
                                  f"fused features have {channels} channels")
        win = enc.pwindow_att_config
        if not len(win.heads) == len(win.dim_head) == len(win.window_size):
            raise ConfigError("model.args.v2xvit.transformer.encoder.pwindow_att_config: heads, dim_head and "
                              "window_size need one entry per branch")
        if win.fusion_method != "naive" and len(win.window_size) != 3:
            raise ConfigError("model.args.v2xvit.transformer.encoder.pwindow_att_config: split attention "
                              f"fuses 3 branches, got window_size {win.window_size}")
        self.window_sizes = [int(w) for w in win.window_size]
        self.fusion_net = V2XTransformer(cfg.transformer)

    def forward(self, inp):
        """Args:
            inp: FusionInput (``features`` (N, C, H, W), ``record_len``, ``affine``; ``prior`` (N, 3)
                ``[delay s, speed m/s, infrastructure]`` or None = zeros: undelayed, one vehicle type).

        Returns:
            (B, C, H, W) fused ego map, and ``{}``.
        """
        n, _, h, w = inp.features.shape
        bad = [s for s in self.window_sizes if h % s or w % s]
        if bad:
            raise ConfigError(f"model.args.v2xvit...pwindow_att_config.window_size {bad} does not divide the "
                              f"{h} x {w} feature map")
        prior = inp.prior if inp.prior is not None else inp.features.new_zeros(n, 3)
        fused = self.fusion_net(inp.features, inp.record_len, inp.affine, prior.to(inp.features.dtype))
        return fused.permute(0, 3, 1, 2).contiguous(), {}  # (B, C, H, W)
