"""Generate a synthetic OPV2V / OPV2V-H dataset (the embedded default data of opencood).

Output tree under ``root`` (spec ``data_eval_spec.md`` section 1)::

    OPV2V/<split>/<scenario>/data_protocol.yaml
    OPV2V/<split>/<scenario>/<cav_id>/<ts>.pcd, <ts>.yaml, <ts>_camera0..3.png
    OPV2V_Hetero/<split>/<scenario>/<cav_id>/<ts>_32.pcd, <ts>_16.pcd, <ts>_depth0..3.png
    OPV2V/additional/<split>/<scenario>/<cav_id>/<ts>_bev_visibility.png
    modality_assign/opv2v_4modality.json, modality_assign/opv2v_4modality_in_order.json
    .opencood_synthetic.json                      marker: this root may be regenerated

Infrastructure (``generate(..., infrastructure=K)``, K = 0..4, default 0): K road-side units per scenario,
agent folders ``-1`` .. ``-K`` beside the vehicles' folders, with the same files as a vehicle (cloud, YAML,
cameras, OPV2V-H variants, bev_visibility). Each is a pole on a sidewalk corner of the intersection
(``world.RSU_CORNERS``: the NE and SW corners first), facing the centre: LiDAR 3.0 m above the ground
(``world.RSU_LIDAR_HEIGHT``), four cameras 2.8 m high looking ahead/right/left/back
(``sensors.RSU_CAMERA_MOUNTS``). Their YAMLs carry ``RSU: true``, a fixed ``lidar_pose`` (the same in every
frame), ``true_ego_pos`` = ``predicted_ego_pos`` = the pole foot, ``ego_speed: 0.0``, ``plan_trajectory: []``
and ``vehicles`` = every car with a LiDAR hit (connected vehicles included); the vehicles' YAMLs do not list
the units (they are not objects and are not ray cast). The units draw their sensor noise from their own random
stream, so every vehicle file is byte-identical to the output with ``infrastructure=0`` (only the modality
JSONs gain the negative ids). The ego used for the collaboration statistics is always a vehicle.

Realism options (facts measured on real OPV2V files; all off by default, :data:`REALISTIC` turns all on):

* ``tilt`` (degrees, 0 = level): every vehicle gets a body roll/pitch (constant offset of std ``tilt`` plus
  per-frame jitter of std ``tilt / 4``), carried by its ``lidar_pose``, ``true_ego_pos``, camera ``cords`` and
  its ``vehicles[id].angle`` in every YAML; the ray-cast boxes stay upright.
* ``self_hits`` (fraction, 0 = none): that share of each vehicle's cloud returns from its own car (in the box
  ``mask_ego_points`` removes; real clouds have ~2 %), see ``sensors.add_self_hits``.
* ``pcd_rgb``: ``"U"`` (packed integer, recent Open3D) or ``"F"`` (the bit pattern as float32, ``TYPE F`` as
  the released OPV2V clouds; ascii or binary encoding).
* ``yaml_variants`` (bool): agent YAMLs vary as real ones do, by ``(frame + |id|) % 4``: 0 -> empty
  ``plan_trajectory: []`` and a tiny negative ``ego_speed`` in exponent form (``-3.0e-05``, a stopped car);
  1 -> waypoints whose third value (speed, km/h) is an integer; 2 -> floats at full precision; 3 -> as default.

Each option draws from its own random stream (spawned after the others), so vehicle placement and the LiDAR's
noise are the same with it on or off.

Scenarios are independent given the seed (each gets its own spawned seed), so they can be generated
in parallel worker processes with identical results.
"""
import datetime
import multiprocessing
import os
import shutil
import time
from typing import NamedTuple, Optional

import numpy as np
from tqdm import tqdm

from opencood.data_utils.synthetic import writers
from opencood.data_utils.synthetic.raycast import box_corners
from opencood.data_utils.synthetic.sensors import CAMERA_MOUNTS, RSU_CAMERA_MOUNTS, LidarConfig, add_self_hits, \
    camera_intrinsic, lidar_scan, render_camera
from opencood.data_utils.synthetic.world import RSU_CORNERS, build_world
from opencood.utils.errors import DataError
from opencood.utils.pcd_utils import write_pcd
from opencood.utils.transformation_utils import x_to_world

