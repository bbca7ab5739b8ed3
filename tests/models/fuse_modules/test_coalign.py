"""CoAlign's multi-scale fusion model (heter_model_baseline_ms) and its uncertainty detector."""
import copy

import pytest
import torch

from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.tools.train_utils import create_model
from opencood.utils.errors import ConfigError
from tests.models.fuse_modules.zoo_helpers import fit_steps, tiny_batch

TINY = "opencood/hypes_yaml/demo/zoo/lidar_coalign.yaml"
FULL = "opencood/hypes_yaml/opv2v/LiDAROnly/lidar_coalign.yaml"
UNC = "opencood/hypes_yaml/demo/zoo/lidar_coalign_uncertainty.yaml"


def basic_block(cin, c, stride):
    n = 9 * cin * c + 9 * c * c + 4 * c
    return n + ((cin * c + 2 * c) if stride != 1 or cin != c else 0)


def test_full_config_counts_from_the_layer_lists():
    model = create_model(load_yaml(FULL))
    count = lambda prefix: sum(p.numel() for k, p in model.named_parameters() if k.startswith(prefix))  # noqa: E731
    expect, cin = 0, 64
    for num, s, c, uc, u in zip([3, 5, 8], [1, 2, 2], [64, 128, 256], [128, 128, 128], [1, 2, 4]):
        expect += basic_block(cin, c, s) + (num - 1) * basic_block(c, c, 1) + c * uc * u * u + 2 * uc
        cin = c
    assert count("backbone.") == expect
    assert count("backbone_m1.") == basic_block(64, 64, 2) + 2 * basic_block(64, 64, 1)
    assert count("fusion_net.") == 0 and len(model.fusion_net) == 3  # parameter-free AttFuse per level
    assert model.fusion_net[2].feat_dim == 256 and model.has_unused_parameters


def test_per_level_channels_are_checked():
    hypes = load_yaml(TINY)
    bad = copy.deepcopy(hypes)
    bad["model"]["args"]["att"]["feat_dim"] = [32, 64]
    with pytest.raises(ConfigError, match=r"att.feat_dim has 2 entries but the backbone has 3 levels"):
        create_model(bad)
    bad["model"]["args"]["att"]["feat_dim"] = [32, 64, 128]
    with pytest.raises(ConfigError, match=r"att.feat_dim\[2\] = 128 but backbone level 2 outputs 64 channels"):
        create_model(bad)


def test_multiscale_att_trains_on_the_tiny_world(make_tiny_config):
    hypes, _, batch = tiny_batch(make_tiny_config(TINY))
    _, _, losses, out = fit_steps(hypes, batch, steps=4)
    assert out["cls_preds"].shape == (2, 2, 32, 64) and out["fused_feature"].shape == (2, 64, 32, 64)
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < 0.8 * losses[0]


def test_multiscale_where2comm_with_single_heads(make_tiny_config):
    cfg = load_yaml(make_tiny_config(TINY))
    args = cfg["model"]["args"]
    args.pop("att")
    args.update(fusion_method="where2comm", supervise_single=True, in_head_single=32,
                where2comm={"multi_scale": True, "communication": {"thre": 0.3}, "agg_operator": {"mode": "MAX"}})
    from opencood.data_utils.datasets import build_dataset
    from opencood.tools.train_utils import create_loss
    ds = build_dataset(cfg, train=True)
    batch = ds.collate_batch_train([ds[0], ds[1]])
    model, criterion = create_model(cfg), create_loss(cfg)
    total, terms = model.training_step(batch, criterion)
    total.backward()
    assert "cls_loss_single" in terms and float(terms["total_loss"]) == pytest.approx(float(total.detach()))
    out = model(batch["ego"])
    n = int(batch["ego"]["record_len"].sum())
    assert out["cls_preds_single"].shape == (n, 2, 32, 64) and 0.0 <= float(out["comm_rate"]) <= 1.0
    args["supervise_single"] = False
    with pytest.raises(ConfigError, match="needs the single-agent heads"):
        create_model(cfg)


def test_uncertainty_model_outputs_and_trains(make_tiny_config):
    hypes, _, batch = tiny_batch(make_tiny_config(UNC), n=2)
    model, criterion, losses, out = fit_steps(hypes, batch, steps=6)
    assert out["unc_preds"].shape == (2, 6, 32, 64)
    assert "uncertainty_loss" in criterion.loss_tensors
    assert losses[-1] < 0.8 * losses[0]
    assert model.unc_head.weight.shape == (6, 64, 1, 1)


def _classic_ms_args(**over):
    from tests.models.test_heter_model_baseline import RANGE, VFE
    args = {"voxel_size": [0.4, 0.4, 4.0], "lidar_range": RANGE, "pillar_vfe": VFE,
            "point_pillar_scatter": {"num_features": 64, "grid_size": [64, 32, 1]},
            "base_bev_backbone": {"resnet": True, "layer_nums": [1, 1, 1], "layer_strides": [2, 2, 2],
                                  "num_filters": [64, 32, 32], "upsample_strides": [1, 2, 4],
                                  "num_upsample_filter": [16, 16, 16]},
            "shrink_header": {"kernal_size": [3], "stride": [1], "padding": [1], "dim": [16], "input_dim": 48},
            "fusion_method": "att", "att": {"feat_dim": [64, 32, 32]}, "anchor_number": 2,
            "dir_args": {"dir_offset": 0.7853, "num_bins": 2, "anchor_yaw": [0, 90]}}
    args.update(over)
    return args


@pytest.mark.parametrize("fusion", ["att", "max", "where2comm"])
def test_classic_multiscale_model_fuses_every_level(fusion):
    from opencood.utils.registry import MODELS
    from tests.models.test_heter_model_baseline import pairwise_identityish, random_voxels
    over = {"fusion_method": fusion}
    if fusion != "att":
        over["att"] = None
    if fusion == "where2comm":
        over["where2comm"] = {"multi_scale": True, "communication": {"thre": 0.4}}
    args = {k: v for k, v in _classic_ms_args(**over).items() if v is not None}
    torch.manual_seed(0)
    model = MODELS.get("point_pillar_baseline_multiscale")(args)
    g = torch.Generator().manual_seed(0)
    batch = {"processed_lidar": random_voxels(3, g), "record_len": torch.tensor([2, 1]),
             "pairwise_t_matrix": pairwise_identityish(2)}
    out = model(batch)
    assert out["cls_preds"].shape == (2, 2, 16, 32) and out["fused_feature"].shape == (2, 16, 16, 32)
    sum(v.float().sum() for k, v in out.items() if k.endswith("_preds")).backward()
    assert model.backbone.resnet.layer0[0].conv1.weight.grad is not None  # level 0 is fused too (HEAL's layout)
    if fusion == "where2comm":
        assert 0.0 <= float(out["comm_rate"]) <= 1.0 and out["comm_mask"].shape == (3, 1, 16, 32)
    keys = model.state_dict().keys()
    assert "pillar_vfe.pfn_layers.0.linear.weight" in keys and "backbone.resnet.layer2.0.conv1.weight" in keys
    with pytest.raises(ConfigError, match=r"att.feat_dim\[1\] = 64 but backbone level 1 outputs 32 channels"):
        MODELS.get("point_pillar_baseline_multiscale")(_classic_ms_args(att={"feat_dim": [64, 64, 32]}))
