"""Base loader of DAIR-V2X-C (cooperative vehicle-infrastructure, "complemented" labels; spec data_eval §2).

Layout (``data_dir`` = ``.../cooperative-vehicle-infrastructure``; ``root_dir`` / ``validate_dir`` = a split JSON,
a list of vehicle frame ids)::

    cooperative/data_info.json                    [{vehicle_image_path, vehicle_pointcloud_path,
                                                    infrastructure_image_path, infrastructure_pointcloud_path,
                                                    cooperative_label_path, system_error_offset{delta_x, delta_y}}]
    cooperative/label_world/<veh>.json            world-frame labels with world_8_points (8 x 3)
    vehicle-side/velodyne/<veh>.pcd               x, y, z, intensity (0..255)
    vehicle-side/calib/lidar_to_novatel/<veh>.json    {transform: {rotation 3x3, translation 3x1}}
    vehicle-side/calib/novatel_to_world/<veh>.json    {rotation, translation}
    vehicle-side/label/lidar/<veh>.json           the vehicle's own labels (LiDAR frame)
    infrastructure-side/velodyne/<inf>.pcd
    infrastructure-side/calib/virtuallidar_to_world/<inf>.json   {rotation, translation}; + system_error_offset
    infrastructure-side/label/virtuallidar/<inf>.json

Paths in ``data_info.json`` are relative to ``data_dir``; a frame id is the basename of its image path (images are
not read: LiDAR only). Poses: vehicle T_world<-lidar = T_world<-novatel T_novatel<-lidar, infrastructure
T_world<-virtuallidar with ``delta_x``/``delta_y`` added to its translation; both as 6-vectors by ``tfm_to_pose``.
Clouds: intensity / 256, NaN rows dropped. Labels: entries {type, 3d_location{x,y,z}, 3d_dimensions{l,w,h},
rotation (rad)}; only Car (vehicle) and Van / Truck / Bus (truck) are kept, zero-size boxes dropped.

Two agents per sample: ``"0"`` the vehicle (json type m1), ``"1"`` the infrastructure (m2, ``is_infrastructure``);
training swaps them at random (per sample), evaluation keeps the vehicle as ego. Each record's ``objects`` are
its side's own labels; the fused GT (:meth:`DAIRV2XBaseDataset.objects_in_frame`) is the cooperative
``label_world`` set (carried by the vehicle record) plus every agent's own boxes that overlap none of the boxes
already taken (BEV IoU <= :data:`DEDUP_IOU`): DAIR has no object ids shared between the sides.

Checked at start, all problems in one ``DataError``: the split JSON and ``data_info.json`` (readable, every split
id listed), every file a frame needs, and every calibration JSON's keys.
"""
import json
import os

import numpy as np
import torch

from opencood.data_utils.datasets.basedataset.agent_frame import TRUCK, VEHICLE, AgentFrame, ObjectSet
from opencood.data_utils.datasets.basedataset.base_dataset import BaseDataset
from opencood.data_utils.datasets.basedataset.dataset_tree import raise_problems
from opencood.ops.iou import corners_iou_bev
from opencood.utils.box_utils import boxes_to_corners_3d, corner_to_center, dims_index, transform_boxes
from opencood.utils.config import Key
from opencood.utils.errors import ConfigError, DataError
from opencood.utils.pcd_utils import pcd_to_np
from opencood.utils.registry import BASE_DATASETS
from opencood.utils.transformation_utils import tfm_to_pose, x1_to_x2, x_to_world

DAIR_CLASSES = {"Car": VEHICLE, "Van": TRUCK, "Truck": TRUCK, "Bus": TRUCK}
DEDUP_IOU = 0.05  # a collaborator box overlapping a taken box by more than this is the same object
INTENSITY_SCALE = 256.0
VEHICLE_ID, INFRA_ID = "0", "1"
JSON_TYPES = {VEHICLE_ID: "m1", INFRA_ID: "m2"}  # DAIR's fixed agent types (no assignment json)
INFO_KEYS = ("vehicle_image_path", "vehicle_pointcloud_path", "infrastructure_image_path",
             "infrastructure_pointcloud_path", "cooperative_label_path")


def _read_json(path, problems=None):
    """Parsed JSON; a problem string is appended (and None returned) when ``problems`` is given, else raised."""
    try:
        with open(path, "r") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        msg = f"{path}: cannot read JSON ({' '.join(str(e).split())})"
        if problems is None:
            raise DataError(msg) from None
        problems.append(msg)
        return None


