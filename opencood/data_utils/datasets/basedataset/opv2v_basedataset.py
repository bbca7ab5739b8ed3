"""Base loader of OPV2V / OPV2V-H / V2XSet (spec data_eval §1, §3.1).

Yields, per global frame index, the raw data of every agent in one schema (docs/architecture.md):
``OrderedDict cav_id -> {'ego', 'params', 'time_delay', 'lidar_np', 'camera_data', 'depth_data',
'modality_name', <extension>}``, ego first. Fusion datasets (early / intermediate / late / heter) build
samples from it.

YAML keys read: ``root_dir`` (train) / ``validate_dir`` (eval), ``input_source`` (default ['lidar']),
``train_params.max_cav`` (default 5), ``add_data_extension``, ``heter`` + ``ego_diff_cav`` (heterogeneous
datasets), ``fusion.dataset`` (``v2xset`` drops its three-camera scenario when cameras are read), the
optional ``seed`` (default 0) of the dataset's random generator and the optional ``data_cache_dir``
(decoded clouds, agent YAMLs and images are cached there, see ``opencood.utils.decode_cache``).

Randomness: CAV order (train) is shuffled with the dataset's own ``np.random.Generator`` at construction
and in every ``reinitialize()``; per-sample draws (points shuffle, noise, agent types, augmentation) use
``sample_rng(idx)``, seeded by (seed, epoch, idx), so DataLoader workers never share a stream and a run is
reproducible. (seed, epoch) also live in a small shared-memory array: persistent DataLoader workers, which keep
their own copy of the dataset across epochs, replay the main process's ``reseed()`` / ``reinitialize()`` calls
before their next sample, so they draw exactly what a fresh worker (or ``num_workers=0``) would.
"""
import json
import multiprocessing
import os
from collections import OrderedDict

import cv2
import numpy as np
import yaml
from PIL import Image
from torch.utils.data import Dataset
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from opencood.data_utils.datasets.basedataset.dataset_tree import (
    NUM_CAMERAS, V2XSET_THREE_CAMERA_SCENARIO, extension_path, scan_split, split_paths)
