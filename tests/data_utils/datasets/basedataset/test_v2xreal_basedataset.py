"""V2X-Real loader on its synthetic twin: records back exactly as written (poses, boxes, ids, classes, clouds),
dataset modes, the evaluation date filter, the up-front tree check and the bad-input errors."""
import os
import shutil

import numpy as np
import pytest
import yaml

from opencood.data_utils.datasets.basedataset.v2xreal_basedataset import V2XRealBaseDataset, read_bin_cloud
from opencood.data_utils.synthetic.formats import SYNTHETIC_FORMATS
from opencood.data_utils.synthetic.formats import scene as S
from opencood.data_utils.synthetic.formats import v2xreal as W
from opencood.utils.errors import ConfigError, DataError
from opencood.utils.transformation_utils import x_to_world


@pytest.fixture(scope="module")
def world_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("v2xreal"))
    summary = SYNTHETIC_FORMATS.get("v2xreal")(root, preset="tiny", seed=3, progress=False)
    return root, summary


def params(root, split="train", **extra):
    return {"root_dir": os.path.join(root, "v2xreal", "train"), "validate_dir": os.path.join(root, "v2xreal", split),
            "train_params": {"max_cav": 4}, "fusion": {"dataset": "v2xreal"}, **extra}


def copy_tree(world_root, tmp_path):
    dst = str(tmp_path / "copy")
    shutil.copytree(world_root[0], dst)
    return dst


def test_records_read_back_as_written(world_root):
    root, summary = world_root
    names = S.scenario_names(3, (2, 1, 1), W.FIRST_DAY, W.NAME_FORMAT)
    split, name, seed = names[0]
    scene = S.build_scene(seed, W.N_VEHICLES, W.N_RSUS, 3)
    folder_of = {v: k for k, v in W._folder_ids(scene).items()}
    ds = V2XRealBaseDataset(params(root), train=False)  # eval: sorted ids, vc order
    assert ds.sample_info(0)[0] == f"{name}_0_0" == summary["scenarios"]["train"][0]
    agents = ds.retrieve_base_data(1)  # frame 1
    assert [a.agent_id for a in agents] == ["1", "2", "-1", "-2"]
    assert [a.is_infrastructure for a in agents] == [False, False, True, True] and agents[0].is_ego
    classes = set()
    for agent in agents:
        vid = folder_of[int(agent.agent_id)]
        pose = scene.world.lidar_pose(vid, 1)
        np.testing.assert_allclose(agent.lidar_pose_clean, pose, atol=1e-5)
        T_lidar_world = np.linalg.inv(x_to_world(pose))
        states = S.object_states(scene, 1, agent.object_ids)
        assert len(states) == len(agent.object_ids) > 0
        for box, obj_id, cls in zip(agent.objects, agent.object_ids, agent.object_classes):
            location, center, yaw, half = states[obj_id]
            centre = T_lidar_world @ np.append(location + center, 1.0)
            np.testing.assert_allclose(box[:6], [*centre[:3], 2 * half[2], 2 * half[1], 2 * half[0]], atol=2e-4)
            dyaw = box[6] - (yaw - np.radians(pose[4]))
            assert abs(np.arctan2(np.sin(dyaw), np.cos(dyaw))) < 1e-5
            assert cls == {"Car": "vehicle", "Pedestrian": "pedestrian"}.get(scene.obj_type[obj_id], "truck")
            classes.add(cls)
        raw = np.fromfile(os.path.join(root, "v2xreal", "train", f"{name}_0_0", agent.agent_id, "000002.bin"),
                          np.float32).reshape(-1, 4)
        np.testing.assert_array_equal(agent.points, raw)
    assert classes == {"vehicle", "pedestrian", "truck"}
    fused = ds.objects_in_frame(agents, agents[0].lidar_pose_clean)
    assert set(fused.ids) == set().union(*(a.object_ids for a in agents))


