"""The synthetic world in V2X-Real's on-disk format (``make_synthetic.py --format v2xreal``).

Output under ``root``::

    v2xreal/{train,validate,test}/<YYYY-MM-DD-hh-mm-ss>_<k>_0/<1|2|-1|-2>/<ts>.yaml + <ts>.bin
    v2xreal/.opencood_synthetic.json
    modality_assign/v2xreal_4modality.json, v2xreal_4modality_in_order.json   (in order: 1, 2, -1, -2 = m1..m4)

Two connected vehicles (ids 1, 2: the world's two agent cars) and two road-side units (-1, -2: poles on
opposite corners of the intersection, LiDAR 3 m high). Every agent YAML holds ``lidar_pose`` and the objects its
LiDAR hits in ``vehicles`` (world frame, OPV2V keys, ``obj_type`` ``Car`` / ``Truck`` / ``Van`` / ``Bus`` /
``Pedestrian``); clouds are float32 x 4 (x, y, z, intensity) in the LiDAR frame. Object ids are the world's
vehicle ids (shared by all agents). Scenario names never fall on 2023-04-07 (the date the evaluation drops).
"""
import datetime
import os
import time

import numpy as np

from opencood.data_utils.synthetic import writers
from opencood.data_utils.synthetic.formats import SYNTHETIC_FORMATS
from opencood.data_utils.synthetic.formats import scene as S
from opencood.data_utils.synthetic.generator import timestamp

FIRST_DAY = datetime.date(2023, 4, 8)
NAME_FORMAT = "%Y-%m-%d-%H-%M-%S"
N_VEHICLES, N_RSUS = 2, 2


def vehicle_entries(scene, frame, ids):
    """``vehicles`` of an agent YAML: id -> {location, center, angle [roll, yaw, pitch] (deg; roll/pitch 0 unless
    ``tilt``), extent (half), obj_type} (world)."""
    out = {}
    for i, (location, center, yaw, half) in S.object_states(scene, frame, ids).items():
        roll, pitch = scene.world.attitude(i, frame)
        out[i] = {"location": list(location), "center": list(center), "angle": [roll, float(np.degrees(yaw)), pitch],
                  "extent": list(half), "obj_type": scene.obj_type[i]}
    return out


def _folder_ids(scene):
    """World agent id -> V2X-Real folder id: the agent cars become 1, 2; road-side units keep -1, -2."""
    cars = [int(a) for a in scene.world.agent_ids]
    return {**{vid: k + 1 for k, vid in enumerate(cars)}, **{r: r for r in scene.world.infrastructure_ids}}


def write_scenario(split_dir, name, seed, opts):
    """Write one scenario; returns (points per cloud, objects per agent, union, seen only by non-ego)."""
    scene = S.build_scene(seed, N_VEHICLES, N_RSUS, opts["frames"], tilt=opts["tilt"])
    folders = _folder_ids(scene)
    points_n, objects_n, union, others = [], [], 0, 0
    for frame in range(opts["frames"]):
        seen_by = {}
        for vid in S.sensor_ids(scene.world):
            pose, points, seen = S.scan(scene, vid, frame, opts)
            agent_dir = writers.ensure_dir(os.path.join(split_dir, name, str(folders[vid])))
            ts = timestamp(frame)
            points.astype(np.float32).tofile(os.path.join(agent_dir, f"{ts}.bin"))
            writers.write_yaml(os.path.join(agent_dir, f"{ts}.yaml"),
                               {"lidar_pose": list(pose), "vehicles": vehicle_entries(scene, frame, seen)})
            points_n.append(points.shape[0])
            objects_n.append(len(seen))
            seen_by[folders[vid]] = set(seen)
        everything = set().union(*seen_by.values())
        union += len(everything)
        others += len(everything - seen_by[1])
    return points_n, objects_n, union, others, sorted(folders.values())


def in_order(test_scenarios):
    """``*_in_order.json`` of V2X-Real: per test scenario the vehicles (sorted) then the RSUs (-1, -2, ...) get
    m1, m2, m3, m4, so agents join the vehicle ego in the ``vc`` order."""
    out = {}
    for scenario, ids in sorted(test_scenarios.items()):
        ordered = sorted(i for i in ids if i > 0) + sorted((i for i in ids if i < 0), reverse=True)
        out[scenario] = {str(cav): f"m{j % 4 + 1}" for j, cav in enumerate(ordered)}
    return out


@SYNTHETIC_FORMATS.register("v2xreal")
def write(root, preset="tiny", seed=0, workers=1, progress=True, **overrides):
    """Write the synthetic world as a V2X-Real tree under ``root`` (see the module docstring).

    Args:
        root: output folder; ``root/v2xreal`` is replaced when it is a previous synthetic output, refused else.
        preset: generator preset (scenarios, frames, beams, h_res are used).
        seed: master seed.
        workers: unused (scenarios are written in this process).
        progress: unused.
        **overrides: make_synthetic options (scenarios, frames, beams, h_res, and the realism options tilt and
            self_hits, see ``scene``; others ignored).

    Returns:
        the make_synthetic summary dict.
    """
    t0 = time.time()
    opts = S.options(preset, overrides)
    folder = S.prepare_root(root, "v2xreal")
    S.write_marker(folder, seed, preset, opts, complete=False)
    names = S.scenario_names(seed, opts["scenarios"], FIRST_DAY, NAME_FORMAT)
    names = [(split, f"{name}_{k}_0", s) for k, (split, name, s) in enumerate(names)]
    points, objects, union, others, agents = [], [], 0, 0, {}
    for split, name, scen_seed in names:
        p, o, u, x, ids = write_scenario(os.path.join(folder, split), name, scen_seed, opts)
        points += p
        objects += o
        union += u
        others += x
        agents.setdefault(split, {})[name] = ids
    assign = writers.ensure_dir(os.path.join(os.fspath(root), "modality_assign"))
    writers.write_json(os.path.join(assign, "v2xreal_4modality.json"), writers.modality_assignment(agents))
    writers.write_json(os.path.join(assign, "v2xreal_4modality_in_order.json"), in_order(agents.get("test", {})))
    S.write_marker(folder, seed, preset, opts, complete=True)
    return S.summary(root, t0, names, points, objects, union, others, time.time())
