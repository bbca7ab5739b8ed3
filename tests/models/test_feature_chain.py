"""The channel/stride chain: each module's reported output equals what it computes, and every hand-written
channel number / the anchor stride is checked against it with a one-line ConfigError naming both values."""
import copy
import re

import pytest
import torch

from opencood.models.heter_model_baseline import HeterModelBaseline
from opencood.models.sub_modules.base_bev_backbone import BaseBEVBackbone
from opencood.models.sub_modules.downsample_conv import DownsampleConv
from opencood.models.sub_modules.feature_info import FeatureInfo
from opencood.models.sub_modules.point_pillar_encoder import PointPillar
from opencood.utils.errors import ConfigError
from opencood.utils.registry import MODELS
from test_gencomm_model import ARGS as GENCOMM_ARGS
from test_heter_model_baseline import ARGS, ENC, make_batch


def build(name="heter_model_baseline", **changes):
    args = copy.deepcopy(GENCOMM_ARGS if "gencomm" in name else ARGS)
    for dotted, value in changes.items():
        node, *path, last = [args] + dotted.split("__")
        for part in path:
            node = node[part]
        if value is None:
            del node[last]
        else:
            node[last] = value
    torch.manual_seed(0)
    return MODELS.get(name)(args)


def one_line_error(fn, *words):
    with pytest.raises(ConfigError) as err:
        fn()
    msg = str(err.value)
    assert "\n" not in msg
    for word in words:
        assert word in msg, msg
    return msg


@pytest.mark.parametrize("cfg", [
    {"layer_nums": [1, 1], "layer_strides": [2, 2], "num_filters": [8, 16], "upsample_strides": [1, 2],
     "num_upsample_filter": [8, 8]},
    {"layer_nums": [1, 1, 1], "layer_strides": [1, 2, 2], "num_filters": [8, 8, 8], "upsample_strides": [1, 2, 4],
     "num_upsample_filter": [4, 4, 4]},
    {"layer_nums": [1, 1], "layer_strides": [2, 1], "num_filters": [8, 8], "upsample_strides": [0.5, 0.5],
     "num_upsample_filter": [8, 4]},
    {"layer_nums": [1, 1], "layer_strides": [2, 2], "num_filters": [8, 12]},  # no upsampling
])
def test_backbone_info_matches_its_output(cfg):
    net = BaseBEVBackbone(cfg, 4)
    x = torch.randn(1, 4, 20, 36)
    info = BaseBEVBackbone.feature_info(cfg, FeatureInfo(4, (0.4, 0.4), (20, 36)))
    out = net(x)
    assert info.shape == tuple(out.shape[1:])
    assert info.cell == pytest.approx((0.4 * 36 / out.shape[-1],) * 2)


def test_backbone_levels_of_different_sizes_are_a_config_error():
    cfg = {"layer_nums": [1, 1], "layer_strides": [2, 2], "num_filters": [8, 8], "upsample_strides": [1, 1],
           "num_upsample_filter": [8, 8]}
    one_line_error(lambda: BaseBEVBackbone.feature_info(cfg, FeatureInfo(4, (0.4, 0.4), (16, 16))),
                   "layer_strides / upsample_strides")


@pytest.mark.parametrize("stride,kernel,padding", [(1, 3, 1), (2, 3, 1), (2, 3, 0), (4, 3, 1)])
def test_shrink_header_info_matches_its_output(stride, kernel, padding):
    cfg = {"kernal_size": [kernel], "stride": [stride], "padding": [padding], "dim": [6], "input_dim": 5}
    out = DownsampleConv(cfg)(torch.randn(1, 5, 17, 30))
    info = DownsampleConv.feature_info(cfg, FeatureInfo(5, (0.4, 0.4), (17, 30)))
    assert info.shape == tuple(out.shape[1:]) and info.cell == pytest.approx((0.4 * stride,) * 2)


def test_pillar_encoder_info_and_grid_from_bev_grid():
    enc = dict(ENC, point_pillar_scatter={"num_features": 64})  # grid_size not derived: computed
    info = PointPillar.feature_info(enc)
    assert info.shape == (64, 32, 64) and info.cell == (0.4, 0.4)
    assert (PointPillar(enc).scatter.nx, PointPillar(enc).scatter.ny) == (64, 32)
    one_line_error(lambda: PointPillar.feature_info(dict(ENC, point_pillar_scatter={"num_features": 32})),
                   "point_pillar_scatter.num_features = 32", "pillar_vfe outputs 64 channels")
    bad_grid = dict(ENC, point_pillar_scatter={"num_features": 64, "grid_size": [32, 16, 1]})
    one_line_error(lambda: PointPillar.feature_info(bad_grid), "[32, 16, 1]", "[64, 32, 1]")


