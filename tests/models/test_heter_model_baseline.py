import copy

import pytest
import torch

from opencood.utils.errors import DataError
from opencood.utils.registry import MODELS

RANGE = [-12.8, -6.4, -3.0, 12.8, 6.4, 1.0]  # grid 64 x 32 at 0.4 m
VFE = {"use_norm": True, "with_distance": False, "use_absolute_xyz": True, "num_filters": [64]}
ENC = {"voxel_size": [0.4, 0.4, 4.0], "lidar_range": RANGE, "pillar_vfe": VFE,
       "point_pillar_scatter": {"num_features": 64, "grid_size": [64, 32, 1]}}
ARGS = {
    "lidar_range": RANGE,
    "ego_modality": "m1",
    "m1": {"core_method": "point_pillar", "sensor_type": "lidar", "encoder_args": ENC,
           "backbone_args": {"layer_nums": [1, 1], "layer_strides": [2, 2], "num_filters": [16, 32],
                             "upsample_strides": [1, 2], "num_upsample_filter": [16, 16], "inplanes": 64},
           "shrink_header": {"kernal_size": [3], "stride": [2], "padding": [1], "dim": [16], "input_dim": 32}},
    "m2": {"core_method": "point_pillar", "sensor_type": "lidar", "encoder_args": ENC, "backbone_args": "identity",
           "shrink_header": {"kernal_size": [3], "stride": [4], "padding": [1], "dim": [16], "input_dim": 64}},
    "fusion_method": "att", "att": {"feat_dim": 16},
    "in_head": 16, "anchor_number": 2, "dir_args": {"dir_offset": 0.7853, "num_bins": 2, "anchor_yaw": [0, 90]},
}


def random_voxels(n_agents, g, voxels_per_agent=30, p=8):
    coords, feats, nums = [], [], []
    for a in range(n_agents):
        cells = torch.randperm(64 * 32, generator=g)[:voxels_per_agent]
        y, x = cells // 64, cells % 64
        coords.append(torch.stack([torch.full_like(y, a), torch.zeros_like(y), y, x], 1))
        pts = torch.rand(voxels_per_agent, p, 4, generator=g)
        pts[..., 0] = RANGE[0] + (x.view(-1, 1) + pts[..., 0]) * 0.4
        pts[..., 1] = RANGE[1] + (y.view(-1, 1) + pts[..., 1]) * 0.4
        pts[..., 2] = pts[..., 2] * 4 - 3
        num = torch.randint(1, p + 1, (voxels_per_agent,), generator=g)
        pts[torch.arange(p).view(1, -1) >= num.view(-1, 1)] = 0
        feats.append(pts)
        nums.append(num)
    return {"voxel_features": torch.cat(feats), "voxel_coords": torch.cat(coords).int(),
            "voxel_num_points": torch.cat(nums).int()}


def pairwise_identityish(b, L=5):
    t = torch.eye(4).repeat(b, L, L, 1, 1)
    t[0, 1, 0, 0, 3] = 2.0  # agent 1 of sample 0 sits 2 m ahead of the ego
    t[0, 0, 1, 0, 3] = -2.0
    return t


def make_batch(g):
    return {
        "inputs_m1": random_voxels(2, g), "inputs_m2": random_voxels(1, g),
        "agent_modality_list": ["m1", "m2", "m1"], "record_len": torch.tensor([2, 1]),
        "pairwise_t_matrix": pairwise_identityish(2),
    }


def test_forward_backward_and_heal_keys():
    torch.manual_seed(0)
    model = MODELS.get("heter_model_baseline")(copy.deepcopy(ARGS))
    out = model(make_batch(torch.Generator().manual_seed(0)))
    assert out["cls_preds"].shape == (2, 2, 8, 16)
    assert out["reg_preds"].shape == (2, 14, 8, 16)
    assert out["dir_preds"].shape == (2, 4, 8, 16)
    (out["cls_preds"].sum() + out["reg_preds"].sum() + out["dir_preds"].sum()).backward()
    for name in ("encoder_m1.pillar_vfe.pfn_layers.0.linear.weight", "encoder_m2.pillar_vfe.pfn_layers.0.linear.weight",
                 "backbone_m1.blocks.0.1.weight", "shrinker_m1.layers.0.double_conv.0.weight",
                 "shrinker_m2.layers.0.double_conv.0.weight", "cls_head.weight", "reg_head.weight",
                 "dir_head.weight"):
        p = dict(model.named_parameters())[name]
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    keys = model.state_dict().keys()
    assert "encoder_m1.pillar_vfe.pfn_layers.0.norm.running_mean" in keys
    assert not any(k.startswith("backbone_m2.") for k in keys)  # identity backbone has no params


def test_features_restacked_in_agent_order():
    torch.manual_seed(0)
    model = MODELS.get("heter_model_baseline")(copy.deepcopy(ARGS)).eval()
    batch = make_batch(torch.Generator().manual_seed(1))
    feats, extras, aux = model.encode_agents(batch)
    assert feats.shape == (3, 16, 8, 16) and extras == {} and aux == {}
    m1, _ = model.encode_type(batch, "m1")
    m2, _ = model.encode_type(batch, "m2")
    assert torch.allclose(feats[0], m1[0]) and torch.allclose(feats[2], m1[1]) and torch.allclose(feats[1], m2[0])


