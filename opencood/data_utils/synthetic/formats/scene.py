"""The synthetic world as the non-OPV2V writers see it: scenarios with road-side units, pedestrians and trucks.

The V2X-Real and DAIR-V2X writers draw the same world as the OPV2V generator (``world.build_world``, road-side
units from its ``infrastructure`` option) and add, from a third random stream of the scenario (so the world
and sensor streams stay those of the OPV2V writer):

* **trucks**: non-agent vehicles longer than ``generator.TRUCK_MIN_LENGTH`` become 7.0-7.2 m x 2.8 m x 3.2 m boxes
  (the truck anchor is 8 x 3 x 3 m);
* **pedestrians**: people walking along the sidewalks (0.5-0.8 m x 0.5-0.7 m x 1.6-1.84 m, 0.8-1.6 m/s),
  away from the intersection.

Realism options of the generator that apply to any LiDAR format (``tilt``: body roll/pitch of every vehicle,
carried by its LiDAR pose and calibration, ``self_hits``: that share of a vehicle's cloud returns from its own
car) draw from a fourth and fifth stream; with both off (every preset) the output is unchanged. ``pcd_rgb`` and
``yaml_variants`` describe OPV2V's PCD / YAML files and are ignored here.

Frames: the world frame of the scenario, CARLA/UE4 axes (x forward, y right, z up), metres; poses are 6-vectors
``[x, y, z, roll, yaw, pitch]`` (metres, degrees), box yaw in radians.
"""
import datetime
import os
import shutil
from dataclasses import dataclass, replace

import numpy as np

from opencood.data_utils.synthetic import writers
from opencood.data_utils.synthetic.generator import SPLITS, TRUCK_MIN_LENGTH, resolve_options
from opencood.data_utils.synthetic.sensors import LidarConfig, add_self_hits, lidar_scan
from opencood.data_utils.synthetic.world import BUILD_START, CURB, World, build_world
from opencood.utils.errors import DataError

MARKER = ".opencood_synthetic.json"
PEDESTRIANS_PER_SCENARIO = 24
TRUCK_HALF = (3.5, 1.4, 1.6)  # half extents of a truck, metres (+ the car's half length beyond 2.4 m)
PEDESTRIAN_TYPE, TRUCK_TYPES, CAR_TYPE = "Pedestrian", ("Truck", "Van", "Bus"), "Car"


@dataclass
class Scene:
    """One scenario of a non-OPV2V writer.

    Attributes:
        world: the :class:`~opencood.data_utils.synthetic.world.World` with trucks and pedestrians added.
        obj_type: object id -> type string (``Car``, ``Truck``/``Van``/``Bus``, ``Pedestrian``).
        sensor_rng: generator of the LiDAR drop-off and noise draws.
        self_rng: generator of the self-hits (``self_hits`` > 0).
    """
    world: World
    obj_type: dict
    sensor_rng: np.random.Generator
    self_rng: np.random.Generator = None


def build_scene(seed, n_vehicles, n_rsus, n_frames, tilt=0.0):
    """The scenario of ``seed``: world (``n_vehicles`` connected vehicles, ``n_rsus`` road-side units) plus
    trucks and pedestrians (see the module docstring); ``tilt`` > 0 (degrees) gives every vehicle a body
    roll/pitch (``World.set_tilt``)."""
    # spawn keys 0..4: world, sensors, trucks/pedestrians, tilt, self-hits (a stream's draws do not depend on
    # which options are on, and the first three are those of the scene without options)
    world_rng, sensor_rng, extra_rng, tilt_rng, self_rng = [
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)]
    world = build_world(world_rng, n_vehicles, n_frames, infrastructure=n_rsus)
    v = world.vehicles
    half, center = v.half.copy(), v.center.copy()
    trucks = (2.0 * half[:, 0] > TRUCK_MIN_LENGTH) & ~np.isin(v.ids, world.agent_ids)  # (V,)
    half[trucks] = np.asarray(TRUCK_HALF) + np.stack([half[trucks, 0] - 2.4, np.zeros(trucks.sum()),
                                                      np.zeros(trucks.sum())], axis=1)
    center[trucks] = np.stack([np.zeros(trucks.sum()), np.zeros(trucks.sum()), half[trucks, 2]], axis=1)
    n_ped = PEDESTRIANS_PER_SCENARIO
    ped_half = np.stack([extra_rng.uniform(0.25, 0.4, n_ped), extra_rng.uniform(0.25, 0.35, n_ped),
                         extra_rng.uniform(0.8, 0.92, n_ped)], axis=1)  # (N, 3)
    road_y = extra_rng.random(n_ped) < 0.5  # walking along the y-road (else the x-road)
    side = np.where(extra_rng.random(n_ped) < 0.5, -1.0, 1.0)
    lateral = side * extra_rng.uniform(CURB + 0.3, BUILD_START - 0.4, n_ped)
    along = np.where(extra_rng.random(n_ped) < 0.5, -1.0, 1.0) * extra_rng.uniform(BUILD_START + 5.0, 60.0, n_ped)
    start = np.where(road_y[:, None], np.stack([lateral, along], 1), np.stack([along, lateral], 1))  # (N, 2) map
    heading = np.where(extra_rng.random(n_ped) < 0.5, 0.0, np.pi) + np.where(road_y, np.pi / 2, 0.0)
    ped_ids = v.ids.max() + 1 + np.arange(n_ped)
    vehicles = replace(
        v, ids=np.concatenate([v.ids, ped_ids]), half=np.concatenate([half, ped_half]),
        center=np.concatenate([center, np.stack([np.zeros(n_ped), np.zeros(n_ped), ped_half[:, 2]], 1)]),
        start=np.concatenate([v.start, start]), heading=np.concatenate([v.heading, heading]),
        speed=np.concatenate([v.speed, extra_rng.uniform(0.8, 1.6, n_ped)]),
        color=np.concatenate([v.color, np.full((n_ped, 3), 90, np.uint8)]))
    world = World(world.static, vehicles, world.agent_ids, world.map_yaw, world.map_offset, n_frames, n_rsus)
    obj_type = {int(i): (TRUCK_TYPES[int(i) % 3] if t else CAR_TYPE) for i, t in zip(v.ids, trucks)}
    obj_type.update({int(i): PEDESTRIAN_TYPE for i in ped_ids})
    if tilt > 0:
        world.set_tilt(tilt_rng, tilt)
    return Scene(world, obj_type, sensor_rng, self_rng)


