"""V2X-ViT: the reference parameter count, attention semantics, window-size checks, and the zoo config end to end."""
import pytest
import torch

from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.models.fuse_modules.fusion_input import FusionInput
from opencood.models.fuse_modules.v2xvit_fuse import V2XViTFusion
from opencood.models.sub_modules.hmsa import HGTCavAttention
from opencood.models.sub_modules.split_attn import SplitAttn
from opencood.tools.train_utils import create_model
from opencood.utils.errors import ConfigError
from tests.models.fuse_modules.zoo_cases import check_forward_backward, loss_falls, tiny_batch, train_and_infer

GENCOMM_M1 = "opencood/hypes_yaml/opv2v/GenComm_yamls/gencomm/stage1/m1_v2xvit.yaml"


def _section(dim=128, mlp_dim=128, depth=3, windows=(4, 8, 16)):
    return {"transformer": {"encoder": {
        "sttf": {"voxel_size": [0.4, 0.4, 4], "downsample_rate": 4}, "use_roi_mask": True, "num_blocks": 1,
        "depth": depth, "cav_att_config": {"dim": dim, "use_hetero": True, "use_RTE": False, "RTE_ratio": 2,
                                           "heads": 8, "dim_head": 32, "dropout": 0.3},
        "pwindow_att_config": {"dim": dim, "heads": [16, 8, 4], "dim_head": [16, 32, 64], "dropout": 0.3,
                               "window_size": list(windows), "relative_pos_embedding": True,
                               "fusion_method": "split_attn128"},
        "feed_forward": {"mlp_dim": mlp_dim, "dropout": 0.3}}}}


def _count(module):
    return sum(p.numel() for p in module.parameters())


def test_reference_yaml_fusion_net_has_2488569_parameters():
    """Derivation (C = 128, inner = 8 x 32 = 256 for HMSA and 16x16 = 8x32 = 4x64 = 256 for every window branch):

    per layer: HMSA 2 types x (3 x (128*256 + 256) + 256*128 + 128) = 263,936 + W_att/W_msg 2 x 4*8*32*32 = 65,536
    + LN 256 = 329,728; MSwin 3 x (128*768 + 256*128 + 128) = 393,600 + rel. pos. 7^2 + 15^2 + 31^2 = 1,235
    + SplitAttn(128) 128*128 + LN 256 + 128*384 = 65,792 + LN 256 = 460,883; FFN (mlp_dim 128) 2 x 16,512 + LN 256
    = 33,280. 3 layers = 2,471,673, + prior_feed Linear(131, 128) = 16,896 -> 2,488,569. With mlp_dim 256 it would
    be 2,587,257, and OpenCOOD's ``split_attn`` (SplitAttn(256)) cannot run on 128 channels: so the reference
    section is mlp_dim 128 with split_attn128."""
    model = create_model(load_yaml(GENCOMM_M1))
    assert _count(model.fusion_net) == 2_488_569
    assert _count(V2XViTFusion(_section(), channels=128)) == 2_488_569
    assert _count(V2XViTFusion(_section(mlp_dim=256), channels=128)) == 2_587_257
    assert _count(SplitAttn(128)) == 65_792
    names = {n for n, _ in model.fusion_net.named_parameters()}
    assert "fusion_net.encoder.layers.0.0.layers.0.0.fn.relation_att" in names
    assert "fusion_net.encoder.layers.2.1.fn.net.3.weight" in names
    assert "fusion_net.encoder.prior_feed.weight" in names


def _identity_affine(b, l):
    affine = torch.zeros(b, l, l, 2, 3)
    affine[..., 0, 0] = affine[..., 1, 1] = 1.0
    return affine


