"""Run-folder lock, stale temp files, atomic run-folder creation, workers that die with the trainer, and the
checks that turn silently wrong runs into one-line errors before any work (-f, --use_cav, no checkpoint)."""
import multiprocessing
import os
import signal
import time

import pytest
import yaml

from opencood.tools import inference, train_utils, trainer
from opencood.tools.inference_heter_in_order import parse_use_cav
from opencood.utils.checkpoint import LOCK_NAME, RunLock
from opencood.utils.errors import ConfigError, RunError

PP = "opencood/hypes_yaml/demo/m1_pointpillar_attfuse.yaml"
_FORK = multiprocessing.get_context("fork")


def _hold_lock(run_dir, ready):
    RunLock(str(run_dir)).acquire()
    ready.set()
    time.sleep(600)


def _locked_by_child(run_dir):
    ready = _FORK.Event()
    child = _FORK.Process(target=_hold_lock, args=(run_dir, ready), daemon=True)
    child.start()
    assert ready.wait(30)
    return child


def _kill(child):
    os.kill(child.pid, signal.SIGKILL)
    child.join()


def test_second_holder_gets_one_line_and_stale_lock_is_taken_over(tmp_path):
    child = _locked_by_child(tmp_path)
    with pytest.raises(RunError) as e:
        RunLock(str(tmp_path)).acquire()
    assert f"run folder in use by another trainer (pid {child.pid} on " in str(e.value)
    assert "\n" not in str(e.value)
    _kill(child)  # SIGKILL: the file stays, the lock does not
    assert (tmp_path / LOCK_NAME).read_text().split()[0] == str(child.pid)
    with RunLock(str(tmp_path)):
        assert (tmp_path / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    assert not (tmp_path / LOCK_NAME).exists()


def _run_folder(make_tiny_config, tmp_path, epochs=1):
    from opencood.hypes_yaml.yaml_utils import load_yaml, save_yaml
    run = tmp_path / "run"
    run.mkdir()
    save_yaml(load_yaml(make_tiny_config(PP, epoches=epochs)), str(run / "config.yaml"))
    return run


def test_trainer_refuses_a_locked_folder_and_cleans_stale_temp_files(make_tiny_config, tmp_path, capsys):
    run = _run_folder(make_tiny_config, tmp_path, epochs=0)  # opens the folder, trains nothing
    child = _locked_by_child(run)
    with pytest.raises(SystemExit) as e:
        trainer.main(["-y", "None", "--model_dir", str(run), "--num_workers", "0", "--skip_test"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and f"in use by another trainer (pid {child.pid}" in err
    # the killed holder left a temp file of its own pattern; a second trainer of the folder removes it
    stale = run / f"net_epoch1.pth.tmp-{child.pid}-0123abcd"
    stale.write_bytes(b"partial")
    _kill(child)
    trainer.main(["-y", "None", "--model_dir", str(run), "--num_workers", "0", "--skip_test"])
    assert not stale.exists() and not (run / LOCK_NAME).exists()
    assert f"removed {stale}" in open(run / "train.log").read()


def test_fusion_method_is_checked_before_training(make_tiny_config, tmp_path, capsys):
    cfg = make_tiny_config(PP, epoches=1)
    for method in ("early", "late"):
        with pytest.raises(SystemExit) as e:
            trainer.main(["-y", cfg, "--log_root", str(tmp_path / "logs"), "-f", method, "--num_workers", "0"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1
        assert f"--fusion_method {method} needs a {method}-fusion dataset" in err and "builds intermediate" in err
    assert not (tmp_path / "logs").exists()  # nothing was trained or written
    with pytest.raises(SystemExit):
        trainer.build_parser().parse_args(["-y", cfg, "-f", "foo"])
    assert "invalid choice: 'foo'" in capsys.readouterr().err


def test_inference_without_checkpoint_or_with_a_wrong_method_is_an_error(make_tiny_config, tmp_path, capsys):
    run = _run_folder(make_tiny_config, tmp_path)
    for args, message in [([], "no checkpoint (net_epoch*.pth or net_epoch_bestval_at*.pth) to load"),
                          (["-f", "late"], "--fusion_method late needs a late-fusion dataset")]:
        with pytest.raises(SystemExit) as e:
            inference.main(["--model_dir", str(run), "--num_workers", "0"] + args)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and message in err


def test_use_cav_is_validated():
    assert parse_use_cav("[1,2,3,4]", 5) == [1, 2, 3, 4] and parse_use_cav("3", 5) == [3]
    for text, message in [("[0]", "0 agents is outside 1..5"), ("[9]", "9 agents is outside 1..5"),
                          ("[1.5]", "expected a list of integers"), ("[True]", "expected a list of integers"),
                          ("abc", "expected a list of integers"), ("[]", "expected a list"), ("[2, 2]", "twice")]:
        with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
            parse_use_cav(text, 5)


def test_new_run_folder_appears_with_its_config_or_not_at_all(tmp_path, monkeypatch):
    hypes = {"name": "x", "train_params": {"epoches": 1}}
    run = train_utils.setup_train(hypes, str(tmp_path))
    assert yaml.safe_load(open(os.path.join(run, "config.yaml")))["name"] == "x"

    def killed(*_):
        raise KeyboardInterrupt  # stands in for a kill while config.yaml is written
    monkeypatch.setattr(train_utils, "save_yaml", killed)
    with pytest.raises(KeyboardInterrupt):
        train_utils.setup_train(hypes, str(tmp_path))
    assert os.listdir(tmp_path) == [os.path.basename(run)]


class _Slow:
    def __len__(self):
        return 1000

    def __getitem__(self, i):
        time.sleep(0.05)
        return i


def _loader_child(queue):
    import torch
    loader = torch.utils.data.DataLoader(_Slow(), num_workers=2, worker_init_fn=train_utils.dataloader_worker_init)
    it = iter(loader)
    next(it)
    queue.put([w.pid for w in it._workers])
    time.sleep(600)


def test_dataloader_workers_die_with_the_trainer():
    queue = _FORK.Queue()
    child = _FORK.Process(target=_loader_child, args=(queue,))  # not daemonic: it starts workers
    child.start()
    workers = queue.get(timeout=60)
    assert all(os.path.exists(f"/proc/{pid}") for pid in workers)
    _kill(child)
    deadline = time.time() + 2.5  # torch's own watchdog would take up to 5 s (and only when idle)
    while time.time() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers), "DataLoader workers outlived the killed trainer"


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False