def rigid(node, path, key):
    """(4, 4) float64 transform of a {rotation 3x3, translation 3x1} mapping.

    Raises:
        DataError: missing or malformed rotation/translation (names the file and the key).
    """
    try:
        rot = np.asarray(node["rotation"], dtype=np.float64).reshape(3, 3)
        trans = np.asarray(node["translation"], dtype=np.float64).reshape(3)
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{path}: key '{key}' must hold 'rotation' (3x3) and 'translation' (3x1)") from None
    tfm = np.eye(4)
    tfm[:3, :3], tfm[:3, 3] = rot, trans
    return tfm


def calib_transform(path, wrapped):
    """T of one calibration JSON: ``{transform: {rotation, translation}}`` when ``wrapped`` (lidar_to_novatel), else
    ``{rotation, translation}``."""
    data = _read_json(path)
    if wrapped:
        if not isinstance(data, dict) or "transform" not in data:
            raise DataError(f"{path}: missing key 'transform'")
        return rigid(data["transform"], path, "transform")
    return rigid(data if isinstance(data, dict) else {}, path, "rotation/translation")


def read_dair_cloud(path):
    """(N, 4) float32 ``[x, y, z, intensity / 256]`` of a DAIR PCD (LiDAR frame, metres), NaN rows dropped."""
    points = pcd_to_np(path)
    points[:, 3] /= INTENSITY_SCALE
    return points


def label_boxes(entries, path, order):
    """Boxes of a side label file (its LiDAR frame).

    Returns:
        (boxes (M, 7) float32 in ``order`` layout, classes [M]): Car/Van/Truck/Bus entries of non-zero size.

    Raises:
        DataError: an entry without 3d_location / 3d_dimensions / rotation (names the file and the key).
    """
    ih, iw, il = dims_index(order)
    boxes, classes = [], []
    for k, e in enumerate(entries or []):
        if e.get("type") not in DAIR_CLASSES:
            continue
        try:
            loc, dim = e["3d_location"], e["3d_dimensions"]
            box = np.zeros(7)
            box[:3] = [float(loc["x"]), float(loc["y"]), float(loc["z"])]
            box[ih], box[iw], box[il] = float(dim["h"]), float(dim["w"]), float(dim["l"])
            box[6] = float(e["rotation"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{path}: entry {k} needs '3d_location' {{x,y,z}}, '3d_dimensions' {{l,w,h}} and "
                            f"'rotation'") from None
        if min(box[ih], box[iw], box[il]) <= 0:
            continue
        boxes.append(box)
        classes.append(DAIR_CLASSES[e["type"]])
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 7), classes


def world_corners(entries, path):
    """(M, 8, 3) world corners and classes of the cooperative label's Car/Van/Truck/Bus entries."""
    corners, classes = [], []
    for k, e in enumerate(entries or []):
        if e.get("type") not in DAIR_CLASSES:
            continue
        try:
            pts = np.asarray(e["world_8_points"], dtype=np.float64).reshape(8, 3)
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{path}: entry {k} needs 'world_8_points' (8 x 3)") from None
        corners.append(pts)
        classes.append(DAIR_CLASSES[e["type"]])
    return np.asarray(corners, dtype=np.float64).reshape(-1, 8, 3), classes


class _Listing:
    """``exists(path)`` from one ``os.listdir`` per folder (a real split has tens of thousands of files)."""

    def __init__(self):
        self.folders = {}

    def exists(self, path):
        folder, name = os.path.split(path)
        if folder not in self.folders:
            try:
                self.folders[folder] = set(os.listdir(folder))
            except OSError:
                self.folders[folder] = set()
        return name in self.folders[folder]


