import os

import pytest
import torch

from opencood.tools.heal_tools import main as heal_main
from opencood.tools.heal_tools import merge_and_save_final, pick_checkpoint
from opencood.utils.checkpoint import atomic_torch_save, read_state_dict
from opencood.utils.errors import CheckpointError


def _run_dir(root, name, tensors, files):
    d = root / name
    d.mkdir()
    for f in files:
        atomic_torch_save(tensors, str(d / f))
    return d


def test_merge_order_later_overrides(tmp_path):
    m2 = _run_dir(tmp_path, "m2", {"encoder_m2.w": torch.ones(2), "fusion_net.w": torch.full((2,), 2.0),
                                   "layers_m2.x": torch.ones(1)}, ["net_epoch3.pth", "net_epoch5.pth"])
    m1 = _run_dir(tmp_path, "m1", {"encoder_m1.w": torch.zeros(2), "fusion_net.w": torch.full((2,), 1.0)},
                  ["net_epoch_bestval_at4.pth", "net_epoch9.pth"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.yaml").write_text("name: x\n")
    assert pick_checkpoint(str(m1)).endswith("net_epoch_bestval_at4.pth")
    assert pick_checkpoint(str(m2)).endswith("net_epoch5.pth")
    path = merge_and_save_final([str(m2), str(m1)], str(out))
    sd = read_state_dict(path)
    assert os.path.basename(path) == "net_epoch1.pth"
    assert torch.equal(sd["fusion_net.w"], torch.full((2,), 1.0))  # the later (ego) folder wins
    assert "encoder_m2.w" in sd and "encoder_m1.w" in sd
    assert "layers_m2.x" not in sd  # HEAL drops per-agent pyramid pieces of earlier folders
    # nothing is overwritten without asking
    before = open(path, "rb").read()
    with pytest.raises(CheckpointError, match="already holds net_epoch1.pth"):
        merge_and_save_final([str(m2), str(m1)], str(out))
    assert open(path, "rb").read() == before


def test_merge_errors(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    two = _run_dir(tmp_path, "two", {"a": torch.ones(1)}, ["net_epoch_bestval_at2.pth", "net_epoch_bestval_at4.pth"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.yaml").write_text("name: x\n")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        merge_and_save_final([str(empty)], str(out))
    with pytest.raises(CheckpointError, match="ambiguous, 2 bestval"):
        merge_and_save_final([str(two)], str(out))
    nocfg = tmp_path / "nocfg"
    nocfg.mkdir()
    with pytest.raises(SystemExit) as e:
        heal_main(["merge_and_save", str(two), str(nocfg)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing config.yaml" in err


def test_corrupt_checkpoint_one_line(tmp_path):
    p = tmp_path / "net_epoch1.pth"
    atomic_torch_save({"a": torch.ones(1000)}, str(p))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError) as e:
        read_state_dict(str(p))
    assert str(p) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("planted", ["net_epoch3.pth", "net_epoch_bestval_at2.pth", "train_state_epoch3.pth"])
def test_merge_refuses_any_existing_checkpoint_and_overwrite_leaves_only_the_merge(tmp_path, capsys, planted):
    from opencood.utils.checkpoint import find_checkpoint
    m1 = _run_dir(tmp_path, "m1", {"encoder_m1.w": torch.zeros(2)}, ["net_epoch2.pth"])
    out = _run_dir(tmp_path, "out", {"old.w": torch.ones(1)}, [planted])
    (out / "config.yaml").write_text("name: x\n")
    with pytest.raises(SystemExit) as e:
        heal_main(["merge_and_save", str(m1), str(out)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and planted in err and "--overwrite" in err
    assert sorted(os.listdir(out)) == sorted(["config.yaml", planted])
    heal_main(["merge_and_save", str(m1), str(out), "--overwrite"])
    assert sorted(os.listdir(out)) == ["config.yaml", "net_epoch1.pth"]
    epoch, path = find_checkpoint(str(out))
    assert epoch == 1 and set(read_state_dict(path)) == {"encoder_m1.w"}
