import pytest
import torch

from opencood.utils.registry import MODELS
from test_heter_model_baseline import RANGE, VFE, pairwise_identityish, random_voxels

ARGS = {
    "voxel_size": [0.4, 0.4, 4.0], "lidar_range": RANGE, "pillar_vfe": VFE,
    "point_pillar_scatter": {"num_features": 64, "grid_size": [64, 32, 1]},
    "base_bev_backbone": {"layer_nums": [1, 1], "layer_strides": [2, 2], "num_filters": [16, 32],
                          "upsample_strides": [1, 2], "num_upsample_filter": [16, 16]},
    "shrink_header": {"kernal_size": [3], "stride": [2], "padding": [1], "dim": [16], "input_dim": 32},
    "fusion_method": "att", "att": {"feat_dim": 16}, "anchor_number": 2,
    "dir_args": {"dir_offset": 0.7853, "num_bins": 2, "anchor_yaw": [0, 90]},
}


@pytest.mark.parametrize("name", ["point_pillar_baseline", "point_pillar_intermediate", "point_pillar_opv2v",
                                  "point_pillar_attfuse"])
def test_aliases(name):
    assert MODELS.get(name) is MODELS.get("point_pillar_baseline")


def test_forward_and_classic_keys():
    model = MODELS.get("point_pillar_baseline")(ARGS)
    g = torch.Generator().manual_seed(0)
    batch = {"processed_lidar": random_voxels(3, g), "record_len": torch.tensor([2, 1]),
             "pairwise_t_matrix": pairwise_identityish(2)}
    out = model(batch)
    assert out["cls_preds"].shape == (2, 2, 8, 16)
    assert out["reg_preds"].shape == (2, 14, 8, 16)
    assert out["dir_preds"].shape == (2, 4, 8, 16)
    prefixes = {k.split(".")[0] for k in model.state_dict()}
    assert prefixes == {"pillar_vfe", "backbone", "shrink_conv", "cls_head", "reg_head", "dir_head"}
