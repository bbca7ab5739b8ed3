"""End to end from the CLI entry points on the tiny synthetic world: train, resume, kill, infer, bad input."""
import glob
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from opencood.hypes_yaml.yaml_utils import IGNORED_KEY, load_yaml
from opencood.tools import inference, trainer
from opencood.utils.checkpoint import load_train_state, read_state_dict

PP = "opencood/hypes_yaml/demo/m1_pointpillar_attfuse.yaml"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _train(args, workers=0):
    return trainer.run(trainer.build_parser().parse_args(args + ["--num_workers", str(workers), "--skip_test"]))


def _set_epochs(run_dir, n):
    p = os.path.join(run_dir, "config.yaml")
    h = yaml.safe_load(open(p))
    h["train_params"]["epoches"] = n
    yaml.safe_dump(h, open(p, "w"))


def _assert_same_weights(run_a, run_b, epoch=2):
    a = read_state_dict(os.path.join(run_a, f"net_epoch{epoch}.pth"))
    b = read_state_dict(os.path.join(run_b, f"net_epoch{epoch}.pth"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_resume_continues_exactly(make_tiny_config, tmp_path):
    cfg = make_tiny_config(PP, epoches=2, save_freq=1, eval_freq=1, batch_size=2)
    full = _train(["-y", cfg, "--log_root", str(tmp_path / "a")])
    # an interruption after epoch 1: the same run stopped after one epoch (what a kill leaves: net_epoch1 with
    # its train state; later epochs' checkpoints drop older train states), then the config says 2 again
    part = _train(["-y", cfg, "--log_root", str(tmp_path / "b"), "--set", "train_params.epoches=1"])
    _set_epochs(part, 2)
    assert os.path.isfile(os.path.join(part, "net_epoch1.pth"))
    assert os.path.isfile(os.path.join(part, "train_state_epoch1.pth"))
    _train(["-y", "None", "--model_dir", part], workers=2)  # fresh workers vs. the persistent ones of `full`
    _assert_same_weights(full, part)
    # with persistent DataLoader workers the uninterrupted run is the same again
    _assert_same_weights(full, _train(["-y", cfg, "--log_root", str(tmp_path / "c")], workers=2))
    assert len(glob.glob(os.path.join(full, "net_epoch_bestval_at*.pth"))) == 1
    assert glob.glob(os.path.join(full, "events.out.tfevents*"))
    # the console lines are in the run's train.log too (with the config's ignored keys), a resume appends
    text = open(os.path.join(full, "train.log")).read()
    assert "epoch 0: last loss" in text and "epoch 1: validation loss" in text
    assert ("keys without effect here (ignored)" in text) == bool(load_yaml(cfg)[IGNORED_KEY])
    resumed = open(os.path.join(part, "train.log")).read()
    assert resumed.index("epoch 0: last loss") < resumed.index("resuming from") < resumed.rindex("epoch 1: last")

    # inference: both AP variants, pictures, ego-only
    inference.main(["--model_dir", full, "--save_vis", "--save_vis_interval", "1", "--num_workers", "0"])
    inference.main(["--model_dir", full, "-f", "single", "--num_workers", "0"])
    assert "inference:" in open(os.path.join(full, "inference.log")).read()
    gs = glob.glob(os.path.join(full, "eval_global_sort_intermediate_*.yaml"))
    ngs = [f for f in glob.glob(os.path.join(full, "eval_intermediate_*.yaml"))]
    assert len(gs) == 1 and len(ngs) == 1
    res = yaml.safe_load(open(gs[0]))
    assert set(res) >= {"ap30", "ap_50", "ap_70", "mpre_50", "mrec_50", "mpre_70", "mrec_70"}
    assert glob.glob(os.path.join(full, "eval_global_sort_single_*.yaml"))
    pics = glob.glob(os.path.join(full, "vis_intermediate_*", "bev_*.png"))
    assert pics and os.path.getsize(pics[0]) > 1000


@pytest.mark.slow
def test_killed_run_resumes_without_corrupt_files(make_tiny_config, tmp_path):
    cfg = make_tiny_config(PP, epoches=4, save_freq=1, eval_freq=10, batch_size=1)
    logs = tmp_path / "logs"
    proc = subprocess.Popen([sys.executable, "opencood/tools/train.py", "-y", cfg, "--log_root", str(logs),
                             "--num_workers", "0", "--skip_test"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    run = None
    while time.time() < deadline:
        runs = glob.glob(str(logs / "*" / "net_epoch1.pth"))
        if runs:
            run = os.path.dirname(runs[0])
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert run is not None, "training never wrote its first checkpoint"
    for f in glob.glob(os.path.join(run, "*.pth")):
        read_state_dict(f) if os.path.basename(f).startswith("net_") else load_train_state(f)
    _set_epochs(run, 2)
    out = _train(["-y", "None", "--model_dir", run])
    assert out == run and os.path.isfile(os.path.join(run, "net_epoch2.pth"))
    assert not glob.glob(os.path.join(run, "*.tmp*"))


def _cli(args):
    return subprocess.run([sys.executable] + args, cwd=REPO, capture_output=True, text=True)


def test_bad_inputs_one_line_errors(make_tiny_config, tmp_path):
    cfg = make_tiny_config(PP)
    h = yaml.safe_load(open(cfg))
    h["model"]["core_method"] = "no_such_model"
    bad = tmp_path / "bad_model.yaml"
    yaml.safe_dump(h, open(bad, "w"))
    r = _cli(["opencood/tools/train.py", "-y", str(bad), "--log_root", str(tmp_path / "l"), "--skip_test"])
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "unknown model.core_method 'no_such_model'; known:" in err[0] and str(bad) in err[0]
    assert "heter_model_baseline" in err[0]

    h = yaml.safe_load(open(cfg))
    h["root_dir"] = str(tmp_path / "missing" / "train")
    bad = tmp_path / "bad_root.yaml"
    yaml.safe_dump(h, open(bad, "w"))
    r = _cli(["opencood/tools/train.py", "-y", str(bad), "--log_root", str(tmp_path / "l"), "--skip_test"])
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "missing" in r.stderr


def test_checkpoint_with_wrong_shapes_is_refused(make_tiny_config, tmp_path):
    from opencood.hypes_yaml.yaml_utils import load_yaml, save_yaml
    from opencood.tools.train_utils import create_model
    from opencood.utils.checkpoint import atomic_torch_save
    h = load_yaml(make_tiny_config(PP))
    run = tmp_path / "run"
    run.mkdir()
    save_yaml(h, str(run / "config.yaml"))
    sd = create_model(h).state_dict()
    key = next(k for k in sd if k.startswith("cls_head"))
    sd[key] = torch.zeros(3, *sd[key].shape[1:])
    atomic_torch_save(sd, str(run / "net_epoch3.pth"))
    before = open(run / "net_epoch3.pth", "rb").read()
    r = _cli(["opencood/tools/inference.py", "--model_dir", str(run)])
    assert r.returncode == 2
    line = r.stderr.strip()
    assert "\n" not in line and "net_epoch3.pth" in line and key in line and "shape" in line
    assert open(run / "net_epoch3.pth", "rb").read() == before
