"""V2VNet: message passing semantics, ConvGRU, aggregation, config errors, and the zoo config end to end."""
import pytest
import torch

from opencood.models.fuse_modules.fusion_input import FusionInput
from opencood.models.fuse_modules.v2vnet_fuse import V2VNetFusion, pair_index
from opencood.models.sub_modules.convgru import ConvGRUCell
from opencood.utils.errors import ConfigError
from tests.models.fuse_modules.zoo_cases import check_forward_backward, loss_falls, tiny_batch, train_and_infer


def _net(c=4, **kw):
    section = {"in_channels": c, "num_iteration": 2, "gru_flag": True, "agg_operator": "avg",
               "conv_gru": {"H": 8, "W": 8, "num_layers": 1, "kernel_size": [[3, 3]]}}
    section.update(kw)
    torch.manual_seed(0)
    return V2VNetFusion(section, channels=c)


def _identity(b, l):
    affine = torch.zeros(b, l, l, 2, 3)
    affine[..., 0, 0] = affine[..., 1, 1] = 1.0
    return affine


def test_pairs_cover_every_ordered_pair_of_each_sample():
    node, neighbour, sample, local_i, local_j, size = pair_index(torch.tensor([2, 1, 3]))
    pairs = sorted(zip(node.tolist(), neighbour.tolist()))
    assert pairs == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 2)] + [(i, j) for i in range(3, 6) for j in range(3, 6)]
    assert size.tolist() == [2, 2, 1, 3, 3, 3]
    assert sample.tolist()[-1] == 2 and local_i.tolist()[-1] == 2 and local_j.tolist()[-1] == 2


def test_one_round_without_gru_matches_the_formula():
    """gru_flag false, 1 round, identity poses: h_0 + mean_j Conv([h_j; h_0]) then the per-cell Linear."""
    net = _net(num_iteration=1, gru_flag=False).eval()
    x = torch.randn(2, 4, 8, 8)
    out, aux = net(FusionInput(features=x, record_len=torch.tensor([2]), affine=_identity(1, 5)))
    msgs = net.msg_cnn(torch.cat([x, x[:1].expand(2, -1, -1, -1)], dim=1))
    ref = x[0] + msgs.mean(0)
    ref = net.mlp(ref.permute(1, 2, 0)).permute(2, 0, 1)
    assert aux == {} and torch.allclose(out[0], ref, atol=1e-5)


def test_max_aggregation_and_samples_are_independent():
    net = _net(agg_operator="max").eval()
    x = torch.randn(4, 4, 8, 8)
    alone, _ = net(FusionInput(features=x[:1], record_len=torch.tensor([1]), affine=_identity(1, 5)))
    both, _ = net(FusionInput(features=x, record_len=torch.tensor([1, 3]), affine=_identity(2, 5)))
    assert torch.allclose(alone[0], both[0], atol=1e-5)


def test_convgru_zero_state_is_update_gate_times_candidate():
    torch.manual_seed(0)
    cell = ConvGRUCell(3, 2, (3, 3))
    x, h = torch.randn(1, 3, 5, 5), torch.zeros(1, 2, 5, 5)
    _, update = torch.sigmoid(cell.conv_gates(torch.cat([x, h], 1))).split(2, 1)
    assert torch.allclose(cell(x, h), update * torch.tanh(cell.conv_can(torch.cat([x, h], 1))), atol=1e-6)


def test_bad_sections_are_one_line_errors():
    with pytest.raises(ConfigError, match="missing key 'model.args.v2vnet'"):
        V2VNetFusion(None, channels=4)
    with pytest.raises(ConfigError, match="unknown key 'model.args.v2vnet.num_iterations'"):
        V2VNetFusion({"in_channels": 4, "num_iterations": 2})
    with pytest.raises(ConfigError, match="agg_operator"):
        V2VNetFusion({"in_channels": 4, "agg_operator": "sum"})


def test_zoo_v2vnet_forward_backward_and_loss_falls(make_tiny_config):
    hypes, model, criterion, batch = tiny_batch(make_tiny_config, "lidar_v2vnet", batch_size=1)
    check_forward_backward(model, criterion, batch)
    loss_falls(hypes, model, criterion, batch, steps=3, factor=0.5)


@pytest.mark.slow
def test_zoo_v2vnet_train_and_infer_cli(make_tiny_config, tmp_path):
    train_and_infer(make_tiny_config, "lidar_v2vnet", tmp_path)


def test_gru_starts_from_the_node_state_as_in_the_paper_or_from_zeros_as_the_reference():
    """One round, identity poses: h' = ConvGRUCell([h; m], h) by default, ConvGRUCell([h; m], 0) with
    ``gru_hidden: zero``; both have the same parameters (checkpoints load either way)."""
    x = torch.randn(2, 4, 8, 8)
    inp = FusionInput(features=x, record_len=torch.tensor([2]), affine=_identity(1, 5))
    outs = {}
    for mode in ("state", "zero"):
        net = _net(num_iteration=1, gru_hidden=mode).eval()
        out, _ = net(inp)
        agg = net.msg_cnn(torch.cat([x, x[:1].expand(2, -1, -1, -1)], dim=1)).mean(0, keepdim=True)
        h0 = x[:1] if mode == "state" else torch.zeros_like(x[:1])
        h = net.conv_gru.cell_list[0](torch.cat([x[:1], agg], dim=1), h0)
        ref = net.mlp(h[0].permute(1, 2, 0)).permute(2, 0, 1)
        assert torch.allclose(out[0], ref, atol=1e-5), mode
        outs[mode] = out
    assert not torch.allclose(outs["state"], outs["zero"])
    assert [p.shape for p in _net(gru_hidden="zero").parameters()] == [p.shape for p in _net().parameters()]