def sensor_ids(world):
    """Agents with a LiDAR: connected vehicles (ids > 0) then road-side units (-1, -2, ...)."""
    return [int(a) for a in world.agent_ids] + [int(r) for r in world.infrastructure_ids]


def scan(scene, vid, frame, opts):
    """One LiDAR sweep of agent ``vid`` at ``frame``.

    Returns:
        (lidar_pose (6,) world, points (P, 4) float32 in the LiDAR frame, sorted list of the object ids hit).
    """
    world = scene.world
    all_boxes = world.boxes(frame)
    boxes = all_boxes.subset(all_boxes.ids != vid) if vid > 0 else all_boxes  # a car never sees its own car
    pose = world.lidar_pose(vid, frame)
    cfg = LidarConfig(beams=opts["beams"], h_res=opts["h_res"])
    points, beam, hit = lidar_scan(pose, boxes, cfg, scene.sensor_rng)
    if opts.get("self_hits", 0.0) > 0 and vid > 0:  # ...except through the self-hits of a real cloud
        own = all_boxes.subset(all_boxes.ids == vid)
        points, beam, hit = add_self_hits(points, beam, hit, pose, own, cfg, opts["self_hits"], scene.self_rng)
    seen = sorted(set(boxes.ids[hit[hit >= 0]].tolist()) - {-1})
    return pose, points, seen


def object_states(scene, frame, ids):
    """World boxes of objects ``ids`` at ``frame``.

    Returns:
        dict id -> (location (3,) actor origin, center offset (3,), yaw (rad), half extents (3,)).
    """
    location, yaw = scene.world.vehicle_states(frame)
    v = scene.world.vehicles
    out = {}
    for i in ids:
        k = scene.world.vehicle_index(i)
        out[int(i)] = (location[k], v.center[k], float(yaw[k]), v.half[k])
    return out


def scenario_names(seed, counts, first_day, fmt):
    """Capture-time scenario names, one synthetic day per scenario from ``first_day`` (``datetime.date``).

    Args:
        seed: master seed (draws the time of day).
        counts: scenarios per split (train, validate, test).
        first_day: date of the first scenario.
        fmt: ``strftime`` format of a name.

    Returns:
        list of (split, name, scenario seed) in split order.
    """
    rng = np.random.default_rng(seed)
    seeds = np.random.SeedSequence(seed).spawn(sum(counts))
    out, index = [], 0
    for split, count in zip(SPLITS, counts):
        for _ in range(count):
            t = datetime.datetime.combine(first_day, datetime.time()) + datetime.timedelta(
                days=index, seconds=int(rng.integers(8 * 3600, 20 * 3600)))
            out.append((split, t.strftime(fmt), int(seeds[index].generate_state(1)[0])))
            index += 1
    return out


def prepare_root(root, owned):
    """Make ``root/owned`` empty: refuse a folder there without the synthetic marker, clear an old synthetic one.

    Returns:
        the folder path.
    """
    folder = os.path.join(os.fspath(root), owned)
    if os.path.exists(folder):
        if not os.path.exists(os.path.join(folder, MARKER)):
            raise DataError(f"{folder}: exists but has no {MARKER} marker (not a synthetic dataset); refusing to "
                            f"overwrite it, choose another --root")
        shutil.rmtree(folder)
    os.makedirs(folder)
    return folder


def options(preset, overrides):
    """Preset values updated by the overrides the non-OPV2V writers use (others are ignored)."""
    used = {k: v for k, v in overrides.items() if k in ("scenarios", "frames", "beams", "h_res", "tilt", "self_hits")}
    return resolve_options(preset, **used)


def summary(root, t0, names, points, objects, union, others_only, now):
    """The ``make_synthetic`` summary dict (see ``formats/__init__``)."""
    points = np.asarray(points)
    return {"root": os.fspath(root), "seconds": round(now - t0, 2),
            "scenarios": {s: sorted(n for sp, n, _ in names if sp == s) for s in SPLITS},
            "files": sum(len(f) for _, _, f in os.walk(root)),
            "points_per_cloud": {"mean": float(points.mean()), "min": int(points.min()), "max": int(points.max())},
            "mean_objects_per_agent": float(np.mean(objects)),
            "frac_seen_only_by_others": float(others_only / max(union, 1))}


def write_marker(folder, seed, preset, opts, complete):
    """The synthetic marker of a writer's output folder."""
    writers.write_json(os.path.join(folder, MARKER), {"generator": "opencood.data_utils.synthetic", "seed": seed,
                                                      "preset": preset, "options": writers.to_builtin(opts),
                                                      "complete": complete})