def test_chain_equals_the_built_model_and_builds_nothing(monkeypatch):
    model = build().eval()
    with torch.no_grad():
        features, _, _ = model.encode_agents(make_batch(torch.Generator().manual_seed(0)))
    monkeypatch.setattr(torch.nn.Module, "__init__", lambda *a, **k: pytest.fail("chain built a module"))
    chain = HeterModelBaseline.feature_chain(ARGS)
    assert chain.output.shape == tuple(features.shape[1:]) == (16, 8, 16)
    assert chain.output.cell == pytest.approx((1.6, 1.6))
    assert chain.stages["m1"]["backbone"].channels == 32 and chain.stages["m2"]["backbone"] is None
    assert chain.stages["m2"]["shrinker"].producer == "shrinker_m2"


def test_hand_written_channels_are_optional():
    full = build()
    lean = build(in_head=None, att__feat_dim=None, m1__backbone_args__inplanes=None,
                 m1__shrink_header__input_dim=None, m2__shrink_header__input_dim=None)
    assert [p.shape for p in lean.parameters()] == [p.shape for p in full.parameters()]
    assert lean.fusion_net.feat_dim == 16


@pytest.mark.parametrize("change,words", [
    ({"m1__shrink_header__input_dim": 40}, ["model.args.m1.shrink_header.input_dim = 40",
                                            "backbone_m1 outputs 32 channels"]),
    ({"m2__shrink_header__input_dim": 32}, ["model.args.m2.shrink_header.input_dim = 32",
                                            "encoder_m2 outputs 64 channels"]),
    ({"m1__backbone_args__inplanes": 32}, ["model.args.m1.backbone_args.inplanes = 32",
                                           "encoder_m1 outputs 64 channels"]),
    ({"att__feat_dim": 32}, ["model.args.att.feat_dim = 32", "shrinker_m1 outputs 16 channels"]),
    ({"in_head": 64}, ["model.args.in_head = 64", "shrinker_m1 outputs 16 channels"]),
    ({"m2__shrink_header__dim": [8]}, ["agent types give different feature maps", "m1 (shrinker_m1) 16 x 8 x 16",
                                       "m2 (shrinker_m2) 8 x 8 x 16"]),
])
def test_channel_disagreement_names_both_values(change, words):
    one_line_error(lambda: build(**change), *words)


@pytest.mark.parametrize("change,words", [
    ({"message_extractor__in_ch": 8}, ["model.args.message_extractor.in_ch = 8", "outputs 16 channels"]),
    ({"enhancer__in_ch": 128}, ["model.args.enhancer.in_ch = 128", "outputs 16 channels"]),
    ({"gencomm__model__in_channels": 128}, ["model.args.gencomm.model.in_channels = 128", "outputs 16"]),
    ({"gencomm__model__out_ch": 32}, ["model.args.gencomm.model.out_ch = 32", "outputs 16"]),
])
def test_gencomm_channel_disagreement_names_both_values(change, words):
    one_line_error(lambda: build("heter_model_baseline_w_gencomm_stage1", **change), *words)


def test_anchor_stride_checked_when_the_loader_derives_it():
    build(feature_stride=4, anchor_voxel_size=[0.4, 0.4, 4.0])  # 0.4 m x 4 = the 1.6 m output cell
    msg = one_line_error(lambda: build(feature_stride=2, anchor_voxel_size=[0.4, 0.4, 4.0]),
                         "outputs cells of 1.6 x 1.6 m", "feature_stride 2", "= 0.8 x 0.8 m")
    assert re.search(r"shrinker_m\d", msg)
    one_line_error(lambda: build(feature_stride=4, anchor_voxel_size=[0.4, 0.4, 4.0],
                                 lidar_range=[-12.8, -12.8, -3.0, 12.8, 12.8, 1.0]),
                   "outputs a 8 x 16 map", "is 16 x 16")
    build(feature_stride=2)  # without anchor_voxel_size (not derived yet): no stride check


def test_camera_crop_ratio_from_the_camera_grid():
    args = copy.deepcopy(ARGS)
    half = [-6.4, -6.4, -3.0, 6.4, 6.4, 1.0]
    args["m2"]["encoder_args"] = dict(ENC, lidar_range=half, point_pillar_scatter={"num_features": 64})
    args["m2"]["sensor_type"] = "camera"
    one_line_error(lambda: MODELS.get("heter_model_baseline")(args), "model.args.m2.camera_mask_args.grid_conf")
    args["m2"]["camera_mask_args"] = {"grid_conf": {"xbound": [-6.4, 6.4, 0.4], "ybound": [-6.4, 6.4, 0.4]}}
    chain = HeterModelBaseline.feature_chain(args)
    assert chain.crop_ratio == {"m2": (1.0, 2.0)} and chain.output.size == (8, 16)
