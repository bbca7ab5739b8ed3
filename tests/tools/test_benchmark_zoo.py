"""benchmark_zoo.py: the plan (teacher first), options, the table of unfinished/failed methods, and (slow) a real
run of two methods side by side on the tiny world whose table holds the runs' own numbers."""
import argparse
import os
import re

import pytest
import yaml

from opencood.tools import benchmark_zoo
from opencood.utils.errors import ConfigError

ZOO = "opencood/hypes_yaml/demo/zoo"
FCOOPER = f"{ZOO}/lidar_fcooper.yaml"
DISCO = f"{ZOO}/lidar_disco.yaml"


def test_plan_adds_the_teacher_first_and_starts_slow_methods_early():
    order, deps = benchmark_zoo.plan([FCOOPER, DISCO, f"{ZOO}/lidar_v2vnet.yaml"])
    names = [benchmark_zoo.stem(c) for c in order]
    assert names == ["lidar_early", "lidar_v2vnet", "lidar_fcooper", "lidar_disco"]
    assert deps == {"lidar_disco": "lidar_early"}
    order, deps = benchmark_zoo.plan([FCOOPER])
    assert [benchmark_zoo.stem(c) for c in order] == ["lidar_fcooper"] and deps == {}


def test_disco_config_gets_the_teacher_path_and_refuses_none(tmp_path):
    teacher = tmp_path / "net_epoch_bestval_at3.pth"
    path = benchmark_zoo.world_config(DISCO, "/w", str(tmp_path), 4, "/c", str(teacher))
    with open(path) as f:
        h = yaml.safe_load(f)
    assert h["kd_flag"]["teacher_path"] == str(teacher) and h["root_dir"].startswith("/w/OPV2V")
    assert h["train_params"]["epoches"] == 4 and h["train_params"]["save_freq"] == 1
    assert h["data_cache_dir"] == "/c"
    assert h["lr_scheduler"]["step_size"] == [3]  # the zoo's step at epoch 6 of 8, scaled to 4 epochs
    with pytest.raises(ConfigError, match="kd_flag needs the teacher's checkpoint"):
        benchmark_zoo.world_config(DISCO, "/w", str(tmp_path), 4)


def _opt(**kw):
    opt = argparse.Namespace(**{k: None for k in benchmark_zoo.DEFAULTS}, budget=None)
    vars(opt).update(kw)
    return opt


def test_budget_fills_only_flags_not_given(monkeypatch):
    monkeypatch.setattr(benchmark_zoo.torch.cuda, "is_available", lambda: True)
    opt = benchmark_zoo.resolve_options(_opt(budget="gpu", epochs=3))
    assert (opt.epochs, opt.preset, opt.parallel, opt.device, opt.num_workers) == (3, "demo", 6, "cuda", 2)
    monkeypatch.setattr(benchmark_zoo.torch.cuda, "is_available", lambda: False)
    assert benchmark_zoo.resolve_options(_opt()).device == "cpu"
    with pytest.raises(ConfigError, match="--device cuda: no CUDA device"):
        benchmark_zoo.resolve_options(_opt(device="cuda"))
    with pytest.raises(ConfigError, match="--parallel: must be >= 1"):
        benchmark_zoo.resolve_options(_opt(parallel=0))


def test_unfinished_and_failed_methods_have_their_rows():
    lines, verdicts = benchmark_zoo.table_rows([{"method": "lidar_a", "pending": True},
                                                {"method": "lidar_b", "error": "boom"}])
    assert lines[2].startswith("| lidar_a | not finished when this table was written |")
    assert lines[3].startswith("| lidar_b | failed: boom |")
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    assert verdicts == ["- lidar_a: not finished when this table was written.",
                        "- lidar_b: did not run to the end (boom)."]


