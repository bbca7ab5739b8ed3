"""Pyramid / Where2comm / CoAlign tiny configs end to end through tools/train.py and tools/inference.py."""
import glob
import os

import pytest
import yaml

from opencood.tools import inference, trainer


def train_and_infer(cfg, tmp_path, extra_infer=()):
    """Train from the CLI entry point, run intermediate inference; returns (run dir, AP result dict)."""
    args = ["-y", cfg, "--log_root", str(tmp_path / "logs"), "--num_workers", "0", "--skip_test"]
    run = trainer.run(trainer.build_parser().parse_args(args))
    inference.main(["--model_dir", run, "--fusion_method", "intermediate", "--num_workers", "0", *extra_infer])
    res = glob.glob(os.path.join(run, "eval_global_sort_intermediate_*.yaml"))
    assert len(res) == 1
    return run, yaml.safe_load(open(res[0]))


@pytest.mark.slow
def test_pyramid_trains_and_infers(make_tiny_config, tmp_path):
    cfg = make_tiny_config("opencood/hypes_yaml/demo/zoo/lidar_pyramid.yaml", epoches=2, eval_freq=1, save_freq=1)
    run, res = train_and_infer(cfg, tmp_path)
    assert {"ap30", "ap_50", "ap_70"} <= set(res)
    log = open(os.path.join(run, "train.log")).read()
    assert "epoch 1: validation loss" in log


@pytest.mark.slow
def test_where2comm_trains_and_infers_with_its_rate(make_tiny_config, tmp_path):
    cfg = make_tiny_config("opencood/hypes_yaml/demo/zoo/lidar_where2comm.yaml", epoches=2, eval_freq=1, save_freq=1)
    run, res = train_and_infer(cfg, tmp_path)
    assert {"ap30", "ap_50", "ap_70"} <= set(res)


@pytest.mark.slow
def test_coalign_pipeline_uncertainty_boxes_pose_graph_fusion(make_tiny_config, tmp_path):
    """Stage 1 (uncertainty detector, late data) -> pose_graph_pre_calc boxes -> multi-scale CoAlign training
    with box_align under pose noise -> intermediate inference."""
    from opencood.tools import pose_graph_pre_calc
    unc_cfg = make_tiny_config("opencood/hypes_yaml/demo/zoo/lidar_coalign_uncertainty.yaml", epoches=2,
                               eval_freq=1, save_freq=1)
    unc_run = trainer.run(trainer.build_parser().parse_args(
        ["-y", unc_cfg, "--log_root", str(tmp_path / "unc"), "--num_workers", "0", "--skip_test"]))
    files = pose_graph_pre_calc.run(pose_graph_pre_calc.build_parser().parse_args(
        ["--model_dir", unc_run, "--out_dir", str(tmp_path / "boxes")]))
    assert sorted(os.path.basename(f) for f in files) == ["test.json", "train.json", "val.json"]
    train_boxes = yaml.safe_load(open(files[0]))  # JSON is YAML
    frame = next(iter(train_boxes.values()))
    agent = next(iter(frame.values()))
    assert set(agent) == {"boxes", "uncertainty", "scores"}
    assert all(len(b) == 7 for b in agent["boxes"]) and all(len(u) == 3 for u in agent["uncertainty"])

    cfg = make_tiny_config("opencood/hypes_yaml/demo/zoo/lidar_coalign.yaml", epoches=1, eval_freq=1, save_freq=1)
    h = yaml.safe_load(open(cfg))
    h["noise_setting"] = {"add_noise": True, "args": {"pos_std": 0.2, "rot_std": 0.2}}
    h["box_align"] = {f"{s}_result": str(tmp_path / "boxes" / f"{s}.json") for s in ("train", "val", "test")}
    h["box_align"]["args"] = {"thres": 1.5}
    yaml.safe_dump(h, open(cfg, "w"))
    run, res = train_and_infer(cfg, tmp_path)
    assert {"ap30", "ap_50", "ap_70"} <= set(res)
