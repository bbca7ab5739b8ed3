"""Base loader, intermediate / early / late fusion datasets and dataset-tree validation on a tiny tree."""
import os

import numpy as np
import pytest
import torch

from opencood.data_utils.datasets import build_dataset
from opencood.utils.errors import ConfigError, DataError
from opencood.utils.transformation_utils import x1_to_x2

from opv2v_tiny import RANGE, agent_pose, make_hypes, make_tree


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    # the folder name holds 'test', 'train' and 'OPV2V' on purpose: paths must not be substring-rewritten
    return make_tree(str(tmp_path_factory.mktemp("test_OPV2V_train_yaml")))


def by_id(sample):
    ids = sample["object_ids"]
    return {i: sample["object_bbx_center"][k] for k, i in enumerate(ids)}


# ---------------------------------------------------------------------- indexing
def test_eval_indexing_sorted_ego_first_rsu_last(base):
    ds = build_dataset(make_hypes(base), visualize=False, train=False)
    assert len(ds) == 2  # one validate scenario x 2 frames
    assert ds.base.scenario_database[0]["order"] == ["100", "200", "300", "-1"]
    s = ds[1]["ego"]
    assert s["cav_id_list"] == ["100", "200", "-1"]  # 300 is beyond comm_range
    assert s["sample_idx"] == 1


def test_train_order_shuffled_reproducibly_and_max_cav(base):
    h = make_hypes(base, max_cav=2)
    a, b = build_dataset(h, train=True), build_dataset(h, train=True)
    assert len(a) == 4
    orders = [s["order"] for s in a.base.scenario_database]
    assert orders == [s["order"] for s in b.base.scenario_database]  # same seed, same order
    assert all(len(o) == 2 and set(o) <= {"100", "200", "300"} for o in orders)
    seen = set()
    for _ in range(8):
        a.reinitialize()
        seen.add(tuple(a.base.scenario_database[0]["order"]))
    assert len(seen) > 1


def test_unknown_core_method_lists_known_names(base):
    h = make_hypes(base, core_method="nonsense")
    with pytest.raises(ConfigError, match="intermediate"):
        build_dataset(h, train=False)
    h = make_hypes(base)
    h["fusion"]["dataset"] = "kitti"
    with pytest.raises(ConfigError, match="opv2v"):
        build_dataset(h, train=False)


# ---------------------------------------------------------------------- intermediate
def test_fused_gt_merged_by_id_in_ego_frame_and_range_filtered(base):
    ds = build_dataset(make_hypes(base), train=False)
    s = ds[0]["ego"]
    boxes = by_id(s)
    # 1: seen by 100, 200, -1 (once); 2: only 200; 100: agent 100 seen by 200; 3: agent 300 out of range;
    # 4: outside the y range
    assert sorted(boxes) == [1, 2, 100]
    assert s["object_bbx_mask"].sum() == 3
    np.testing.assert_allclose(boxes[1], [10, 5, 0.75 - 1.9, 1.5, 2.0, 4.4, 0.0], atol=1e-4)
    np.testing.assert_allclose(boxes[2][:3], [40, 0, -1.15], atol=1e-4)
    assert boxes[2][6] == pytest.approx(np.deg2rad(30), abs=1e-4)


def test_comm_range_drops_far_agents(base):
    near = build_dataset(make_hypes(base, comm_range=70), train=False)[0]["ego"]
    far = build_dataset(make_hypes(base, comm_range=200), train=False)[0]["ego"]
    assert "300" not in near["cav_id_list"] and "300" in far["cav_id_list"]
    assert 3 in far["object_ids"] and 3 not in near["object_ids"]
    assert far["cav_num"] == 4 and near["cav_num"] == 3


def test_pairwise_matrix_matches_x1_to_x2(base):
    ds = build_dataset(make_hypes(base), train=False)
    s = ds[0]["ego"]
    ids = s["cav_id_list"]
    pw = s["pairwise_t_matrix"]
    assert pw.shape == (5, 5, 4, 4)
    for i, a in enumerate(ids):
        for j, b in enumerate(ids):
            np.testing.assert_allclose(pw[i, j], x1_to_x2(agent_pose(a), agent_pose(b)), atol=1e-4)
    np.testing.assert_allclose(pw[3:, 3:], np.broadcast_to(np.eye(4), (2, 2, 4, 4)))
    # agent 200 (x=20, yaw 90): its origin is 20 m ahead of the ego
    np.testing.assert_allclose(pw[1, 0][:3, 3], [20, 0, 0], atol=1e-4)


