"""V2VNet (``v2vnet``): spatially aware message passing between agents with a ConvGRU node update
(Wang et al., ECCV 2020)."""
import torch
import torch.nn as nn

from opencood.models.fuse_modules.warp import agent_batch_index, warp_affine_simple
from opencood.models.sub_modules.convgru import ConvGRU
from opencood.utils.config import REQUIRED, Key, Schema
from opencood.utils.errors import ConfigError
from opencood.utils.registry import FUSION_MODULES

CONV_GRU = Schema({
    "num_layers": Key(int, 1, "stacked ConvGRU layers"),
    "kernel_size": Key(list, [[3, 3]], "[kh, kw] of each layer"),
}, name="conv_gru")


def pair_index(record_len):
    """Every ordered agent pair (i, j) of the same sample.

    Args:
        record_len: (B,) agents per sample.

    Returns:
        node (P,) global index of i, neighbour (P,) global index of j, sample (P,), local_i (P,), local_j (P,)
        with P = sum_b record_len[b]^2; and (N,) sample size of every node.
    """
    sample_idx, local_idx = agent_batch_index(record_len)  # (N,)
    size = record_len.long()[sample_idx]  # (N,)
    starts = (torch.cumsum(record_len.long(), 0) - record_len.long())[sample_idx]  # (N,)
    l_max = int(record_len.max())
    j = torch.arange(l_max, device=record_len.device)
    valid = j[None, :] < size[:, None]  # (N, L')
    node = torch.arange(sample_idx.numel(), device=record_len.device)[:, None].expand_as(valid)[valid]
    local_j = j[None, :].expand_as(valid)[valid]
    neighbour = starts[node] + local_j
    return node, neighbour, sample_idx[node], local_idx[node], local_j, size


@FUSION_MODULES.register("v2vnet")
class V2VNetFusion(nn.Module):
    """``num_iteration`` rounds of: for every agent i, each agent j's state warped into i's frame,
    message m_ij = Conv3x3([h_j->i ; h_i]) x ROI(j->i), aggregated (mean or max over j, i included),
    h_i <- ConvGRU(input [h_i ; m_i], hidden h_i) (or h_i + m_i); then the ego state through a per-cell
    Linear(C, C). ``gru_hidden: zero`` starts the GRU from zeros instead, as the reference code does.

    Args:
        args: the ``v2vnet`` section (see ``CONFIG``).
        channels: C of the features (must equal ``in_channels``).
    """

    CONFIG = Schema({
        "in_channels": Key(int, REQUIRED, "feature channels C"),
        "num_iteration": Key(int, 2, "message-passing rounds"),
        "gru_flag": Key(bool, True, "ConvGRU node update (false: h + aggregated message)"),
        "agg_operator": Key(str, "avg", "message aggregation over neighbours", choices=("avg", "max")),
        "gru_hidden": Key(str, "state", "ConvGRU hidden state: the node's state h_i (the paper) or zeros (the "
                          "reference code, which makes the update a gated tanh of its input)", choices=("state", "zero")),
        "conv_gru": Key(dict, {}, "the ConvGRU (its H / W: the map size it runs on is the input's)",
                        schema=CONV_GRU),
    }, name="v2vnet")
    CHANNEL_KEY = "in_channels"

    def __init__(self, args=None, channels=None):
        super().__init__()
        if args is None:
            raise ConfigError("model.args: missing key 'model.args.v2vnet' (section of fusion_method 'v2vnet')")
        cfg = self.CONFIG.parse(args, "model.args.v2vnet")
        c = cfg.in_channels
        if len(cfg.conv_gru.kernel_size) != cfg.conv_gru.num_layers:
            raise ConfigError(f"model.args.v2vnet.conv_gru.kernel_size needs {cfg.conv_gru.num_layers} entries "
                              f"(num_layers), got {cfg.conv_gru.kernel_size}")
        self.num_iteration, self.gru_flag, self.agg_operator = cfg.num_iteration, cfg.gru_flag, cfg.agg_operator
        self.gru_from_state = cfg.gru_hidden == "state"
        self.msg_cnn = nn.Conv2d(2 * c, c, kernel_size=3, stride=1, padding=1)
        self.conv_gru = ConvGRU(2 * c, [c] * cfg.conv_gru.num_layers, cfg.conv_gru.kernel_size)
        self.mlp = nn.Linear(c, c)

    def aggregate(self, message, node, local_j, size, n):
        """Mean (over the sample's N agents) or max of the messages to each node: (P, C, H, W) -> (N, C, H, W)."""
        if self.agg_operator == "avg":
            total = message.new_zeros((n,) + message.shape[1:]).index_add(0, node, message)
            return total / size[:, None, None, None].to(message.dtype)
        padded = message.new_full((n, int(size.max())) + message.shape[1:], float("-inf"))  # (N, L', C, H, W)
        padded[node, local_j] = message
        return padded.max(dim=1)[0]

    def forward(self, inp):
        """Args:
            inp: FusionInput (``features`` (N, C, H, W), ``record_len`` (B,), ``affine`` (B, L, L, 2, 3)).

        Returns:
            (B, C, H, W) ego states after message passing, and ``{}``.
        """
        h = inp.features  # (N, C, H, W) node states, each in its own frame
        n, _, height, width = h.shape
        node, neighbour, sample, local_i, local_j, size = pair_index(inp.record_len)
        affine = inp.affine[sample, local_i, local_j]  # (P, 2, 3): normalised T_{j<-i}, j's map into frame i
        roi = warp_affine_simple(h.new_ones(node.numel(), 1, height, width), affine, (height, width))  # (P, 1, H, W)
        for _ in range(self.num_iteration):
            warped = warp_affine_simple(h[neighbour], affine, (height, width))  # (P, C, H, W) in frame i
            message = self.msg_cnn(torch.cat([warped, h[node]], dim=1)) * roi  # (P, C, H, W)
            agg = self.aggregate(message, node, local_j, size, n)  # (N, C, H, W)
            if self.gru_flag:
                h0 = h if self.gru_from_state else None
                h = self.conv_gru(torch.cat([h, agg], dim=1)[:, None], h0)[:, 0]  # (N, C, H, W)
            else:
                h = h + agg
        ego = torch.cumsum(inp.record_len.long(), 0) - inp.record_len.long()  # (B,) global index of each ego
        return self.mlp(h[ego].permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous(), {}  # (B, C, H, W)
