"""The synthetic world in DAIR-V2X-C's on-disk format (``make_synthetic.py --format dairv2x``).

Output under ``root`` (``data_dir`` = ``root/my_dair_v2x/v2x_c/cooperative-vehicle-infrastructure``)::

    cooperative/data_info.json, cooperative/label_world/<veh>.json
    vehicle-side/velodyne/<veh>.pcd, vehicle-side/calib/{lidar_to_novatel,novatel_to_world}/<veh>.json,
    vehicle-side/label/lidar/<veh>.json
    infrastructure-side/velodyne/<inf>.pcd, infrastructure-side/calib/virtuallidar_to_world/<inf>.json,
    infrastructure-side/label/virtuallidar/<inf>.json
    train.json, val.json                          split = list of vehicle frame ids (val also serves as test)

Per frame of each scenario: the world's agent car is the vehicle side, its road-side unit -1 the infrastructure
side. The vehicle's LiDAR sits on a fixed mount of a novatel (GNSS/INS) frame (:data:`LIDAR_IN_NOVATEL`), so the
lidar->novatel->world chain is non-trivial; the infrastructure pose is written minus a per-frame
``system_error_offset`` that the loader adds back. ``label_world`` lists every object either side's LiDAR hits
(``world_8_points`` in the corner order of ``box_utils``), the side labels the objects of that side, in its
LiDAR frame. PCDs are binary ``x y z intensity`` float32 with intensity in 0..255 (the loader divides by 256,
exactly). Images are named in ``data_info.json`` but not written (the loader reads LiDAR only).
"""
import datetime
import os
import time

import numpy as np

from opencood.data_utils.synthetic import writers
from opencood.data_utils.synthetic.formats import SYNTHETIC_FORMATS
from opencood.data_utils.synthetic.formats import scene as S
from opencood.utils.atomic_io import atomic_open
from opencood.utils.box_utils import boxes_to_corners_3d
from opencood.utils.transformation_utils import x_to_world

DATA_DIR = os.path.join("my_dair_v2x", "v2x_c", "cooperative-vehicle-infrastructure")
# LiDAR pose in the novatel frame: 0.6 m ahead, 1.2 m up, yawed 1.5 degrees (metres, degrees).
LIDAR_IN_NOVATEL = [0.6, 0.0, 1.2, 0.0, 1.5, 0.0]
INFRA_ID_BASE = 10000  # infrastructure frame ids start here (vehicle ids at 0)
SPLIT_FILES = {"train": "train.json", "validate": "val.json"}


def write_xyzi_pcd(path, points):
    """Binary PCD with FIELDS x y z intensity (float32), intensity stored as 256 x the synthetic [0, 1] value."""
    pts = np.asarray(points, dtype=np.float32).copy()
    pts[:, 3] *= 256.0
    header = ("# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS x y z intensity\nSIZE 4 4 4 4\n"
              f"TYPE F F F F\nCOUNT 1 1 1 1\nWIDTH {len(pts)}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\n"
              f"POINTS {len(pts)}\nDATA binary\n")
    with atomic_open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(pts.tobytes())


def _rigid_json(tfm):
    return {"rotation": tfm[:3, :3].tolist(), "translation": tfm[:3, 3:4].tolist()}


def _label_entry(scene, box_world, T_frame_world, obj_id, pose_yaw_deg, world):
    """One label entry of object ``obj_id`` (world state ``box_world``) in a frame (T_frame<-world)."""
    location, center, yaw, half = box_world
    centre = T_frame_world @ np.append(location + center, 1.0)
    entry = {"type": scene.obj_type[obj_id],
             "3d_dimensions": {"h": float(2 * half[2]), "w": float(2 * half[1]), "l": float(2 * half[0])},
             "3d_location": {"x": float(centre[0]), "y": float(centre[1]), "z": float(centre[2])},
             "rotation": float(yaw - np.radians(pose_yaw_deg))}
    if world:
        box = np.array([[*(location + center), 2 * half[2], 2 * half[1], 2 * half[0], yaw]])
        entry["world_8_points"] = boxes_to_corners_3d(box, "hwl")[0].tolist()
    return entry


def _side(scene, frame, vid, opts, root, cloud_rel, label_rel):
    """Scan one side, write its cloud and its own label; returns (world pose (6,), seen ids, points)."""
    pose, points, seen = S.scan(scene, vid, frame, opts)
    write_xyzi_pcd(os.path.join(root, cloud_rel), points)
    T_lidar_world = np.linalg.inv(x_to_world(pose))
    states = S.object_states(scene, frame, seen)
    labels = [_label_entry(scene, states[i], T_lidar_world, i, pose[4], False) for i in seen]
    writers.write_json(os.path.join(root, label_rel), labels)
    return pose, seen, points


