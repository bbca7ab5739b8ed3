"""Base loader of V2X-Sim 2.0 (spec data_eval §2): info pickles listing, per frame, every agent's LiDAR sweep,
pose and global boxes.

Layout (``root_dir`` / ``validate_dir`` = the info pickle of the split)::

    dataset/v2xsim2_info/v2xsim_infos_{train,val,test}.pkl
    dataset/V2X-Sim-2.0/sweeps/LIDAR_TOP_id_<i>/scene_<k>_<ts>.pcd.bin     float32 x 5: x, y, z, intensity, ring

A pickle is a list of frame dicts: ``agent_num`` (int), and for each agent ``i`` in 1..agent_num (agent 0, the
road-side unit of V2X-Sim, is not used) ``lidar_path_<i>`` (str), ``lidar_pose_<i>`` ((4, 4) T_world<-lidar,
metres), ``labels_<i>`` = {``gt_boxes_global``: (N, 10) ``x, y, z, dx, dy, dz, qw, qx, qy, qz`` (world frame,
box centre, full length/width/height, rotation quaternion), ``gt_object_ids``: (N,)}. Lidar paths that start
with the reference's cluster prefix (``/GPFS/rhome/yifanlu/workspace/dataset/v2xsim2-complete``) are rewritten
to ``<dataset root>/V2X-Sim-2.0`` (the reference's ``dataset/V2X-Sim-2.0`` when the pickle lies in
``dataset/v2xsim2_info``); relative paths are taken relative to ``<dataset root>``, the pickle folder's parent.

The pickle is read with a restricted unpickler (plain containers, numbers, strings and numpy arrays only; any
other global is refused before it can run), then checked in full before anything is loaded: every problem
(a non-dict entry, an ``agent_num`` that disagrees with the per-agent keys, a missing key, a bad pose or box
shape, a missing or truncated sweep) is reported in one ``DataError`` naming the pickle, the entry and the key.

Records: one sample per entry; agents ``"1"`` .. ``"<agent_num>"`` (training: shuffled per epoch; evaluation:
in order), at most ``max_cav``; every object is a ``vehicle``; LiDAR only (a heterogeneous run gives every
agent type ``m1``, as the reference does).
"""
import os
import pickle
import re

import numpy as np

from opencood.data_utils.datasets.basedataset.agent_frame import VEHICLE, AgentFrame, ObjectSet
from opencood.data_utils.datasets.basedataset.base_dataset import BaseDataset
from opencood.utils.box_utils import corner_to_center
from opencood.utils.errors import ConfigError, DataError
from opencood.utils.registry import BASE_DATASETS
from opencood.utils.transformation_utils import tfm_to_pose, x_to_world

REFERENCE_PREFIX = "/GPFS/rhome/yifanlu/workspace/dataset/v2xsim2-complete"
DATA_FOLDER = "V2X-Sim-2.0"
POINT_DIMS = 5  # x, y, z, intensity, ring (float32)
BOX_DIMS = 10
HETER_MODALITY = "m1"
MAX_LISTED_PROBLEMS = 5
_SWEEP_NAME = re.compile(r"(scene_\d+)_(\d+)")

# Globals a V2X-Sim info pickle may name: containers and numpy array/scalar reconstruction (numpy 1 and 2).
_ALLOWED_GLOBALS = {
    ("builtins", name) for name in ("dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray",
                                    "int", "float", "complex", "bool", "slice")
} | {("collections", "OrderedDict")} | {
    (module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"),
     ("numpy._core.numeric", "_frombuffer")}


class _InfoUnpickler(pickle.Unpickler):
    """Unpickler that resolves only :data:`_ALLOWED_GLOBALS` (anything else could run code)."""

    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")


def load_info_pickle(path):
    """The frame list of a V2X-Sim info pickle, read with the restricted unpickler.

    Raises:
        DataError: unreadable file, a refused global, or not a list.
    """
    try:
        with open(path, "rb") as f:
            data = _InfoUnpickler(f).load()
    except OSError as e:
        raise DataError(f"{path}: cannot read info pickle ({e.strerror or e})") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError) as e:
        raise DataError(f"{path}: refused or malformed info pickle ({' '.join(str(e).split())})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of frame dicts, got {type(data).__name__}")
    return data


