"""Typed configs of the data side: declared keys, defaults, load-time errors with the file and the key."""
import copy
import os

import pytest

from opencood.data_utils.augmentor.data_augmentor import DataAugmentor
from opencood.data_utils.datasets import build_dataset, data_config_keys
from opencood.data_utils.pre_processor.sp_voxel_preprocessor import SpVoxelPreprocessor
from opencood.hypes_yaml.schema import validate_config
from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.utils.errors import ConfigError
from opencood.utils.heter_utils import HeterAssigner

M1M2 = "opencood/hypes_yaml/demo/gencomm/stage2/m1m2_att.yaml"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def test_data_config_keys_cover_the_data_side_top_level():
    keys = data_config_keys()
    assert set(keys) == {"root_dir", "validate_dir", "test_dir", "seed", "input_source", "add_data_extension",
                         "data_cache_dir", "heter", "ego_diff_cav", "comm_range", "noise_setting", "data_augment",
                         "use_cav", "box_align", "data_dir", "dataset_mode", "unknown_obj_type", "lidar_weather"}
    assert keys["comm_range"].default == 70.0 and keys["heter"].schema is HeterAssigner.CONFIG
    assert all(k.doc for k in keys.values())


@pytest.fixture(scope="module")
def hypes():
    return load_yaml(os.path.join(REPO, M1M2))


@pytest.mark.parametrize("path,value,message", [
    (("noise_setting",), {"add_noise": True, "args": {"pos_sdt": 0.2}},
     "unknown key 'noise_setting.args.pos_sdt'; did you mean 'pos_std'?"),
    (("data_augment",), [{"NAME": "random_world_flip", "ALONG_AXIS_LIST": ["z"]}],
     "key 'data_augment[0].ALONG_AXIS_LIST' has 'z'"),
    (("data_augment",), [{"NAME": "random_world_rotation", "WORLD_ROT_ANGEL": [0, 1]}],
     "unknown key 'data_augment[0].WORLD_ROT_ANGEL'; did you mean 'WORLD_ROT_ANGLE'?"),
    (("fusion", "dataset"), "kitti",
     "unknown fusion.dataset 'kitti'; known: dairv2x, opv2v, v2v4real, v2xreal, v2xset, v2xsim"),
    (("fusion", "args", "proj_frist"), True, "unknown key 'fusion.args.proj_frist'; did you mean 'proj_first'?"),
    (("heter", "modality_setting", "m2", "sensor_type"), "radar", "'heter.modality_setting.m2.sensor_type' = 'radar'"),
    (("heter", "modality_setting", "m1", "preprocess", "args", "max_voxel_trian"), 5,
     "unknown key 'heter.modality_setting.m1.preprocess.args.max_voxel_trian'; did you mean 'max_voxel_train'?"),
    (("heter", "modality_setting", "m2", "data_aug_conf", "final_dim"), [64], "'heter.modality_setting.m2."
                                                                            "data_aug_conf.final_dim' should have 2"),
    (("comm_range",), "far", "key 'comm_range' should be a number"),
])
def test_bad_data_keys_fail_at_load_naming_file_and_key(hypes, path, value, message):
    h = copy.deepcopy(hypes)
    node = h
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(ConfigError, match=r"^m1m2\.yaml: .*" + message.replace("[", r"\[").replace("?", r"\?")
                       .replace("(", r"\(").replace(".", r"\.")):
        validate_config(h, "m1m2.yaml")


def test_shipped_heter_config_validates_and_legacy_keys_are_reported(hypes):
    ignored = validate_config(copy.deepcopy(hypes), "m1m2.yaml")
    assert "heter.modality_setting.m1.core_method" in ignored
    assert "heter.modality_setting.m2.data_aug_conf.Ncams" in ignored


def test_components_parse_with_their_defaults(make_tiny_config):
    h = load_yaml(make_tiny_config(M1M2))
    ds = build_dataset(h, train=False)
    assert ds.comm_range == 70.0 and ds.use_cav is None and not ds.proj_first
    assert ds.heter.modality_setting["m2"].data_aug_conf.rot_lim == [0, 0]
    assert ds.modality_pre_processors["m1"].on_device is False
    pre = copy.deepcopy(h["preprocess"])
    del pre["args"]["max_points_per_voxel"]
    with pytest.raises(ConfigError, match="missing key 'preprocess.args.max_points_per_voxel'"):
        SpVoxelPreprocessor(pre, True)
    with pytest.raises(ConfigError, match="cfg.yaml: unknown data_augment\\[1\\].NAME 'jitter'"):
        DataAugmentor([{"NAME": "random_world_scaling", "WORLD_SCALE_RANGE": [1, 1]}, {"NAME": "jitter"}],
                      source="cfg.yaml")