def test_pose_noise_moves_only_lidar_pose_and_gt_stays_clean(base):
    h = make_hypes(base, extra={
        "noise_setting": {"add_noise": True, "args": {"pos_std": 1.0, "rot_std": 1.0, "pos_mean": 0, "rot_mean": 0}}})
    ds = build_dataset(h, train=False)
    s = ds[0]["ego"]
    assert not np.allclose(s["lidar_poses"], s["lidar_poses_clean"])
    np.testing.assert_allclose(s["lidar_poses_clean"], [agent_pose(c) for c in s["cav_id_list"]], atol=1e-4)
    # the fused GT stays in the clean ego frame despite the noise
    np.testing.assert_allclose(by_id(s)[1][:3], [10, 5, -1.15], atol=1e-4)


def test_collate_train_shapes_and_agent_index_prefix(base):
    ds = build_dataset(make_hypes(base), train=True)
    batch = ds.collate_batch_train([ds[0], None, ds[1]])["ego"]
    n = int(batch["record_len"].sum())
    assert batch["record_len"].tolist() == [ds[0]["ego"]["cav_num"], ds[1]["ego"]["cav_num"]]
    assert batch["object_bbx_center"].shape == (2, 150, 7) and batch["object_bbx_mask"].shape == (2, 150)
    assert batch["pairwise_t_matrix"].shape == (2, 5, 5, 4, 4)
    assert batch["lidar_pose"].shape == (n, 6) and batch["lidar_pose_clean"].shape == (n, 6)
    h, w = 32, 64  # 102.4 / 0.4 / 4, 51.2 / 0.4 / 4
    assert batch["label_dict"]["pos_equal_one"].shape == (2, h, w, 2)
    assert batch["label_dict"]["targets"].shape == (2, h, w, 14)
    assert batch["label_dict"]["record_len"] is batch["record_len"]
    assert batch["object_bbx_class"].shape == (2, 150) and batch["object_bbx_class"].dtype == torch.int64
    assert not batch["object_bbx_class"].any()  # a one-class head is class-agnostic
    assert batch["label_dict"]["object_bbx_class"] is batch["object_bbx_class"]
    assert "label_dict_single" not in batch
    coords = batch["processed_lidar"]["voxel_coords"]
    assert coords.shape[1] == 4 and set(coords[:, 0].tolist()) == set(range(n))
    assert ds.collate_batch_train([None]) is None


def test_collate_test_adds_identity_and_ids(base):
    ds = build_dataset(make_hypes(base), visualize=True, train=False)
    full = ds.collate_batch_test([ds[0]])
    batch = full["ego"]
    assert torch.equal(batch["transformation_matrix"], torch.eye(4))
    assert torch.equal(batch["transformation_matrix_clean"], torch.eye(4))
    assert batch["origin_lidar"].shape[0] == 1 and batch["origin_lidar"].shape[2] == 4
    assert batch["cav_id_list"] == ["100", "200", "-1"] and batch["sample_idx"] == 0
    assert batch["label_dict"]["pos_equal_one"].sum() >= 3  # every GT box gets at least its best anchor
    gt = ds.generate_gt_bbx(full)
    assert gt.shape == (3, 8, 3)
    with pytest.raises(ValueError, match="batch size must be 1"):
        ds.collate_batch_test([ds[0], ds[1]])


def test_use_cav_keeps_gt_of_all_agents(base):
    h = make_hypes(base)
    h["fusion"]["args"]["use_cav"] = 1
    s = build_dataset(h, train=False)[0]["ego"]
    assert s["cav_num"] == 1 and len(s["processed_lidar"]) == 1 and s["cav_id_list"] == ["100"]
    assert sorted(s["object_ids"]) == [1, 2, 100]


# ---------------------------------------------------------------------- early / late
def test_early_fusion_points_in_range_and_gt(base):
    ds = build_dataset(make_hypes(base, core_method="early"), visualize=True, train=False)
    s = ds[0]["ego"]
    pts = s["origin_lidar"]
    lo, hi = np.array(RANGE[:3]), np.array(RANGE[3:])
    assert ((pts[:, :3] > lo) & (pts[:, :3] < hi)).all()
    assert sorted(s["object_ids"]) == [1, 2, 100]
    batch = ds.collate_batch_test([ds[0]])["ego"]
    assert batch["processed_lidar"]["voxel_coords"][:, 0].max() == 0
    assert batch["record_len"].tolist() == [1]


def test_early_fusion_training_augments(base):
    h = make_hypes(base, core_method="early", extra={"data_augment": [
        {"NAME": "random_world_rotation", "WORLD_ROT_ANGLE": [0.3, 0.3]}]})
    ds = build_dataset(h, train=True)
    ds.base.scenario_database[0]["order"] = ["100", "200", "300"]
    s = ds[0]["ego"]
    yaw = dict(zip(s["object_ids"], s["object_bbx_center"][:, 6]))
    assert yaw[1] == pytest.approx(0.3, abs=1e-4)


