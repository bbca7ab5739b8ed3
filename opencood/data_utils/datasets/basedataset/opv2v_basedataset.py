"""Base loader of OPV2V / OPV2V-H / V2XSet (spec data_eval §1, §3.1).

Yields, per global frame index, the agents of the frame as
:class:`~opencood.data_utils.datasets.basedataset.agent_frame.AgentFrame` records, ego first (the base-dataset
API is described in :mod:`opencood.data_utils.datasets.basedataset.base_dataset`).

YAML keys read: those of ``BaseDataset.CONFIG`` (``root_dir`` / ``validate_dir``, ``input_source``,
``add_data_extension``, ``seed``, ``data_cache_dir``, ``heter`` + ``ego_diff_cav``), ``train_params.max_cav``
(V2XSet's deltas live in its subclass, ``v2xset_basedataset``). Decoded clouds,
agent YAMLs and images are cached in ``data_cache_dir`` when set (``opencood.utils.decode_cache``).

Objects: ``vehicles[id]`` of the agent YAML (world frame); an optional ``obj_type`` string (V2X-Real,
V2V4Real; the synthetic world's trucks) maps to a super-class by :data:`OBJ_TYPE_CLASSES` (no ``obj_type``:
a car, as in OPV2V files).
"""
import json
import os

import cv2
import numpy as np
import yaml
from PIL import Image
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from opencood.data_utils.datasets.basedataset.agent_frame import PEDESTRIAN, TRUCK, VEHICLE, AgentFrame, ObjectSet
from opencood.data_utils.datasets.basedataset.base_dataset import BaseDataset
from opencood.data_utils.datasets.basedataset.dataset_tree import NUM_CAMERAS, extension_path, scan_split, split_paths
from opencood.hypes_yaml.yaml_utils import _FLOAT_RE as FLOAT_RE
from opencood.utils.box_utils import world_objects_to_boxes
from opencood.utils.camera_utils import cameras_from_agent_yaml
from opencood.utils.decode_cache import DecodeCache
from opencood.utils.errors import DataError
from opencood.utils.input_stats import InputStats
from opencood.utils.pcd_utils import read_pcd_points
from opencood.utils.registry import BASE_DATASETS

# ``obj_type`` strings of V2X-Real / V2V4Real agent YAMLs -> super-class (spec data_eval §2; the misspelt
# ``MotorcyleRider`` is how V2X-Real writes it).
OBJ_TYPE_CLASSES = {
    **{t: VEHICLE for t in ("Car", "LongVehicle", "PoliceCar")},
    **{t: PEDESTRIAN for t in ("Pedestrian", "Child", "RoadWorker", "Scooter", "ScooterRider", "Motorcycle",
                               "MotorcyleRider", "BicycleRider")},
    **{t: TRUCK for t in ("Truck", "Van", "TrashCan", "ConcreteTruck", "Bus")},
}

_FLOAT_TAG, _INT_TAG, _STR_TAG = "tag:yaml.org,2002:float", "tag:yaml.org,2002:int", "tag:yaml.org,2002:str"
_SEQ_TAG, _MAP_TAG = "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"


class _AgentYamlLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """libyaml-backed safe loader (about 8x faster than the pure-Python one) with the config loader's float
    rule, so ``1e-5`` is a float in agent YAMLs too (see ``opencood.hypes_yaml.yaml_utils``)."""


_AgentYamlLoader.add_implicit_resolver(_FLOAT_TAG, FLOAT_RE, list("-+0123456789."))


def load_yaml_text(text):
    """Parse a YAML document like ``yaml.load(text, Loader=_AgentYamlLoader)``, about 1.5x faster.

    libyaml composes the node tree; plain maps, lists, strings and floats (almost every node of an agent
    YAML) are then built directly, and every other node (ints, bools, nulls, merge keys, odd floats such
    as ``.inf``, tagged nodes) goes through PyYAML's safe constructor, so the result is the same.

    Args:
        text: YAML document (str).

    Returns:
        the parsed object (None for an empty document).

    Raises:
        yaml.YAMLError: malformed YAML.
    """
    loader = _AgentYamlLoader(text)
    try:
        node = loader.get_single_node()
        return None if node is None else _build_node(loader, node)
    finally:
        loader.dispose()


