"""V2XSet loader on its synthetic twin (make_synthetic --format v2xset): layout, RSU order, round trip, tree check."""
import os
import shutil

import numpy as np
import pytest
import yaml

from opencood.data_utils.datasets import build_dataset
from opencood.data_utils.synthetic.formats import SYNTHETIC_FORMATS
from opencood.utils.errors import DataError
from opencood.utils.registry import BASE_DATASETS
from opencood.utils.transformation_utils import x_to_world

from formats_tiny import make_hypes


@pytest.fixture(scope="module")
def v2xset(tmp_path_factory):
    root = tmp_path_factory.mktemp("v2xset")
    SYNTHETIC_FORMATS.get("v2xset")(str(root), preset="tiny", seed=2, scenarios=(1, 1, 0), agents=2, frames=2,
                                     infrastructure=2, cameras=False, progress=False)
    return str(root)


def _hypes(root):
    return make_hypes("v2xset", os.path.join(root, "V2XSET", "train"), os.path.join(root, "V2XSET", "validate"))


def test_layout(v2xset):
    assert sorted(os.listdir(v2xset)) == [".opencood_synthetic.json", "V2XSET", "modality_assign"]
    assert sorted(os.listdir(os.path.join(v2xset, "modality_assign"))) == [
        "v2xset_4modality.json", "v2xset_4modality_in_order.json"]
    scen = os.path.join(v2xset, "V2XSET", "train", os.listdir(os.path.join(v2xset, "V2XSET", "train"))[0])
    agents = sorted(a for a in os.listdir(scen) if os.path.isdir(os.path.join(scen, a)))
    assert len(agents) == 4 and agents[:2] == ["-1", "-2"]
    assert sorted(os.listdir(os.path.join(scen, "-1"))) == ["000000.pcd", "000000.yaml", "000002.pcd", "000002.yaml"]


def test_rsus_last_and_round_trip(v2xset):
    assert BASE_DATASETS.get("v2xset").__name__ == "V2XSetBaseDataset"
    ds = build_dataset(_hypes(v2xset), train=False)
    base = ds.base
    scen = base.scenario_database[0]
    assert scen["order"][2:] == ["-1", "-2"] and all(not c.startswith("-") for c in scen["order"][:2])
    agents = base.retrieve_base_data(1)
    assert [a.is_infrastructure for a in agents] == [False, False, True, True]
    for agent in agents:
        params = yaml.safe_load(open(os.path.join(scen["path"], agent.agent_id, "000002.yaml")))
        assert agent.timestamp == "000002"
        np.testing.assert_array_equal(agent.lidar_pose, params["lidar_pose"])
        assert agent.object_ids == list(params["vehicles"])
        # boxes by hand: centre = location + center in the world, into the LiDAR frame; yaw relative; hwl
        lidar_from_world = np.linalg.inv(x_to_world(params["lidar_pose"]))
        for k, obj_id in enumerate(agent.object_ids):
            v = params["vehicles"][obj_id]
            centre = lidar_from_world @ np.array([*(np.add(v["location"], v["center"])), 1.0])
            np.testing.assert_allclose(agent.objects[k, :3], centre[:3], atol=1e-4)
            np.testing.assert_allclose(agent.objects[k, 3:6], 2 * np.array(v["extent"])[::-1], atol=1e-4)
            yaw = np.radians(v["angle"][1] - params["lidar_pose"][4])
            assert abs(np.sin(agent.objects[k, 6] - yaw)) < 1e-4
            assert agent.object_classes[k] == ("truck" if v.get("obj_type") == "Truck" else "vehicle")
    rsu = agents[2]
    assert set(rsu.object_ids) & {int(a.agent_id) for a in agents[:2]}  # the RSU sees the connected cars
    sample = ds[1]["ego"]
    assert sample["cav_id_list"][0] == agents[0].agent_id and "-1" in sample["cav_id_list"]


def test_three_camera_scenario_dropped_only_with_cameras(v2xset, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(v2xset, root)
    bad = root / "V2XSET" / "validate" / "2021_09_09_13_20_58" / "641"
    bad.mkdir(parents=True)
    (bad / "000000.yaml").write_text("lidar_pose: [0, 0, 1.9, 0, 0, 0]\nvehicles: {}\n")
    with pytest.raises(DataError, match="2021_09_09_13_20_58/641/000000.pcd missing"):
        build_dataset(_hypes(str(root)), train=False)
    h = _hypes(str(root))
    h["input_source"] = ["lidar", "camera"]
    for scen in (root / "V2XSET" / "validate").iterdir():  # cameras of the regular scenario, so only the skip matters
        for agent in (p for p in scen.iterdir() if p.is_dir()):
            for ts in ("000000", "000002"):
                for i in range(4):
                    (agent / f"{ts}_camera{i}.png").write_bytes(b"")
    ds = build_dataset(h, train=False)
    assert "2021_09_09_13_20_58" not in [s["name"] for s in ds.base.scenario_database]


def test_tree_check_lists_every_missing_file(v2xset, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(v2xset, root)
    scen = next((root / "V2XSET" / "validate").iterdir())
    removed = [scen / "-1" / "000002.pcd", scen / "-2" / "000000.pcd", scen / "-2" / "000002.yaml"]
    for path in removed:
        path.unlink()
    with pytest.raises(DataError) as err:
        build_dataset(_hypes(str(root)), train=False)
    msg = str(err.value)
    assert "3 dataset problems" in msg and "\n" not in msg
    assert "-1/000002.pcd missing" in msg and "-2/000000.pcd missing" in msg and "-2/000002.yaml missing" in msg
