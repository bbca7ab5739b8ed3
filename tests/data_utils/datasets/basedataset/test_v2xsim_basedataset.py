"""V2X-Sim 2.0 loader on its synthetic twin (make_synthetic --format v2xsim): restricted unpickling, round trip of
poses / boxes / ids / points, the up-front pickle check."""
import os
import pickle
import shutil

import numpy as np
import pytest

from opencood.data_utils.datasets import build_dataset
from opencood.data_utils.datasets.basedataset.v2xsim_basedataset import (
    REFERENCE_PREFIX, load_info_pickle, quaternion_to_matrix, sweep_path)
from opencood.data_utils.synthetic.formats import SYNTHETIC_FORMATS
from opencood.data_utils.synthetic.formats.v2xsim import matrix_to_quaternion
from opencood.utils.errors import DataError
from opencood.utils.transformation_utils import x_to_world

from formats_tiny import make_hypes


@pytest.fixture(scope="module")
def v2xsim(tmp_path_factory):
    root = tmp_path_factory.mktemp("v2xsim")
    SYNTHETIC_FORMATS.get("v2xsim")(str(root), preset="tiny", seed=3, scenarios=(1, 1, 0), agents=(2, 3), frames=2,
                                     progress=False)
    return str(root)


def _pkl(root, split):
    return os.path.join(root, "v2xsim2_info", f"v2xsim_infos_{split}.pkl")


def _hypes(root):
    return make_hypes("v2xsim", _pkl(root, "train"), _pkl(root, "val"))


def test_layout(v2xsim):
    assert sorted(os.listdir(v2xsim)) == [".opencood_synthetic.json", "V2X-Sim-2.0", "v2xsim2_info"]
    entries = load_info_pickle(_pkl(v2xsim, "val"))
    assert len(entries) == 2 and entries[0]["agent_num"] >= 2
    assert entries[0]["lidar_path_1"].startswith("V2X-Sim-2.0/sweeps/LIDAR_TOP_id_1/scene_2_000000")
    scan = np.fromfile(sweep_path(entries[0]["lidar_path_1"], v2xsim), np.float32).reshape(-1, 5)
    assert scan.shape[0] > 2000 and set(np.unique(scan[:, 4])) <= set(range(64)) and len(np.unique(scan[:, 4])) > 20
    assert sweep_path(REFERENCE_PREFIX + "/sweeps/a.pcd.bin", "/d") == "/d/V2X-Sim-2.0/sweeps/a.pcd.bin"


def test_quaternion_round_trip():
    rot = x_to_world([0, 0, 0, 3.0, -140.0, 5.0])[:3, :3]
    np.testing.assert_allclose(quaternion_to_matrix(matrix_to_quaternion(rot)), rot, atol=1e-12)
    np.testing.assert_allclose(quaternion_to_matrix([np.cos(0.5), 0, 0, np.sin(0.5)])[:2, 0], [np.cos(1), np.sin(1)])


def test_round_trip(v2xsim):
    ds = build_dataset(_hypes(v2xsim), train=False)
    base = ds.base
    entries = load_info_pickle(_pkl(v2xsim, "val"))
    assert len(base) == 2 and base.sample_info(1) == ("scene_2", "000002")
    agents = base.retrieve_base_data(1)
    entry = entries[1]
    assert [a.agent_id for a in agents] == [str(i) for i in range(1, entry["agent_num"] + 1)]
    for agent in agents:
        i = agent.agent_id
        np.testing.assert_allclose(agent.T_world_lidar, entry[f"lidar_pose_{i}"], atol=1e-9)
        scan = np.fromfile(sweep_path(entry[f"lidar_path_{i}"], v2xsim), np.float32).reshape(-1, 5)
        np.testing.assert_array_equal(agent.points, scan[:, :4])
        labels = entry[f"labels_{i}"]
        assert agent.object_ids == labels["gt_object_ids"].tolist() and set(agent.object_classes) == {"vehicle"}
        inv = np.linalg.inv(entry[f"lidar_pose_{i}"])
        for k, box in enumerate(labels["gt_boxes_global"]):
            centre = inv @ np.array([*box[:3], 1.0])
            np.testing.assert_allclose(agent.objects[k, :3], centre[:3], atol=1e-4)
            np.testing.assert_allclose(agent.objects[k, 3:6], box[3:6][::-1], atol=1e-4)  # hwl = dz, dy, dx
            heading = inv[:3, :3] @ quaternion_to_matrix(box[6:])[:, 0]
            assert abs(np.sin(agent.objects[k, 6] - np.arctan2(heading[1], heading[0]))) < 1e-5
    fused = base.objects_in_frame(agents, agents[0].lidar_pose_clean)
    assert set(fused.ids) == set().union(*(a.object_ids for a in agents)) and len(fused.ids) == len(set(fused.ids))
    sample = ds[1]["ego"]
    assert int(sample["object_bbx_mask"].sum()) > 0


def test_planted_payload_does_not_run(v2xsim, tmp_path):
    flag = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {flag}",))

    bad = tmp_path / "v2xsim2_info" / "v2xsim_infos_val.pkl"
    bad.parent.mkdir()
    bad.write_bytes(pickle.dumps([{"agent_num": 1, "x": Payload()}]))
    with pytest.raises(DataError, match=r"v2xsim_infos_val.pkl: refused or malformed info pickle \(global '(posix|os)"
                                        r"\.system' is not allowed\)"):
        build_dataset(make_hypes("v2xsim", str(bad), str(bad)), train=False)
    assert not flag.exists()
    bad.write_bytes(pickle.dumps({"agent_num": 1}))
    with pytest.raises(DataError, match="expected a list of frame dicts"):
        load_info_pickle(str(bad))


def test_pickle_check_reports_everything_at_once(v2xsim, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(v2xsim, root)
    entries = load_info_pickle(_pkl(str(root), "val"))
    n = entries[0]["agent_num"]
    entries[0]["agent_num"] = n - 1  # wrong agent count: lidar_path_<n> is left over
    del entries[1]["labels_2"]
    os.remove(sweep_path(entries[1]["lidar_path_1"], str(root)))
    with open(_pkl(str(root), "val"), "wb") as f:
        pickle.dump(entries, f)
    with pytest.raises(DataError) as err:
        build_dataset(_hypes(str(root)), train=False)
    msg = str(err.value)
    assert "v2xsim_infos_val.pkl: 3 dataset problems" in msg and "\n" not in msg
    assert f"entry 0: key 'agent_num' = {n - 1} but the entry has lidar_path_{n}" in msg
    assert "entry 1: key 'lidar_path_1':" in msg and "scene_2_000002.pcd.bin missing" in msg
    assert "entry 1: key 'labels_2' missing" in msg