def _build_node(loader, node):
    """Python object of a composed node (see :func:`load_yaml_text`)."""
    kind, tag = type(node), node.tag
    if kind is ScalarNode:
        if tag == _FLOAT_TAG:
            try:
                return float(node.value)
            except ValueError:  # .inf, .nan, sexagesimal: PyYAML's rules
                return loader.construct_object(node, deep=True)
        if tag == _STR_TAG:
            return node.value
        if tag == _INT_TAG and node.value.isascii() and node.value.isdigit() \
                and (node.value[0] != "0" or node.value == "0"):  # plain decimal (YAML 1.1 reads 0NN as octal)
            return int(node.value)
    elif kind is SequenceNode and tag == _SEQ_TAG:
        return [_build_node(loader, child) for child in node.value]
    elif kind is MappingNode and tag == _MAP_TAG and all(
            type(k) is ScalarNode and k.tag in (_STR_TAG, _INT_TAG) for k, _ in node.value):
        return {_build_node(loader, k): _build_node(loader, v) for k, v in node.value}
    return loader.construct_object(node, deep=True)


_OBJECT_KEYS = ("location", "center", "angle", "extent")


def read_agent_params(path):
    """Parse one per-agent per-frame ``<ts>.yaml`` (or ``<ts>.json``).

    Returns:
        dict with at least ``lidar_pose`` (6 floats, metres/degrees) and ``vehicles`` (dict).

    Raises:
        DataError: unreadable/malformed file or a bad ``lidar_pose`` (names the file and key).
    """
    try:
        with open(path, "r") as f:
            data = json.load(f) if path.endswith(".json") else load_yaml_text(f.read())
    except (OSError, yaml.YAMLError, ValueError, TypeError, AttributeError, RecursionError) as e:
        # ValueError covers JSON / UTF-8 errors and refused YAML values (!!int x, a timestamp 2001-13-45)
        raise DataError(f"{path}: cannot parse ({' '.join(str(e).split())[:200]})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a mapping at the top level")
    pose = data.get("lidar_pose")
    if pose is None:
        raise DataError(f"{path}: missing key 'lidar_pose'")
    try:
        pose = np.asarray(pose, dtype=np.float64).reshape(6)
    except (TypeError, ValueError):
        raise DataError(f"{path}: key 'lidar_pose' must be 6 numbers [x, y, z, roll, yaw, pitch]") from None
    if not np.all(np.isfinite(pose)):
        raise DataError(f"{path}: key 'lidar_pose' has non-finite values")
    data["lidar_pose"] = pose.tolist()
    vehicles = data.get("vehicles") or {}
    if not isinstance(vehicles, dict):
        raise DataError(f"{path}: key 'vehicles' must be a mapping of object id -> box")
    for obj_id, obj in vehicles.items():
        if not isinstance(obj, dict) or any(k not in obj for k in _OBJECT_KEYS):
            missing = [k for k in _OBJECT_KEYS if not isinstance(obj, dict) or k not in obj]
            raise DataError(f"{path}: key 'vehicles.{obj_id}' misses {', '.join(missing)}")
    data["vehicles"] = vehicles
    return data


def _read_image(path, mode=None):
    try:
        img = Image.open(path)
        img.load()
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read image ({' '.join(str(e).split())})") from None
    return img.convert(mode) if mode else img


def _read_extension(path):
    if path.endswith(".yaml"):
        try:
            with open(path, "r") as f:
                return load_yaml_text(f.read())
        except (OSError, yaml.YAMLError) as e:
            raise DataError(f"{path}: cannot parse ({' '.join(str(e).split())})") from None
    img = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise DataError(f"{path}: cannot read image")
    return img  # (H, W) uint8


def object_class(obj_type, path, obj_id):
    """Super-class of an ``obj_type`` string (None: OPV2V files, a car).

    Raises:
        DataError: a type outside :data:`OBJ_TYPE_CLASSES` (names the file and the key).
    """
    if obj_type is None:
        return VEHICLE
    try:
        return OBJ_TYPE_CLASSES[obj_type]
    except (KeyError, TypeError):
        raise DataError(f"{path}: key 'vehicles.{obj_id}.obj_type' = {obj_type!r} is not a known object type; "
                        f"known: {', '.join(sorted(OBJ_TYPE_CLASSES))}") from None


