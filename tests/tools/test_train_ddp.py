"""DDP on CPU: two gloo processes train a few steps, end with identical weights, and the checkpoint
resumes in a single-process run."""
import glob
import os
import subprocess
import sys

import pytest
import yaml

from opencood.tools import trainer

PP = "opencood/hypes_yaml/demo/m1_pointpillar_attfuse.yaml"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_two_gloo_ranks_then_single_process_resume(make_tiny_config, tmp_path):
    cfg = make_tiny_config(PP, epoches=1, batch_size=1, save_freq=1, eval_freq=1)
    logs = tmp_path / "logs"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
                        "opencood/tools/train_ddp.py", "-y", cfg, "--log_root", str(logs), "--num_workers", "0",
                        "--skip_test"], cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "DDP: weights identical on 2 ranks" in r.stdout
    runs = glob.glob(str(logs / "*"))
    assert len(runs) == 1  # only rank 0 creates the run folder
    run = runs[0]
    assert os.path.isfile(os.path.join(run, "net_epoch1.pth"))
    # the DDP checkpoint is a plain state_dict: a single-process run resumes from it
    p = os.path.join(run, "config.yaml")
    h = yaml.safe_load(open(p))
    h["train_params"]["epoches"] = 2
    yaml.safe_dump(h, open(p, "w"))
    trainer.run(trainer.build_parser().parse_args(["-y", "None", "--model_dir", run, "--num_workers", "0",
                                                   "--skip_test"]))
    assert os.path.isfile(os.path.join(run, "net_epoch2.pth"))
