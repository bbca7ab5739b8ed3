"""``--check_data full``: every agent YAML and PCD header of a split is parsed up front; a corrupt file in any
split (the test split included) is one DataError before training."""
import os
import shutil
import sys

import pytest
import yaml

from opencood.data_utils.datasets.basedataset.dataset_tree import check_split_contents
from opencood.data_utils.datasets.basedataset.opv2v_basedataset import read_agent_params
from opencood.utils.errors import DataError

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__))))
PP = "opencood/hypes_yaml/demo/m1_pointpillar_attfuse.yaml"


def test_corrupt_files_are_all_found(tmp_path):
    from opv2v_tiny import make_tree
    base = make_tree(str(tmp_path / "data"))
    val = os.path.join(base, "validate")
    assert check_split_contents(val, read_agent_params) == 4 * 2 * 2  # 4 agents x 2 frames x (yaml + pcd)
    scen = os.path.join(val, "2021_01_01_00_00_03")
    with open(os.path.join(scen, "200", "000002.pcd"), "r+b") as f:  # header asks for far more points
        text = f.read().replace(b"POINTS 300", b"POINTS 300000000").replace(b"WIDTH 300", b"WIDTH 300000000")
        f.seek(0)
        f.write(text)
    with open(os.path.join(scen, "-1", "000000.yaml"), "w") as f:
        f.write("lidar_pose: [0, 0\nvehicles: {}\n")
    done = []
    with pytest.raises(DataError) as e:
        check_split_contents(val, read_agent_params, progress=lambda k, n: done.append((k, n)))
    msg = str(e.value)
    assert msg.startswith(f"{val}: 2 dataset problems: ") and "\n" not in msg
    assert "-1/000000.yaml: cannot parse" in msg and "200/000002.pcd: truncated DATA section" in msg
    assert done[-1] == (4, 4)


def test_trainer_finds_a_corrupt_test_file_before_training(make_tiny_config, tmp_path, capsys):
    from opencood.tools import trainer
    cfg = make_tiny_config(PP, epoches=1)
    h = yaml.safe_load(open(cfg))
    test_copy = tmp_path / "test_split"
    shutil.copytree(h["test_dir"], test_copy)
    scen = sorted(os.listdir(test_copy))[0]
    cav = sorted(os.listdir(test_copy / scen))[0]
    pcd = sorted(f for f in os.listdir(test_copy / scen / cav) if f.endswith(".pcd"))[0]
    (test_copy / scen / cav / pcd).write_bytes(b"VERSION 0.7\nFIELDS x y z\n")
    h["test_dir"] = str(test_copy)
    yaml.safe_dump(h, open(cfg, "w"))
    with pytest.raises(SystemExit) as e:
        trainer.main(["-y", cfg, "--log_root", str(tmp_path / "logs"), "--num_workers", "0", "--check_data", "full"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and f"{pcd}: malformed PCD header" in err
    assert not (tmp_path / "logs").exists()