@BASE_DATASETS.register("dairv2x")
class DAIRV2XBaseDataset(BaseDataset):
    """DAIR-V2X-C frames as two-agent samples (module docstring).

    Args:
        params: experiment config (``load_yaml`` output).
        visualize: also load every agent's LiDAR.
        train: ``root_dir`` split and random vehicle/infrastructure swap; else ``validate_dir``.
        heterogeneous: read ``params['heter']`` (no assignment json: the vehicle is json type m1, the
            infrastructure m2).
        order: box layout of the records' objects (``postprocess.order``).
    """

    CONFIG = BaseDataset.CONFIG.extend({
        "data_dir": Key(str, None, "the cooperative-vehicle-infrastructure folder (data_info.json paths are "
                                   "relative to it); required by fusion.dataset dairv2x"),
    })

    def __init__(self, params, visualize=False, train=True, heterogeneous=False, order="hwl"):
        super().__init__(params, visualize, train, heterogeneous, order)
        if not self.cfg.data_dir:
            raise ConfigError(f"{self.source}: missing key 'data_dir' (the cooperative-vehicle-infrastructure folder)")
        self.data_dir = str(self.cfg.data_dir)
        self.read_lidar = "lidar" in self.input_source or self.visualize or heterogeneous
        self.frames = self._scan()
        if self.heter is not None:
            if self.heter.assignment is None:
                self.heter.assignment = {f["id"]: dict(JSON_TYPES) for f in self.frames}
            self.heter.check_coverage({f["id"]: [VEHICLE_ID, INFRA_ID] for f in self.frames}, train)
        self.order_agents()

    # ------------------------------------------------------------------ the up-front check
    def _scan(self):
        """Frames of the split with their file paths and poses; every problem reported at once."""
        problems = []
        split = _read_json(self.split_dir, problems)
        info_path = os.path.join(self.data_dir, "cooperative", "data_info.json")
        info = _read_json(info_path, problems)
        if split is not None and not (isinstance(split, list) and all(isinstance(s, str) for s in split)):
            problems.append(f"{self.split_dir}: expected a list of vehicle frame ids")
            split = None
        if info is not None and not isinstance(info, list):
            problems.append(f"{info_path}: expected a list of frame entries")
            info = None
        raise_problems(self.split_dir, problems)
        by_id = {}
        for k, entry in enumerate(info):
            missing = [key for key in INFO_KEYS if not isinstance(entry, dict) or key not in entry]
            if missing:
                problems.append(f"{info_path}: entry {k} misses key '{missing[0]}'")
                continue
            by_id[os.path.splitext(os.path.basename(entry["vehicle_image_path"]))[0]] = entry
        listing, frames = _Listing(), []
        for veh in split:
            if veh not in by_id:
                problems.append(f"{info_path}: no entry for frame '{veh}' of the split")
                continue
            frame = self._frame(veh, by_id[veh], listing, problems)
            if frame is not None:
                frames.append(frame)
        if not split:
            problems.append(f"{self.split_dir}: the split lists no frame")
        raise_problems(self.split_dir, problems)
        return frames

    def _frame(self, veh, entry, listing, problems):
        """One frame's paths and poses (None when something is missing; problems appended)."""
        inf = os.path.splitext(os.path.basename(entry["infrastructure_image_path"]))[0]
        d = self.data_dir
        paths = {
            "veh_cloud": os.path.join(d, entry["vehicle_pointcloud_path"]),
            "inf_cloud": os.path.join(d, entry["infrastructure_pointcloud_path"]),
            "coop_label": os.path.join(d, entry["cooperative_label_path"]),
            "lidar_to_novatel": os.path.join(d, "vehicle-side", "calib", "lidar_to_novatel", f"{veh}.json"),
            "novatel_to_world": os.path.join(d, "vehicle-side", "calib", "novatel_to_world", f"{veh}.json"),
            "veh_label": os.path.join(d, "vehicle-side", "label", "lidar", f"{veh}.json"),
            "virtuallidar_to_world": os.path.join(d, "infrastructure-side", "calib", "virtuallidar_to_world",
                                                  f"{inf}.json"),
            "inf_label": os.path.join(d, "infrastructure-side", "label", "virtuallidar", f"{inf}.json"),
        }
        needed = [k for k in paths if self.read_lidar or not k.endswith("_cloud")]
        missing = [f"{paths[k]} missing (frame {veh})" for k in needed if not listing.exists(paths[k])]
        if missing:
            problems.extend(missing)
            return None
        offset = entry.get("system_error_offset") or {}
        try:
            veh_tfm = calib_transform(paths["novatel_to_world"], False) @ calib_transform(paths["lidar_to_novatel"],
                                                                                           True)
            inf_tfm = calib_transform(paths["virtuallidar_to_world"], False)
            inf_tfm[0, 3] += float(offset.get("delta_x", 0.0))
            inf_tfm[1, 3] += float(offset.get("delta_y", 0.0))
        except DataError as e:
            problems.append(str(e))
            return None
        except (TypeError, ValueError):
            problems.append(f"{veh}: key 'system_error_offset' must hold numbers delta_x, delta_y")
            return None
        return {"id": veh, "inf_id": inf, "paths": paths, "poses": {VEHICLE_ID: tfm_to_pose(veh_tfm),
                                                                     INFRA_ID: tfm_to_pose(inf_tfm)}}

    # ------------------------------------------------------------------ indexing
    def order_agents(self):
        """DAIR's order is fixed per sample (the training swap is drawn per sample in retrieve_base_data)."""
        self.len_record = np.arange(1, len(self.frames) + 1)

    def __len__(self):
        return len(self.frames)

    def sample_info(self, idx):
        """(vehicle frame id, vehicle frame id): every DAIR frame is its own scenario."""
        return self.frames[idx]["id"], self.frames[idx]["id"]

    def retrieve_base_data(self, idx, rng=None):
        """The two agents of frame ``idx`` (vehicle first in evaluation; swapped at random in training).

        Returns:
            list of :class:`AgentFrame`, at most ``max_cav``: poses from the calibration chains (clean = noisy),
            ``points`` (P, 4) float32 when read, ``objects`` = the side's own labels in its LiDAR frame.
        """
        self.follow_main_process()
        if not 0 <= idx < len(self):
            raise IndexError(f"sample index {idx} out of range [0, {len(self)})")
        frame = self.frames[idx]
        rng = self.sample_rng(idx) if rng is None else rng
        order = [VEHICLE_ID, INFRA_ID]
        if self.train and rng.random() < 0.5:
            order.reverse()
        order = order[:self.max_cav]
        modalities = (self.heter.assign(order, frame["id"], self.train, rng) if self.heter is not None
                      else [None] * len(order))
        return [self._agent(frame, cav, i == 0, modalities[i]) for i, cav in enumerate(order)]

    def _agent(self, frame, cav, is_ego, modality):
        paths, vehicle = frame["paths"], cav == VEHICLE_ID
        label_path = paths["veh_label" if vehicle else "inf_label"]
        boxes, classes = label_boxes(_read_json(label_path), label_path, self.order)
        side = "v" if vehicle else "i"
        pose = frame["poses"][cav]
        agent = AgentFrame(agent_id=cav, is_ego=is_ego, lidar_pose=pose.copy(), lidar_pose_clean=pose.copy(),
                           scenario=frame["id"], timestamp=frame["id"] if vehicle else frame["inf_id"],
                           is_infrastructure=not vehicle, modality=modality, objects=boxes,
                           object_ids=[f"{side}{k}" for k in range(len(classes))], object_classes=classes)
        if vehicle:
            agent._loader_data = world_corners(_read_json(paths["coop_label"]), paths["coop_label"])
        if self._reads_lidar(modality):
            agent.points = read_dair_cloud(paths["veh_cloud" if vehicle else "inf_cloud"])
        return agent

    def _reads_lidar(self, modality):
        if self.heter is None or modality is None:
            return "lidar" in self.input_source or self.visualize
        return self.visualize or (modality in self.heter.modality_setting
                                  and self.heter.sensor_type(modality) == "lidar")

    # ------------------------------------------------------------------ GT
    def objects_in_frame(self, agents, reference_pose):
        """Fused GT in the frame of ``reference_pose``: the cooperative ``label_world`` boxes (from the vehicle
        record), then each agent's own boxes (in agent order), each kept unless its BEV IoU with a box already
        kept exceeds :data:`DEDUP_IOU`.

        Returns:
            :class:`ObjectSet` (boxes (M, 7) float32, ids ``c<k>`` / ``v<k>`` / ``i<k>``, classes).
        """
        T_ref_world = np.linalg.inv(x_to_world(reference_pose))
        candidates = []  # (boxes (K, 7), ids, classes) in the reference frame, in priority order
        for agent in agents:
            if agent._loader_data is not None:
                corners, classes = agent._loader_data  # (K, 8, 3) world
                local = corners @ T_ref_world[:3, :3].T + T_ref_world[:3, 3]  # (K, 8, 3)
                candidates.append((corner_to_center(local, self.order), [f"c{k}" for k in range(len(classes))],
                                   classes))
        for agent in agents:
            if len(agent.objects):
                T = x1_to_x2(agent.lidar_pose_clean, reference_pose)
                candidates.append((transform_boxes(agent.objects, T, self.order), agent.object_ids,
                                   agent.object_classes))
        return self._merge(candidates)

    def _merge(self, candidates):
        """Greedy union of candidate boxes: a box is taken unless it overlaps a taken one (BEV IoU > DEDUP_IOU)."""
        boxes = [b for c in candidates for b in np.asarray(c[0], dtype=np.float64).reshape(-1, 7)]
        if not boxes:
            return ObjectSet.empty()
        ids = [i for c in candidates for i in c[1]]
        classes = [k for c in candidates for k in c[2]]
        boxes = np.stack(boxes)  # (K, 7)
        corners = torch.from_numpy(boxes_to_corners_3d(boxes, self.order))  # (K, 8, 3)
        overlap = (corners_iou_bev(corners, corners) > DEDUP_IOU).numpy()  # (K, K)
        kept = []
        for k in range(len(boxes)):
            if not any(overlap[k, j] for j in kept):
                kept.append(k)
        return ObjectSet(boxes[kept].astype(np.float32), [ids[k] for k in kept], [classes[k] for k in kept])
