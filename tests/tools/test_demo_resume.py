"""``demo.py --resume``: an interrupted demo keeps its run folders (train.py continues them) instead of
starting over."""
import os

from opencood.tools import demo


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def test_fresh_run_dir_replaces_a_folder_unless_resuming(tmp_path):
    cfg = tmp_path / "m1_att.yaml"
    _write(cfg, "name: a\n")
    d = demo.fresh_run_dir(str(tmp_path / "logs"), "stage1_m1", str(cfg))
    _write(os.path.join(d, "net_epoch3.pth"), "weights")
    _write(cfg, "name: b\n")

    kept = demo.fresh_run_dir(str(tmp_path / "logs"), "stage1_m1", str(cfg), resume=True)
    assert kept == d and os.path.isfile(os.path.join(d, "net_epoch3.pth"))
    assert open(os.path.join(d, "config.yaml")).read() == "name: a\n"  # the run's own config, not replaced

    fresh = demo.fresh_run_dir(str(tmp_path / "logs"), "stage1_m1", str(cfg))
    assert os.listdir(fresh) == ["config.yaml"]
    assert open(os.path.join(fresh, "config.yaml")).read() == "name: b\n"


def test_resume_of_a_folder_without_config_starts_it_fresh(tmp_path):
    cfg = tmp_path / "m1_att.yaml"
    _write(cfg, "name: a\n")
    broken = tmp_path / "logs" / "stage1_m1"
    broken.mkdir(parents=True)
    _write(broken / "stray.txt", "x")
    d = demo.fresh_run_dir(str(tmp_path / "logs"), "stage1_m1", str(cfg), resume=True)
    assert sorted(os.listdir(d)) == ["config.yaml"]


def test_resume_flag_parses():
    assert demo.parse_args(["--resume"]).resume and not demo.parse_args([]).resume