def quaternion_to_matrix(q):
    """(4,) ``qw, qx, qy, qz`` (any norm) -> (3, 3) rotation matrix."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def global_boxes_to_frame(boxes, pose, order="hwl"):
    """V2X-Sim global boxes -> 7-vector boxes in the frame of ``pose``.

    The 8 corners of each box (its own frame: ``dx`` along x, ``dy`` along y, ``dz`` along z, centred) are moved
    by T_frame<-object = inv(T_world<-frame) @ T_world<-object and turned into a box by ``corner_to_center``
    (the reference's steps).

    Args:
        boxes: (N, 10) ``x, y, z, dx, dy, dz, qw, qx, qy, qz`` in the world (metres).
        pose: (6,) pose of the output frame in the world (metres, degrees).
        order: ``'hwl'`` or ``'lwh'``.

    Returns:
        (N, 7) float64 boxes in ``order`` layout (metres, radians).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, BOX_DIMS)
    if not len(boxes):
        return np.zeros((0, 7))
    frame_from_world = np.linalg.inv(x_to_world(pose))  # (4, 4)
    signs = np.array([[1, 1, -1, -1, 1, 1, -1, -1], [-1, 1, 1, -1, -1, 1, 1, -1],
                      [-1, -1, -1, -1, 1, 1, 1, 1]], dtype=np.float64) / 2  # (3, 8)
    corners = []
    for box in boxes:
        local = signs * box[3:6, None]  # (3, 8) object frame
        world = quaternion_to_matrix(box[6:10]) @ local + box[:3, None]  # (3, 8)
        corners.append((frame_from_world[:3, :3] @ world + frame_from_world[:3, 3:]).T)  # (8, 3)
    return corner_to_center(np.stack(corners), order)


def _entry_problems(entry, k, data_root):
    """Problems of pickle entry ``k`` (list of strings)."""
    if not isinstance(entry, dict):
        return [f"entry {k}: expected a dict, got {type(entry).__name__}"]
    n = entry.get("agent_num")
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        return [f"entry {k}: key 'agent_num' must be a positive integer, got {n!r}"]
    present = sorted(int(m.group(1)) for m in (re.fullmatch(r"lidar_path_(\d+)", str(key)) for key in entry) if m)
    problems = []
    extra = [i for i in present if i > n]
    if extra:
        problems.append(f"entry {k}: key 'agent_num' = {n} but the entry has lidar_path_{extra[0]} "
                        f"({len([i for i in present if i >= 1])} agents)")
    for i in range(1, int(n) + 1):
        problems += _agent_problems(entry, k, i, data_root)
    return problems


def _agent_problems(entry, k, i, data_root):
    """Problems of agent ``i`` of entry ``k``."""
    missing = [key for key in (f"lidar_path_{i}", f"lidar_pose_{i}", f"labels_{i}") if key not in entry]
    if missing:
        return [f"entry {k}: key '{missing[0]}' missing (agent_num = {entry['agent_num']})"]
    problems = []
    pose = np.asarray(entry[f"lidar_pose_{i}"])
    if pose.shape != (4, 4) or not np.all(np.isfinite(pose.astype(np.float64))):
        problems.append(f"entry {k}: key 'lidar_pose_{i}' must be a finite 4x4 matrix, got shape {pose.shape}")
    labels = entry[f"labels_{i}"]
    boxes = np.asarray(labels.get("gt_boxes_global", ())) if isinstance(labels, dict) else None
    ids = np.asarray(labels.get("gt_object_ids", ())) if isinstance(labels, dict) else None
    if boxes is None or boxes.size and (boxes.ndim != 2 or boxes.shape[1] != BOX_DIMS) or len(ids) != len(boxes):
        problems.append(f"entry {k}: key 'labels_{i}' must hold gt_boxes_global (N, {BOX_DIMS}) and "
                        f"gt_object_ids (N,)")
    path = sweep_path(entry[f"lidar_path_{i}"], data_root)
    if not os.path.isfile(path):
        problems.append(f"entry {k}: key 'lidar_path_{i}': {path} missing")
    elif os.path.getsize(path) % (4 * POINT_DIMS):
        problems.append(f"entry {k}: key 'lidar_path_{i}': {path} is not float32 x {POINT_DIMS}")
    return problems


def sweep_path(path, data_root):
    """A pickle's lidar path on this machine (reference prefix rewritten; relative to ``data_root``)."""
    path = str(path)
    if path.startswith(REFERENCE_PREFIX):
        return os.path.join(data_root, DATA_FOLDER) + path[len(REFERENCE_PREFIX):]
    return path if os.path.isabs(path) else os.path.join(data_root, path)


