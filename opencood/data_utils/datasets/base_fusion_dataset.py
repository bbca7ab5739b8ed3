"""What every fusion dataset shares: the base loader, processors, GT construction and collate helpers.

A fusion dataset (early / intermediate / late / heter) *has* a base loader (``BASE_DATASETS`` entry named
by ``fusion.dataset``) and turns its :class:`~opencood.data_utils.datasets.basedataset.agent_frame.AgentFrame`
records into model samples; it never reads a dataset's raw files. Public surface (HEAL's):
``len(ds)``, ``ds[idx]`` (dict with key ``'ego'``, or per-agent keys for late fusion at test; ``None`` when
no agent is left), ``collate_batch_train``, ``collate_batch_test``, ``reinitialize()``,
``post_process(data_dict, output_dict) -> (pred_box (K,8,3), pred_score (K,))``,
``generate_gt_bbx(data_dict)``, ``ds.post_processor``, ``ds.pre_processor``, ``ds.anchor_box``.

GT classes: every padded GT row has an ``object_bbx_class`` (int64): the index of the object's super-class
in the head's class list (``post_processor.class_names``). A head with one class (or none declared) is
class-agnostic: every box is class 0 and no object is dropped (trucks are ordinary GT, as in the reference).
With several classes, objects whose class the head does not detect are left out of the GT. Rows with mask 0
hold class 0.

Frames: GT boxes are 7-vectors in ``postprocess.order`` (``hwl`` by default), metres, yaw in radians, in
the LiDAR frame named by each function. Poses are ``[x, y, z, roll, yaw, pitch]`` (metres, degrees).
"""
import inspect
import math
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from opencood.data_utils.augmentor.data_augmentor import DataAugmentor
from opencood.data_utils.augmentor.weather import LIDAR_WEATHER, apply_weather, parse_weather, weather_rng
from opencood.data_utils.datasets.basedataset.agent_frame import ObjectSet
from opencood.data_utils.datasets.basedataset.base_dataset import parse_declared
from opencood.data_utils.post_processor import build_postprocessor
from opencood.data_utils.pre_processor import build_preprocessor
from opencood.utils.box_utils import mask_boxes_outside_range_numpy
from opencood.utils.config import REQUIRED, Key, LookupFailed, Schema
from opencood.utils.errors import ConfigError
from opencood.utils.comm_delay import FRAME_MS, HistoryClamp, apply_delay
from opencood.utils.pose_utils import NOISE_SETTING, add_noise_data_dict, delay_enabled, parse_noise_setting
from opencood.utils.registry import BASE_DATASETS

LABEL_KEYS = ("pos_equal_one", "neg_equal_one", "targets")


def project_points(points, tfm):
    """Apply a (4, 4) transform to the xyz of (P, >=3) points; extra columns are kept."""
    out = points.copy()
    out[:, :3] = points[:, :3] @ tfm[:3, :3].T + tfm[:3, 3]
    return out


def bev_distance(pose_a, pose_b):
    """BEV (x, y) distance between two 6-vector poses, metres."""
    return math.hypot(pose_a[0] - pose_b[0], pose_a[1] - pose_b[1])


def to_tensor(x, dtype=torch.float32):
    return torch.as_tensor(np.asarray(x), dtype=dtype)


def _known_base_dataset(parent, value=None):
    """``Key.schema`` callable of ``fusion.dataset``: the name must be a registered base loader."""
    if value is not None and value not in BASE_DATASETS:
        raise LookupFailed(f"unknown fusion.dataset '{value}'; known: {', '.join(BASE_DATASETS.names())}")
    return None


class PaddedObjects(NamedTuple):
    """GT padded to ``max_num`` rows.

    Attributes:
        center: (max_num, 7) float32 boxes (zero rows after the valid ones).
        mask: (max_num,) float32, 1 for valid rows.
        ids: object ids of the valid rows.
        classes: (max_num,) int64 ``object_bbx_class`` (0 on padding rows).
        names: super-class names of the valid rows.
    """

    center: np.ndarray
    mask: np.ndarray
    ids: list
    classes: np.ndarray
    names: list

    def valid_objects(self, boxes=None):
        """The valid rows as an :class:`ObjectSet` (with ``boxes`` (n, 7) instead of theirs, e.g. augmented)."""
        n = len(self.ids)
        return ObjectSet(self.center[:n] if boxes is None else boxes, list(self.ids), list(self.names))


