"""Pose noise and communication delay in every fusion dataset (spec data_eval §7) on the tiny OPV2V tree."""
import logging
import os

import numpy as np
import pytest
import yaml

from opencood.data_utils.datasets import build_dataset
from opencood.utils.box_utils import world_objects_to_boxes
from opencood.utils.errors import ConfigError
from opencood.utils.pcd_utils import pcd_to_np

from opv2v_tiny import agent_pose, lidar_setting, make_hypes, make_tree

SCEN = "2021_01_01_00_00_03"  # the validate scenario: agents 100 (ego), 200, 300 (out of range), -1
SHIFT = np.array([1.5, -0.5, 0.0, 0.0, 4.0, 0.0])  # agent 200's pose at frame 000000 differs by this
POSE_NOISE = {"add_noise": True, "args": {"pos_std": 0.5, "rot_std": 2.0, "pos_mean": 0, "rot_mean": 0}}


def delay(overhead_ms, method="fixed"):
    return {"add_noise": True, "add_pose_noise": False, "add_async_noise": True,
            "async_args": {"async_mode": "sim", "async_method": method, "async_overhead": overhead_ms}}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("robust"))
    base = make_tree(root, hetero=True)
    path = os.path.join(base, "validate", SCEN, "200", "000000.yaml")
    with open(path) as f:
        params = yaml.safe_load(f)
    params["lidar_pose"] = (np.array(agent_pose("200")) + SHIFT).tolist()
    params["ego_speed"] = 36.0  # km/h
    with open(path, "w") as f:
        yaml.safe_dump(params, f)
    return root


def hypes(root, core="intermediate", noise=None):
    return make_hypes(os.path.join(root, "OPV2V"), core_method=core, extra={"noise_setting": noise} if noise else None)


def heter_hypes(root, noise=None):
    heter = {"assignment_path": os.path.join(root, "modality_assign", "opv2v_4modality.json"),
             "ego_modality": "m1", "mapping_dict": {"m1": "m1", "m2": "m1", "m3": "m1", "m4": "m1"},
             "modality_setting": {"m1": lidar_setting([0.4, 0.4, 4], 8)}}
    return make_hypes(os.path.join(root, "OPV2V"), core_method="intermediateheter", heter=heter,
                      extra={"noise_setting": noise} if noise else None)


def cloud(root, cav, ts):
    return pcd_to_np(os.path.join(root, "OPV2V", "validate", SCEN, cav, f"{ts}.pcd"))


# ---------------------------------------------------------------------- communication delay
def test_delayed_collaborator_sends_the_earlier_frame_and_gt_stays_current(root):
    ds = build_dataset(hypes(root, noise=delay(100)), train=False)
    agents = {a.agent_id: a for a in ds.agents_of(1, ds.base.sample_rng(1))}  # frame 000002
    ego, late = agents["100"], agents["200"]
    np.testing.assert_array_equal(ego.points, cloud(root, "100", "000002"))
    np.testing.assert_array_equal(late.points, cloud(root, "200", "000000"))  # one frame (100 ms) earlier
    assert not np.array_equal(late.points, cloud(root, "200", "000002"))
    assert (ego.time_delay, late.time_delay, late.timestamp, late.frame_index) == (0, 1, "000000", 0)
    np.testing.assert_allclose(late.lidar_pose_clean, np.array(agent_pose("200")) + SHIFT)  # delayed pose
    np.testing.assert_allclose(late.lidar_pose, late.lidar_pose_clean)
    assert late.speed == pytest.approx(10.0)  # 36 km/h of the delayed frame
    # objects: the current frame's, in the delayed LiDAR frame
    ids, boxes = world_objects_to_boxes(late._loader_data, late.lidar_pose_clean)
    assert late.object_ids == ids == [1, 2, 100]
    np.testing.assert_allclose(late.objects, boxes, atol=1e-5)
    # the fused GT (clean ego frame) is the undelayed one; the pairwise transform uses the delayed pose
    plain = build_dataset(hypes(root), train=False)
    a, b = ds[1]["ego"], plain[1]["ego"]
    assert a["object_ids"] == b["object_ids"]
    np.testing.assert_allclose(a["object_bbx_center"], b["object_bbx_center"], atol=1e-5)
    assert not np.allclose(a["pairwise_t_matrix"][1, 0], b["pairwise_t_matrix"][1, 0])
    np.testing.assert_allclose(a["agent_prior"], [[0.0, 0.0, 0.0], [0.1, 10.0, 0.0], [0.1, 0.0, 1.0]], atol=1e-6)
    batch = ds.collate_batch_test([ds[1]])
    assert tuple(batch["ego"]["agent_prior"].shape) == (3, 3)