MARKER = ".opencood_synthetic.json"
# Vehicles longer than this (metres) are labelled ``obj_type: Truck``. The world's cars are 3.8-5.0 m long, so
# this is the longest sixth of them: a second class for multi-class code paths, derived from the extents
# already drawn (no extra random draw, so every other number of the world stays the same).
TRUCK_MIN_LENGTH = 4.8
SPLITS = ("train", "validate", "test")
_OWNED = ("OPV2V", "OPV2V_Hetero", "modality_assign")
# Options that no preset sets; at their default they leave the output (marker file included) as before.
# The realism options (tilt, self_hits, pcd_rgb, yaml_variants; see the module docstring) stay off in every
# preset: turning them on changes the default world, and with it the demo's and the benchmarks' recorded numbers.
OPTION_DEFAULTS = {"infrastructure": 0, "tilt": 0.0, "self_hits": 0.0, "pcd_rgb": "U", "yaml_variants": False}
REALISTIC = {"tilt": 0.5, "self_hits": 0.02, "pcd_rgb": "F", "yaml_variants": True}  # make_synthetic --realistic

PRESETS = {
    # unit tests: a few thousand points per cloud, tiny images
    "tiny": dict(scenarios=(2, 1, 1), agents=(2, 3), frames=3, beams=64, h_res=2.0, image_size=(80, 60),
                 render_scale=1, cameras=True, pcd_encoding="ascii"),
    # make demo: enough frames for a few CPU training epochs, full-size images traced at 1/4 resolution
    "demo": dict(scenarios=(5, 1, 2), agents=(3, 4), frames=10, beams=64, h_res=0.8, image_size=(800, 600),
                 render_scale=4, cameras=True, pcd_encoding="ascii"),
    # demo.py --preset gpu (one H200 and 16 CPU cores): 4x the demo's training frames, images traced at 1/2
    "gpu": dict(scenarios=(12, 2, 3), agents=(3, 5), frames=16, beams=64, h_res=0.4, image_size=(800, 600),
                render_scale=2, cameras=True, pcd_encoding="ascii"),
    # benchmarks: 5 agents with ~100k points each; 32 training frames, so that an epoch has enough batches
    # to keep 8 DataLoader workers busy
    "bench": dict(scenarios=(2, 1, 1), agents=(5, 5), frames=16, beams=64, h_res=0.15, image_size=(800, 600),
                  render_scale=4, cameras=True, pcd_encoding="ascii"),
}


def timestamp(frame):
    """6-digit frame name; saved frames step by 2 (10 Hz of a 20 Hz simulation), as in OPV2V."""
    return f"{2 * frame:06d}"


def _scenario_names(rng, count, first_index):
    """OPV2V-style capture-time names (``YYYY_MM_DD_hh_mm_ss``), one synthetic day per scenario."""
    base = datetime.datetime(2021, 8, 16)
    names = []
    for i in range(count):
        t = base + datetime.timedelta(days=first_index + i, seconds=int(rng.integers(8 * 3600, 20 * 3600)))
        names.append(t.strftime("%Y_%m_%d_%H_%M_%S"))
    return names


def _vehicle_entry(world, vid, frame, location, yaw):
    """``vehicles[id]`` YAML entry (world frame; extent = half sizes; angle = [roll, yaw, pitch] degrees; speed
    km/h).

    Vehicles longer than :data:`TRUCK_MIN_LENGTH` also get ``obj_type: Truck`` (V2X-Real's key; OPV2V
    entries have none, which reads as a car).
    """
    i = world.vehicle_index(vid)
    v = world.vehicles
    roll, pitch = world.attitude(vid, frame)
    entry = {"location": list(location[i]), "center": list(v.center[i]),
             "angle": [roll, float(np.degrees(yaw[i])), pitch], "extent": list(v.half[i]),
             "speed": float(v.speed[i] * 3.6)}
    if 2.0 * v.half[i][0] > TRUCK_MIN_LENGTH:
        entry["obj_type"] = "Truck"
    return entry


def _yaml_variant(vid, frame, opts):
    """Which real-data YAML variant a file gets (``yaml_variants``; module docstring), None when off."""
    return (frame + abs(int(vid))) % 4 if opts["yaml_variants"] else None


