"""The agent record every base loader returns, GT merging by the base loader, object classes."""
import os
import sys

import numpy as np
import pytest
import torch
import yaml

from opencood.data_utils.datasets import build_dataset
from opencood.data_utils.datasets.basedataset.agent_frame import AgentFrame
from opencood.data_utils.datasets.basedataset.base_dataset import BaseDataset
from opencood.utils.box_utils import world_objects_to_boxes
from opencood.utils.errors import DataError
from opencood.utils.transformation_utils import get_pairwise_transformation, x1_to_x2, x_to_world

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from opv2v_tiny import EXTENT, agent_pose, make_hypes, make_tree  # noqa: E402

SCENARIO = "2021_01_01_00_00_03"  # the validate scenario: agents 100, 200, 300, -1


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = make_tree(str(tmp_path_factory.mktemp("records")), n_points=50)
    for ts in ("000000", "000002"):  # agent 200 lists object 2 as a truck, agent 100 lists 1 as a pedestrian
        for cav, obj, kind in (("200", 2, "Truck"), ("100", 1, "Pedestrian")):
            path = os.path.join(root, "validate", SCENARIO, cav, f"{ts}.yaml")
            with open(path) as f:
                params = yaml.safe_load(f)
            params["vehicles"][obj]["obj_type"] = kind
            with open(path, "w") as f:
                yaml.safe_dump(params, f)
    return root


def test_records_ego_first_with_poses_points_objects(base):
    ds = build_dataset(make_hypes(base, comm_range=200), train=False)
    agents = ds.base.retrieve_base_data(1)
    assert all(isinstance(a, AgentFrame) for a in agents)
    assert [a.agent_id for a in agents] == ["100", "200", "300", "-1"]
    assert [a.is_ego for a in agents] == [True, False, False, False]
    assert [a.is_infrastructure for a in agents] == [False, False, False, True]
    a = agents[1]
    assert (a.scenario, a.timestamp, a.frame_index, a.time_delay, a.modality) == (SCENARIO, "000002", 1, 0, None)
    assert a.lidar_pose.dtype == np.float64 and a.lidar_pose.tolist() == agent_pose("200")
    np.testing.assert_array_equal(a.lidar_pose, a.lidar_pose_clean)
    np.testing.assert_array_equal(a.T_world_lidar, x_to_world(agent_pose("200")))
    assert a.points.shape == (50, 4) and a.points.dtype == np.float32
    assert a.cameras == [] and a.extensions == {}
    # objects: the YAML's vehicles in the agent's clean LiDAR frame (hwl), with ids and super-classes
    assert a.object_ids == [1, 2, 100] and a.object_classes == ["vehicle", "truck", "vehicle"]
    assert a.objects.dtype == np.float32 and a.objects.shape == (3, 7)
    expected = x1_to_x2([40, 0, 0.75, 0, 30, 0], agent_pose("200"))[:3, 3]  # object 2 at (40, 0) yaw 30
    np.testing.assert_allclose(a.objects[1, :3], expected, atol=1e-4)
    np.testing.assert_allclose(a.objects[1, 3:6], 2 * np.array(EXTENT)[[2, 1, 0]], atol=1e-5)
    assert a.objects[1, 6] == pytest.approx(np.radians(30 - 90), abs=1e-5)


def test_objects_in_frame_merges_by_id_first_wins(base):
    ds = build_dataset(make_hypes(base, comm_range=200), train=False)
    agents = ds.base.retrieve_base_data(0)
    ref = agents[0].lidar_pose_clean
    merged = ds.base.objects_in_frame(agents, ref)
    assert merged.ids == [1, 4, 2, 100, 3]  # agent order, then each agent's YAML order; duplicates dropped
    assert merged.classes == ["pedestrian", "vehicle", "truck", "vehicle", "vehicle"]  # 1: agent 100's label wins
    # exactly the world objects projected straight into the reference frame
    for agent in agents:
        ids, boxes = world_objects_to_boxes(agent._loader_data, ref, "hwl")
        for obj_id, box in zip(ids, boxes):
            if agent is next(x for x in agents if obj_id in x.object_ids):
                np.testing.assert_array_equal(merged.boxes[merged.ids.index(obj_id)], box.astype(np.float32))
    # the dataset-neutral default (agent-frame boxes moved to the reference) agrees to rounding
    generic = BaseDataset.objects_in_frame(ds.base, agents, ref)
    assert generic.ids == merged.ids and generic.classes == merged.classes
    np.testing.assert_allclose(generic.boxes, merged.boxes, atol=1e-4)


