"""Classic PointPillars baseline = a one-type HeterModelBaseline with OpenCOOD's names: same keys, same numbers."""
import os

import pytest
import torch

from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.models.heter_model_baseline import HeterModelBaseline
from opencood.utils.errors import ConfigError
from opencood.utils.registry import MODELS
from test_heter_model_baseline import RANGE, VFE, pairwise_identityish, random_voxels

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ARGS = {
    "voxel_size": [0.4, 0.4, 4.0], "lidar_range": RANGE, "pillar_vfe": VFE,
    "point_pillar_scatter": {"num_features": 64, "grid_size": [64, 32, 1]},
    "base_bev_backbone": {"layer_nums": [1, 1], "layer_strides": [2, 2], "num_filters": [16, 32],
                          "upsample_strides": [1, 2], "num_upsample_filter": [16, 16]},
    "shrink_header": {"kernal_size": [3], "stride": [2], "padding": [1], "dim": [16], "input_dim": 32},
    "fusion_method": "att", "att": {"feat_dim": 16}, "anchor_number": 2,
    "dir_args": {"dir_offset": 0.7853, "num_bins": 2, "anchor_yaw": [0, 90]},
}




def _keys(module, leaves):
    return [f"{module}.{leaf}" for leaf in leaves.split()]


HEAD_KEYS = [  # state_dict keys of the HEAD (pre-refactor) class for ARGS, in order
    *_keys("pillar_vfe.pfn_layers.0.linear", "weight"),
    *_keys("pillar_vfe.pfn_layers.0.norm", "weight bias running_mean running_var num_batches_tracked"),
    *_keys("backbone.blocks.0.1", "weight"),
    *_keys("backbone.blocks.0.2", "weight bias running_mean running_var num_batches_tracked"),
    *_keys("backbone.blocks.0.4", "weight"),
    *_keys("backbone.blocks.0.5", "weight bias running_mean running_var num_batches_tracked"),
    *_keys("backbone.blocks.1.1", "weight"),
    *_keys("backbone.blocks.1.2", "weight bias running_mean running_var num_batches_tracked"),
    *_keys("backbone.blocks.1.4", "weight"),
    *_keys("backbone.blocks.1.5", "weight bias running_mean running_var num_batches_tracked"),
    *_keys("backbone.deblocks.0.0", "weight"),
    *_keys("backbone.deblocks.0.1", "weight bias running_mean running_var num_batches_tracked"),
    *_keys("backbone.deblocks.1.0", "weight"),
    *_keys("backbone.deblocks.1.1", "weight bias running_mean running_var num_batches_tracked"),
    *_keys("shrink_conv.layers.0.double_conv.0", "weight bias"),
    *_keys("shrink_conv.layers.0.double_conv.2", "weight bias"),
    *_keys("cls_head", "weight bias"),
    *_keys("reg_head", "weight bias"),
    *_keys("dir_head", "weight bias"),
]

# (sum, sum of squares) of each output of the HEAD class, eval mode, seed 0 for the weights, batch seed 0.
HEAD_OUTPUTS = {"cls_preds": (33.076398, 6.680191), "reg_preds": (48.842871, 42.382341),
                "dir_preds": (89.477717, 25.191771), "fused_feature": (61.603441, 3.925429)}


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"processed_lidar": random_voxels(3, g), "record_len": torch.tensor([2, 1]),
            "pairwise_t_matrix": pairwise_identityish(2)}


def test_state_dict_keys_and_outputs_equal_the_pre_refactor_class():
    torch.manual_seed(0)
    model = MODELS.get("point_pillar_baseline")(ARGS).eval()
    assert isinstance(model, HeterModelBaseline)
    assert list(model.state_dict()) == HEAD_KEYS
    with torch.no_grad():
        out = model(_batch())
    for name, (total, squares) in HEAD_OUTPUTS.items():
        t = out[name].double()
        assert float(t.sum()) == pytest.approx(total, rel=1e-5, abs=1e-4), name
        assert float((t * t).sum()) == pytest.approx(squares, rel=1e-5), name


@pytest.mark.parametrize("path,params", [("opencood/hypes_yaml/opv2v/LiDAROnly/lidar_att.yaml", 8_058_388),
                                         ("opencood/hypes_yaml/demo/m1_pointpillar_attfuse.yaml", 293_844)])
def test_shipped_yamls_build_with_the_same_parameter_count(path, params):
    h = load_yaml(os.path.join(REPO, path))
    model = MODELS.get(h["model"]["core_method"])(h["model"]["args"])
    assert sum(p.numel() for p in model.parameters()) == params


def test_classic_checks_and_aliases():
    args = dict(ARGS, anchor_num=ARGS["anchor_number"])
    del args["anchor_number"]
    assert MODELS.get("point_pillar_baseline")(args).cls_head.out_channels == 2
    no_shrink = {k: v for k, v in ARGS.items() if k != "shrink_header"}
    no_shrink["att"] = {"feat_dim": 32}
    model = MODELS.get("point_pillar_baseline")(no_shrink)  # heads on the backbone's 32 channels
    assert model.cls_head.in_channels == 32 and "shrink_conv." not in "".join(model.state_dict())
    with pytest.raises(ConfigError, match="model.args.shrink_header.input_dim = 64 but backbone outputs 32"):
        MODELS.get("point_pillar_baseline")(dict(ARGS, shrink_header=dict(ARGS["shrink_header"], input_dim=64)))
    with pytest.raises(ConfigError, match="key 'model.args.compression' = 32 is not one of 0"):
        MODELS.get("point_pillar_baseline")(dict(ARGS, compression=32))


@pytest.mark.parametrize("name", ["point_pillar_baseline", "point_pillar_intermediate", "point_pillar_opv2v",
                                  "point_pillar_attfuse"])
def test_aliases(name):
    assert MODELS.get(name) is MODELS.get("point_pillar_baseline")


def test_forward_and_classic_keys():
    model = MODELS.get("point_pillar_baseline")(ARGS)
    out = model(_batch())
    assert out["cls_preds"].shape == (2, 2, 8, 16)
    assert out["reg_preds"].shape == (2, 14, 8, 16)
    assert out["dir_preds"].shape == (2, 4, 8, 16)
    prefixes = {k.split(".")[0] for k in model.state_dict()}
    assert prefixes == {"pillar_vfe", "backbone", "shrink_conv", "cls_head", "reg_head", "dir_head"}
