"""CoAlign pose graph: recovers injected pose noise on a synthetic scene; clustering; hard cases."""
import math

import numpy as np
import pytest

from opencood.utils.pose_graph import (POSE_GRAPH_ARGS, PoseGraph, cluster_boxes, in_frame, refine_poses, to_world,
                                       wrap_angle)


def relative_errors(poses, truth):
    """Per non-ego agent: (metres, radians) error of its pose relative to the ego."""
    out = []
    for i in range(1, len(truth)):
        est = in_frame(poses[0], poses[i][None])[0]
        ref = in_frame(truth[0], truth[i][None])[0]
        out.append((float(np.hypot(*(est[:2] - ref[:2]))), abs(float(wrap_angle(est[2] - ref[2])))))
    return np.asarray(out)


def spaced_points(rng, n, half, min_gap):
    """n points in [-half, half]^2 at least ``min_gap`` metres apart (distinct cars)."""
    pts = []
    while len(pts) < n:
        p = rng.uniform(-half, half, 2)
        if all(np.hypot(*(p - q)) >= min_gap for q in pts):
            pts.append(p)
    return np.asarray(pts)


def scene(seed, n_agents=4, n_objects=14, pos_std=0.4, rot_std_deg=1.0, meas_std=0.05):
    """Agents and cars in the world, each agent's noisy detections (x, y, yaw) of the cars within 45 m in its
    own frame with log-variances, and poses with injected Gaussian noise (every agent, ego included)."""
    rng = np.random.default_rng(seed)
    truth = np.c_[rng.uniform(-20, 20, (n_agents, 2)), rng.uniform(-math.pi, math.pi, n_agents)]
    objects = np.c_[spaced_points(rng, n_objects, 35, 6.0), rng.uniform(-math.pi, math.pi, n_objects)]
    boxes, log_vars = [], []
    for pose in truth:
        local = in_frame(pose, objects)
        seen = np.hypot(local[:, 0], local[:, 1]) < 45
        local = local[seen] + rng.normal(0, [meas_std, meas_std, 0.01], (int(seen.sum()), 3))
        boxes.append(local)
        log_vars.append(np.tile(np.log([(meas_std ** 2) / (1.6 ** 2 + 3.9 ** 2), (meas_std ** 2) / (1.6 ** 2 + 3.9 ** 2),
                                        0.01 ** 2]), (len(local), 1)))
    noisy = truth + np.c_[rng.normal(0, pos_std, (n_agents, 2)), np.radians(rng.normal(0, rot_std_deg, n_agents))]
    return truth, noisy, boxes, log_vars


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_refined_poses_recover_injected_noise(seed):
    truth, noisy, boxes, log_vars = scene(seed)
    refined = refine_poses(noisy, boxes, log_vars, {"thres": 1.5})
    before, after = relative_errors(noisy, truth), relative_errors(refined, truth)
    assert after[:, 0].mean() < 0.25 * before[:, 0].mean() and after[:, 0].max() < 0.15
    assert after[:, 1].mean() < 0.25 * before[:, 1].mean()
    assert np.array_equal(refined[0], noisy[0])  # the ego is fixed
    # without uncertainties (identity information) and with x/y landmarks it still helps
    plain = refine_poses(noisy, boxes, None, {"thres": 1.5, "landmark_SE2": False})
    assert relative_errors(plain, truth)[:, 0].mean() < 0.5 * before[:, 0].mean()


def test_clusters_join_only_different_agents_one_box_each():
    world = np.array([[0, 0, 0], [0.5, 0, 0], [0.3, 0.1, 0], [10, 10, 0], [10.2, 10, 0], [30, 0, 0.0]])
    owners = np.array([0, 1, 1, 0, 2, 1])
    clusters = cluster_boxes(world, owners, 1.5)
    assert [c.tolist() for c in clusters] == [[0, 2], [3, 4]]  # box 1 loses to box 2 (nearer the mean)
    # two boxes of the SAME agent are never joined by themselves
    assert cluster_boxes(world[[1, 2]], np.array([1, 1]), 1.5) == []


