"""DAIR-V2X-C loader on its synthetic twin: poses through the calibration chains, labels and clouds back exactly as
written, the vehicle/infrastructure swap, the overlap-merged GT, the up-front check and the bad-input errors."""
import datetime
import json
import os
import shutil

import numpy as np
import pytest

from opencood.data_utils.datasets.basedataset.agent_frame import AgentFrame
from opencood.data_utils.datasets.basedataset.dairv2x_basedataset import DAIRV2XBaseDataset
from opencood.data_utils.synthetic.formats import SYNTHETIC_FORMATS
from opencood.data_utils.synthetic.formats import dairv2x as W
from opencood.data_utils.synthetic.formats import scene as S
from opencood.utils.errors import ConfigError, DataError
from opencood.utils.pcd_utils import pcd_to_np
from opencood.utils.transformation_utils import x_to_world


@pytest.fixture(scope="module")
def world_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("dair"))
    SYNTHETIC_FORMATS.get("dairv2x")(root, preset="tiny", seed=5, progress=False)
    return root


def params(root, **extra):
    d = os.path.join(root, W.DATA_DIR)
    return {"data_dir": d, "root_dir": os.path.join(d, "train.json"), "validate_dir": os.path.join(d, "val.json"),
            "train_params": {"max_cav": 2}, "fusion": {"dataset": "dairv2x"}, **extra}


def test_records_read_back_as_written(world_root):
    ds = DAIRV2XBaseDataset(params(world_root), train=False)
    assert len(ds) == 6 and ds.sample_info(0) == ("000006", "000006")  # val.json = validate + test frames
    split, _, seed = S.scenario_names(5, (2, 1, 1), datetime.date(2021, 1, 1), "%Y%m%d_%H%M%S")[2]
    assert split == "validate"
    scene = S.build_scene(seed, 1, 1, 3)
    agents = ds.retrieve_base_data(1)  # frame 1 of the validate scenario
    assert [a.agent_id for a in agents] == ["0", "1"] and [a.is_infrastructure for a in agents] == [False, True]
    world_ids = [int(scene.world.agent_ids[0]), int(scene.world.infrastructure_ids[0])]
    data_dir = os.path.join(world_root, W.DATA_DIR)
    for agent, vid in zip(agents, world_ids):
        pose = scene.world.lidar_pose(vid, 1)  # through lidar->novatel->world / virtuallidar->world + offset
        np.testing.assert_allclose(agent.lidar_pose_clean, pose, atol=1e-9)
        side = "vehicle-side" if agent.agent_id == "0" else "infrastructure-side"
        raw = pcd_to_np(os.path.join(data_dir, side, "velodyne", f"{agent.timestamp}.pcd"))
        np.testing.assert_array_equal(agent.points[:, :3], raw[:, :3])
        np.testing.assert_array_equal(agent.points[:, 3] * 256.0, raw[:, 3])
        assert agent.points[:, 3].max() <= 1.0
        for box in agent.objects:  # each own box is one of the world's vehicles seen from this side
            centre_w = x_to_world(pose) @ np.append(box[:3], 1.0)
            location, yaw = scene.world.vehicle_states(1)
            v = scene.world.vehicles
            d = np.linalg.norm(location + v.center - centre_w[:3], axis=1)
            k = int(np.argmin(d))
            assert d[k] < 1e-4 and box[5] == pytest.approx(2 * v.half[k, 0], abs=1e-5)  # float32 boxes
    assert {"vehicle", "truck"} == set(agents[0].object_classes + agents[1].object_classes)
    fused = ds.objects_in_frame(agents, agents[0].lidar_pose_clean)
    with open(os.path.join(data_dir, "cooperative", "label_world", "000007.json")) as f:
        coop = [e for e in json.load(f) if e["type"] != "Pedestrian"]
    assert len(fused.ids) == len(coop) and all(i.startswith("c") for i in fused.ids)