def test_delay_beyond_history_is_clamped_with_one_warning(root, caplog):
    ds = build_dataset(hypes(root, noise=delay(500)), train=False)
    with caplog.at_level(logging.WARNING, logger="opencood"):
        first = {a.agent_id: a for a in ds.agents_of(0, ds.base.sample_rng(0))}  # frame 000000: no history
        second = {a.agent_id: a for a in ds.agents_of(1, ds.base.sample_rng(1))}
    assert first["200"].time_delay == 0 and second["200"].time_delay == 1  # 5 frames asked, 1 available
    np.testing.assert_array_equal(second["200"].points, cloud(root, "200", "000000"))
    warnings = [r for r in caplog.records if "clamped" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage()


def test_random_delay_is_reproducible_and_below_overhead_plus_one_frame(root):
    ds = build_dataset(hypes(root, noise=delay(300, "random")), train=False)
    delays = [[a.time_delay for a in ds.agents_of(1, ds.base.sample_rng(1))] for _ in range(2)]
    assert delays[0] == delays[1] and delays[0][0] == 0 and all(0 <= d <= 1 for d in delays[0])


def test_delay_in_early_and_late_fusion(root):
    for core in ("early", "late"):
        ds = build_dataset(hypes(root, core, noise=delay(100)), train=False)
        late = {a.agent_id: a for a in ds.agents_of(1, ds.base.sample_rng(1))}["200"]
        np.testing.assert_array_equal(late.points, cloud(root, "200", "000000"))
    sample = ds[1]  # late fusion at test: agent 200 detects in its delayed frame
    np.testing.assert_allclose(sample["200"]["lidar_poses_clean"][0], np.array(agent_pose("200")) + SHIFT, atol=1e-4)


def test_bad_delay_settings_are_one_line_errors(root, tmp_path):
    bad = delay(-100)
    with pytest.raises(ConfigError, match="async_overhead' must be >= 0") as e:
        build_dataset(hypes(root, noise=bad), train=False)
    assert "\n" not in str(e.value)
    bad = delay(100)
    bad["async_args"]["async_mode"] = "later"
    with pytest.raises(ConfigError, match="async_mode"):
        build_dataset(hypes(root, noise=bad), train=False)


def test_loader_without_history_refuses_delay(tmp_path):
    from opencood.data_utils.synthetic.formats import SYNTHETIC_FORMATS
    SYNTHETIC_FORMATS.get("v2xsim")(str(tmp_path), preset="tiny", seed=3, scenarios=(1, 1, 0), agents=(2, 3),
                                    frames=2)
    info = os.path.join(str(tmp_path), "v2xsim2_info")
    h = make_hypes(str(tmp_path), extra={"noise_setting": delay(100)})
    h["fusion"]["dataset"] = "v2xsim"
    h["root_dir"], h["validate_dir"] = (os.path.join(info, f"v2xsim_infos_{s}.pkl") for s in ("train", "val"))
    with pytest.raises(ConfigError, match="has no frame history") as e:
        build_dataset(h, train=False)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------- pose noise, every fusion dataset
@pytest.mark.parametrize("make", [lambda r, n: hypes(r, "intermediate", n), heter_hypes], ids=["intermediate", "heter"])
def test_pose_noise_moves_pairwise_transforms_not_gt(root, make):
    noisy, clean = build_dataset(make(root, POSE_NOISE), train=False)[1]["ego"], \
        build_dataset(make(root, None), train=False)[1]["ego"]
    assert noisy["cav_id_list"] == clean["cav_id_list"] and len(noisy["cav_id_list"]) > 1
    assert not np.allclose(noisy["pairwise_t_matrix"][1, 0], clean["pairwise_t_matrix"][1, 0], atol=1e-3)
    assert noisy["object_ids"] == clean["object_ids"]
    np.testing.assert_array_equal(noisy["object_bbx_center"], clean["object_bbx_center"])
    np.testing.assert_array_equal(noisy["lidar_poses_clean"], clean["lidar_poses_clean"])
    assert not np.allclose(noisy["lidar_poses"], clean["lidar_poses"])


def test_pose_noise_in_early_fusion_moves_points_not_gt(root):
    noisy = build_dataset(hypes(root, "early", POSE_NOISE), visualize=True, train=False)[1]["ego"]
    clean = build_dataset(hypes(root, "early"), visualize=True, train=False)[1]["ego"]
    np.testing.assert_array_equal(noisy["object_bbx_center"], clean["object_bbx_center"])
    assert noisy["object_ids"] == clean["object_ids"]
    assert not np.allclose(noisy["lidar_poses"], noisy["lidar_poses_clean"])
    assert noisy["origin_lidar"].shape != clean["origin_lidar"].shape or \
        not np.allclose(noisy["origin_lidar"], clean["origin_lidar"])


def test_pose_noise_in_late_fusion_moves_transforms_not_gt(root):
    noisy = build_dataset(hypes(root, "late", POSE_NOISE), train=False)[1]
    clean = build_dataset(hypes(root, "late"), train=False)[1]
    assert set(noisy) == set(clean) and len(noisy) > 1
    for key in noisy:
        np.testing.assert_array_equal(noisy[key]["transformation_matrix_clean"], clean[key]["transformation_matrix"])
        np.testing.assert_array_equal(noisy[key]["object_bbx_center"], clean[key]["object_bbx_center"])
    assert not np.allclose(noisy["200"]["transformation_matrix"], clean["200"]["transformation_matrix"], atol=1e-3)


# ---------------------------------------------------------------------- weather at load time
def test_lidar_weather_switch_corrupts_every_agents_cloud(root):
    h = hypes(root)
    h["lidar_weather"] = {"type": "snow", "severity": 5, "seed": 1}
    ds = build_dataset(h, train=False)
    agents = ds.agents_of(1, ds.base.sample_rng(1))
    for agent in agents:
        raw = cloud(root, agent.agent_id, "000002")
        assert not np.array_equal(agent.points, raw)
        assert (np.linalg.norm(agent.points[:, :3], axis=1) < 12).sum() > (np.linalg.norm(raw[:, :3], axis=1) < 12).sum()
    again = ds.agents_of(1, ds.base.sample_rng(1))
    assert all(np.array_equal(a.points, b.points) for a, b in zip(agents, again))
    h["lidar_weather"] = {"type": "hail"}
    with pytest.raises(ConfigError, match="lidar_weather.type"):
        build_dataset(h, train=False)
