"""A hand-made, tiny OPV2V-format tree with known poses and objects, plus matching configs.

World (metres, CARLA frame, ground z = 0, LiDAR 1.9 m above ground):
  agent 100 at (0, 0), yaw 0      -> lists objects 1, 4
  agent 200 at (20, 0), yaw 90    -> lists objects 1, 2 and agent 100 (id 100)
  agent 300 at (100, 0), yaw 0    -> lists object 3 (beyond the 70 m comm range of agent 100)
  agent -1  (RSU, validate split only) at (-10, 0), yaw 0 -> lists object 1
Objects: 1 at (10, 5) yaw 0; 2 at (40, 0) yaw 30 deg; 3 at (45, 20); 4 at (0, -40) (outside the y range).
"""
import json
import os

import numpy as np
import yaml

from opencood.hypes_yaml.yaml_utils import load_general_params
from opencood.utils.pcd_utils import write_pcd

EXTENT = [2.2, 1.0, 0.75]  # half l, w, h
LIDAR_Z = 1.9
AGENTS = {"100": (0.0, 0.0, 0.0), "200": (20.0, 0.0, 90.0), "300": (100.0, 0.0, 0.0), "-1": (-10.0, 0.0, 0.0)}
OBJECTS = {1: (10.0, 5.0, 0.0), 2: (40.0, 0.0, 30.0), 3: (45.0, 20.0, 0.0), 4: (0.0, -40.0, 0.0),
           100: (0.0, 0.0, 0.0)}
SEEN = {"100": [1, 4], "200": [1, 2, 100], "300": [3], "-1": [1]}
TIMESTAMPS = ["000000", "000002"]
RANGE = [-51.2, -25.6, -3.0, 51.2, 25.6, 1.0]


def agent_pose(cav):
    x, y, yaw = AGENTS[cav]
    return [x, y, LIDAR_Z, 0.0, yaw, 0.0]


def _vehicle(obj_id):
    x, y, yaw = OBJECTS[obj_id]
    return {"location": [x, y, 0.0], "center": [0.0, 0.0, 0.75], "angle": [0.0, yaw, 0.0],
            "extent": list(EXTENT), "speed": 0.0}


def make_tree(root, cameras=False, hetero=False, bev=False, n_points=300):
    """Write train (scenarios s1, s2 with agents 100/200/300) and validate (s3 with 100/200/300/-1).

    Returns:
        ``root/OPV2V`` (dataset root).
    """
    rng = np.random.default_rng(0)
    base = os.path.join(root, "OPV2V")
    layout = {"train": {"2021_01_01_00_00_01": ["100", "200", "300"], "2021_01_01_00_00_02": ["100", "200", "300"]},
              "validate": {"2021_01_01_00_00_03": ["100", "200", "300", "-1"]}}
    assignment = {}
    for split, scenarios in layout.items():
        for scen, cavs in scenarios.items():
            assignment[scen] = {}
            for j, cav in enumerate(sorted(cavs)):
                assignment[scen][cav] = f"m{j % 4 + 1}"
                folder = os.path.join(base, split, scen, cav)
                os.makedirs(folder, exist_ok=True)
                het = os.path.join(root, "OPV2V_Hetero", split, scen, cav)
                add = os.path.join(base, "additional", split, scen, cav)
                for ts in TIMESTAMPS:
                    params = {"lidar_pose": agent_pose(cav), "true_ego_pos": agent_pose(cav), "ego_speed": 0.0,
                              "vehicles": {i: _vehicle(i) for i in SEEN[cav]}}
                    for k in range(4):
                        params[f"camera{k}"] = {"cords": agent_pose(cav), "intrinsic": np.eye(3).tolist(),
                                                "extrinsic": np.eye(4).tolist()}
                    with open(os.path.join(folder, f"{ts}.yaml"), "w") as f:
                        yaml.safe_dump(params, f, default_flow_style=False)
                    pts = np.concatenate([rng.uniform([-40, -20, -1.9], [40, 20, 0.5], size=(n_points, 3)),
                                          rng.uniform(0, 1, size=(n_points, 1))], axis=1)
                    write_pcd(os.path.join(folder, f"{ts}.pcd"), pts)
                    if hetero:
                        os.makedirs(het, exist_ok=True)
                        write_pcd(os.path.join(het, f"{ts}_32.pcd"), pts[::2])
                        write_pcd(os.path.join(het, f"{ts}_16.pcd"), pts[::4])
                    if cameras:
                        from PIL import Image
                        for k in range(4):
                            Image.new("RGB", (16, 12)).save(os.path.join(folder, f"{ts}_camera{k}.png"))
                            if hetero:
                                Image.new("L", (16, 12)).save(os.path.join(het, f"{ts}_depth{k}.png"))
                    if bev:
                        import cv2
                        os.makedirs(add, exist_ok=True)
                        cv2.imwrite(os.path.join(add, f"{ts}_bev_visibility.png"), np.full((256, 256), 255, np.uint8))
            with open(os.path.join(base, split, scen, "data_protocol.yaml"), "w") as f:
                f.write("world: {}\n")
    os.makedirs(os.path.join(root, "modality_assign"), exist_ok=True)
    with open(os.path.join(root, "modality_assign", "opv2v_4modality.json"), "w") as f:
        json.dump(assignment, f)
    return base


def make_hypes(base, core_method="intermediate", max_cav=5, comm_range=70, gt_range=None, heter=None, extra=None):
    """Config for the tiny tree, run through the YAML parser (derives anchor W/H)."""
    hypes = {
        "_source": "tiny.yaml",
        "root_dir": os.path.join(base, "train"), "validate_dir": os.path.join(base, "validate"),
        "test_dir": os.path.join(base, "validate"),
        "train_params": {"max_cav": max_cav, "batch_size": 2},
        "comm_range": comm_range, "input_source": ["lidar"], "label_type": "lidar",
        "cav_lidar_range": list(RANGE),
        "fusion": {"core_method": core_method, "dataset": "opv2v", "args": {"proj_first": False}},
        "preprocess": {"core_method": "SpVoxelPreprocessor", "cav_lidar_range": list(RANGE),
                       "args": {"voxel_size": [0.4, 0.4, 4], "max_points_per_voxel": 8,
                                "max_voxel_train": 4000, "max_voxel_test": 4000}},
        "postprocess": {"core_method": "VoxelPostprocessor", "order": "hwl", "max_num": 150, "nms_thresh": 0.15,
                        "anchor_args": {"cav_lidar_range": list(RANGE), "l": 3.9, "w": 1.6, "h": 1.56,
                                        "r": [0, 90], "feature_stride": 4, "num": 2},
                        "target_args": {"pos_threshold": 0.6, "neg_threshold": 0.45, "score_threshold": 0.2},
                        "dir_args": {"dir_offset": 0.7853, "num_bins": 2, "anchor_yaw": [0, 90]}},
        "model": {"core_method": "heter_model_baseline", "args": {}},
    }
    if gt_range is not None:
        hypes["postprocess"]["gt_range"] = list(gt_range)
    if heter is not None:
        hypes["heter"] = heter
    hypes.update(extra or {})
    return load_general_params(hypes)


def lidar_setting(voxel, points_per_voxel):
    return {"sensor_type": "lidar", "core_method": "point_pillar",
            "preprocess": {"core_method": "SpVoxelPreprocessor",
                           "args": {"voxel_size": voxel, "max_points_per_voxel": points_per_voxel,
                                    "max_voxel_train": 4000, "max_voxel_test": 4000}}}