def test_single_modality_without_list_and_max_fusion():
    args = copy.deepcopy(ARGS)
    del args["m2"], args["att"]
    args["fusion_method"] = "max"
    model = MODELS.get("heter_model_baseline")(args)
    g = torch.Generator().manual_seed(2)
    batch = {"inputs_m1": random_voxels(3, g), "record_len": torch.tensor([2, 1]),
             "pairwise_t_matrix": pairwise_identityish(2)}
    assert model(batch)["cls_preds"].shape == (2, 2, 8, 16)


def test_unknown_modality_in_batch():
    model = MODELS.get("heter_model_baseline")(copy.deepcopy(ARGS))
    batch = make_batch(torch.Generator().manual_seed(0))
    batch["agent_modality_list"] = ["m1", "m7", "m1"]
    with pytest.raises(DataError, match="m7"):
        model(batch)


def test_camera_crop_pads_to_lidar_grid():
    model = MODELS.get("heter_model_baseline")(copy.deepcopy(ARGS))
    model.crop_ratio["m2"] = (1.0, 2.0)  # camera grid +-51.2 m vs LiDAR 102.4 x 51.2 m
    cam = torch.rand(1, 3, 8, 8) + 1
    out = model.crop_to_lidar_grid(cam, "m2")
    assert out.shape == (1, 3, 8, 16)
    assert torch.equal(out[..., 4:12], cam) and out[..., :4].abs().sum() == 0 and out[..., 12:].abs().sum() == 0
    assert model.crop_to_lidar_grid(cam, "m1") is cam


def _m1_opv2v_params():
    """The GenComm stage-1 m1_att model section before yaml derivation (OPV2V-H range)."""
    full = [-102.4, -51.2, -3, 102.4, 51.2, 1]
    return {
        "cav_lidar_range": full,
        "preprocess": {"core_method": "SpVoxelPreprocessor", "cav_lidar_range": full,
                       "args": {"voxel_size": [0.4, 0.4, 4], "max_points_per_voxel": 32,
                                "max_voxel_train": 32000, "max_voxel_test": 70000}},
        "heter": {"modality_setting": {"m1": {"sensor_type": "lidar", "core_method": "point_pillar",
                                              "preprocess": {"core_method": "SpVoxelPreprocessor",
                                                             "args": {"voxel_size": [0.4, 0.4, 4]}}}}},
        "model": {"core_method": "heter_model_baseline", "args": {
            "lidar_range": full,
            "m1": {"core_method": "point_pillar", "sensor_type": "lidar",
                   "encoder_args": {"voxel_size": [0.4, 0.4, 4], "lidar_range": full, "pillar_vfe": VFE,
                                    "point_pillar_scatter": {"num_features": 64}},
                   "backbone_args": {"layer_nums": [3, 5, 8], "layer_strides": [2, 2, 2],
                                     "num_filters": [64, 128, 256], "upsample_strides": [1, 2, 4],
                                     "num_upsample_filter": [128, 128, 128]},
                   "shrink_header": {"kernal_size": [3], "stride": [2], "padding": [1], "dim": [128],
                                     "input_dim": 384}},
            "fusion_method": "att", "att": {"feat_dim": 128}, "in_head": 128, "anchor_number": 2,
            "dir_args": {"dir_offset": 0.7853, "num_bins": 2, "anchor_yaw": [0, 90]}}},
    }


def test_m1_config_from_yaml_parser_param_counts():
    from opencood.hypes_yaml.yaml_utils import load_general_params

    param = load_general_params(_m1_opv2v_params())
    model = MODELS.get(param["model"]["core_method"])(param["model"]["args"])
    assert model.encoder_m1.scatter.nx == 512 and model.encoder_m1.scatter.ny == 256

    def count(prefix):
        return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix))

    # paper Table A.2: L64P 6.58 M (encoder + backbone)
    assert count("encoder_m1.") + count("backbone_m1.") == 768 + 6_577_408
    assert count("shrinker_m1.") == 384 * 128 * 9 + 128 + 128 * 128 * 9 + 128
    assert count("cls_head.") + count("reg_head.") + count("dir_head.") == (128 + 1) * (2 + 14 + 4)


# (sum, sum of squares) of each output of the pre-refactor model, eval mode, seed 0 for weights and batch.
HEAD_OUTPUTS = {"cls_preds": (51.669901, 7.236771), "reg_preds": (-81.13348, 71.91209),
                "dir_preds": (-78.299554, 36.91445), "fused_feature": (60.572106, 3.340401)}


def test_outputs_equal_the_pre_refactor_model_and_forward_stores_nothing():
    from tests.models.module_state import attribute_snapshot

    torch.manual_seed(0)
    model = MODELS.get("heter_model_baseline")(copy.deepcopy(ARGS)).eval()
    before = attribute_snapshot(model)
    with torch.no_grad():
        out = model(make_batch(torch.Generator().manual_seed(0)))
    assert attribute_snapshot(model) == before
    for name, (total, squares) in HEAD_OUTPUTS.items():
        t = out[name].double()
        assert float(t.sum()) == pytest.approx(total, rel=1e-5, abs=1e-4), name
        assert float((t * t).sum()) == pytest.approx(squares, rel=1e-5), name