def write_frame(root, scene, frame, veh, inf, opts):
    """Write one cooperative frame; returns its data_info entry and statistics."""
    world = scene.world
    vehicle, rsu = int(world.agent_ids[0]), int(world.infrastructure_ids[0])
    entry = {"vehicle_image_path": f"vehicle-side/image/{veh}.jpg",
             "vehicle_pointcloud_path": f"vehicle-side/velodyne/{veh}.pcd",
             "infrastructure_image_path": f"infrastructure-side/image/{inf}.jpg",
             "infrastructure_pointcloud_path": f"infrastructure-side/velodyne/{inf}.pcd",
             "cooperative_label_path": f"cooperative/label_world/{veh}.json",
             "system_error_offset": {"delta_x": round(0.05 * (int(veh) % 7), 6),
                                     "delta_y": round(-0.03 * (int(veh) % 5), 6)}}
    veh_pose, veh_seen, veh_pts = _side(scene, frame, vehicle, opts, root, entry["vehicle_pointcloud_path"],
                                        f"vehicle-side/label/lidar/{veh}.json")
    inf_pose, inf_seen, inf_pts = _side(scene, frame, rsu, opts, root, entry["infrastructure_pointcloud_path"],
                                        f"infrastructure-side/label/virtuallidar/{inf}.json")
    T_world_lidar = x_to_world(veh_pose)
    T_novatel_lidar = x_to_world(LIDAR_IN_NOVATEL)
    writers.write_json(os.path.join(root, "vehicle-side/calib/lidar_to_novatel", f"{veh}.json"),
                       {"transform": _rigid_json(T_novatel_lidar)})
    writers.write_json(os.path.join(root, "vehicle-side/calib/novatel_to_world", f"{veh}.json"),
                       _rigid_json(T_world_lidar @ np.linalg.inv(T_novatel_lidar)))
    T_inf = x_to_world(inf_pose)
    T_inf[0, 3] -= entry["system_error_offset"]["delta_x"]
    T_inf[1, 3] -= entry["system_error_offset"]["delta_y"]
    writers.write_json(os.path.join(root, "infrastructure-side/calib/virtuallidar_to_world", f"{inf}.json"),
                       _rigid_json(T_inf))
    union = sorted(set(veh_seen) | set(inf_seen))
    states = S.object_states(scene, frame, union)
    writers.write_json(os.path.join(root, entry["cooperative_label_path"]),
                       [_label_entry(scene, states[i], np.eye(4), i, 0.0, True) for i in union])
    stats = ([veh_pts.shape[0], inf_pts.shape[0]], [len(veh_seen), len(inf_seen)], len(union),
             len(set(inf_seen) - set(veh_seen)))
    return entry, stats


@SYNTHETIC_FORMATS.register("dairv2x")
def write(root, preset="tiny", seed=0, workers=1, progress=True, **overrides):
    """Write the synthetic world as a DAIR-V2X-C tree under ``root`` (see the module docstring).

    Args:
        root: output folder; ``root/my_dair_v2x`` is replaced when it is a previous synthetic output, refused else.
        preset: generator preset (scenarios, frames, beams, h_res are used; test scenarios join val.json).
        seed: master seed.
        workers: unused.
        progress: unused.
        **overrides: make_synthetic options (scenarios, frames, beams, h_res, and the realism options tilt and
            self_hits, see ``scene``; others ignored).

    Returns:
        the make_synthetic summary dict.
    """
    t0 = time.time()
    opts = S.options(preset, overrides)
    top = S.prepare_root(root, "my_dair_v2x")
    S.write_marker(top, seed, preset, opts, complete=False)
    data_dir = os.path.join(os.fspath(root), DATA_DIR)
    for sub in ("cooperative/label_world", "vehicle-side/velodyne", "vehicle-side/calib/lidar_to_novatel",
                "vehicle-side/calib/novatel_to_world", "vehicle-side/label/lidar", "infrastructure-side/velodyne",
                "infrastructure-side/calib/virtuallidar_to_world", "infrastructure-side/label/virtuallidar"):
        writers.ensure_dir(os.path.join(data_dir, sub))
    names = S.scenario_names(seed, opts["scenarios"], datetime.date(2021, 1, 1), "%Y%m%d_%H%M%S")
    info, splits = [], {"train": [], "validate": []}
    points, objects, union, others, k = [], [], 0, 0, 0
    for split, _, scen_seed in names:
        scene = S.build_scene(scen_seed, 1, 1, opts["frames"], tilt=opts["tilt"])
        for frame in range(opts["frames"]):
            veh, inf = f"{k:06d}", f"{INFRA_ID_BASE + k:06d}"
            entry, (p, o, u, x) = write_frame(data_dir, scene, frame, veh, inf, opts)
            info.append(entry)
            splits["train" if split == "train" else "validate"].append(veh)
            points, objects, union, others = points + p, objects + o, union + u, others + x
            k += 1
    writers.write_json(os.path.join(data_dir, "cooperative", "data_info.json"), info)
    for split, name in SPLIT_FILES.items():
        writers.write_json(os.path.join(data_dir, name), splits[split])
    S.write_marker(top, seed, preset, opts, complete=True)
    return S.summary(root, t0, names, points, objects, union, others, time.time())