@BASE_DATASETS.register("v2xsim")
class V2XSimBaseDataset(BaseDataset):
    """V2X-Sim 2.0 info pickles (module docstring). ``root_dir`` / ``validate_dir`` name the pickle file."""

    def __init__(self, params, visualize=False, train=True, heterogeneous=False, order="hwl"):
        super().__init__(params, visualize, train, heterogeneous, order)
        unsupported = [s for s in self.input_source if s != "lidar"]
        if unsupported:
            raise ConfigError(f"{self.source}: key 'input_source' has '{unsupported[0]}'; V2X-Sim is LiDAR only")
        if self.heter is not None and (HETER_MODALITY not in self.heter.modality_setting
                                       or self.heter.sensor_type(HETER_MODALITY) != "lidar"):
            raise ConfigError(f"{self.source}: key 'heter.modality_setting' needs a LiDAR type "
                              f"'{HETER_MODALITY}' (every V2X-Sim agent is {HETER_MODALITY})")
        self.data_root = os.path.dirname(os.path.dirname(os.path.abspath(self.split_dir)))
        self.frames = load_info_pickle(self.split_dir)
        problems = [p for k, entry in enumerate(self.frames) for p in _entry_problems(entry, k, self.data_root)]
        if not self.frames:
            problems.append("no frames")
        if problems:
            shown = "; ".join(problems[:MAX_LISTED_PROBLEMS])
            more = f" (and {len(problems) - MAX_LISTED_PROBLEMS} more)" if len(problems) > MAX_LISTED_PROBLEMS else ""
            raise DataError(f"{self.split_dir}: {len(problems)} dataset problem{'s' * (len(problems) > 1)}: "
                            f"{shown}{more}")
        self.order_agents()

    def order_agents(self):
        """Per frame: agents 1..agent_num (training: a permutation from ``self.rng``), at most ``max_cav``."""
        self.agent_order = []
        for entry in self.frames:
            ids = np.arange(1, int(entry["agent_num"]) + 1)
            if self.train:
                ids = 1 + self.rng.permutation(len(ids))
            self.agent_order.append([str(i) for i in ids[:self.max_cav]])

    def __len__(self):
        return len(self.frames)

    def sample_info(self, idx):
        """(scene name, timestamp) from the ego's sweep name ``scene_<k>_<ts>``, else (``entry_<idx>``, idx)."""
        self.follow_main_process()
        entry = self.frames[idx]
        match = _SWEEP_NAME.search(os.path.basename(str(entry[f"lidar_path_{self.agent_order[idx][0]}"])))
        return (match.group(1), match.group(2)) if match else (f"entry_{idx}", str(idx))

    def retrieve_base_data(self, idx, rng=None):
        """The agents of frame ``idx`` (ego first): poses from ``lidar_pose_<i>``, points (P, 4) from the sweep,
        objects = ``labels_<i>`` in the agent's LiDAR frame with their ``gt_object_ids``."""
        if not 0 <= idx < len(self):
            raise IndexError(f"sample index {idx} out of range [0, {len(self)})")
        scenario, timestamp = self.sample_info(idx)
        entry = self.frames[idx]
        agents = []
        for j, cav in enumerate(self.agent_order[idx]):
            pose = tfm_to_pose(np.asarray(entry[f"lidar_pose_{cav}"], dtype=np.float64))  # (6,) metres, degrees
            labels = entry[f"labels_{cav}"]
            boxes = np.asarray(labels["gt_boxes_global"], dtype=np.float64).reshape(-1, BOX_DIMS)  # (N, 10) world
            ids = [int(i) for i in np.asarray(labels["gt_object_ids"]).reshape(-1)]
            agent = AgentFrame(
                agent_id=cav, is_ego=j == 0, lidar_pose=pose, lidar_pose_clean=pose.copy(), scenario=scenario,
                timestamp=timestamp, frame_index=idx, modality=HETER_MODALITY if self.heter is not None else None,
                objects=global_boxes_to_frame(boxes, pose, self.order).astype(np.float32), object_ids=ids,
                object_classes=[VEHICLE] * len(ids), _loader_data=boxes)
            if "lidar" in self.input_source or self.visualize:
                path = sweep_path(entry[f"lidar_path_{cav}"], self.data_root)
                agent.points = np.fromfile(path, dtype=np.float32).reshape(-1, POINT_DIMS)[:, :4].copy()
            agents.append(agent)
        return agents

    def objects_in_frame(self, agents, reference_pose):
        """Fused GT: every agent's global boxes moved straight into the frame of ``reference_pose``
        (:func:`global_boxes_to_frame`), de-duplicated by object id, first occurrence wins."""
        merged = {}
        for agent in agents:
            boxes = global_boxes_to_frame(agent._loader_data, reference_pose, self.order)  # (N, 7)
            for obj_id, box, cls in zip(agent.object_ids, boxes, agent.object_classes):
                merged.setdefault(obj_id, (box, cls))
        if not merged:
            return ObjectSet.empty()
        ids = list(merged)
        return ObjectSet(np.asarray([merged[i][0] for i in ids], dtype=np.float32).reshape(-1, 7), ids,
                         [merged[i][1] for i in ids])