def test_fusion_gets_one_typed_input_and_encoder_aux_reaches_the_output():
    from opencood.models.fuse_modules.fusion_input import FusionInput

    model = MODELS.get("heter_model_baseline")(copy.deepcopy(ARGS))
    seen = []
    model.fusion_net.register_forward_hook(lambda m, inp, out: seen.append((inp, out)))
    marker, encode = torch.zeros(1), model.encoder_m2.forward
    model.encoder_m2.forward = lambda data_dict, m: (encode(data_dict, m)[0], {"depth_items": marker})
    out = model(make_batch(torch.Generator().manual_seed(0)))
    (inp,), (fused, aux) = seen[0]
    assert isinstance(inp, FusionInput) and inp.features.shape == (3, 16, 8, 16)
    assert inp.agent_types == ["m1", "m2", "m1"] and inp.affine.shape == (2, 5, 5, 2, 3)
    assert inp.cell == pytest.approx((1.6, 1.6)) and aux == {} and fused.shape == (2, 16, 8, 16)
    assert out["depth_items_m2"] is marker and "depth_items_m1" not in out


# Parameter counts (all, trainable) of every shipped experiment before the refactor (full-geometry m3: the
# reference's stage-2 backbone of 193,280 since issue 18, 414,208 fewer than the earlier 128-filter one).
SHIPPED_COUNTS = {
    "demo/gencomm/stage1/m1_att.yaml": (420_592, 420_592),
    "demo/gencomm/stage1/m2_att.yaml": (13_329_628, 13_329_628),
    "demo/gencomm/stage1/m3_att.yaml": (1_016_432, 1_016_432),
    "demo/gencomm/stage1/m4_att.yaml": (1_922_208, 1_922_208),
    "demo/gencomm/stage2/m1m2_att.yaml": (13_677_968, 55_796),
    "demo/gencomm/stage2/m1m2m3m4_att_infer.yaml": (16_472_104, 167_388),
    "demo/gencomm/stage2/m1m3_att.yaml": (1_364_772, 55_796),
    "demo/gencomm/stage2/m1m4_att.yaml": (2_270_548, 55_796),
    "demo/m1_pointpillar_attfuse.yaml": (293_844, 293_844),
    "exemplar.yaml": (27_711_312, 27_711_312),
    "opv2v/GenComm_yamls/gencomm/stage1/m1_att.yaml": (7_461_296, 7_461_296),
    "opv2v/GenComm_yamls/gencomm/stage1/m2_att.yaml": (20_440_028, 20_440_028),
    "opv2v/GenComm_yamls/gencomm/stage1/m3_att.yaml": (1_480_944, 1_480_944),
    "opv2v/GenComm_yamls/gencomm/stage1/m4_att.yaml": (9_032_608, 9_032_608),
    "opv2v/GenComm_yamls/gencomm/stage2/m1m2_att.yaml": (27_711_312, 103_028),
    "opv2v/GenComm_yamls/gencomm/stage2/m1m2m3m4_att_infer.yaml": (37_844_840, 309_084),
    "opv2v/GenComm_yamls/gencomm/stage2/m1m3_att.yaml": (8_752_228, 103_028),
    "opv2v/GenComm_yamls/gencomm/stage2/m1m4_att.yaml": (16_303_892, 103_028),
    "opv2v/LiDAROnly/lidar_att.yaml": (8_058_388, 8_058_388),
}


@pytest.mark.parametrize("rel", sorted(SHIPPED_COUNTS))
def test_shipped_configs_build_with_unchanged_parameter_counts(rel):
    import os

    from opencood.hypes_yaml.yaml_utils import load_yaml

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    h = load_yaml(os.path.join(repo, "opencood/hypes_yaml", rel))
    cls = MODELS.get(h["model"]["core_method"])
    chain = cls.feature_chain(h["model"]["args"])  # the loader-time check, without building
    model = cls(h["model"]["args"])
    assert tuple(model.feature.shape) == chain.output.shape
    total = sum(p.numel() for p in model.parameters())
    assert (total, model.trainable_parameter_count()) == SHIPPED_COUNTS[rel]


def test_every_registered_component_declares_its_config():
    from opencood.models.base_model import CooperativeModel
    from opencood.utils.config import Schema
    from opencood.utils.registry import ENCODERS, FUSION_MODULES

    for name in MODELS.names():
        cls = MODELS.get(name)
        assert issubclass(cls, CooperativeModel) and isinstance(cls.CONFIG, Schema), name
    for name in ENCODERS.names():
        cls = ENCODERS.get(name)
        assert isinstance(cls.CONFIG, Schema) and callable(cls.feature_info), name
    for name in FUSION_MODULES.names():
        assert isinstance(FUSION_MODULES.get(name).CONFIG, Schema), name