def test_dataset_modes_and_date_filter(world_root, tmp_path):
    root = copy_tree(world_root, tmp_path)
    test_dir = os.path.join(root, "v2xreal", "test")
    name = sorted(os.listdir(test_dir))[0]
    shutil.copytree(os.path.join(test_dir, name), os.path.join(test_dir, "2023-04-07-10-00-00_9_0"))
    orders = {}
    for mode in ("vc", "ic", "v2v", "i2i"):
        ds = V2XRealBaseDataset(params(root, "test", dataset_mode=mode), train=False)
        orders[mode] = [s["order"] for s in ds.scenario_database]
    assert orders["vc"] == [["1", "2", "-1", "-2"]]  # the 2023-04-07 copy is left out of evaluation
    assert orders["ic"] == [["-1", "-2", "1", "2"]]
    assert orders["i2i"] == [["-1", "-2"]]
    assert orders["v2v"] == [["1", "2"], ["1", "2"]]  # ... except in v2v mode
    train = V2XRealBaseDataset(params(root, "test", max_cav=3, dataset_mode="vc",
                                      train_params={"max_cav": 3}), train=True)
    for scen in train.scenario_database:
        assert sorted(scen["order"][:2]) == ["1", "2"] and scen["order"][2] in ("-1", "-2")
    with pytest.raises(ConfigError, match="dataset_mode"):
        V2XRealBaseDataset(params(root, dataset_mode="rsu"), train=True)


def test_tree_check_lists_every_missing_file(world_root, tmp_path):
    root = copy_tree(world_root, tmp_path)
    split = os.path.join(root, "v2xreal", "train")
    scen = os.path.join(split, sorted(os.listdir(split))[0])
    os.remove(os.path.join(scen, "1", "000002.bin"))
    os.remove(os.path.join(scen, "-2", "000004.bin"))
    os.remove(os.path.join(scen, "2", "000000.yaml"))
    with pytest.raises(DataError) as err:
        V2XRealBaseDataset(params(root), train=True)
    msg = str(err.value)
    assert "3 dataset problems" in msg and "\n" not in msg
    for missing in ("1/000002.bin missing", "-2/000004.bin missing", "2/000000.yaml missing"):
        assert missing in msg


def test_unknown_obj_type_error_skip_or_map(world_root, tmp_path):
    root = copy_tree(world_root, tmp_path)
    scen = sorted(os.listdir(os.path.join(root, "v2xreal", "train")))[0]
    path = os.path.join(root, "v2xreal", "train", scen, "1", "000000.yaml")
    with open(path) as f:
        data = yaml.safe_load(f)
    obj_id = sorted(data["vehicles"])[0]
    data["vehicles"][obj_id]["obj_type"] = "Alien"
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    ds = V2XRealBaseDataset(params(root), train=False)
    with pytest.raises(DataError, match=rf"000000.yaml: key 'vehicles.{obj_id}.obj_type' = 'Alien' is not a known"):
        ds.retrieve_base_data(0)
    ego = V2XRealBaseDataset(params(root, unknown_obj_type="skip"), train=False).retrieve_base_data(0)[0]
    assert obj_id not in ego.object_ids and len(ego.object_ids) == len(data["vehicles"]) - 1
    ego = V2XRealBaseDataset(params(root, unknown_obj_type="pedestrian"), train=False).retrieve_base_data(0)[0]
    assert ego.object_classes[ego.object_ids.index(obj_id)] == "pedestrian"
    with pytest.raises(ConfigError, match="unknown_obj_type"):
        V2XRealBaseDataset(params(root, unknown_obj_type="bus"), train=False)


def test_bin_cloud_nan_rows_and_bad_size(tmp_path):
    path = str(tmp_path / "a.bin")
    pts = np.arange(12, dtype=np.float32).reshape(3, 4)
    pts[1, 2] = np.nan
    pts.tofile(path)
    np.testing.assert_array_equal(read_bin_cloud(path), pts[[0, 2]])
    np.arange(6, dtype=np.float32).tofile(path)
    with pytest.raises(DataError, match="a.bin: 6 float32 values, not a multiple of 4"):
        read_bin_cloud(path)


def test_writer_refuses_a_foreign_folder(tmp_path):
    os.makedirs(tmp_path / "v2xreal")
    with pytest.raises(DataError, match="no .opencood_synthetic.json marker"):
        SYNTHETIC_FORMATS.get("v2xreal")(str(tmp_path), preset="tiny", progress=False)
