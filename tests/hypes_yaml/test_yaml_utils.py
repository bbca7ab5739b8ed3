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
    files = [os.path.join(REPO, "opencood/hypes_yaml/exemplar.yaml")] + [
        f for f in sorted(glob.glob(os.path.join(REPO, "opencood/hypes_yaml/demo/**/*.yaml"), recursive=True))
        if os.sep + "bases" + os.sep not in f]
    for f in files:
        h = load_yaml(f)
        create_model(h)
        create_loss(h)


# ---------------------------------------------------------------- inheritance, overrides, validation
SHIPPED = os.path.join(REPO, "opencood/hypes_yaml")
BEFORE = os.path.join(HERE, "shipped_before_inheritance")  # the shipped YAMLs as they were before _base_


def _experiment_yamls():
    import glob
    return [f for f in sorted(glob.glob(os.path.join(SHIPPED, "**", "*.yaml"), recursive=True))
            if os.sep + "bases" + os.sep not in f]


@pytest.mark.parametrize("path", _experiment_yamls(), ids=lambda p: os.path.relpath(p, SHIPPED))
def test_every_shipped_yaml_resolves_to_its_content_before_inheritance(path):
    """Thin YAMLs on shared bases give exactly the dicts the old full files gave (nothing changed by accident)."""
    before = os.path.join(BEFORE, os.path.relpath(path, SHIPPED))
    assert os.path.isfile(before), f"new shipped YAML {path}: add it to {BEFORE} once reviewed"
    new, old = load_yaml(path), load_yaml(before)
    for h in (new, old):
        h.pop("_source")
        h["_ignored_keys"] = sorted(h["_ignored_keys"])
    assert new == old


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_base_inheritance_later_wins_relative_paths_and_delete(tmp_path):
    from opencood.hypes_yaml.yaml_utils import read_config
    _write(tmp_path / "bases" / "a.yaml", "x: 1\nd: {p: 1, q: 2}\nl: [1, 2]\n")
    _write(tmp_path / "bases" / "b.yaml", "x: 2\nd: {q: 3}\n")
    child = _write(tmp_path / "exp" / "c.yaml",
                   "_base_: [../bases/a.yaml, ../bases/b.yaml]\nl: [9]\ne: {_delete_: true, z: 0}\n")
    assert read_config(child) == {"x": 2, "d": {"p": 1, "q": 3}, "l": [9], "e": {"z": 0}}
    replaced = _write(tmp_path / "exp" / "r.yaml", "_base_: ../bases/a.yaml\nd: {_delete_: true, r: 5}\n")
    assert read_config(replaced)["d"] == {"r": 5}


def test_shipped_yaml_copied_into_a_run_folder_still_finds_its_bases(tmp_path):
    import shutil
    src = os.path.join(SHIPPED, "demo/gencomm/stage2/m1m3_att.yaml")
    run = tmp_path / "logs" / "m1m3"
    run.mkdir(parents=True)
    shutil.copy(src, run / "config.yaml")  # the README's stage-2 recipe
    a, b = load_yaml(src), load_yaml("None", argparse.Namespace(model_dir=str(run)))
    for h in (a, b):
        h.pop("_source")
    assert a == b


def test_base_errors_name_the_file(tmp_path):
    from opencood.hypes_yaml.yaml_utils import read_config
    a = _write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    _write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match=r"a\.yaml: _base_ inheritance cycle"):
        read_config(a)
    bad = _write(tmp_path / "bad.yaml", "_base_: {x: 1}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: key '_base_' must be a path"):
        read_config(bad)
    missing = _write(tmp_path / "m.yaml", "_base_: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"nowhere\.yaml: config file not found"):
        read_config(missing)


def test_set_overrides_are_yaml_typed_and_validated(tmp_path):
    from opencood.hypes_yaml.yaml_utils import add_config_args
    parser = add_config_args(argparse.ArgumentParser())
    opt = parser.parse_args(["--set", "train_params.epoches=3", "--set", "optimizer.args.eps=1e-8",
                             "--set", "postprocess.anchor_args.r=[0, 45]", "--set", "name=exp_b"])
    h = load_yaml(LIDAR_ATT, opt)
    assert h["train_params"]["epoches"] == 3 and h["optimizer"]["args"]["eps"] == pytest.approx(1e-8)
    assert h["postprocess"]["anchor_args"]["r"] == [0, 45] and h["postprocess"]["anchor_args"]["num"] == 2
    assert h["name"] == "exp_b"
    with pytest.raises(ConfigError, match=r"unknown key 'train_params.epochs'; did you mean 'epoches'"):
        load_yaml(LIDAR_ATT, overrides=["train_params.epochs=3"])
    with pytest.raises(ConfigError, match=r"expected KEY.PATH=VALUE"):
        load_yaml(LIDAR_ATT, overrides=["train_params.epoches"])
    with pytest.raises(ConfigError, match=r"'name' is not a mapping"):
        load_yaml(LIDAR_ATT, overrides=["name.x=1"])


def test_set_applies_to_a_model_dir_config(tmp_path):
    save_yaml(load_yaml(LIDAR_ATT), tmp_path / "config.yaml")
    opt = argparse.Namespace(model_dir=str(tmp_path), set=["train_params.batch_size=1"])
    assert load_yaml("None", opt)["train_params"]["batch_size"] == 1


def test_saved_config_is_resolved_and_flat_and_reloads_identically(tmp_path):
    demo = os.path.join(SHIPPED, "demo/gencomm/stage2/m1m3_att.yaml")
    h = load_yaml(demo)
    save_yaml(h, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    assert "_base_" not in text and "_ignored_keys" not in text
    again = load_yaml(str(tmp_path / "config.yaml"))
    for x in (h, again):
        x.pop("_source")
    assert again == h


def test_misspelt_key_in_a_shipped_yaml_fails_with_suggestion():
    demo = os.path.join(SHIPPED, "demo/gencomm/stage1/m1_att.yaml")
    with pytest.raises(ConfigError) as e:
        load_yaml(demo, overrides=["model.args.generate_egoo=false"])
    assert "unknown key 'model.args.generate_egoo'; did you mean 'generate_ego'?" in str(e.value)
    assert str(e.value).startswith(demo)
    with pytest.raises(ConfigError, match=r"did you mean 'generation_start'"):
        load_yaml(demo, overrides=["model.args.generation_strat=sender_frame"])
    with pytest.raises(ConfigError, match=r"unknown key 'train_params.max_cavs'; did you mean 'max_cav'"):
        load_yaml(demo, overrides=["train_params.max_cavs=3"])
    with pytest.raises(ConfigError, match=r"unknown model.core_method 'heter_modle'"):
        load_yaml(demo, overrides=["model.core_method=heter_modle"])


def test_allow_listed_legacy_key_loads_with_one_info_line(caplog):
    import logging
    with caplog.at_level(logging.INFO, logger="opencood"):
        h = load_yaml(LIDAR_ATT)  # carries label_type, which has no effect here
    assert "label_type" in h["_ignored_keys"]
    lines = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert len(lines) == 1 and "label_type" in lines[0]
