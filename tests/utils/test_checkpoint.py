"""Checkpoint files: key/shape checks, which file is picked, the Checkpointer, weights-only training state."""
import math
import os
import random

import numpy as np
import pytest
import torch

from opencood.utils.checkpoint import (Checkpointer, atomic_torch_save, check_state_dict, find_checkpoint,
                                       load_train_state, rng_state, set_rng_state, train_state)
from opencood.utils.errors import CheckpointError


def test_check_state_dict_keys_and_shapes():
    m = torch.nn.Sequential(torch.nn.Linear(3, 2))
    sd = m.state_dict()
    check_state_dict(m, sd, "f.pth")
    bad = dict(sd)
    bad["0.weight"] = torch.zeros(5, 5)
    with pytest.raises(CheckpointError, match=r"f\.pth: key '0\.weight' has shape \(5, 5\), model expects \(2, 3\)"):
        check_state_dict(m, bad, "f.pth")
    extra = dict(sd, **{"9.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="unexpected key '9.weight'"):
        check_state_dict(m, extra, "f.pth")
    with pytest.raises(CheckpointError, match="missing key '0.bias'"):
        check_state_dict(m, {"0.weight": sd["0.weight"]}, "f.pth")
    with pytest.raises(CheckpointError, match=r"needs every '0\.\*' key"):
        check_state_dict(m, {"0.weight": sd["0.weight"]}, "f.pth", strict=False, required_prefixes=("0.",))


def test_find_checkpoint_prefers_bestval(tmp_path):
    assert find_checkpoint(str(tmp_path)) == (0, None)
    for n in ("net_epoch2.pth", "net_epoch10.pth", "net_epoch_bestval_at7.pth"):
        atomic_torch_save({}, str(tmp_path / n))
    assert find_checkpoint(str(tmp_path))[0] == 7
    assert find_checkpoint(str(tmp_path), prefer_bestval=False)[0] == 10
    assert not list(tmp_path.glob("*.tmp*"))


# ---- Checkpointer: resume point, save + cleanup, weights-only training state ---------------------------
def _touch(folder, *names):
    for n in names:
        atomic_torch_save({}, str(folder / n))


def test_resume_point_latest_regular_then_bestval(tmp_path):
    with pytest.raises(CheckpointError, match="model folder not found"):
        Checkpointer(str(tmp_path / "nope")).resume_point()
    assert Checkpointer(str(tmp_path)).resume_point() == (0, None)
    _touch(tmp_path, "net_epoch_bestval_at3.pth")
    assert Checkpointer(str(tmp_path)).resume_point() == (3, str(tmp_path / "net_epoch_bestval_at3.pth"))
    _touch(tmp_path, "net_epoch2.pth", "net_epoch10.pth")  # a regular checkpoint wins, even an older one
    assert Checkpointer(str(tmp_path)).resume_point() == (10, str(tmp_path / "net_epoch10.pth"))


def _training_objects():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2, 4], gamma=0.5)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    return model, optimizer, scheduler, scaler


def test_save_order_names_and_cleanup_keeps_bestval_state(tmp_path):
    model, optimizer, scheduler, scaler = _training_objects()
    c = Checkpointer(str(tmp_path))
    c.save(1, model, train_state(1, optimizer, scheduler, scaler))
    c.save_bestval(1, model, train_state(1, optimizer, scheduler, scaler, best_val=0.5))
    c.save(2, model, train_state(2, optimizer, scheduler, scaler, best_val=0.5))
    c.save(3, model, train_state(3, optimizer, scheduler, scaler, best_val=0.5))
    names = sorted(os.listdir(tmp_path))
    assert names == ["net_epoch1.pth", "net_epoch2.pth", "net_epoch3.pth", "net_epoch_bestval_at1.pth",
                     "train_state_epoch1.pth", "train_state_epoch3.pth"]
    assert c.load_train_state(1)["best_val"] == 0.5 and c.load_train_state(2) is None
    c.save_bestval(3, model, train_state(3, optimizer, scheduler, scaler, best_val=0.25))
    c.save(4, model, train_state(4, optimizer, scheduler, scaler, best_val=0.25))
    assert sorted(f for f in os.listdir(tmp_path) if "bestval" in f or "state" in f) == \
        ["net_epoch_bestval_at3.pth", "train_state_epoch3.pth", "train_state_epoch4.pth"]
    assert not list(tmp_path.glob("*.tmp*"))


def test_train_state_loads_weights_only_and_restores_everything(tmp_path):
    model, optimizer, scheduler, scaler = _training_objects()
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    Checkpointer(str(tmp_path)).save(5, model, train_state(5, optimizer, scheduler, scaler, best_val=math.inf))
    expected = (random.random(), np.random.rand(), torch.rand(1))
    state = load_train_state(str(tmp_path / "train_state_epoch5.pth"))  # weights_only=True inside
    assert state["epoch"] == 5 and state["best_val"] == math.inf
    _, optimizer2, scheduler2, _ = _training_objects()
    optimizer2.load_state_dict(state["optimizer"])
    scheduler2.load_state_dict(state["scheduler"])
    assert scheduler2.milestones == scheduler.milestones
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    set_rng_state(state["rng"])
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(1), expected[2])
    assert isinstance(rng_state()["numpy"]["keys"], torch.Tensor)


class _Payload:
    """Unpickling this would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_planted_pickle_train_state_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "train_state_epoch1.pth"
    torch.save({"epoch": 1, "optimizer": _Payload(marker)}, str(path))
    with pytest.raises(CheckpointError) as e:
        Checkpointer(str(tmp_path)).load_train_state(1)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "cannot read training state" in msg
    assert not marker.exists()
    atomic_torch_save({"epoch": 1}, str(path))  # readable, but not a training state
    with pytest.raises(CheckpointError, match="not a training state .missing key 'optimizer'"):
        load_train_state(str(path))
