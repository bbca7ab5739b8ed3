"""``demo.py --dataset dairv2x|v2xreal``: GenComm stage 1 m1 on another format's synthetic world, ego only vs
collaboration, end to end through the CLI steps (tiny world, two epochs)."""
import glob
import os

import pytest
import yaml

from opencood.hypes_yaml.yaml_utils import load_yaml, read_config, save_yaml
from opencood.tools import demo


def test_dataset_option_picks_its_config_and_run_folder_and_leaves_the_default_alone():
    default = demo.parse_args([])
    assert default.dataset == "opv2v" and default.configs == demo.DEMO_YAMLS
    assert default.logs == os.path.join("opencood", "logs", "demo")
    for name in ("dairv2x", "v2xreal"):
        opt = demo.parse_args(["--dataset", name])
        assert opt.configs == demo.DATASET_DEMOS[name] and os.path.isfile(opt.configs)
        assert opt.logs == os.path.join("opencood", "logs", f"demo_{name}")
        hypes = load_yaml(opt.configs)
        assert hypes["fusion"]["dataset"] == name
        assert hypes["model"]["core_method"] == "heter_model_baseline_w_gencomm_stage1"
    with pytest.raises(SystemExit):
        demo.parse_args(["--dataset", "kitti"])


def test_rooted_config_moves_only_the_dataset_paths(tmp_path):
    out = demo.rooted_config(demo.DATASET_DEMOS["v2xreal"], str(tmp_path / "data"), str(tmp_path / "c.yaml"))
    moved, shipped = load_yaml(out), load_yaml(demo.DATASET_DEMOS["v2xreal"])
    for key in ("root_dir", "validate_dir", "test_dir"):
        assert moved[key] == os.path.join(str(tmp_path / "data"), shipped[key][len("dataset/"):])
    assert moved["heter"]["assignment_path"] == str(tmp_path / "data" / "modality_assign" / "v2xreal_4modality.json")
    for h in (moved, shipped):
        for key in ("root_dir", "validate_dir", "test_dir", "_source"):
            h.pop(key)
        h["heter"].pop("assignment_path")
    assert moved == shipped  # nothing else changed
    same = load_yaml(demo.rooted_config(demo.DATASET_DEMOS["dairv2x"], "dataset", str(tmp_path / "d.yaml")))
    assert same["data_dir"] == load_yaml(demo.DATASET_DEMOS["dairv2x"])["data_dir"]


def _run_demo(name, tmp_path):
    """The dataset demo on the tiny world with a two-epoch copy of the shipped config; returns the run folder."""
    h = read_config(demo.DATASET_DEMOS[name])
    h["train_params"].update(epoches=2, eval_freq=2, save_freq=1)
    h["lr_scheduler"]["step_size"] = [2]
    cfg = str(tmp_path / "two_epochs.yaml")
    save_yaml(h, cfg)
    logs = str(tmp_path / "logs")
    demo.main(["--dataset", name, "--preset", "tiny", "--root", str(tmp_path / "data"), "--logs", logs,
               "--configs", cfg, "--workers", "0"])
    return os.path.join(logs, "stage1_m1")


def _check_run(run, logs):
    assert os.path.isfile(os.path.join(run, "net_epoch2.pth"))
    rows = demo.dataset_rows(run)
    for variant in ("gs", "ngs"):
        for _, _, r in rows:
            assert all(0.0 <= r[variant][k] <= 1.0 for k in ("ap30", "ap_50", "ap_70"))
    log = open(os.path.join(logs, "demo.log")).read()
    assert "| m1 ego only (-f no) |" in log and "| m1 collaboration (-f intermediate) |" in log
    assert glob.glob(os.path.join(run, "vis_intermediate*", "*.png"))
    return rows


@pytest.mark.slow
def test_dairv2x_demo_runs_end_to_end(tmp_path):
    run = _run_demo("dairv2x", tmp_path)
    assert os.path.isfile(str(tmp_path / "data" / "my_dair_v2x" / "v2x_c" / "cooperative-vehicle-infrastructure"
                              / "cooperative" / "data_info.json"))
    with open(os.path.join(run, "config.yaml")) as f:
        assert yaml.safe_load(f)["data_dir"].startswith(str(tmp_path / "data"))
    rows = _check_run(run, str(tmp_path / "logs"))
    assert [name for _, name, _ in rows] == ["all", "all"]


@pytest.mark.slow
def test_v2xreal_demo_reports_each_class_and_the_map(tmp_path):
    run = _run_demo("v2xreal", tmp_path)
    rows = _check_run(run, str(tmp_path / "logs"))
    assert [name for _, name, _ in rows] == ["vehicle", "pedestrian", "truck", "mAP"] * 2
    for k in range(2):
        classes, m = rows[4 * k:4 * k + 3], rows[4 * k + 3][2]
        assert m["gs"]["ap_50"] == pytest.approx(sum(r["gs"]["ap_50"] for _, _, r in classes) / 3)
