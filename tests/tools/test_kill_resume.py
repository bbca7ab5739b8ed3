"""kill -9 during validation, then resume: the resumed run's bestval checkpoint and final weights equal an
uninterrupted run's, no temp file or lock is left, and the killed trainer's DataLoader workers are gone."""
import glob
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from opencood.tools import trainer
from opencood.utils.checkpoint import LOCK_NAME, bestval_checkpoints, read_state_dict

PP = "opencood/hypes_yaml/demo/m1_pointpillar_attfuse.yaml"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _children(pid):
    out = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = open(stat).read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.split("/")[2]))
    return out


def _alive(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _same(a, b):
    sa, sb = read_state_dict(a), read_state_dict(b)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.slow
def test_kill_during_validation_then_resume_matches_uninterrupted(make_tiny_config, tmp_path):
    cfg = make_tiny_config(PP, epoches=3, save_freq=1, eval_freq=1, batch_size=1)
    full = trainer.run(trainer.build_parser().parse_args(
        ["-y", cfg, "--log_root", str(tmp_path / "a"), "--num_workers", "0", "--skip_test"]))
    logs, console = tmp_path / "b", tmp_path / "console.txt"
    with open(console, "wb") as out:
        proc = subprocess.Popen([sys.executable, "opencood/tools/train.py", "-y", cfg, "--log_root", str(logs),
                                 "--num_workers", "2", "--skip_test"], cwd=REPO, stdout=out, stderr=out,
                                env=dict(os.environ, OMP_NUM_THREADS="1"))  # one thread, as this test process
    run, workers, deadline = None, [], time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        text = console.read_bytes()
        trained = text.find(b"epoch 1: last loss")
        if trained >= 0 and text.find(b"validate", trained) >= 0:  # the validation bar of epoch 1 is running
            run = os.path.dirname(glob.glob(str(logs / "*" / "train.log"))[0])
            workers = _children(proc.pid)
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert run is not None, "the trainer never finished its second epoch"
    assert workers, "the trainer had no DataLoader workers to leave behind"
    time.sleep(3)
    assert not [p for p in workers if _alive(p)], "DataLoader workers outlived the killed trainer"
    killed_in_validation = not os.path.exists(os.path.join(run, "net_epoch2.pth"))
    assert os.path.exists(os.path.join(run, LOCK_NAME))  # a killed trainer leaves its lock file (not the lock)

    trainer.run(trainer.build_parser().parse_args(["-y", "None", "--model_dir", run, "--num_workers", "0",
                                                   "--skip_test"]))
    best_full, best_run = bestval_checkpoints(full), bestval_checkpoints(run)
    assert list(best_full) == list(best_run) and len(best_run) == 1
    assert _same(best_full[next(iter(best_full))], best_run[next(iter(best_run))])
    assert _same(os.path.join(full, "net_epoch3.pth"), os.path.join(run, "net_epoch3.pth"))
    assert not glob.glob(os.path.join(run, "*.tmp-*")) and not os.path.exists(os.path.join(run, LOCK_NAME))
    assert killed_in_validation, "the kill came after the epoch-2 checkpoint; validation was not interrupted"
