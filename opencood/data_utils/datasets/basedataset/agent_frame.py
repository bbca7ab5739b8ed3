"""The dataset-neutral per-agent record every base loader returns and every fusion dataset consumes.

A base dataset (OPV2V, V2XSet, DAIR-V2X, V2X-Real, ...) turns one frame of one agent into an
:class:`AgentFrame`; ``retrieve_base_data(idx)`` returns the list of records of a sample, ego first. Fusion
datasets, pose noise (``opencood.utils.pose_utils``), camera preparation
(``opencood.utils.camera_utils.process_camera_data``) and ``get_pairwise_transformation`` read only these
fields, never a dataset's raw files.

Conventions (docs/architecture.md): frames are right-handed CARLA/UE4-style LiDAR frames as the dataset
defines them (x forward, y right, z up for OPV2V); poses are 6-vectors ``[x, y, z, roll, yaw, pitch]`` in
metres and **degrees** in the world frame of the scenario; box yaw is in **radians**.
"""
from dataclasses import dataclass, field
from typing import Any, List, NamedTuple, Optional

import numpy as np

from opencood.utils.transformation_utils import x_to_world

# Super-class names used in ``AgentFrame.object_classes`` (and, in this order, by single-class heads).
VEHICLE, PEDESTRIAN, TRUCK = "vehicle", "pedestrian", "truck"


@dataclass
class CameraView:
    """One camera of an agent at one frame.

    Attributes:
        name: camera name as the config's ``data_aug_conf.cams`` lists it (``camera0`` .. ``camera3``).
        image: RGB image, a PIL image or an (H, W, 3) uint8 array.
        intrinsic: (3, 3) float64 pixel intrinsics of ``image`` (pixels; u right, v down).
        T_lidar_cam: (4, 4) float64 transform from the camera frame (OpenCV axes: x right, y down,
            z forward; metres) to the agent's CLEAN LiDAR frame.
        depth: planar depth image aligned with ``image`` (PIL or (H, W) array, pixel value = metres), or None.
    """

    name: str
    image: Any
    intrinsic: np.ndarray
    T_lidar_cam: np.ndarray
    depth: Any = None


class ObjectSet(NamedTuple):
    """GT objects in one frame (the output of ``objects_in_frame`` and the record's own objects).

    Attributes:
        boxes: (M, 7) float32 boxes in ``postprocess.order`` (``hwl``: x, y, z, h, w, l, yaw), metres and
            radians, in the LiDAR frame named by the producer.
        ids: M object ids (ints for OPV2V/V2X-Real, any hashable), unique.
        classes: M super-class names (``"vehicle"``, ``"truck"``, ``"pedestrian"``).
    """

    boxes: np.ndarray
    ids: list
    classes: list

    def subset(self, keep):
        """The objects where the (M,) bool ``keep`` is true, order kept."""
        rows = np.flatnonzero(keep)
        return ObjectSet(self.boxes[rows], [self.ids[i] for i in rows], [self.classes[i] for i in rows])

    @staticmethod
    def empty():
        return ObjectSet(np.zeros((0, 7), dtype=np.float32), [], [])


@dataclass
class AgentFrame:
    """Everything one agent contributes to one sample.

    Attributes:
        agent_id: the agent's id as a string (folder name for OPV2V; negative for infrastructure).
        is_ego: the first agent of a sample is the ego (exactly one per sample).
        is_infrastructure: road-side unit (V2XSet / V2X-Real: negative ids; DAIR-V2X: the infrastructure side).
        scenario: scenario (sequence) name.
        timestamp: frame name as on disk (``"000068"`` for OPV2V).
        frame_index: index of the frame within its scenario (0-based, in timestamp order).
        lidar_pose: (6,) float64 LiDAR pose in the world the system *believes* (metres, degrees); equal to
            ``lidar_pose_clean`` unless pose noise was added (``pose_utils.add_noise_data_dict``).
        lidar_pose_clean: (6,) float64 true LiDAR pose in the world (metres, degrees).
        points: (P, 4) float32 ``[x, y, z, intensity]`` in the agent's LiDAR frame (metres), or None when
            the run does not read this agent's LiDAR.
        objects: (M, 7) float32 GT boxes of the objects this agent's frame lists, in the agent's CLEAN
            LiDAR frame, ``postprocess.order`` layout (metres, radians).
        object_ids: M object ids (unique within the record).
        object_classes: M super-class names (``"vehicle"``, ``"truck"``, ``"pedestrian"``).
        cameras: the agent's cameras (:class:`CameraView`), empty when cameras are not read.
        modality: heterogeneous agent type (``"m1"`` .. ``"m4"``) or None in homogeneous runs.
        extensions: per ``add_data_extension`` entry (file suffix -> content): ``bev_visibility.png`` ->
            (256, 256) uint8 (heading up, 0.39 m/px, centre pixel 127,127); ``*.yaml`` -> dict.
        time_delay: communication delay of this agent, frames at 10 Hz (0: not delayed); set by
            ``opencood.utils.comm_delay.apply_delay``, whose record then holds the delayed frame's data.
        speed: the agent's own speed, m/s (0 when the format records none); V2X-ViT's prior encoding.
        _loader_data: loader-private data, read only by the base dataset that wrote it (OPV2V: the
            world-frame ``vehicles`` dict of the agent YAML, so that GT merging projects world objects straight
            into the reference frame); never read by fusion datasets.
    """

    agent_id: str
    is_ego: bool
    lidar_pose: np.ndarray
    lidar_pose_clean: np.ndarray
    scenario: str = ""
    timestamp: str = ""
    frame_index: int = 0
    is_infrastructure: bool = False
    points: Optional[np.ndarray] = None
    objects: np.ndarray = field(default_factory=lambda: np.zeros((0, 7), dtype=np.float32))
    object_ids: list = field(default_factory=list)
    object_classes: List[str] = field(default_factory=list)
    cameras: List[CameraView] = field(default_factory=list)
    modality: Optional[str] = None
    extensions: dict = field(default_factory=dict)
    time_delay: int = 0
    speed: float = 0.0
    _loader_data: Any = field(default=None, repr=False, compare=False)

    @property
    def T_world_lidar(self):
        """(4, 4) float64 T_world<-lidar of :attr:`lidar_pose` (the possibly noisy pose)."""
        return x_to_world(self.lidar_pose)

    @property
    def T_world_lidar_clean(self):
        """(4, 4) float64 T_world<-lidar of :attr:`lidar_pose_clean`."""
        return x_to_world(self.lidar_pose_clean)

    @property
    def own_objects(self):
        """The record's objects as an :class:`ObjectSet` (agent's clean LiDAR frame)."""
        return ObjectSet(self.objects, list(self.object_ids), list(self.object_classes))
