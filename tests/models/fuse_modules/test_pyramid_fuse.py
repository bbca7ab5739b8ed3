"""Pyramid Fusion (HEAL, spec §C1): weighted fusion maths, HEAL parameter names/counts, training on the tiny world."""
import torch

from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.models.fuse_modules.pyramid_fuse import PyramidFusion, weighted_fuse
from opencood.tools.train_utils import create_model
from tests.models.fuse_modules.zoo_helpers import fit_steps, tiny_batch

TINY = "opencood/hypes_yaml/demo/zoo/lidar_pyramid.yaml"
FULL = "opencood/hypes_yaml/opv2v/LiDAROnly/lidar_pyramid.yaml"


def identity_affine(b, L=5):
    return torch.eye(2, 3).expand(b, L, L, 2, 3).clone()


def test_weighted_fuse_is_the_softmax_of_scores_over_agents():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 6, 8)  # sample 0: agents 0, 1; sample 1: agent 2
    s = torch.rand(3, 1, 6, 8) + 0.1
    out = weighted_fuse(x, s, torch.tensor([2, 1]), identity_affine(2))
    w = torch.softmax(s[:2], dim=0)
    assert torch.allclose(out[0], (w * x[:2]).sum(0), atol=1e-5)
    assert torch.allclose(out[1], x[2], atol=1e-6)  # one agent: weight 1
    s[1] = 0  # an agent that sends nothing has no weight; where nobody sends, the result is 0 (not NaN)
    s[0, :, :2] = 0
    out = weighted_fuse(x, s, torch.tensor([2, 1]), identity_affine(2))
    assert torch.allclose(out[0, :, 2:], x[0, :, 2:], atol=1e-6)
    assert torch.equal(out[0, :, :2], torch.zeros(4, 2, 8))


def _bottleneck(cin, planes, stride):
    w = planes * 2  # ResNeXt 32 x 4d, expansion 1: width = planes * 4 / 64 * 32
    n = cin * w + 2 * w + w * (w // 32) * 9 + 2 * w + w * planes + 2 * planes
    if stride != 1 or cin != planes:
        n += cin * planes + 2 * planes
    return n


def _pyramid_count(cin, layer_nums, strides, filters, ups, up_filters):
    n = 0
    for num, s, c, u, uc in zip(layer_nums, strides, filters, ups, up_filters):
        n += _bottleneck(cin, c, s) + (num - 1) * _bottleneck(c, c, 1)
        n += c * uc * u * u + 2 * uc  # deblock ConvTranspose (no bias) + BN
        n += c + 1  # occupancy head 1x1
        cin = c
    return n


def test_full_config_parameter_counts_from_the_layer_lists():
    model = create_model(load_yaml(FULL))
    count = lambda prefix: sum(p.numel() for k, p in model.named_parameters() if k.startswith(prefix))  # noqa: E731
    assert count("pyramid_backbone.") == _pyramid_count(64, [3, 5, 8], [1, 2, 2], [64, 128, 256], [1, 2, 4],
                                                        [128, 128, 128])
    basic = lambda cin, c, s: 9 * cin * c + 9 * c * c + 4 * c + ((cin * c + 2 * c) if s != 1 or cin != c else 0)  # noqa
    assert count("backbone_m1.") == basic(64, 64, 2) + 2 * basic(64, 64, 1)
    assert count("shrink_conv.") == (384 * 256 * 9 + 256) + (256 * 256 * 9 + 256)
    assert count("cls_head.") == 256 * 2 + 2 and count("reg_head.") == 256 * 14 + 14
    keys = model.state_dict().keys()
    assert "pyramid_backbone.resnet.layer0.0.conv2.weight" in keys and "pyramid_backbone.single_head_2.bias" in keys
    assert "backbone_m1.resnet.layer0.0.downsample.0.weight" in keys


def test_forward_shapes_occupancy_labels_and_loss_falls(make_tiny_config):
    hypes, ds, batch = tiny_batch(make_tiny_config(TINY), n=1)
    ego = batch["ego"]
    n = int(ego["record_len"].sum())
    assert ego["label_dict_single"]["pos_equal_one"].shape == (n, 32, 64, 2)
    assert ego["label_dict_single"]["pos_equal_one"].sum() > 0
    model, criterion, losses, out = fit_steps(hypes, batch, steps=5)
    assert out["cls_preds"].shape == (1, 2, 32, 64) and out["reg_preds"].shape == (1, 14, 32, 64)
    assert [tuple(o.shape) for o in out["occ_single_list"]] == [(n, 1, 32, 64), (n, 1, 16, 32), (n, 1, 8, 16)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert "pyramid_loss" in criterion.loss_tensors and float(criterion.loss_tensors["pyramid_loss"]) > 0
    assert losses[-1] < 0.8 * losses[0]


def test_forward_single_and_untouched_collab_equivalence():
    """One agent per sample: collaborative fusion equals the single-agent pass (weights are 1)."""
    torch.manual_seed(0)
    cfg = {"resnext": True, "layer_nums": [1, 1], "layer_strides": [1, 2], "num_filters": [32, 32],
           "upsample_strides": [1, 2], "num_upsample_filter": [16, 16]}
    net = PyramidFusion(cfg, 32).eval()
    x = torch.randn(2, 32, 8, 16)
    single, occ_s = net.forward_single(x)
    collab, occ_c = net.forward_collab(x, torch.tensor([1, 1]), identity_affine(2))
    assert single.shape == (2, 32, 8, 16) and torch.allclose(single, collab, atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(occ_s, occ_c))