def test_absent_agents_do_not_change_the_ego_output():
    """Padding: sample 0 with 1 agent gives the same ego map whether or not another sample has 3 agents."""
    torch.manual_seed(0)
    net = V2XViTFusion(_section(dim=16, depth=1, windows=(2, 4, 8)), channels=16).eval()
    x = torch.randn(4, 16, 8, 16)
    alone, _ = net(FusionInput(features=x[:1], record_len=torch.tensor([1]), affine=_identity_affine(1, 5)))
    both, _ = net(FusionInput(features=x, record_len=torch.tensor([1, 3]), affine=_identity_affine(2, 5)))
    assert both.shape == (2, 16, 8, 16)
    assert torch.allclose(alone[0], both[0], atol=1e-5)
    assert not torch.allclose(both[1], net(FusionInput(features=x[1:2], record_len=torch.tensor([1]),
                                                       affine=_identity_affine(1, 5)))[0][0], atol=1e-3)


def test_hmsa_uses_type_specific_projections():
    """An infrastructure collaborator (prior flag 1) goes through the type-1 projections: changing them changes the
    result only when the flag is set."""
    torch.manual_seed(0)
    att = HGTCavAttention(8, heads=2, dim_head=4, dropout=0.0).eval()
    x = torch.randn(1, 2, 3, 3, 8)
    mask = torch.ones(1, 3, 3, 1, 2)
    vehicle = torch.zeros(1, 2, 3, 3, 3)
    infra = vehicle.clone()
    infra[:, 1, ..., 2] = 1.0
    before_v, before_i = att(x, mask, vehicle), att(x, mask, infra)
    with torch.no_grad():
        att.k_linears[1].weight.add_(1.0)
    assert torch.allclose(att(x, mask, vehicle), before_v)
    assert not torch.allclose(att(x, mask, infra), before_i)


def test_window_size_must_divide_the_map():
    net = V2XViTFusion(_section(dim=16, depth=1, windows=(4, 8, 16)), channels=16)
    x = torch.randn(1, 16, 8, 16)
    with pytest.raises(ConfigError, match="window_size \\[16\\] does not divide the 8 x 16"):
        net(FusionInput(features=x, record_len=torch.tensor([1]), affine=_identity_affine(1, 5)))


def test_channel_mismatch_and_unknown_key_are_one_line_errors():
    with pytest.raises(ConfigError, match="cav_att_config.dim = 128 but the fused features have 64"):
        V2XViTFusion(_section(), channels=64)
    bad = _section()
    bad["transformer"]["encoder"]["feed_forward"]["mlp_dims"] = 3
    with pytest.raises(ConfigError, match="unknown key 'model.args.v2xvit.transformer.encoder.feed_forward.mlp_dims'"):
        V2XViTFusion(bad, channels=128)


def test_zoo_v2xvit_forward_backward_and_loss_falls(make_tiny_config):
    hypes, model, criterion, batch = tiny_batch(make_tiny_config, "lidar_v2xvit", batch_size=1)
    check_forward_backward(model, criterion, batch)
    loss_falls(hypes, model, criterion, batch, steps=3, factor=0.5)


@pytest.mark.slow
def test_zoo_v2xvit_train_and_infer_cli(make_tiny_config, tmp_path):
    train_and_infer(make_tiny_config, "lidar_v2xvit", tmp_path)


def test_prior_reaches_the_attention_and_the_delay_encoding():
    """FusionInput.prior (the dataset's agent_prior [delay s, speed, infra]): the infrastructure flag picks the
    type-1 projections; the delay matters only with use_RTE."""
    torch.manual_seed(0)
    section = _section(dim=16, depth=1, windows=(2, 4, 8))
    net = V2XViTFusion(section, channels=16).eval()
    x = torch.randn(2, 16, 8, 16)
    rec, aff = torch.tensor([2]), _identity_affine(1, 5)
    zero = torch.zeros(2, 3)
    infra = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    delayed = torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.0, 0.0]])
    run = lambda m, p: m(FusionInput(features=x, record_len=rec, affine=aff, prior=p))[0]  # noqa: E731
    assert torch.allclose(run(net, None), run(net, zero))
    assert not torch.allclose(run(net, zero), run(net, infra), atol=1e-4)
    assert torch.allclose(run(net, zero), run(net, delayed))
    section["transformer"]["encoder"]["cav_att_config"]["use_RTE"] = True
    torch.manual_seed(0)
    rte = V2XViTFusion(section, channels=16).eval()
    assert not torch.allclose(run(rte, zero), run(rte, delayed), atol=1e-4)