@BASE_DATASETS.register("opv2v")
class OPV2VBaseDataset(BaseDataset):
    """Indexing and per-agent loading of OPV2V-format splits (OPV2V, OPV2V-H; spec data_eval §1, §3.1).

    Args:
        params: experiment config (``load_yaml`` output).
        visualize: also load every agent's LiDAR (pictures / ``origin_lidar``).
        train: use ``root_dir`` and shuffle the agent order; else ``validate_dir`` with sorted ids.
        heterogeneous: read ``params['heter']`` and give every agent a ``modality``.
        order: box layout of the records' objects (``postprocess.order``).

    Subclasses of the same layout (V2XSet, V2V4Real) override the hooks ``skip_scenarios``,
    ``infrastructure_last`` and ``agent_objects``.
    """

    def __init__(self, params, visualize=False, train=True, heterogeneous=False, order="hwl"):
        super().__init__(params, visualize, train, heterogeneous, order)
        self.paths = split_paths(self.split_dir)
        self.cache = DecodeCache(self.cfg.data_cache_dir) if self.cfg.data_cache_dir else None
        need = self._requirements()
        self.scenario_database = scan_split(self.paths["split_dir"], need, self.skip_scenarios(need))
        if self.heter is not None:
            self.heter.check_coverage({s["name"]: list(s["cavs"]) for s in self.scenario_database}, train)
        self.order_agents()

    # ------------------------------------------------------------------ setup
    def skip_scenarios(self, need):
        """Scenario names to leave out, given the files the run reads (``need``, see ``scan_split``)."""
        return ()

    def agent_objects(self, vehicles, cav, path):
        """The objects of an agent YAML keyed by their GT id (OPV2V: the ``vehicles`` map as it is).

        Args:
            vehicles: the YAML's ``vehicles`` map (object id -> entry, world frame).
            cav: agent id (folder name).
            path: the YAML's path, for messages.
        """
        return vehicles

    @staticmethod
    def infrastructure_last(cavs):
        """Agent order with a leading infrastructure (negative) id moved to the end (the reference's rule)."""
        return cavs[1:] + cavs[:1] if cavs and cavs[0].startswith("-") else cavs

    def _requirements(self):
        """Which files the run reads (used to validate the tree)."""
        lidar = "lidar" in self.input_source or self.visualize
        camera = "camera" in self.input_source
        channels = ()
        if self.heter is not None:
            types = [self.heter.sensor_type(m) for m in self.heter.modalities]
            lidar = lidar or "lidar" in types or "lidar_camera" in types
            camera = "camera" in types or "lidar_camera" in types
            channels = tuple(c for m, c in self.heter.lidar_channels_dict.items() if m in self.heter.modalities)
        return {"lidar": lidar, "camera": camera, "depth": camera and "depth" in self.input_source,
                "channels": channels, "extensions": self.add_data_extension}

    def order_agents(self):
        """Per scenario: agent order (train shuffled, eval sorted), negative id last, heter reorder, max_cav."""
        for scen in self.scenario_database:
            cavs = sorted(scen["cavs"])
            if self.train:
                cavs = [cavs[i] for i in self.rng.permutation(len(cavs))]
            cavs = self.infrastructure_last(cavs)
            if self.heter is not None:
                cavs = self.heter.reorder_cav_list(cavs, scen["name"], self.train)
            scen["order"] = cavs[:self.max_cav]
        self.len_record = np.cumsum([len(s["cavs"][s["order"][0]]["timestamps"]) for s in self.scenario_database])

    def __len__(self):
        return int(self.len_record[-1]) if len(self.len_record) else 0

    # ------------------------------------------------------------------ loading
    def locate(self, idx):
        """Global index -> (scenario dict, frame index within it)."""
        self.follow_main_process()
        if not 0 <= idx < len(self):
            raise IndexError(f"sample index {idx} out of range [0, {len(self)})")
        s = int(np.searchsorted(self.len_record, idx, side="right"))
        return self.scenario_database[s], idx - (int(self.len_record[s - 1]) if s > 0 else 0)

    @staticmethod
    def timestamp(scen, frame):
        """Timestamp string of frame ``frame`` of a scenario (the ego's ordered timestamps)."""
        return scen["cavs"][scen["order"][0]]["timestamps"][frame]

    def _lidar_path(self, scen, cav, ts, modality):
        channels = self.heter.lidar_channels_dict.get(modality) if self.heter is not None else None
        if channels:
            return os.path.join(self.paths["hetero_dir"], scen["name"], cav, f"{ts}_{channels}.pcd")
        return os.path.join(scen["path"], cav, f"{ts}.pcd")

    @property
    def input_stats(self):
        """Degenerate-input counters (:class:`~opencood.utils.input_stats.InputStats`), shared with the
        DataLoader workers when first used in the main process (the trainer does so before loading)."""
        if "_input_stats" not in self.__dict__:
            self._input_stats = InputStats()
        return self._input_stats

    def _decode(self, path, decode, kind):
        """``decode(path)`` through the decoded-file cache when ``data_cache_dir`` is set."""
        return decode(path) if self.cache is None else self.cache.get(path, decode, kind)

    def _sensors(self, modality):
        """(read LiDAR, read cameras) of an agent of type ``modality`` (None: homogeneous run)."""
        if self.heter is None:
            return "lidar" in self.input_source or self.visualize, "camera" in self.input_source
        sensor = self.heter.sensor_type(modality) if modality in self.heter.modality_setting else None
        lidar = sensor in ("lidar", "lidar_camera") or self.visualize
        lidar = lidar or (sensor is not None and self.heter.protocol_modality is not None)  # STAMP's protocol input
        return lidar, sensor in ("camera", "lidar_camera")

    def retrieve_base_data(self, idx, rng=None):
        """The agents of sample ``idx`` (ego first, at most ``max_cav``).

        Args:
            idx: global frame index.
            rng: generator for the heterogeneous type draw (default ``sample_rng(idx)``).

        Returns:
            list of :class:`AgentFrame`: poses from the agent YAML's ``lidar_pose`` (clean = noisy until
            pose noise is added), ``points`` (P, 4) float32 in the agent's LiDAR frame when read, ``objects``
            = the YAML's ``vehicles`` in the agent's LiDAR frame, ``cameras`` (camera0..3 with RGB, intrinsics,
            camera->LiDAR extrinsics, depth when ``depth`` is in ``input_source``) when read, ``modality``
            (heter), ``extensions`` (``bev_visibility.png``: (H, W) uint8 grey; ``*.yaml``: dict).
        """
        scen, frame = self.locate(idx)
        order = scen["order"]
        rng = self.sample_rng(idx) if rng is None else rng
        modalities = (self.heter.assign(order, scen["name"], self.train, rng) if self.heter is not None
                      else [None] * len(order))
        return [self._load_agent(scen, frame, cav, i == 0, modalities[i]) for i, cav in enumerate(order)]

    def _load_agent(self, scen, frame, cav, is_ego, modality):
        """One agent's :class:`AgentFrame` at frame ``frame`` of scenario ``scen``."""
        ts = self.timestamp(scen, frame)
        cav_dir = os.path.join(scen["path"], cav)
        params_path = os.path.join(cav_dir, f"{ts}.json" if ts in scen["cavs"][cav]["json"] else f"{ts}.yaml")
        params = self._decode(params_path, read_agent_params, "pkl")
        pose = np.asarray(params["lidar_pose"], dtype=np.float64)  # (6,) metres, degrees
        vehicles = self.agent_objects(params["vehicles"], cav, params_path)
        ids, boxes = world_objects_to_boxes(vehicles, pose, self.order)  # (M, 7) agent LiDAR frame
        agent = AgentFrame(
            agent_id=cav, is_ego=is_ego, lidar_pose=pose, lidar_pose_clean=pose.copy(), scenario=scen["name"],
            timestamp=ts, frame_index=frame, is_infrastructure=cav.startswith("-"), modality=modality,
            objects=boxes.astype(np.float32), object_ids=ids,
            object_classes=[object_class(vehicles[i].get("obj_type"), params_path, i) for i in ids],
            speed=float(params.get("ego_speed") or 0.0) / 3.6, _loader_data=vehicles)  # km/h -> m/s
        lidar, camera = self._sensors(modality)
        if lidar:
            agent.points = self.input_stats.clean_points(  # (P, 4), the cloud policy of utils.input_stats
                self._decode(self._lidar_path(scen, cav, ts, modality), read_pcd_points, "npy"))
        if camera:
            agent.cameras = self._load_cameras(scen, cav, ts, params, params_path, pose)
        agent.extensions = {ext: _read_extension(extension_path(self.paths, scen["name"], cav, ts, ext))
                            for ext in self.add_data_extension}
        return agent

    def load_agent_at(self, agent, frame_index):
        """``agent``'s record from the earlier frame ``frame_index`` (communication delay; see
        ``BaseDataset.load_agent_at``): cloud, cameras and pose read from that frame's files, objects = the
        current frame's ``vehicles`` (kept in ``_loader_data`` for GT merging) in the delayed LiDAR frame."""
        scen = next(s for s in self.scenario_database if s["name"] == agent.scenario)
        delayed = self._load_agent(scen, frame_index, agent.agent_id, agent.is_ego, agent.modality)
        vehicles = agent._loader_data  # world frame, current frame
        ids, boxes = world_objects_to_boxes(vehicles, delayed.lidar_pose_clean, self.order)  # (M, 7)
        classes = dict(zip(agent.object_ids, agent.object_classes))
        delayed.objects, delayed.object_ids = boxes.astype(np.float32), ids
        delayed.object_classes = [classes[i] for i in ids]
        delayed._loader_data, delayed.extensions = vehicles, agent.extensions
        return delayed

    def _load_cameras(self, scen, cav, ts, params, params_path, pose):
        """camera0..3 of an agent as ``CameraView`` records (depth images when ``depth`` is read)."""
        names = [f"camera{k}" for k in range(NUM_CAMERAS)]
        missing = [n for n in names if n not in params]
        if missing:
            raise DataError(f"{params_path}: missing key '{missing[0]}' (camera input requested)")
        cav_dir = os.path.join(scen["path"], cav)
        images = [self.input_stats.rgb(self._decode(os.path.join(cav_dir, f"{ts}_{n}.png"), _read_image, "obj"))
                  for n in names]  # non-RGB files converted and counted
        depths = None
        if "depth" in self.input_source:
            het_dir = os.path.join(self.paths["hetero_dir"], scen["name"], cav)
            depths = [self._decode(os.path.join(het_dir, f"{ts}_depth{k}.png"), _read_image, "pkl")
                      for k in range(NUM_CAMERAS)]
        return cameras_from_agent_yaml(params, images, depths, pose, names, source=params_path)

    def objects_in_frame(self, agents, reference_pose):
        """Fused GT of OPV2V agents: every agent's world-frame ``vehicles`` projected straight into the frame
        of ``reference_pose`` (``box_utils.world_objects_to_boxes``), de-duplicated by id, first occurrence
        wins (the reference's numbers exactly; no detour through the agents' frames).

        Args:
            agents: list of ``AgentFrame`` written by this loader.
            reference_pose: (6,) LiDAR pose of the output frame in the world (metres, degrees).

        Returns:
            :class:`ObjectSet`, boxes (M, 7) float32 in ``self.order`` layout.
        """
        merged = {}
        for agent in agents:
            classes = dict(zip(agent.object_ids, agent.object_classes))
            ids, boxes = world_objects_to_boxes(agent._loader_data, reference_pose, self.order)  # (M_i, 7)
            for obj_id, box in zip(ids, boxes):
                merged.setdefault(obj_id, (box, classes[obj_id]))
        ids = list(merged)
        boxes = np.asarray([merged[i][0] for i in ids], dtype=np.float32).reshape(-1, 7)
        return ObjectSet(boxes, ids, [merged[i][1] for i in ids])

    def sample_info(self, idx):
        """(scenario name, timestamp) of sample ``idx`` (for logs and pictures)."""
        scen, frame = self.locate(idx)
        return scen["name"], self.timestamp(scen, frame)