from opencood.hypes_yaml.yaml_utils import _FLOAT_RE as FLOAT_RE
from opencood.utils.errors import ConfigError, DataError
from opencood.utils.decode_cache import DecodeCache
from opencood.utils.heter_utils import HeterAssigner
from opencood.utils.pcd_utils import pcd_to_np
from opencood.utils.registry import BASE_DATASETS

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
    except (OSError, yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot parse ({' '.join(str(e).split())})") from None
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


def _read_rgb(path):
    return _read_image(path, "RGB")


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


@BASE_DATASETS.register("opv2v", "v2xset")
class OPV2VBaseDataset(Dataset):
    """Indexing and raw per-agent loading for OPV2V-format splits.

    Args:
        params: experiment config (``load_yaml`` output).
        visualize: also load every agent's LiDAR (pictures / ``origin_lidar``).
        train: use ``root_dir`` and shuffle the CAV order; else ``validate_dir`` with sorted ids.
        heterogeneous: read ``params['heter']`` and give every agent a ``modality_name``.
    """

    def __init__(self, params, visualize=False, train=True, heterogeneous=False):
        self.params = params
        self.visualize = visualize
        self.train = train
        self.source = params.get("_source", "config")
        key = "root_dir" if train else "validate_dir"
        if not params.get(key):
            raise ConfigError(f"{self.source}: missing key '{key}'")
        self.paths = split_paths(str(params[key]))
        self.seed = int(params.get("seed", 0))
        self.rng = np.random.default_rng(self.seed)
        self.epoch = 0
        self._shared_epoch = multiprocessing.RawArray("q", [self.seed, self.epoch])  # (seed, epoch) for workers
        self.max_cav = int((params.get("train_params") or {}).get("max_cav", 5))
        self.input_source = list(params.get("input_source") or ["lidar"])
        self.add_data_extension = list(params.get("add_data_extension") or [])
        self.cache = DecodeCache(params["data_cache_dir"]) if params.get("data_cache_dir") else None

        self.heter = None
        if heterogeneous:
            if not isinstance(params.get("heter"), dict):
                raise ConfigError(f"{self.source}: missing key 'heter' (needed by fusion.core_method "
                                  f"'{params.get('fusion', {}).get('core_method')}')")
            ego_diff = params.get("ego_diff_cav", params["heter"].get("ego_diff_cav", False))
            self.heter = HeterAssigner(params["heter"], ego_diff, self.source)
        need = self._requirements()
        dataset_name = str((params.get("fusion") or {}).get("dataset", "opv2v")).lower()
        skip = (V2XSET_THREE_CAMERA_SCENARIO,) if dataset_name == "v2xset" and need["camera"] else ()
        self.scenario_database = scan_split(self.paths["split_dir"], need, skip)
        if self.heter is not None:
            self.heter.check_coverage({s["name"]: list(s["cavs"]) for s in self.scenario_database}, train)
        self._order_cavs()

    # ------------------------------------------------------------------ setup
    def _requirements(self):
        """Which files the run reads (used to validate the tree)."""
        lidar = "lidar" in self.input_source or self.visualize
        camera = "camera" in self.input_source
        channels = ()
        if self.heter is not None:
            types = [self.heter.sensor_type(m) for m in self.heter.modalities]
            lidar = lidar or "lidar" in types
            camera = "camera" in types
            channels = tuple(c for m, c in self.heter.lidar_channels_dict.items() if m in self.heter.modalities)
        return {"lidar": lidar, "camera": camera, "depth": camera and "depth" in self.input_source,
                "channels": channels, "extensions": self.add_data_extension}

    def _order_cavs(self):
        """Per scenario: CAV order (train shuffled, eval sorted), negative id last, heter reorder, max_cav."""
        for scen in self.scenario_database:
            cavs = sorted(scen["cavs"])
            if self.train:
                cavs = [cavs[i] for i in self.rng.permutation(len(cavs))]
            if cavs and cavs[0].startswith("-"):
                cavs = cavs[1:] + cavs[:1]
            if self.heter is not None:
                cavs = self.heter.reorder_cav_list(cavs, scen["name"], self.train)
            scen["order"] = cavs[:self.max_cav]
        self.len_record = np.cumsum([len(s["cavs"][s["order"][0]]["timestamps"]) for s in self.scenario_database])

    def reinitialize(self):
        """Start a new epoch: reshuffle the CAV order (train) and change per-sample random draws."""
        self._follow_main_process()
        self.epoch += 1
        self._order_cavs()
        self._shared_epoch[1] = self.epoch

    def reseed(self, seed):
        """Restart the CAV-order generator and the per-sample streams from ``seed``.

        The epoch counter restarts too, so ``reseed(f(epoch)); reinitialize()`` gives the same draws
        whether a run got to this epoch uninterrupted or by resuming.
        """
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.epoch = 0
        self._shared_epoch[0], self._shared_epoch[1] = self.seed, 0

    def __getstate__(self):
        """Pickle support: a worker being spawned keeps the shared (seed, epoch) memory; any other copy
        (``copy.deepcopy``, ``pickle.dumps``) gets its own array with the current values."""
        state = self.__dict__.copy()
        shared = state.pop("_shared_epoch")
        try:
            multiprocessing.context.assert_spawning(shared)
            state["_shared_epoch"] = shared
        except RuntimeError:  # not spawning a process
            state["_shared_epoch_values"] = [int(shared[0]), int(shared[1])]
        return state

    def __setstate__(self, state):
        values = state.pop("_shared_epoch_values", None)
        self.__dict__.update(state)
        if values is not None:
            self._shared_epoch = multiprocessing.RawArray("q", values)

    def _follow_main_process(self):
        """In a persistent DataLoader worker: catch up with the main process's (seed, epoch) by replaying
        ``reseed(seed)`` and ``epoch`` x ``reinitialize()`` (the CAV order depends on the whole sequence)."""
        seed, epoch = int(self._shared_epoch[0]), int(self._shared_epoch[1])
        if (seed, epoch) == (self.seed, self.epoch):
            return
        self.seed, self.rng, self.epoch = seed, np.random.default_rng(seed), 0
        for _ in range(epoch):
            self.epoch += 1
            self._order_cavs()

    def sample_rng(self, idx):
        """Generator for the random draws of sample ``idx`` in the current epoch."""
        self._follow_main_process()
        return np.random.default_rng([self.seed, self.epoch, int(idx)])

    def __len__(self):
        return int(self.len_record[-1]) if len(self.len_record) else 0

    # ------------------------------------------------------------------ loading
    def locate(self, idx):
        """Global index -> (scenario dict, timestamp string)."""
        self._follow_main_process()
        if not 0 <= idx < len(self):
            raise IndexError(f"sample index {idx} out of range [0, {len(self)})")
        s = int(np.searchsorted(self.len_record, idx, side="right"))
        frame = idx - (int(self.len_record[s - 1]) if s > 0 else 0)
        scen = self.scenario_database[s]
        return scen, scen["cavs"][scen["order"][0]]["timestamps"][frame]

    def _lidar_path(self, scen, cav, ts, modality):
        channels = self.heter.lidar_channels_dict.get(modality) if self.heter is not None else None
        if channels:
            return os.path.join(self.paths["hetero_dir"], scen["name"], cav, f"{ts}_{channels}.pcd")
        return os.path.join(scen["path"], cav, f"{ts}.pcd")

    def _decode(self, path, decode, kind):
        """``decode(path)`` through the decoded-file cache when ``data_cache_dir`` is set."""
        return decode(path) if self.cache is None else self.cache.get(path, decode, kind)

    def retrieve_base_data(self, idx, rng=None):
        """Raw data of every agent of sample ``idx`` (ego first).

        Args:
            idx: global frame index.
            rng: generator for the heterogeneous type draw (default ``sample_rng(idx)``).

        Returns:
            OrderedDict cav_id -> {'ego': bool, 'params': agent YAML dict, 'time_delay': 0,
            'lidar_np' (P, 4) float32 [x, y, z, intensity] in the agent's LiDAR frame (when read),
            'camera_data' [4 PIL RGB], 'depth_data' [4 PIL] (when read), 'modality_name' (heter),
            '<extension>' (bev_visibility: (H, W) uint8 grey; yaml: dict)}.
        """
        scen, ts = self.locate(idx)
        order = scen["order"]
        rng = self.sample_rng(idx) if rng is None else rng
        modalities = self.heter.assign(order, scen["name"], self.train, rng) if self.heter is not None else None
        data = OrderedDict()
        for i, cav in enumerate(order):
            cav_dir = os.path.join(scen["path"], cav)
            params_path = os.path.join(cav_dir, f"{ts}.json" if ts in scen["cavs"][cav]["json"] else f"{ts}.yaml")
            entry = {"ego": i == 0, "time_delay": 0,
                     "params": self._decode(params_path, read_agent_params, "pkl")}
            modality = None
            lidar = "lidar" in self.input_source or self.visualize
            camera = "camera" in self.input_source
            if modalities is not None:
                modality = modalities[i]
                entry["modality_name"] = modality
                sensor = self.heter.sensor_type(modality) if modality in self.heter.modality_setting else None
                lidar = sensor == "lidar" or self.visualize
                camera = sensor == "camera"
            if lidar:
                entry["lidar_np"] = self._decode(self._lidar_path(scen, cav, ts, modality), pcd_to_np, "npy")
            if camera:
                missing = [f"camera{k}" for k in range(NUM_CAMERAS) if f"camera{k}" not in entry["params"]]
                if missing:
                    raise DataError(f"{params_path}: missing key '{missing[0]}' (camera input requested)")
                entry["camera_data"] = [self._decode(os.path.join(cav_dir, f"{ts}_camera{k}.png"), _read_rgb, "pkl")
                                        for k in range(NUM_CAMERAS)]
                if "depth" in self.input_source:
                    het_dir = os.path.join(self.paths["hetero_dir"], scen["name"], cav)
                    entry["depth_data"] = [self._decode(os.path.join(het_dir, f"{ts}_depth{k}.png"), _read_image, "pkl")
                                           for k in range(NUM_CAMERAS)]
            for ext in self.add_data_extension:
                entry[ext] = _read_extension(extension_path(self.paths, scen["name"], cav, ts, ext))
            data[cav] = entry
        return data

    def sample_info(self, idx):
        """(scenario name, timestamp) of sample ``idx`` (for logs and pictures)."""
        scen, ts = self.locate(idx)
        return scen["name"], ts