class BaseFusionDataset(Dataset):
    """Shared machinery of the fusion datasets.

    Args:
        params: experiment config from ``load_yaml``.
        visualize: keep every agent's points for pictures (``origin_lidar``).
        train: training split and behaviour (random agent order, augmentation, cav_lidar_range GT filter).

    ``CONFIG`` declares the ``fusion`` section, ``TOP_LEVEL`` the top-level keys a fusion dataset reads.
    """

    heterogeneous = False
    FUSION_ARGS = Schema({
        "proj_first": Key(bool, False, "intermediate fusion: project the points into the ego frame before "
                                       "voxelising (pairwise matrices become identity); early fusion always "
                                       "projects, late fusion never"),
    }, name="fusion args")
    CONFIG = Schema({
        "core_method": Key(str, REQUIRED, "fusion dataset (registry DATASETS)"),
        "dataset": Key(str, "opv2v", "base loader of the on-disk format (registry BASE_DATASETS)",
                       schema=_known_base_dataset),
        "args": Key(dict, {}, "fusion options", schema=FUSION_ARGS),
    }, name="fusion")
    TOP_LEVEL = Schema({
        "comm_range": Key(float, 70.0, "metres; agents farther (BEV, noisy poses) from the ego are dropped"),
        "noise_setting": Key(dict, None, "localisation noise of every agent", schema=NOISE_SETTING),
        "data_augment": DataAugmentor.CONFIG_KEY,
        "lidar_weather": Key(dict, None, "fog / snow on every agent's LiDAR at load time (augmentor/weather.py)",
                             schema=LIDAR_WEATHER),
    }, name="fusion dataset")

    def __init__(self, params, visualize=False, train=True):
        self.params = params
        self.visualize = visualize
        self.train = train
        self.source = params.get("_source", "config")
        for key in ("fusion", "preprocess", "postprocess"):
            if not isinstance(params.get(key), dict):
                raise ConfigError(f"{self.source}: missing key '{key}'")
        self.fusion_cfg = self.CONFIG.parse(params["fusion"], "fusion", self.source)
        self.top_cfg = parse_declared(self.TOP_LEVEL, params, "", self.source)
        post = params["postprocess"]
        self.order = post.get("order", "hwl")
        base_cls = BASE_DATASETS.get(self.fusion_cfg.dataset, self.source)
        self.base = base_cls(params, visualize, train, heterogeneous=self.heterogeneous, order=self.order)
        self.pre_processor = build_preprocessor(params["preprocess"], train)
        self.set_post_processor(build_postprocessor(post, train))
        self.max_num = int(post.get("max_num", 150))
        self.cav_lidar_range = list(post.get("anchor_args", {}).get("cav_lidar_range",
                                                                     params["preprocess"]["cav_lidar_range"]))
        self.gt_range = list(post.get("gt_range", self.cav_lidar_range))
        self.comm_range = float(self.top_cfg.comm_range)
        self.noise_setting = parse_noise_setting(self.top_cfg.noise_setting, self.source)
        if delay_enabled(self.noise_setting) and not base_cls.supports_delay():
            self.base.load_agent_at(None, 0)  # the loader's one-line ConfigError: no frame history
        self.delay_clamp = HistoryClamp()
        self.weather = parse_weather(self.top_cfg.lidar_weather, self.source)
        self.proj_first = bool(self.fusion_cfg.args.proj_first)
        self.max_cav = self.base.max_cav
        self.data_augmentor = DataAugmentor(self.top_cfg.data_augment, train, self.source)

    def set_post_processor(self, post_processor):
        """Use ``post_processor`` for anchors and labels; reads its class list (``class_names``, also on its
        ``head``) and whether its ``generate_label`` takes the GT classes (``gt_class`` / ``classes``)."""
        self.post_processor = post_processor
        rule = getattr(type(self.base), "EVAL_RANGE_RULE", None)
        if rule is not None and hasattr(post_processor, "range_rule"):
            post_processor.range_rule = tuple(rule)  # the dataset's own in-range rule for GT and predictions
        self.anchor_box = post_processor.generate_anchor_box()  # (H', W', A, 7)
        names = getattr(post_processor, "class_names", None)
        if names is None:
            names = getattr(getattr(post_processor, "head", None), "class_names", None)
        self.class_names = list(names) if names and len(names) > 1 else []  # [] = class-agnostic
        accepted = inspect.signature(post_processor.generate_label).parameters
        self.label_class_arg = next((a for a in ("gt_class", "classes") if a in accepted), None)

    def agents_of(self, idx, rng):
        """The agents of sample ``idx`` as they reach the ego: the base loader's records (ego first), each
        collaborator replaced by its record from the delayed frame when ``noise_setting.add_async_noise`` is on
        (``comm_delay.apply_delay``; GT objects stay the current frame's), then every pose with localisation
        noise when ``noise_setting`` asks for it (``pose_utils.add_noise_data_dict``; clean poses kept), and
        every cloud in the ``lidar_weather`` (``augmentor.weather``; seeded by the section's seed, ``idx`` and
        the agent's position).

        Args:
            idx: sample index.
            rng: the sample's generator (``base.sample_rng(idx)``); draws: base loader, delays, pose noise.

        Returns:
            list of ``AgentFrame``.
        """
        agents = self.base.retrieve_base_data(idx, rng)
        if delay_enabled(self.noise_setting):
            agents = apply_delay(self.base, agents, self.noise_setting.async_args, rng, self.delay_clamp)
        for k, agent in enumerate(agents):
            agent.points = apply_weather(agent.points, self.weather, weather_rng(self.weather, idx, k))
        return add_noise_data_dict(agents, self.noise_setting, rng)

    @staticmethod
    def agent_prior(agents):
        """(n, 3) float32 ``[delay s, speed m/s, infrastructure 0/1]`` per agent (``FusionInput.prior``)."""
        return np.asarray([[a.time_delay * FRAME_MS / 1000.0, a.speed, float(a.is_infrastructure)]
                           for a in agents], dtype=np.float32).reshape(-1, 3)

    # ------------------------------------------------------------------ epoch / size
    def __len__(self):
        return len(self.base)

    def reinitialize(self):
        """New epoch: reshuffle the agent order (train) and redraw per-sample randomness / agent types."""
        self.base.reinitialize()

    def collate_single_cloud_train(self, batch):
        """Training collate of datasets with one point cloud per sample (early fusion, late fusion):
        ``{'ego': ...}`` with coords prefixed by the sample index; None samples skipped, None if none left."""
        samples = [b["ego"] for b in self.drop_none(batch)]
        if not samples:
            return None
        out = self.collate_one_cloud_per_sample(samples)
        if self.visualize:
            out["origin_lidar"] = [to_tensor(s["origin_lidar"]) for s in samples]
        return {"ego": out}

    def collate_batch_test(self, batch):
        """Test collate (batch size 1) of datasets with one 'ego' entry (early, intermediate): the training
        collate + identity transformation_matrix(_clean), sample_idx, cav_id_list and origin_lidar (1, P, 4)."""
        batch = self.drop_none(batch)
        self.check_test_batch(batch)
        out = self.collate_batch_train(batch)
        if out is None:
            return None
        sample = batch[0]["ego"]
        ego = out["ego"]
        ego.update(self.identity_transforms())
        ego.update({"sample_idx": sample["sample_idx"], "cav_id_list": sample["cav_id_list"]})
        if self.visualize:
            ego["origin_lidar"] = to_tensor(sample["origin_lidar"]).unsqueeze(0)
        return out

    def preprocessor_for(self, key):
        """The voxeliser that produced batch entry ``key`` (``processed_lidar`` here)."""
        return self.pre_processor if key == "processed_lidar" else None

    def device_preprocess(self, batch):
        """Finish pre-processing on the batch's device: voxelise every ``{'points': ...}`` entry.

        A no-op unless a pre-processor has ``args.on_device: true``; the trainer, inference and benchmark
        call it right after moving the batch to the model's device.
        """
        for content in batch.values():
            if not isinstance(content, dict):
                continue
            for key, value in list(content.items()):
                if isinstance(value, dict) and "points" in value and self.preprocessor_for(key) is not None:
                    content[key] = self.preprocessor_for(key).voxelize_collated(value)
        return batch

    def reseed(self, seed):
        """Restart the dataset's random streams from ``seed`` (the trainer calls it before each epoch)."""
        self.base.reseed(seed)

    # ------------------------------------------------------------------ GT
    @property
    def object_range(self):
        """GT filter range: ``cav_lidar_range`` in training, ``gt_range`` in evaluation."""
        return self.cav_lidar_range if self.train else self.gt_range

    def inside_range(self, boxes, limit_range):
        """(M,) bool: all 8 corners of each box inside ``limit_range`` (x, y and z)."""
        if not len(boxes):
            return np.zeros(0, dtype=bool)
        _, inside = mask_boxes_outside_range_numpy(boxes, limit_range, self.order, return_mask=True)
        return np.asarray(inside, dtype=bool)

    def class_index(self, classes):
        """(M,) int64 ``object_bbx_class`` of super-class names (all 0 for a class-agnostic head)."""
        if not self.class_names:
            return np.zeros(len(classes), dtype=np.int64)
        return np.asarray([self.class_names.index(c) for c in classes], dtype=np.int64)

    def filter_and_pad(self, objects, limit_range=None, keep=None):
        """Keep objects with all 8 corners inside ``limit_range`` (None: no range test), with ``keep`` true and
        of a class the head detects, then pad to ``max_num``.

        Args:
            objects: :class:`ObjectSet` (boxes (M, 7)).
            limit_range: 6 numbers (metres) or None.
            keep: optional (M,) bool.

        Returns:
            :class:`PaddedObjects`.
        """
        if len(objects.boxes):
            inside = np.ones(len(objects.boxes), dtype=bool) if limit_range is None else \
                self.inside_range(objects.boxes, limit_range)
            if keep is not None:
                inside &= keep
            if self.class_names:
                inside &= np.isin(objects.classes, self.class_names)
            objects = objects.subset(inside)
        n = min(len(objects.boxes), self.max_num)
        center = np.zeros((self.max_num, 7), dtype=np.float32)
        mask = np.zeros(self.max_num, dtype=np.float32)
        classes = np.zeros(self.max_num, dtype=np.int64)
        center[:n] = objects.boxes[:n]
        mask[:n] = 1
        classes[:n] = self.class_index(objects.classes[:n])
        return PaddedObjects(center, mask, list(objects.ids[:n]), classes, list(objects.classes[:n]))

    def generate_label(self, padded):
        """Anchor targets of padded GT: {'pos_equal_one', 'neg_equal_one' (H',W',A), 'targets' (H',W',7A)}."""
        extra = {self.label_class_arg: padded.classes} if self.label_class_arg else {}
        return self.post_processor.generate_label(gt_box_center=padded.center, anchors=self.anchor_box,
                                                  mask=padded.mask, **extra)

    @staticmethod
    def gt_entries(padded):
        """The GT part of a sample dict."""
        return {"object_bbx_center": padded.center, "object_bbx_mask": padded.mask,
                "object_bbx_class": padded.classes, "object_ids": padded.ids}

    # ------------------------------------------------------------------ inference helpers
    def post_process(self, data_dict, output_dict):
        """Decode predictions into corners in the ego frame (delegates to the post-processor).

        Returns:
            pred_box (K, 8, 3) tensor or None, pred_score (K,) or None. (HEAL's dataset also returned the
            GT; here the GT comes from :meth:`generate_gt_bbx`, one responsibility per call.)
        """
        return self.post_processor.post_process(data_dict, output_dict)

    def generate_gt_bbx(self, data_dict):
        """GT corners (G, 8, 3) in the ego frame (delegates to the post-processor)."""
        return self.post_processor.generate_gt_bbx(data_dict)

    # ------------------------------------------------------------------ collate helpers
    def collate_gt(self, samples):
        """Stacked GT of samples: object_bbx_center (B, max_num, 7), object_bbx_mask (B, max_num) float32,
        object_bbx_class (B, max_num) int64."""
        return {"object_bbx_center": to_tensor(np.stack([s["object_bbx_center"] for s in samples])),
                "object_bbx_mask": to_tensor(np.stack([s["object_bbx_mask"] for s in samples])),
                "object_bbx_class": to_tensor(np.stack([s["object_bbx_class"] for s in samples]), torch.int64)}

    def collate_one_cloud_per_sample(self, samples):
        """Collate samples that hold ONE voxel dict each (early fusion, late fusion training).

        Returns:
            dict: processed_lidar (coords prefixed by the sample index), object_bbx_center (B, 150, 7),
            object_bbx_mask (B, 150), object_bbx_class (B, 150), object_ids (first sample), anchor_box
            (H', W', A, 7), label_dict (B, ...), record_len (B,) ones, lidar_pose / lidar_pose_clean (B, 6)
            of the ego / chosen agent.
        """
        gt = self.collate_gt(samples)
        anchor = to_tensor(self.anchor_box)
        label_dict = self.collate_labels([s["label_dict"] for s in samples])
        label_dict.update(gt)
        label_dict["anchor_box"] = anchor
        return {**self.collate_sample_inputs(samples), **gt, "object_ids": samples[0]["object_ids"],
                "anchor_box": anchor, "label_dict": label_dict,
                "record_len": torch.ones(len(samples), dtype=torch.long),
                "lidar_pose": to_tensor(np.stack([s["lidar_poses"][0] for s in samples])),
                "lidar_pose_clean": to_tensor(np.stack([s["lidar_poses_clean"][0] for s in samples]))}

    def collate_sample_inputs(self, samples):
        """The model inputs of one-cloud-per-sample batches: ``processed_lidar`` (coords prefixed by the sample
        index); ``lateheter`` collates each agent type's inputs instead."""
        return {"processed_lidar": self.pre_processor.collate_batch([s["processed_lidar"] for s in samples])}

    def collate_labels(self, label_list):
        """Stack anchor-target dicts -> torch dict (B, ...) through the post-processor."""
        return self.post_processor.collate_batch([{k: d[k] for k in LABEL_KEYS} for d in label_list])

    @staticmethod
    def drop_none(batch):
        """Samples that returned None (no agent left) are skipped, as HEAL does."""
        return [b for b in batch if b is not None]

    @staticmethod
    def check_test_batch(batch):
        if len(batch) > 1:
            raise ValueError(f"test-time batch size must be 1, got {len(batch)}")

    @staticmethod
    def identity_transforms():
        eye = torch.eye(4, dtype=torch.float32)
        return {"transformation_matrix": eye, "transformation_matrix_clean": eye.clone()}