def test_training_swaps_vehicle_and_infrastructure(world_root):
    ds = DAIRV2XBaseDataset(params(world_root), train=True)
    egos = {ds.retrieve_base_data(i)[0].agent_id for i in range(len(ds))}
    assert egos == {"0", "1"}
    assert [a.agent_id for a in DAIRV2XBaseDataset(params(world_root, train_params={"max_cav": 1}),
                                                   train=False).retrieve_base_data(0)] == ["0"]


def test_gt_merge_by_overlap():
    """Ego box at (0, 0); collaborator boxes at (0.3, 0) (overlaps: dropped) and (10, 0) (kept)."""
    ds = DAIRV2XBaseDataset.__new__(DAIRV2XBaseDataset)
    ds.order = "hwl"
    pose = np.zeros(6)
    box = lambda x: [x, 0.0, -1.0, 1.5, 2.0, 4.0, 0.0]  # noqa: E731
    ego = AgentFrame("0", True, pose, pose, objects=np.array([box(0.0)], np.float32), object_ids=["v0"],
                     object_classes=["vehicle"])
    other_pose = np.array([5.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    other = AgentFrame("1", False, other_pose, other_pose, objects=np.array([box(-4.7), box(5.0)], np.float32),
                       object_ids=["i0", "i1"], object_classes=["vehicle", "truck"])
    fused = ds.objects_in_frame([ego, other], pose)
    assert fused.ids == ["v0", "i1"] and fused.classes == ["vehicle", "truck"]
    np.testing.assert_allclose(fused.boxes[:, 0], [0.0, 10.0], atol=1e-6)


def test_tree_check_reports_every_problem(world_root, tmp_path):
    root = str(tmp_path / "copy")
    shutil.copytree(world_root, root)
    d = os.path.join(root, W.DATA_DIR)
    os.remove(os.path.join(d, "vehicle-side", "velodyne", "000001.pcd"))
    os.remove(os.path.join(d, "infrastructure-side", "calib", "virtuallidar_to_world", "010002.json"))
    with open(os.path.join(d, "vehicle-side", "calib", "lidar_to_novatel", "000003.json"), "w") as f:
        json.dump({"rotation": np.eye(3).tolist(), "translation": [[0], [0], [0]]}, f)  # no 'transform'
    with open(os.path.join(d, "train.json"), "w") as f:
        json.dump(["000000", "000001", "000002", "000003", "999999"], f)
    with pytest.raises(DataError) as err:
        DAIRV2XBaseDataset(params(root), train=True)
    msg = str(err.value)
    assert "4 dataset problems" in msg and "\n" not in msg
    assert "velodyne/000001.pcd missing (frame 000001)" in msg
    assert "virtuallidar_to_world/010002.json missing (frame 000002)" in msg
    assert "lidar_to_novatel/000003.json: missing key 'transform'" in msg
    assert "no entry for frame '999999'" in msg


def test_bad_inputs(world_root, tmp_path):
    with pytest.raises(ConfigError, match="missing key 'data_dir'"):
        DAIRV2XBaseDataset({k: v for k, v in params(world_root).items() if k != "data_dir"}, train=True)
    root = str(tmp_path / "copy")
    shutil.copytree(world_root, root)
    d = os.path.join(root, W.DATA_DIR)
    info_path = os.path.join(d, "cooperative", "data_info.json")
    with open(info_path) as f:
        info = json.load(f)
    info[0]["vehicle_pointcloud_path"] = "vehicle-side/velodyne/gone.pcd"
    with open(info_path, "w") as f:
        json.dump(info, f)
    with pytest.raises(DataError, match=r"velodyne/gone.pcd missing \(frame 000000\)"):
        DAIRV2XBaseDataset(params(root), train=True)
    with open(os.path.join(d, "train.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(DataError, match="train.json: cannot read JSON"):
        DAIRV2XBaseDataset(params(root), train=True)