def _ego_state(world, vid, frame, rng, variant=None):
    """The agent's own-state YAML keys: ``true_ego_pos``, ``predicted_ego_pos`` (GNSS-like noise), ``ego_speed``
    (km/h) and ``plan_trajectory`` (three [x, y, km/h] points 1, 2, 3 s ahead). A road-side unit (``vid < 0``)
    stands still: exact predicted pose, speed 0, empty plan, no random draw. ``variant`` 0 / 1 change the plan
    and speed as :func:`_yaml_variant` describes."""
    actor = world.actor_pose(vid, frame)
    if vid < 0:
        return {"true_ego_pos": list(actor), "predicted_ego_pos": list(actor), "ego_speed": 0.0,
                "plan_trajectory": [], "RSU": True}
    speed = float(world.vehicles.speed[world.vehicle_index(vid)])
    heading = np.radians(actor[4])
    plan = [[actor[0] + np.cos(heading) * speed * s, actor[1] + np.sin(heading) * speed * s, speed * 3.6]
            for s in (1.0, 2.0, 3.0)]
    predicted = actor.copy()
    predicted[:2] += rng.normal(0.0, 0.3, 2)
    predicted[4] += rng.normal(0.0, 0.5)
    ego_speed = speed * 3.6
    if variant == 0:
        plan, ego_speed = [], -(1 + vid % 9) * 1e-5
    elif variant == 1:
        plan = [[x, y, int(round(v))] for x, y, v in plan]
    return {"true_ego_pos": list(actor), "predicted_ego_pos": list(predicted), "ego_speed": ego_speed,
            "plan_trajectory": plan}


def _write_cloud(path, points, opts):
    """A PCD in the configured encoding and rgb type (``pcd_encoding``, ``pcd_rgb``)."""
    if opts["pcd_rgb"] == "F":
        writers.write_pcd_float_rgb(path, points, opts["pcd_encoding"])
    else:
        write_pcd(path, points, opts["pcd_encoding"])


def _agent_frame(world, frame, vid, dirs, opts, rng, self_rng=None):
    """Simulate and write everything one agent (a vehicle, or a road-side unit when ``vid < 0``) produces at one
    frame. ``dirs`` = (agent folder, OPV2V_Hetero agent folder or None, bev_visibility folder or None); ``rng``
    draws the sensor noise, ``self_rng`` the self-hits (``self_hits`` > 0).

    Returns:
        (number of 64-beam points, set of visible object ids).
    """
    all_boxes = world.boxes(frame)
    # a sensor never sees its own car; a road-side unit has none (static structures also have id -1)
    boxes = all_boxes if vid < 0 else all_boxes.subset(all_boxes.ids != vid)
    lidar_pose = world.lidar_pose(vid, frame)
    cfg = LidarConfig(beams=opts["beams"], h_res=opts["h_res"])
    points, beam, hit = lidar_scan(lidar_pose, boxes, cfg, rng)
    if opts["self_hits"] > 0 and vid >= 0:
        own = all_boxes.subset(all_boxes.ids == vid)
        points, beam, hit = add_self_hits(points, beam, hit, lidar_pose, own, cfg, opts["self_hits"], self_rng)
    ts = timestamp(frame)
    opv2v, hetero, extra = dirs
    _write_cloud(os.path.join(opv2v, f"{ts}.pcd"), points, opts)
    if hetero is not None:
        _write_cloud(os.path.join(hetero, f"{ts}_32.pcd"), points[beam % 2 == 0], opts)
        _write_cloud(os.path.join(hetero, f"{ts}_16.pcd"), points[beam % 4 == 0], opts)
    lidar_ids = set(boxes.ids[hit[hit >= 0]].tolist()) - {-1}

    width, height = opts["image_size"]
    intrinsic = camera_intrinsic(width, height)
    params = {}
    camera_ids = set()
    for i, mount in enumerate(RSU_CAMERA_MOUNTS if vid < 0 else CAMERA_MOUNTS):
        cords = world.mounted_pose(vid, frame, mount)
        params[f"camera{i}"] = writers.camera_entry(cords, intrinsic, lidar_pose)
        if opts["cameras"]:
            rgb, depth, seen = render_camera(world, boxes, cords, width, height, opts["render_scale"])
            writers.write_rgb_png(os.path.join(opv2v, f"{ts}_camera{i}.png"), rgb)
            if hetero is not None:
                writers.write_depth_png(os.path.join(hetero, f"{ts}_depth{i}.png"), depth)
            camera_ids |= set(boxes.ids[seen].tolist()) - {-1}
    if extra is not None:
        _write_bev_visibility(extra, ts, boxes, sorted(camera_ids if opts["cameras"] else lidar_ids), lidar_pose)

    location, yaw = world.vehicle_states(frame)
    variant = _yaml_variant(vid, frame, opts)
    params.update(_ego_state(world, vid, frame, rng, variant))
    params.update({
        "lidar_pose": list(lidar_pose),
        "vehicles": {int(o): _vehicle_entry(world, o, frame, location, yaw) for o in sorted(lidar_ids)},
    })
    writers.write_yaml(os.path.join(opv2v, f"{ts}.yaml"), params, digits=None if variant == 2 else 6)
    return points.shape[0], lidar_ids


