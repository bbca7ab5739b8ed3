"""Base loader of V2X-Real (spec data_eval §2): OPV2V-style agent YAMLs with ``.bin`` clouds, 3 classes.

Layout::

    v2xreal/{train,validate,test}/<scenario, e.g. 2023-04-04-13-58-53_15_0>/<1|2|-1|-2>/<ts>.yaml + <ts>.bin

Agents ``1``, ``2`` are the connected vehicles, ``-1``, ``-2`` the road-side units (infrastructure). The agent
YAML is OPV2V's (``lidar_pose`` [x, y, z, roll, yaw, pitch] in metres/degrees, world-frame ``vehicles[id]`` with
``location``, ``center``, ``angle``, ``extent``) and every object carries an ``obj_type`` string, mapped to the
super-classes vehicle / pedestrian / truck by :data:`~.opv2v_basedataset.OBJ_TYPE_CLASSES`. Clouds are
float32 x 4 (x, y, z, intensity) in the agent's LiDAR frame; rows with a NaN are dropped.

YAML keys beyond the base ones: ``dataset_mode`` (which agents take part and who is ego: ``vc`` vehicles first
then RSUs, ``ic`` RSUs first then vehicles, ``v2v`` vehicles only, ``i2i`` RSUs only) and ``unknown_obj_type``
(what to do with an ``obj_type`` outside the table: ``error``, ``skip`` the object, or a super-class name to map
it to; every unknown type is logged once). Evaluation drops the scenarios recorded on
:data:`EVAL_DROPPED_DATE` unless ``dataset_mode`` is ``v2v`` (as the reference).

The split is checked up front: every scenario and agent folder, every ``<ts>.yaml`` the other agents of the
scenario have, and every ``<ts>.bin`` (when LiDAR is read); all problems are reported in one ``DataError``.
"""
import logging
import os

import numpy as np

from opencood.data_utils.datasets.basedataset.agent_frame import PEDESTRIAN, TRUCK, VEHICLE
from opencood.data_utils.datasets.basedataset.dataset_tree import (
    _listdir, _missing, _scan_scenario, raise_problems, split_paths)
from opencood.data_utils.datasets.basedataset.opv2v_basedataset import (
    OBJ_TYPE_CLASSES, OPV2VBaseDataset, read_agent_params)
from opencood.utils.config import Key
from opencood.utils.decode_cache import DecodeCache
from opencood.utils.errors import ConfigError, DataError
from opencood.utils.registry import BASE_DATASETS

logger = logging.getLogger(__name__)

DATASET_MODES = ("vc", "ic", "v2v", "i2i")
# Scenarios recorded on this date (scenario names start with it) are left out of evaluation unless v2v.
EVAL_DROPPED_DATE = "2023-04-07"
# A representative obj_type per super-class (``unknown_obj_type: <class>`` rewrites unknown types to it).
CLASS_TYPE = {VEHICLE: "Car", PEDESTRIAN: "Pedestrian", TRUCK: "Truck"}


def read_bin_cloud(path):
    """A V2X-Real ``<ts>.bin`` cloud: (N, 4) float32 ``[x, y, z, intensity]`` (LiDAR frame, metres), NaN rows
    dropped.

    Raises:
        DataError: unreadable file or a size that is not a multiple of 4 float32 values.
    """
    try:
        raw = np.fromfile(path, dtype=np.float32)
    except OSError as e:
        raise DataError(f"{path}: cannot read point cloud ({' '.join(str(e).split())})") from None
    if raw.size % 4:
        raise DataError(f"{path}: {raw.size} float32 values, not a multiple of 4 (x, y, z, intensity)")
    points = raw.reshape(-1, 4)
    return points[~np.isnan(points).any(axis=1)]


def scan_v2xreal(split_dir, lidar, skip_scenarios=()):
    """Scenarios, agents and frames of a V2X-Real split, checked before anything is loaded.

    Args:
        split_dir: split folder (``root_dir`` / ``validate_dir``).
        lidar: also require ``<ts>.bin`` for every ``<ts>.yaml``.
        skip_scenarios: scenario names to leave out.

    Returns:
        list of scenario dicts as ``dataset_tree.scan_split`` returns them.

    Raises:
        DataError: every missing folder / YAML / cloud in one message.
    """
    paths = split_paths(split_dir)
    split_dir = paths["split_dir"]
    if not os.path.isdir(split_dir):
        raise DataError(f"{split_dir}: dataset split folder not found")
    problems = []
    names = [n for n in sorted(os.listdir(split_dir))
             if os.path.isdir(os.path.join(split_dir, n)) and n not in skip_scenarios]
    if not names:
        problems.append(f"{split_dir}: no scenario folders")
    scenarios = [s for s in (_scan_scenario(paths, n, {"lidar": False}, problems) for n in names) if s]
    if lidar:
        for scen in scenarios:
            for cav, info in scen["cavs"].items():
                cav_path = os.path.join(scen["path"], cav)
                problems += _missing(cav_path, info["timestamps"], [".bin"], _listdir(cav_path) or set())
    raise_problems(split_dir, problems)
    return scenarios