def test_hard_cases_keep_the_noisy_poses():
    truth, noisy, boxes, log_vars = scene(0, n_objects=3)
    assert np.array_equal(refine_poses(noisy, boxes, log_vars, {"thres": 3.0}), noisy)  # <= 3 landmarks
    truth, noisy, boxes, log_vars = scene(1)
    flipped = [b.copy() for b in boxes]
    for b in flipped[1:]:
        b[::2, 2] += 1.5  # yaw inconsistent in most clusters
    graph = PoseGraph(noisy, flipped, log_vars, POSE_GRAPH_ARGS.parse({"thres": 3.0}))
    assert graph.hard_case() and np.array_equal(graph.solve(), noisy)
    kept = refine_poses(noisy, flipped, log_vars, {"thres": 3.0, "abandon_hard_cases": False})
    assert not np.array_equal(kept, noisy)


def test_frames_round_trip():
    pose = np.array([3.0, -2.0, 0.7])
    boxes = np.array([[1.0, 2.0, 0.1], [-4.0, 0.5, 3.0]])
    assert np.allclose(in_frame(pose, to_world(pose, boxes)), boxes)


def _gt_boxes_file(hypes, path, n=2):
    """A boxes file made from every agent's own GT (what a perfect detector would write)."""
    import json
    from opencood.data_utils.datasets import build_dataset
    ds = build_dataset(hypes, visualize=False, train=True)
    out = {}
    for idx in range(n):
        agents = ds.base.retrieve_base_data(idx, ds.base.sample_rng(idx))
        out["/".join(map(str, ds.base.sample_info(idx)))] = {
            str(a.agent_id): {"boxes": np.asarray(a.objects).tolist(),
                              "uncertainty": np.tile([-6.0, -6.0, -7.0], (len(a.objects), 1)).tolist()}
            for a in agents}
    with open(path, "w") as f:
        json.dump(out, f)


def test_dataset_refines_noisy_poses_from_a_boxes_file(make_tiny_config, tmp_path):
    from opencood.data_utils.datasets import build_dataset
    from opencood.hypes_yaml.yaml_utils import load_yaml
    from opencood.utils.errors import ConfigError
    hypes = load_yaml(make_tiny_config("opencood/hypes_yaml/demo/zoo/lidar_att.yaml"))
    hypes["noise_setting"] = {"add_noise": True, "args": {"pos_std": 0.5, "rot_std": 0.5}}
    hypes["comm_range"] = 1000.0
    boxes = str(tmp_path / "boxes.json")
    _gt_boxes_file(hypes, boxes)
    noisy_ds = build_dataset(hypes, train=True)
    hypes["box_align"] = {"train_result": boxes, "args": {"thres": 2.0}}
    aligned_ds = build_dataset(hypes, train=True)
    errs = {}
    for name, ds in (("noisy", noisy_ds), ("aligned", aligned_ds)):
        e = []
        for idx in range(2):
            poses = ds[idx]["ego"]
            rel = [in_frame(np.r_[p[:2], np.radians(p[4])], np.r_[q[:2], np.radians(q[4])][None])[0]
                   for p, q in ((poses["lidar_poses"][0], x) for x in poses["lidar_poses"][1:])]
            ref = [in_frame(np.r_[p[:2], np.radians(p[4])], np.r_[q[:2], np.radians(q[4])][None])[0]
                   for p, q in ((poses["lidar_poses_clean"][0], x) for x in poses["lidar_poses_clean"][1:])]
            e += [np.hypot(*(a[:2] - b[:2])) for a, b in zip(rel, ref)]
        errs[name] = float(np.mean(e))
    assert errs["aligned"] < 0.3 * errs["noisy"], errs
    del hypes["box_align"]["train_result"]
    with pytest.raises(ConfigError, match=r"box_align.train_result: pre-computed boxes file None not found"):
        build_dataset(hypes, train=True)