def test_unknown_obj_type_names_file_and_key(tmp_path):
    root = make_tree(str(tmp_path), n_points=20)
    path = os.path.join(root, "validate", SCENARIO, "300", "000000.yaml")
    with open(path) as f:
        params = yaml.safe_load(f)
    params["vehicles"][3]["obj_type"] = "Tram"
    with open(path, "w") as f:
        yaml.safe_dump(params, f)
    ds = build_dataset(make_hypes(root, comm_range=200), train=False)
    with pytest.raises(DataError, match=r"300/000000.yaml: key 'vehicles.3.obj_type' = 'Tram' is not a known"):
        ds.base.retrieve_base_data(0)


def test_pairwise_transformation_from_records_and_heal_dict(base):
    ds = build_dataset(make_hypes(base), train=False)
    agents = ds.base.retrieve_base_data(0)
    heal = {a.agent_id: {"params": {"lidar_pose": a.lidar_pose.tolist()}} for a in agents}
    np.testing.assert_array_equal(get_pairwise_transformation(agents, 5, False),
                                  get_pairwise_transformation(heal, 5, False))


def multi_class_hypes(base, **kw):
    h = make_hypes(base, **kw)
    anchor = h["postprocess"]["anchor_args"]
    for key in ("l", "w", "h", "r"):
        anchor.pop(key)
    anchor["classes"] = [{"name": "vehicle", "l": 3.9, "w": 1.6, "h": 1.56, "z": -1.78, "r": [0, 90]},
                         {"name": "truck", "l": 8.0, "w": 3.0, "h": 3.0, "z": -1.78, "r": [0, 90]}]
    anchor["num"] = 4
    return h


@pytest.mark.parametrize("core_method", ["intermediate", "early", "late"])
def test_object_bbx_class_follows_the_head_classes(base, core_method):
    agnostic = build_dataset(make_hypes(base, core_method=core_method), train=False)
    s = agnostic[0]["ego"]
    n = int(s["object_bbx_mask"].sum())
    assert s["object_bbx_class"].dtype == np.int64 and s["object_bbx_class"].shape == (150,)
    assert not s["object_bbx_class"].any() and 1 in s["object_ids"]  # one class: the pedestrian stays GT

    ds = build_dataset(multi_class_hypes(base, core_method=core_method), train=False)
    assert ds.class_names == ["vehicle", "truck"] and ds.label_class_arg == "gt_class"
    s = ds[0]["ego"]
    classes = dict(zip(s["object_ids"], s["object_bbx_class"][:len(s["object_ids"])].tolist()))
    assert 1 not in classes  # a pedestrian is not a class of this head: not GT
    if core_method != "late":  # late: the ego lists only objects 1 and 4
        assert classes[2] == 1 and classes[100] == 0
        assert len(classes) == n - 1
    assert not s["object_bbx_class"][len(s["object_ids"]):].any()
    batch = ds.collate_batch_test([ds[0]])["ego"]
    assert batch["object_bbx_class"].dtype == torch.int64 and batch["object_bbx_class"].shape == (1, 150)
    assert torch.equal(batch["label_dict"]["object_bbx_class"], batch["object_bbx_class"])


def test_truck_labels_of_the_synthetic_world(tiny_world):
    ds = build_dataset(make_hypes(os.path.join(tiny_world, "OPV2V")), train=False)
    classes = {c for i in range(len(ds)) for a in ds.base.retrieve_base_data(i) for c in a.object_classes}
    assert classes == {"vehicle", "truck"}
