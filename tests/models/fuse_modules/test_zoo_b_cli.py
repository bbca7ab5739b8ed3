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