@BASE_DATASETS.register("v2xreal")
class V2XRealBaseDataset(OPV2VBaseDataset):
    """V2X-Real splits (see the module docstring); records as the OPV2V loader builds them.

    Args:
        params: experiment config (``load_yaml`` output).
        visualize: also load every agent's LiDAR.
        train: ``root_dir`` and shuffled agents; else ``validate_dir``, sorted ids, date filter.
        heterogeneous: read ``params['heter']``.
        order: box layout of the records' objects (``postprocess.order``).
    """

    # evaluation boxes (GT and predictions) count as inside gt_range with >= 2 of their 8 corners inside the
    # x/y range (the reference's 2-D mask), not all 8 in x, y and z as in OPV2V
    EVAL_RANGE_RULE = (2, True)

    CONFIG = OPV2VBaseDataset.CONFIG.extend({
        "dataset_mode": Key(str, "vc", "agents and ego: vc vehicles first then RSUs, ic RSUs first, v2v vehicles "
                                       "only, i2i RSUs only", choices=DATASET_MODES),
        "unknown_obj_type": Key(str, "error", "obj_type outside the class table: error, skip, or the super-class "
                                              "(vehicle, pedestrian, truck) to map it to"),
    })

    def __init__(self, params, visualize=False, train=True, heterogeneous=False, order="hwl"):
        super(OPV2VBaseDataset, self).__init__(params, visualize, train, heterogeneous, order)
        self.mode = self.cfg.dataset_mode
        self.unknown_obj_type = self.cfg.unknown_obj_type
        if self.unknown_obj_type not in ("error", "skip", *CLASS_TYPE):
            raise ConfigError(f"{self.source}: key 'unknown_obj_type' = {self.unknown_obj_type!r}; expected error, "
                              f"skip, {', '.join(CLASS_TYPE)}")
        self._reported_types = set()
        self.paths = split_paths(self.split_dir)
        self.cache = DecodeCache(self.cfg.data_cache_dir) if self.cfg.data_cache_dir else None
        need = self._requirements()
        all_names = sorted(os.listdir(self.paths["split_dir"])) if os.path.isdir(self.paths["split_dir"]) else []
        skip = [] if train or self.mode == "v2v" else [n for n in all_names if n.startswith(EVAL_DROPPED_DATE)]
        scenarios = scan_v2xreal(self.paths["split_dir"], need["lidar"], skip)
        self.scenario_database = [s for s in scenarios if self._mode_agents(s["cavs"])]
        if not self.scenario_database:
            raise DataError(f"{self.paths['split_dir']}: no scenario has agents for dataset_mode '{self.mode}'")
        if self.heter is not None:
            self.heter.check_coverage({s["name"]: list(s["cavs"]) for s in self.scenario_database}, train)
        self.order_agents()

    def _mode_agents(self, cav_ids, rng=None):
        """The agents ``dataset_mode`` uses, in order: vehicles (ids >= 0) and RSUs (< 0) each string-sorted, or
        permuted by ``rng`` when given (training)."""
        groups = {"vehicles": sorted(c for c in cav_ids if not c.startswith("-")),
                  "rsus": sorted(c for c in cav_ids if c.startswith("-"))}
        if rng is not None:
            groups = {k: [v[i] for i in rng.permutation(len(v))] for k, v in groups.items()}
        return {"vc": groups["vehicles"] + groups["rsus"], "ic": groups["rsus"] + groups["vehicles"],
                "v2v": groups["vehicles"], "i2i": groups["rsus"]}[self.mode]

    def order_agents(self):
        """Per scenario: ``dataset_mode`` order (train: shuffled within vehicles and RSUs), heter reorder,
        ``max_cav``."""
        for scen in self.scenario_database:
            cavs = self._mode_agents(scen["cavs"], self.rng if self.train else None)
            if self.heter is not None:
                cavs = self.heter.reorder_cav_list(cavs, scen["name"], self.train)
            scen["order"] = cavs[:self.max_cav]
        self.len_record = np.cumsum([len(s["cavs"][s["order"][0]]["timestamps"]) for s in self.scenario_database])

    def _lidar_path(self, scen, cav, ts, modality):
        return os.path.join(scen["path"], cav, f"{ts}.bin")

    def _decode(self, path, decode, kind):
        """V2X-Real's decoders: ``.bin`` clouds (:func:`read_bin_cloud`) and agent YAMLs with their ``obj_type``
        checked (see :meth:`_typed`)."""
        if path.endswith(".bin"):
            decode = read_bin_cloud
        data = super()._decode(path, decode, kind)
        return self._typed(data, path) if decode is read_agent_params else data

    def _typed(self, params, path):
        """``params`` with the unknown ``obj_type`` objects handled as ``unknown_obj_type`` says (a copy when
        something changes; the cached original is never modified).

        Raises:
            DataError: an unknown type with ``unknown_obj_type: error`` (names the file and the key).
        """
        vehicles = params["vehicles"]
        unknown = [i for i, v in vehicles.items() if v.get("obj_type") is not None
                   and v.get("obj_type") not in OBJ_TYPE_CLASSES]
        if not unknown:
            return params
        first = vehicles[unknown[0]]["obj_type"]
        if self.unknown_obj_type == "error":
            raise DataError(f"{path}: key 'vehicles.{unknown[0]}.obj_type' = {first!r} is not a known object type "
                            f"(set unknown_obj_type: skip or a class to accept it); known: "
                            f"{', '.join(sorted(OBJ_TYPE_CLASSES))}")
        for i in unknown:
            obj_type = vehicles[i]["obj_type"]
            if obj_type not in self._reported_types:
                self._reported_types.add(obj_type)
                logger.warning(f"{path}: key 'vehicles.{i}.obj_type' = {obj_type!r} is not a known object type; "
                               f"{'skipped' if self.unknown_obj_type == 'skip' else 'read as ' + self.unknown_obj_type}"
                               f" (unknown_obj_type)")
        if self.unknown_obj_type == "skip":
            kept = {i: v for i, v in vehicles.items() if i not in unknown}
        else:
            kept = {i: (dict(v, obj_type=CLASS_TYPE[self.unknown_obj_type]) if i in unknown else v)
                    for i, v in vehicles.items()}
        return dict(params, vehicles=kept)
