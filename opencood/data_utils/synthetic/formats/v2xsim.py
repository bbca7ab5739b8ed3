"""V2X-Sim 2.0: the synthetic world as V2X-Sim info pickles and ``.pcd.bin`` sweeps (spec data_eval §2).

Tree under ``root``::

    v2xsim2_info/v2xsim_infos_{train,val,test}.pkl
    V2X-Sim-2.0/sweeps/LIDAR_TOP_id_<i>/scene_<k>_<ts>.pcd.bin       float32 x 5: x, y, z, intensity, ring
    .opencood_synthetic.json

The world is first written in the OPV2V layout (``generator``, no cameras) into a staging folder, then
converted and the staging folder removed: scenarios become ``scene_1``, ``scene_2``, ... (numbered over all
splits in train, validate, test order), each frame one pickle entry with ``agent_num`` = the scenario's
vehicles (agent ``i`` = the i-th actor id in string order; no agent 0), ``lidar_path_<i>`` relative to
``root``, ``lidar_pose_<i>`` = the 4x4 T_world<-lidar of the YAML pose, and ``labels_<i>`` =
``gt_boxes_global`` (N, 10: box centre = location + center, full extents, quaternion of the YAML angles) and
``gt_object_ids`` of the objects that agent's YAML lists. The ring column is the beam index recovered from each
point's elevation (64 beams evenly between -25 and +2 degrees, as the generator casts them).
"""
import os
import pickle
import shutil

import numpy as np

from opencood.data_utils.datasets.basedataset.opv2v_basedataset import read_agent_params
from opencood.data_utils.synthetic.formats import SYNTHETIC_FORMATS
from opencood.data_utils.synthetic.generator import Layout, generate, prepare_root, resolve_options
from opencood.data_utils.synthetic.sensors import LidarConfig
from opencood.utils.pcd_utils import pcd_to_np
from opencood.utils.transformation_utils import x_to_world

STAGING = ".v2xsim_staging"
INFO_DIR = "v2xsim2_info"
DATA_DIR = "V2X-Sim-2.0"
PICKLE_SPLITS = {"train": "train", "validate": "val", "test": "test"}
_LAYOUT = Layout(dataset=STAGING, hetero=None, additional=False, modality_prefix="v2xsim")


def matrix_to_quaternion(rot):
    """(3, 3) rotation matrix -> (4,) unit quaternion ``qw, qx, qy, qz`` with qw >= 0."""
    m = np.asarray(rot, dtype=np.float64)
    w = np.sqrt(max(0.0, 1.0 + m[0, 0] + m[1, 1] + m[2, 2])) / 2
    x = np.copysign(np.sqrt(max(0.0, 1.0 + m[0, 0] - m[1, 1] - m[2, 2])) / 2, m[2, 1] - m[1, 2])
    y = np.copysign(np.sqrt(max(0.0, 1.0 - m[0, 0] + m[1, 1] - m[2, 2])) / 2, m[0, 2] - m[2, 0])
    z = np.copysign(np.sqrt(max(0.0, 1.0 - m[0, 0] - m[1, 1] + m[2, 2])) / 2, m[1, 0] - m[0, 1])
    q = np.array([w, x, y, z])
    return q / np.linalg.norm(q)


def global_boxes(vehicles):
    """``vehicles`` of an agent YAML -> (ids (N,) int64, boxes (N, 10) float64 V2X-Sim global boxes)."""
    ids = np.array(sorted(vehicles), dtype=np.int64)
    boxes = np.zeros((len(ids), 10))
    for row, obj_id in enumerate(ids):
        v = vehicles[int(obj_id)]
        rot = x_to_world([0.0, 0.0, 0.0, *v["angle"]])[:3, :3]  # angle = [roll, yaw, pitch] deg
        boxes[row] = [*np.add(v["location"], v["center"]), *(2.0 * np.asarray(v["extent"])),
                      *matrix_to_quaternion(rot)]
    return ids, boxes


def _ring(points, beams):
    """(P,) beam index of each point from its elevation (the generator's evenly spaced beams)."""
    cfg = LidarConfig(beams=beams)
    elev = np.degrees(np.arctan2(points[:, 2], np.hypot(points[:, 0], points[:, 1])))
    step = (cfg.upper_fov - cfg.lower_fov) / max(beams - 1, 1)
    return np.clip(np.round((elev - cfg.lower_fov) / step), 0, beams - 1)


def _convert_scenario(root, scen_dir, scene, beams):
    """Pickle entries (one per frame) of one staged OPV2V scenario; writes its sweeps."""
    cavs = sorted((d for d in os.listdir(scen_dir) if os.path.isdir(os.path.join(scen_dir, d))), key=str)
    stamps = sorted(f[:-5] for f in os.listdir(os.path.join(scen_dir, cavs[0])) if f.endswith(".yaml"))
    entries = []
    for ts in stamps:
        entry = {"agent_num": len(cavs), "token": f"{scene}_{ts}"}
        for i, cav in enumerate(cavs, start=1):
            params = read_agent_params(os.path.join(scen_dir, cav, f"{ts}.yaml"))
            points = pcd_to_np(os.path.join(scen_dir, cav, f"{ts}.pcd"))  # (P, 4)
            rel = os.path.join(DATA_DIR, "sweeps", f"LIDAR_TOP_id_{i}", f"{scene}_{ts}.pcd.bin")
            os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
            np.concatenate([points, _ring(points, beams)[:, None]], axis=1).astype(np.float32).tofile(
                os.path.join(root, rel))
            ids, boxes = global_boxes(params["vehicles"])
            entry[f"lidar_path_{i}"] = rel
            entry[f"lidar_pose_{i}"] = x_to_world(params["lidar_pose"])
            entry[f"labels_{i}"] = {"gt_boxes_global": boxes, "gt_object_ids": ids}
        entries.append(entry)
    return entries


@SYNTHETIC_FORMATS.register("v2xsim")
def write(root, preset="tiny", seed=0, workers=1, progress=True, infrastructure=None, cameras=None, **options):
    """Write the synthetic world as V2X-Sim 2.0 under ``root`` (arguments and summary as ``generator.generate``;
    LiDAR only, no infrastructure).

    Raises:
        ValueError: ``infrastructure`` or ``cameras`` asked for.
        DataError: ``root`` holds a non-synthetic dataset.
    """
    if infrastructure or cameras:
        raise ValueError("the V2X-Sim writer writes vehicles' LiDAR only (no infrastructure, no cameras)")
    root = os.fspath(root)
    prepare_root(root, (INFO_DIR, DATA_DIR, STAGING, "modality_assign"))
    summary = generate(root, preset=preset, seed=seed, workers=workers, progress=progress, layout=_LAYOUT,
                       cameras=False, **options)
    beams = resolve_options(preset, **options)["beams"]
    info_dir = os.path.join(root, INFO_DIR)
    os.makedirs(info_dir, exist_ok=True)
    scene = 0
    for split, names in summary["scenarios"].items():
        entries = []
        for name in names:
            scene += 1
            entries += _convert_scenario(root, os.path.join(root, STAGING, split, name), f"scene_{scene}", beams)
        with open(os.path.join(info_dir, f"v2xsim_infos_{PICKLE_SPLITS[split]}.pkl"), "wb") as f:
            pickle.dump(entries, f, protocol=4)
    shutil.rmtree(os.path.join(root, STAGING))
    shutil.rmtree(os.path.join(root, "modality_assign"))
    summary["files"] = sum(len(f) for _, _, f in os.walk(root))
    return summary
