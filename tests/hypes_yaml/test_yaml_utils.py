import argparse
import os

import pytest

from opencood.hypes_yaml.yaml_utils import load_yaml, require, save_yaml
from opencood.utils.errors import ConfigError

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
LIDAR_ATT = os.path.join(REPO, "opencood/hypes_yaml/opv2v/LiDAROnly/lidar_att.yaml")


def test_reference_attfuse_yaml_derives_grid_and_anchors():
    h = load_yaml(LIDAR_ATT)
    a = h["postprocess"]["anchor_args"]
    assert (a["W"], a["H"], a["D"]) == (512, 256, 1)
    assert a["vw"] == pytest.approx(0.4)
    assert h["model"]["args"]["point_pillar_scatter"]["grid_size"] == [512, 256, 1]
    assert h["optimizer"]["args"]["eps"] == pytest.approx(1e-10)  # PyYAML alone reads "1e-10" as a string
    assert h["postprocess"]["gt_range"] == [-102.4, -51.2, -3, 102.4, 51.2, 1]


def test_model_dir_config_wins(tmp_path):
    h = load_yaml(LIDAR_ATT)
    h["name"] = "from_model_dir"
    save_yaml(h, tmp_path / "config.yaml")
    opt = argparse.Namespace(model_dir=str(tmp_path))
    assert load_yaml(LIDAR_ATT, opt)["name"] == "from_model_dir"
    assert "\n_source:" not in "\n" + open(tmp_path / "config.yaml").read()


def test_malformed_yaml_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: [1, 2\n")
    with pytest.raises(ConfigError) as e:
        load_yaml(str(bad))
    msg = str(e.value)
    assert str(bad) in msg and "\n" not in msg and "line" in msg


def test_missing_key_names_file_and_key(tmp_path):
    h = load_yaml(LIDAR_ATT)
    del h["preprocess"]["args"]["voxel_size"]
    save_yaml(h, tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match=r"c\.yaml: missing key 'preprocess\.args\.voxel_size'"):
        load_yaml(str(tmp_path / "c.yaml"))
    with pytest.raises(ConfigError, match="missing key 'train_params.nope'"):
        require(h, "train_params.nope")


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_yaml("/nonexistent/x.yaml")


def test_exemplar_and_shipped_configs_load_and_build_models():
    import glob
    from opencood.tools.train_utils import create_loss, create_model
    files = [os.path.join(REPO, "opencood/hypes_yaml/exemplar.yaml")] + sorted(
        glob.glob(os.path.join(REPO, "opencood/hypes_yaml/demo/**/*.yaml"), recursive=True))
    for f in files:
        h = load_yaml(f)
        create_model(h)
        create_loss(h)