def _write_bev_visibility(folder, ts, boxes, visible, lidar_pose):
    """``<ts>_bev_visibility.png``: the footprints of the ``visible`` vehicle ids (what the cameras see, the
    LiDAR's view when cameras are off) in the agent's LiDAR frame."""
    sel = np.isin(boxes.ids, visible)
    lidar_from_world = np.linalg.inv(x_to_world(lidar_pose))  # (4, 4) T_lidar<-world
    corners = box_corners(boxes.subset(sel))  # (K, 8, 3) world
    local = corners @ lidar_from_world[:3, :3].T + lidar_from_world[:3, 3]  # (K, 8, 3)
    bottom = local[:, 0::2, :2]  # (K, 4, 2): corners with z = -h, in order (--, -+, +-, ++)
    quads = bottom[:, [0, 1, 3, 2]]  # (K, 4, 2) around the footprint
    centres = boxes.center[sel] @ lidar_from_world[:3, :3].T + lidar_from_world[:3, 3]
    writers.write_gray_png(os.path.join(folder, f"{ts}_bev_visibility.png"),
                           writers.bev_visibility(quads, centres[:, :2]))


class Layout(NamedTuple):
    """Folder names of an OPV2V-layout output.

    Attributes:
        dataset: top folder of the splits (``OPV2V``, ``V2XSET``, ...).
        hetero: top folder of the OPV2V-H files (32/16-beam clouds, depth PNGs), or None: not written.
        additional: write ``<dataset>/additional/<split>/.../<ts>_bev_visibility.png``.
        modality_prefix: modality JSON names ``modality_assign/<prefix>_4modality[_in_order].json``.
    """
    dataset: str = "OPV2V"
    hetero: Optional[str] = "OPV2V_Hetero"
    additional: bool = True
    modality_prefix: str = "opv2v"


OPV2V_LAYOUT = Layout()


def _agent_dirs(root, layout, split, name, vid):
    """(agent folder, OPV2V_Hetero agent folder or None, bev_visibility folder or None), created."""
    parts = (split, name, str(vid))
    return (writers.ensure_dir(os.path.join(root, layout.dataset, *parts)),
            writers.ensure_dir(os.path.join(root, layout.hetero, *parts)) if layout.hetero else None,
            writers.ensure_dir(os.path.join(root, layout.dataset, "additional", *parts)) if layout.additional
            else None)


def _scenario_job(job):
    """Generate one scenario (runs in a worker process). Returns its statistics."""
    root, split, name, seed, n_agents, opts, layout = job
    # world, vehicles' sensors, then the streams of the options (spawn keys 0..4: a stream's draws do not depend
    # on which options are on)
    world_rng, sensor_rng, rsu_rng, tilt_rng, self_rng = [
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)]
    world = build_world(world_rng, n_agents, opts["frames"], infrastructure=opts["infrastructure"])
    if opts["tilt"] > 0:
        world.set_tilt(tilt_rng, opts["tilt"])
    scen = os.path.join(root, layout.dataset, split, name)
    writers.ensure_dir(scen)
    writers.write_yaml(os.path.join(scen, "data_protocol.yaml"), {
        "description": "opencood synthetic world (four-leg intersection)", "seed": str(seed),
        "frames": opts["frames"], "frame_rate_hz": 10, "lidar": {"channels": opts["beams"], "range": 120,
                                                                 "upper_fov": 2, "lower_fov": -25,
                                                                 "h_res_deg": opts["h_res"]}})
    vehicle_ids = [int(a) for a in world.agent_ids]
    agent_ids = vehicle_ids + world.infrastructure_ids
    n_points, seen = [], {}
    for frame in range(opts["frames"]):
        for vid in agent_ids:
            dirs = _agent_dirs(root, layout, split, name, vid)
            count, ids = _agent_frame(world, frame, vid, dirs, opts, rsu_rng if vid < 0 else sensor_rng, self_rng)
            n_points.append(count)
            seen[(frame, vid)] = ids
    ego = sorted(vehicle_ids, key=str)[0]  # the eval ego: first id in string order (negative ids go last)
    union = others_only = 0
    for frame in range(opts["frames"]):
        all_ids = set().union(*(seen[(frame, v)] for v in agent_ids))
        union += len(all_ids)
        others_only += len(all_ids - seen[(frame, ego)])
    return {"split": split, "name": name, "agents": agent_ids, "points": n_points,
            "objects_per_agent": [len(s) for s in seen.values()], "union": union, "others_only": others_only}