def test_late_fusion_train_and_test(base):
    train = build_dataset(make_hypes(base, core_method="late"), train=True)
    s = train[0]
    assert list(s) == ["ego"] and s["ego"]["object_bbx_center"].shape == (150, 7)
    assert train.collate_batch_train([s, train[1]])["ego"]["record_len"].tolist() == [1, 1]

    ds = build_dataset(make_hypes(base, core_method="late"), visualize=True, train=False)
    sample = ds[0]
    assert list(sample) == ["ego", "200", "-1"]
    np.testing.assert_allclose(sample["200"]["transformation_matrix"], x1_to_x2(agent_pose("200"), agent_pose("100")),
                               atol=1e-4)
    batch = ds.collate_batch_test([sample])
    assert batch["ego"]["cav_id_list"] == ["100", "200", "-1"]
    assert batch["ego"]["origin_lidar"].shape[0] == 1
    gt = ds.generate_gt_bbx(batch)
    inter = build_dataset(make_hypes(base), train=False)
    assert gt.shape[0] == int(inter[0]["ego"]["object_bbx_mask"].sum())


def test_late_fusion_agent_range_covers_gt_range(base):
    wide = [-80, -25.6, -3, 80, 25.6, 1]
    ds = build_dataset(make_hypes(base, core_method="late", gt_range=wide), train=False)
    assert ds.agent_range[0] == -80 and ds.agent_range[3] == 80
    assert ds.anchor_box.shape[1] == 100  # 160 m / 0.4 / 4
    train = build_dataset(make_hypes(base, core_method="late", gt_range=wide), train=True)
    assert train.agent_range == RANGE


# ---------------------------------------------------------------------- validation and bad input
def test_validation_lists_all_missing_files_at_once(tmp_path):
    base = make_tree(str(tmp_path), n_points=20)
    scen = os.path.join(base, "train", "2021_01_01_00_00_01")
    os.remove(os.path.join(scen, "100", "000000.pcd"))
    os.remove(os.path.join(scen, "200", "000002.pcd"))
    os.remove(os.path.join(scen, "300", "000002.yaml"))
    os.makedirs(os.path.join(base, "train", "2021_01_01_00_00_09"))
    with pytest.raises(DataError) as err:
        build_dataset(make_hypes(base), train=True)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(os.path.join(base, "train"))
    assert "4 dataset problems" in msg
    for part in ("100/000000.pcd missing", "200/000002.pcd missing", "300/000002.yaml missing",
                 "2021_01_01_00_00_09: scenario has no agent folders"):
        assert part in msg


def test_validation_camera_and_hetero_requirements(tmp_path):
    base = make_tree(str(tmp_path), n_points=20)
    h = make_hypes(base, extra={"input_source": ["lidar", "camera"]})
    with pytest.raises(DataError, match=r"32 dataset problems.*_camera0.png missing"):
        build_dataset(h, train=False)  # 4 agents x 2 frames x 4 cameras


def test_missing_split_folder(tmp_path):
    h = make_hypes(str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="split folder not found"):
        build_dataset(h, train=True)


def test_corrupt_yaml_names_the_file(tmp_path):
    base = make_tree(str(tmp_path), n_points=20)
    bad = os.path.join(base, "validate", "2021_01_01_00_00_03", "200", "000000.yaml")
    with open(bad, "w") as f:
        f.write("lidar_pose: [1, 2\nvehicles: {")
    ds = build_dataset(make_hypes(base), train=False)
    with pytest.raises(DataError, match=bad):
        ds[0]
    with open(bad, "w") as f:
        f.write("vehicles: {}\n")
    with pytest.raises(DataError, match="missing key 'lidar_pose'"):
        ds[0]


def test_corrupt_pcd_names_the_file(tmp_path):
    base = make_tree(str(tmp_path), n_points=20)
    bad = os.path.join(base, "validate", "2021_01_01_00_00_03", "100", "000002.pcd")
    with open(bad, "rb") as f:
        raw = f.read()
    with open(bad, "wb") as f:
        f.write(raw[: len(raw) // 2])
    ds = build_dataset(make_hypes(base), train=False)
    ds[0]
    with pytest.raises(DataError, match=bad):
        ds[1]


def test_shuffle_points_with_a_generator_is_the_old_permutation():
    from opencood.utils.pcd_utils import shuffle_points
    pts = np.random.default_rng(1).normal(size=(500, 4)).astype(np.float32)
    perm = np.random.default_rng(7).permutation(500)
    np.testing.assert_array_equal(shuffle_points(pts, np.random.default_rng(7)), pts[perm])
    np.random.seed(3)
    expected = pts[np.random.permutation(500)]
    np.random.seed(3)
    np.testing.assert_array_equal(shuffle_points(pts), expected)