@pytest.mark.slow
def test_two_methods_side_by_side_with_the_teacher_and_a_time_limit(tiny_world, tmp_path):
    out = tmp_path / "results.md"
    broken = tmp_path / "lidar_broken.yaml"  # a method whose config is wrong: its row says so, the others run
    broken.write_text(f"_base_: {os.path.abspath(FCOOPER)}\nname: zoo_lidar_broken\nmodel:\n  args:\n    fusion_methd: max\n")
    argv = ["--configs", FCOOPER, DISCO, str(broken), "--epochs", "1", "--world", tiny_world, "--log_root",
            str(tmp_path / "logs"), "--out", str(out), "--parallel", "2", "--device", "cpu"]
    fcooper, disco, failed, early = benchmark_zoo.main(argv)
    assert "fusion_methd" in failed["error"]
    text = out.read_text()
    assert fcooper["mode"] == "intermediate" and fcooper["epochs"] == 1 and fcooper["params"] > 0
    # DiscoNet was trained with the early run's checkpoint as its teacher
    assert early["method"] == "lidar_early" and early["mode"] == "early"
    with open(os.path.join(disco["run_dir"], "config.yaml")) as f:
        assert yaml.safe_load(f)["kd_flag"]["teacher_path"] == early["checkpoint"]
    assert os.path.isfile(early["checkpoint"])
    # the table repeats what the eval files of the run say
    gs = yaml.safe_load(open(sorted((tmp_path / "logs" / "runs" / "lidar_fcooper").glob(
        "zoo_lidar_fcooper_*/eval_global_sort_intermediate_*.yaml"))[0]))
    line = next(ln for ln in text.splitlines() if ln.startswith("| lidar_fcooper | intermediate"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert [float(c) for c in cells[2:5]] == [round(gs[k], 3) for k in ("ap30", "ap_50", "ap_70")]
    assert cells[8] == f"{fcooper['params']:,}"
    # 64 channels x 32 x 64 cells x float32, every collaborator, every frame
    assert cells[9].startswith("524,288 (2^19.0)") and gs["comm_bytes_per_agent"] == 524288
    assert float(cells[10]) > 0 and cells[11].startswith("1 (")
    ego = next(ln for ln in text.splitlines() if ln.startswith("| lidar_fcooper | ego only (-f no)"))
    assert "| 0 |" in ego
    assert re.search(r"lidar_fcooper: intermediate fusion (beats|ties with|does NOT beat) ego-only", text)
    assert "| lidar_broken | failed: " in text and "- lidar_broken: did not run to the end" in text
    assert "| lidar_early | early (-f early)" in text
    assert "Reproduce: `python opencood/tools/benchmark_zoo.py --configs" in text and "torch " in text
    assert "on `cpu`, 2 training(s) side by side" in text and "finished " in text
    for name in ("lidar_fcooper", "lidar_disco", "lidar_early", "lidar_broken"):
        assert os.path.getsize(tmp_path / "logs" / "logs" / f"{name}.log") > 0

    # a training past its time limit is stopped and evaluated from the checkpoints it wrote
    argv = ["--configs", f"{ZOO}/lidar_late.yaml", "--epochs", "500", "--time_limit", "25", "--world", tiny_world,
            "--log_root", str(tmp_path / "logs2"), "--out", str(tmp_path / "r2.md"), "--device", "cpu"]
    (late,) = benchmark_zoo.main(argv)
    assert late["stopped"] and 1 <= late["epochs"] < 500 and late["train_s"] < 25 + benchmark_zoo.STOP_GRACE_S + 5
    assert "(time limit)" in (tmp_path / "r2.md").read_text()


def test_scale_lr_steps_scales_milestones_and_leaves_a_schedule_without_steps_alone():
    from opencood.tools.benchmark_zoo import scale_lr_steps
    h = {"train_params": {"epoches": 20}, "lr_scheduler": {"core_method": "multistep", "step_size": [10, 15]}}
    scale_lr_steps(h, 40)
    assert h["lr_scheduler"]["step_size"] == [20, 30]
    bare = {"train_params": {"epoches": 20}, "lr_scheduler": {"core_method": "multistep"}}
    scale_lr_steps(bare, 40)
    assert "step_size" not in bare["lr_scheduler"]
