"""V2V4Real loader on its synthetic twin (make_synthetic --format v2v4real): per-car labels joined by ass_id,
obj_type classes, pedestrians skipped, the two-agent tree check."""
import os
import shutil

import numpy as np
import pytest
import yaml

from opencood.data_utils.datasets import build_dataset
from opencood.data_utils.synthetic.formats import SYNTHETIC_FORMATS
from opencood.utils.errors import DataError
from opencood.utils.transformation_utils import x_to_world

from formats_tiny import make_hypes


@pytest.fixture(scope="module")
def v2v4real(tmp_path_factory):
    root = tmp_path_factory.mktemp("v2v4real")
    SYNTHETIC_FORMATS.get("v2v4real")(str(root), preset="tiny", seed=1, scenarios=(1, 1, 0), frames=2,
                                       cameras=False, progress=False)
    return str(root)


def _hypes(root):
    return make_hypes("v2v4real", os.path.join(root, "V2V4Real", "train"), os.path.join(root, "V2V4Real", "validate"))


def _yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


def test_layout_and_labels(v2v4real):
    split = os.path.join(v2v4real, "V2V4Real", "validate")
    scen = os.path.join(split, os.listdir(split)[0])
    assert sorted(d for d in os.listdir(scen) if os.path.isdir(os.path.join(scen, d))) == ["0", "1"]
    a, b = (_yaml(os.path.join(scen, c, "000000.yaml")) for c in ("0", "1"))
    assert "camera0" not in a and all(v["obj_type"] in ("Car", "Truck") for v in a["vehicles"].values())
    shared = {v["ass_id"] for v in a["vehicles"].values()} & {v["ass_id"] for v in b["vehicles"].values()} - {-1}
    assert shared  # objects both cars label, linked by ass_id
    with pytest.raises(ValueError, match="exactly 2 agents"):
        SYNTHETIC_FORMATS.get("v2v4real")(os.path.join(v2v4real, "x"), agents=3, progress=False)


def test_round_trip_and_fused_gt(v2v4real):
    ds = build_dataset(_hypes(v2v4real), train=False)
    agents = ds.base.retrieve_base_data(0)
    assert [a.agent_id for a in agents] == ["0", "1"]
    scen = ds.base.scenario_database[0]["path"]
    for agent in agents:
        params = _yaml(os.path.join(scen, agent.agent_id, "000000.yaml"))
        np.testing.assert_array_equal(agent.lidar_pose, params["lidar_pose"])
        expect_ids = [v["ass_id"] if v["ass_id"] != -1 else f"{agent.agent_id}/{k}"
                      for k, v in params["vehicles"].items()]
        assert agent.object_ids == expect_ids
        inv = np.linalg.inv(x_to_world(params["lidar_pose"]))
        for k, v in enumerate(params["vehicles"].values()):
            centre = inv @ np.array([*np.add(v["location"], v["center"]), 1.0])
            np.testing.assert_allclose(agent.objects[k, :3], centre[:3], atol=1e-4)
            assert agent.object_classes[k] == {"Car": "vehicle", "Truck": "truck"}[v["obj_type"]]
    fused = ds.base.objects_in_frame(agents, agents[0].lidar_pose_clean)
    assert len(fused.ids) == len(set(fused.ids))
    shared = set(agents[0].object_ids) & set(agents[1].object_ids)
    assert shared and len(fused.ids) == len(set(agents[0].object_ids) | set(agents[1].object_ids))


def test_pedestrians_skipped_and_bad_labels(v2v4real, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(v2v4real, root)
    path = next((root / "V2V4Real" / "validate").iterdir()) / "0" / "000000.yaml"
    params = _yaml(path)
    first = next(iter(params["vehicles"].values()))
    params["vehicles"][900] = dict(first, obj_type="Pedestrian", ass_id=-1)
    params["vehicles"][901] = {k: v for k, v in first.items() if k not in ("obj_type", "ass_id")}  # Car, unassociated
    path.write_text(yaml.safe_dump(params))
    agent = build_dataset(_hypes(str(root)), train=False).base.retrieve_base_data(0)[0]
    assert "0/900" not in agent.object_ids and agent.object_ids[-1] == "0/901"
    assert agent.object_classes[-1] == "vehicle"
    params["vehicles"][901]["obj_type"] = "Spaceship"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(DataError, match=r"000000.yaml: key 'vehicles.901.obj_type' = 'Spaceship'"):
        build_dataset(_hypes(str(root)), train=False).base.retrieve_base_data(0)
    params["vehicles"][901]["obj_type"] = "Car"
    params["vehicles"][901]["ass_id"] = "x"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(DataError, match=r"key 'vehicles.901.ass_id' must be an integer"):
        build_dataset(_hypes(str(root)), train=False).base.retrieve_base_data(0)


def test_tree_check_two_agents_and_missing_files(v2v4real, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(v2v4real, root)
    scen = next((root / "V2V4Real" / "validate").iterdir())
    shutil.copytree(scen / "1", scen / "cav2")
    with pytest.raises(DataError) as err:
        build_dataset(_hypes(str(root)), train=False)
    msg = str(err.value)
    assert "2 dataset problems" in msg and "3 agent folders (0, 1, cav2), expected 2" in msg
    assert "cav2: agent folder name is not an integer id" in msg
    shutil.rmtree(scen / "cav2")
    (scen / "0" / "000002.pcd").unlink()
    (scen / "1" / "000000.pcd").unlink()
    with pytest.raises(DataError, match=r"2 dataset problems: .*0/000002.pcd missing; .*1/000000.pcd missing"):
        build_dataset(_hypes(str(root)), train=False)


def test_pose_noise_follows_v2v4real_s_own_model(v2v4real):
    """The shipped V2V4Real configs select V2V4Real's noise model; switched on, the ego keeps its clean pose and
    the other car gets x/y/z and yaw noise only."""
    from opencood.hypes_yaml.yaml_utils import load_yaml
    for path in ("opencood/hypes_yaml/v2v4real/LiDAROnly/lidar_attfuse.yaml",
                 "opencood/hypes_yaml/demo/datasets/v2v4real_lidar_att.yaml"):
        setting = load_yaml(path)["noise_setting"]
        assert setting["add_noise"] is False and setting["args"]["style"] == "v2v4real"
    hypes = _hypes(v2v4real)
    hypes["noise_setting"] = {"add_noise": True, "args": {"pos_std": 0.5, "rot_std": 2.0, "style": "v2v4real"}}
    ds = build_dataset(hypes, train=False)
    ego, other = ds.agents_of(0, np.random.default_rng(0))
    assert ego.is_ego and np.array_equal(ego.lidar_pose, ego.lidar_pose_clean)
    delta = np.subtract(other.lidar_pose, other.lidar_pose_clean)
    assert np.all(delta[[3, 5]] == 0) and np.all(delta[[0, 1, 2, 4]] != 0)