def prepare_root(root, owned_dirs=_OWNED):
    """Refuse a root holding a non-synthetic dataset; clear a previous synthetic output (``owned_dirs``)."""
    if os.path.exists(root) and not os.path.isdir(root):
        raise DataError(f"{root}: exists and is not a folder")
    marker = os.path.join(root, MARKER)
    owned = [d for d in owned_dirs if os.path.exists(os.path.join(root, d))]
    if owned and not os.path.exists(marker):
        raise DataError(f"{root}: holds {', '.join(owned)} but no {MARKER} marker (not a synthetic dataset); "
                        f"refusing to overwrite it, choose another --root")
    for d in owned:
        shutil.rmtree(os.path.join(root, d))
    if os.path.exists(marker):
        os.remove(marker)
    os.makedirs(root, exist_ok=True)


def resolve_options(preset="tiny", **overrides):
    """Preset values updated by every override that is not None.

    Args:
        preset: 'tiny', 'demo', 'gpu' or 'bench'.
        **overrides: any key of a preset (scenarios, agents, frames, beams, h_res, image_size,
            render_scale, cameras, pcd_encoding) or of :data:`OPTION_DEFAULTS` (infrastructure, tilt, self_hits,
            pcd_rgb, yaml_variants).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset '{preset}'; known: {', '.join(PRESETS)}")
    opts = {**OPTION_DEFAULTS, **PRESETS[preset]}
    unknown = set(overrides) - set(opts)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; known: {sorted(opts)}")
    opts.update({k: v for k, v in overrides.items() if v is not None})
    agents = opts["agents"]
    agents = (agents, agents) if np.isscalar(agents) else tuple(agents)
    if len(agents) == 1:
        agents = (agents[0], agents[0])
    if not 2 <= agents[0] <= agents[1] <= 8:
        raise ValueError(f"agents must be 2..8 (min <= max), got {agents}")
    opts["agents"] = agents
    opts["scenarios"] = tuple(int(s) for s in opts["scenarios"])
    opts["image_size"] = tuple(int(s) for s in opts["image_size"])
    if len(opts["scenarios"]) != 3:
        raise ValueError("scenarios must give three counts: train validate test")
    opts["infrastructure"] = int(opts["infrastructure"])
    if not 0 <= opts["infrastructure"] <= len(RSU_CORNERS):
        raise ValueError(f"infrastructure must be 0..{len(RSU_CORNERS)}, got {opts['infrastructure']}")
    _check_realism(opts)
    return opts


def _check_realism(opts):
    """Ranges of the realism options (ValueError naming the option)."""
    opts["tilt"], opts["self_hits"] = float(opts["tilt"]), float(opts["self_hits"])
    if not 0.0 <= opts["tilt"] <= 10.0:
        raise ValueError(f"tilt must be 0..10 degrees, got {opts['tilt']}")
    if not 0.0 <= opts["self_hits"] < 0.5:
        raise ValueError(f"self_hits must be a fraction in [0, 0.5), got {opts['self_hits']}")
    if opts["pcd_rgb"] not in ("U", "F"):
        raise ValueError(f"pcd_rgb must be 'U' or 'F', got {opts['pcd_rgb']!r}")
    if opts["pcd_rgb"] == "F" and opts["pcd_encoding"] == "binary_compressed":
        raise ValueError("pcd_rgb 'F' is written as ascii or binary PCD, not binary_compressed")
    opts["yaml_variants"] = bool(opts["yaml_variants"])


def _marker_options(opts):
    """The options recorded in the marker: those of :data:`OPTION_DEFAULTS` only when not at their default
    (so the marker of a default world stays what it was before they existed)."""
    return writers.to_builtin({k: v for k, v in opts.items()
                               if k not in OPTION_DEFAULTS or v != OPTION_DEFAULTS[k]})


def generate(root, preset="tiny", seed=0, workers=1, progress=True, layout=OPV2V_LAYOUT, **overrides):
    """Write a synthetic OPV2V / OPV2V-H dataset under ``root``.

    Args:
        root: output folder (created). A folder holding ``OPV2V``/``OPV2V_Hetero``/``modality_assign``
            without the synthetic marker is refused; a previous synthetic output is replaced.
        preset: 'tiny' (tests), 'demo' (make demo) or 'bench' (5 agents, ~100k points each).
        seed: master seed; the same seed and options give byte-identical files.
        workers: processes generating scenarios in parallel.
        progress: show a tqdm bar.
        layout: folder names (:class:`Layout`; default OPV2V + OPV2V_Hetero + additional).
        **overrides: preset keys: scenarios (train, validate, test counts), agents (int or (min, max):
            connected vehicles), frames, beams, h_res (azimuth step, degrees), image_size (W, H), render_scale,
            cameras (bool), pcd_encoding ('ascii' as OPV2V, 'binary' or 'binary_compressed'); and
            infrastructure (0..4 road-side units per scenario, agent ids -1..-K), tilt (degrees), self_hits
            (fraction), pcd_rgb ('U' | 'F'), yaml_variants (bool): see the module docstring.

    Returns:
        Summary dict: root, seconds, scenarios {split: [names]}, files, points_per_cloud (mean/min/max),
        mean_objects_per_agent, frac_seen_only_by_others (objects seen by some agent but not by the ego).

    Raises:
        DataError: ``root`` holds a non-synthetic dataset.
    """
    t0 = time.time()
    opts = resolve_options(preset, **overrides)
    root = os.fspath(root)
    prepare_root(root, tuple(d for d in (layout.dataset, layout.hetero, "modality_assign") if d))
    marker = {"generator": "opencood.data_utils.synthetic", "seed": seed, "preset": preset,
              "options": _marker_options(opts), "complete": False}
    if layout != OPV2V_LAYOUT:
        marker["layout"] = layout._asdict()
    writers.write_json(os.path.join(root, MARKER), marker)  # written first: an interrupted run can be redone
    rng = np.random.default_rng(seed)
    jobs, index = [], 0
    seeds = np.random.SeedSequence(seed).spawn(sum(opts["scenarios"]))
    for split, count in zip(SPLITS, opts["scenarios"]):
        for name in _scenario_names(rng, count, index):
            n_agents = int(rng.integers(opts["agents"][0], opts["agents"][1] + 1))
            jobs.append((root, split, name, int(seeds[index].generate_state(1)[0]), n_agents, opts, layout))
            index += 1
    bar = tqdm(total=len(jobs), desc="synthetic scenarios", unit="scen", disable=not progress)
    results = []
    if workers > 1 and len(jobs) > 1:
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with ctx.Pool(min(workers, len(jobs))) as pool:
            for res in pool.imap_unordered(_scenario_job, jobs):
                results.append(res)
                bar.update(1)
    else:
        for job in jobs:
            results.append(_scenario_job(job))
            bar.update(1)
    bar.close()
    by_split = {split: {r["name"]: r["agents"] for r in results if r["split"] == split} for split in SPLITS}
    assign = writers.ensure_dir(os.path.join(root, "modality_assign"))
    prefix = layout.modality_prefix
    writers.write_json(os.path.join(assign, f"{prefix}_4modality.json"), writers.modality_assignment(by_split))
    writers.write_json(os.path.join(assign, f"{prefix}_4modality_in_order.json"),
                       writers.modality_in_order(by_split["test"]))
    points = np.concatenate([r["points"] for r in results])
    objects = np.concatenate([r["objects_per_agent"] for r in results])
    union = sum(r["union"] for r in results)
    writers.write_json(os.path.join(root, MARKER), dict(marker, complete=True))
    return {
        "root": root,
        "seconds": round(time.time() - t0, 2),
        "scenarios": {s: sorted(by_split[s]) for s in SPLITS},
        "files": sum(len(f) for _, _, f in os.walk(root)),
        "points_per_cloud": {"mean": float(points.mean()), "min": int(points.min()), "max": int(points.max())},
        "mean_objects_per_agent": float(objects.mean()),
        "frac_seen_only_by_others": float(sum(r["others_only"] for r in results) / max(union, 1)),
    }
