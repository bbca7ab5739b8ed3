"""The anchor head: one definition of anchors, target assignment, box coding, decoding and the 1x1 conv heads.

Frames and units: anchors and boxes live in the LiDAR frame of the agent the grid belongs to, metres; anchor
yaws are given in **degrees** in the YAML (``r``) and stored in radians. The anchor grid has ``H' x W'``
cells of ``A`` anchors and is flattened in ``(H', W', A)`` order everywhere; head outputs are
``cls (B, A, H', W')``, ``reg (B, 7A, H', W')``, ``dir (B, num_bins*A, H', W')`` and labels
``pos_equal_one`` / ``neg_equal_one`` ``(B, H', W', A)``, ``targets (B, H', W', 7A)``.

Classes: every anchor slot of a cell belongs to one class; the slots are class-major (all yaws of class 0,
then class 1, ...), so ``A = sum over classes of len(r)``. An anchor's score is the probability of its own
class, an anchor only matches GT boxes of its class (with its class's IoU thresholds) and a decoded box
takes its anchor's class. One class is HEAL's form: every GT box matches (class-agnostic).

YAML (``postprocess.anchor_args``), single class (HEAL)::

    anchor_args: {l: 3.9, w: 1.6, h: 1.56, r: [0, 90], num: 2, feature_stride: 4}   # z: -1.0 m

several classes (``object_bbx_class`` of a GT box = index in this list)::

    anchor_args:
      feature_stride: 4
      classes:
        - {name: vehicle, l: 3.9, w: 1.6, h: 1.56, z: -1.78, r: [0, 90]}
        - {name: pedestrian, l: 0.8, w: 0.6, h: 1.73, z: -0.6, r: [0, 90], pos_threshold: 0.5, neg_threshold: 0.35}
        - {name: truck, l: 8.0, w: 3.0, h: 3.0, z: -1.78, r: [0, 90]}
"""
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from opencood.models.heads.box_coding import decode_boxes, decode_direction, dims_index
from opencood.models.heads.target_assignment import assign_targets
from opencood.utils import box_utils
from opencood.utils.bev_grid import BEVGrid
from opencood.utils.config import REQUIRED, Key, Schema
from opencood.utils.errors import ConfigError, DataError


class ListOf(Key):
    """A list whose every entry is a mapping checked against ``schema`` (entries named ``path[i]``)."""

    def check(self, value, path, parent, ctx):
        super().check(value, path, parent, ctx)
        for i, item in enumerate(value or ()):
            if not isinstance(item, dict):
                ctx.fail(f"key '{path}[{i}]' should be a mapping, got {item!r}")
            self.schema.validate(item, f"{path}[{i}]", ctx)


DIR_ARGS = Schema({
    "dir_offset": Key(float, REQUIRED, "radians subtracted from the yaw before binning (0.7853)"),
    "num_bins": Key(int, REQUIRED, "direction bins (2)"),
}, name="direction bins")

ANCHOR_CLASS = Schema({
    "name": Key(str, REQUIRED, "class name; its position in the list is the GT's object_bbx_class"),
    "l": Key(float, REQUIRED, "anchor length along the heading, metres"),
    "w": Key(float, REQUIRED, "anchor width, metres"),
    "h": Key(float, REQUIRED, "anchor height, metres"),
    "z": Key(float, -1.0, "anchor centre height, metres, LiDAR frame"),
    "r": Key(list, REQUIRED, "anchor yaws, degrees"),
    "pos_threshold": Key(float, None, "stand-up IoU above -> positive (default: target_args.pos_threshold)"),
    "neg_threshold": Key(float, None, "IoU below for every GT -> negative (default: target_args.neg_threshold)"),
}, name="anchor class")

ANCHOR_ARGS = Schema({
    "l": Key(float, None, "single-class anchor length, metres (HEAL form; not with classes)"),
    "w": Key(float, None, "single-class anchor width, metres"),
    "h": Key(float, None, "single-class anchor height, metres"),
    "z": Key(float, None, "single-class anchor centre height, metres (default -1.0, as the reference)"),
    "r": Key(list, None, "single-class anchor yaws, degrees"),
    "classes": ListOf(list, None, "per-class anchors (multi-class form)", schema=ANCHOR_CLASS),
    "num": Key(int, None, "anchors per cell A (derived: sum of len(r) over classes)"),
    "feature_stride": Key(int, 2, "anchor grid cell = feature_stride voxels"),
    "cav_lidar_range": Key(list, None, "derived: the agent's range, metres", length=6),
    "W": Key(int, None, "derived: voxel cells along x"),
    "H": Key(int, None, "derived: voxel cells along y"),
    "D": Key(int, None, "derived: voxel cells along z"),
    "vw": Key(float, None, "derived: voxel size along x, metres"),
    "vh": Key(float, None, "derived: voxel size along y, metres"),
    "vd": Key(float, None, "derived: voxel size along z, metres"),
}, name="anchors")

TARGET_ARGS = Schema({
    "pos_threshold": Key(float, REQUIRED, "stand-up BEV IoU above -> positive (plus each GT's best anchor)"),
    "neg_threshold": Key(float, REQUIRED, "IoU below for every GT -> negative"),
    "score_threshold": Key(float, REQUIRED, "detections kept above this sigmoid score"),
    "legacy_plus_one": Key(bool, False, "the reference's pixel '+1' in the stand-up IoU (inflates IoU)"),
}, name="target assignment")

# Keys of ``model.args`` that the conv heads read (for the models' CONFIG).
HEAD_MODEL_KEYS = {
    "anchor_number": Key(int, None, "anchors per cell A (derived from postprocess.anchor_args)"),
    "dir_args": Key(dict, None, "direction bins; must equal postprocess.dir_args", schema=DIR_ARGS),
    "cls_prior_prob": Key(float, None, "cls head bias starts at this score (e.g. 0.01); null = PyTorch init"),
}

_SINGLE_CLASS_KEYS = ("l", "w", "h", "r")
_DERIVED_KEYS = ("cav_lidar_range", "W", "H", "vw", "vh")
SINGLE_CLASS_NAME = "vehicle"  # the one class of HEAL's configs


@dataclass(frozen=True)
class AnchorClass:
    """Anchors of one class: size (metres), centre height z (metres), yaws (radians) and IoU thresholds."""

    name: str
    l: float
    w: float
    h: float
    z: float
    yaws: tuple
    pos_threshold: float
    neg_threshold: float


def anchors_per_cell(anchor_args, source="config"):
    """Anchors per cell ``A`` of a raw ``postprocess.anchor_args`` mapping (sum of ``len(r)`` over classes).

    The loader derives ``anchor_args.num`` and ``model.args.anchor_number`` with it.
    """
    classes = anchor_args.get("classes")
    if classes is not None:
        return sum(len(c.get("r") or ()) for c in classes)
    if anchor_args.get("r") is None:
        raise ConfigError(f"{source}: missing key 'postprocess.anchor_args.r' (anchor yaws, degrees)")
    return len(anchor_args["r"])


def parse_classes(anchor_args, target_args, source="config"):
    """The :class:`AnchorClass` list of parsed ``anchor_args`` / ``target_args`` (single- or multi-class form)."""
    where = "postprocess.anchor_args"
    if anchor_args.get("classes") is None:
        for key in _SINGLE_CLASS_KEYS:
            if anchor_args.get(key) is None:
                raise ConfigError(f"{source}: missing key '{where}.{key}'")
        entries = [{"name": SINGLE_CLASS_NAME, "l": anchor_args["l"], "w": anchor_args["w"], "h": anchor_args["h"],
                    "z": -1.0 if anchor_args.get("z") is None else anchor_args["z"], "r": anchor_args["r"]}]
    else:
        for key in _SINGLE_CLASS_KEYS + ("z",):
            if anchor_args.get(key) is not None:
                raise ConfigError(f"{source}: key '{where}.{key}' and '{where}.classes' exclude each other "
                                  f"(give the size of every class in its entry)")
        entries = anchor_args["classes"]
        if not entries:
            raise ConfigError(f"{source}: key '{where}.classes' is empty")
    classes = []
    for i, entry in enumerate(entries):
        c = ANCHOR_CLASS.parse(entry, f"{where}.classes[{i}]", source)
        if not c.r:
            raise ConfigError(f"{source}: key '{where}.classes[{i}].r' needs at least one yaw")
        pos = target_args.pos_threshold if c.pos_threshold is None else c.pos_threshold
        neg = target_args.neg_threshold if c.neg_threshold is None else c.neg_threshold
        classes.append(AnchorClass(c.name, float(c.l), float(c.w), float(c.h), float(c.z),
                                   tuple(float(v) for v in np.deg2rad(np.asarray(c.r, dtype=np.float64))),
                                   float(pos), float(neg)))
    names = [c.name for c in classes]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: key '{where}.classes' repeats a class name: {names}")
    return classes


def grid_of(anchor_args, gt_range=None, source="config"):
    """The :class:`BEVGrid` of parsed ``anchor_args`` (its derived range and voxel size)."""
    for key in _DERIVED_KEYS:
        if anchor_args.get(key) is None:
            raise ConfigError(f"{source}: missing key 'postprocess.anchor_args.{key}'")
    rng = [float(v) for v in anchor_args["cav_lidar_range"]]
    vd = anchor_args["vd"] if anchor_args.get("vd") is not None else rng[5] - rng[2]  # one z layer
    return BEVGrid(rng, (anchor_args["vw"], anchor_args["vh"], vd), anchor_args["feature_stride"], gt_range)


def check_grid(anchor_args, grid, source="config"):
    """ConfigError when derived ``anchor_args.W`` / ``H`` (if given) disagree with ``grid``."""
    for key, cells in zip(("W", "H"), grid.anchor_cells[:2]):
        if anchor_args.get(key) is not None and int(anchor_args[key]) != cells:
            raise ConfigError(f"{source}: key 'postprocess.anchor_args.{key}' = {anchor_args[key]} does not fit "
                              f"the grid ({cells} cells of {grid.voxel_size[:2]} m over {list(grid.lidar_range)})")


def delta_to_boxes3d(deltas, anchors, order="hwl"):
    """Decode a regression map into boxes.

    Args:
        deltas: (B, 7A, H', W') head output or (B, H', W', 7A).
        anchors: (H', W', A, 7) anchors (tensor or numpy).
        order: box order of anchors and output.

    Returns:
        (B, H'W'A, 7) boxes in the anchors' frame, dtype/device of ``deltas``.
    """
    anchors = torch.as_tensor(anchors).to(device=deltas.device, dtype=deltas.dtype)
    h, w, a = anchors.shape[:3]
    if tuple(deltas.shape[1:]) == (h, w, 7 * a):
        channels_last = deltas  # (B, H', W', 7A)
    elif tuple(deltas.shape[1:]) == (7 * a, h, w):
        channels_last = deltas.permute(0, 2, 3, 1)  # (B, H', W', 7A)
    else:
        raise ValueError(f"delta_to_boxes3d: deltas of shape {tuple(deltas.shape)} do not fit anchors "
                         f"of shape {tuple(anchors.shape)}")
    flat = channels_last.reshape(deltas.shape[0], -1, 7)  # (B, H'W'A, 7)
    return decode_boxes(flat, anchors.reshape(1, -1, 7), order)


def cls_prior_bias(prior, key="model.args.cls_prior_prob", source="config"):
    """Bias ``-log((1 - p) / p)`` that starts a sigmoid score at ``p``; ConfigError unless 0 < p < 1."""
    if not 0.0 < float(prior) < 1.0:
        raise ConfigError(f"{source}: {key} must be in (0, 1), got {prior}")
    return -math.log((1.0 - float(prior)) / float(prior))


def conv_heads(in_channels, anchor_number, num_bins=None, cls_prior_prob=None, source="config"):
    """The 1x1 conv heads: ``cls_head`` A, ``reg_head`` 7A and (with ``num_bins``) ``dir_head`` num_bins*A channels.

    Construction order (cls, reg, dir) fixes the random initial weights; with ``cls_prior_prob`` the cls bias
    then starts every anchor at that score (the weights keep PyTorch's init).

    Returns:
        ``{'cls_head': Conv2d, 'reg_head': Conv2d[, 'dir_head': Conv2d]}``.
    """
    heads = {"cls_head": nn.Conv2d(in_channels, anchor_number, kernel_size=1),
             "reg_head": nn.Conv2d(in_channels, 7 * anchor_number, kernel_size=1)}
    if num_bins:
        heads["dir_head"] = nn.Conv2d(in_channels, num_bins * anchor_number, kernel_size=1)
    if cls_prior_prob is not None:
        with torch.no_grad():
            heads["cls_head"].bias.fill_(cls_prior_bias(cls_prior_prob, source=source))
    return heads


def build_detection_heads(in_channels, args, source="config"):
    """The conv heads of a model, from its ``model.args``.

    Models keep the returned modules as top-level attributes (``self.cls_head = heads['cls_head']``, ...)
    so the checkpoint keys ``cls_head.``, ``reg_head.``, ``dir_head.`` stay HEAL's.

    Args:
        in_channels: channels of the BEV feature map.
        args: ``model.args``: ``anchor_number`` (or ``anchor_num``), optional ``dir_args{dir_offset, num_bins}``
            (a direction head), optional ``cls_prior_prob`` (bias init, see :func:`conv_heads`).
        source: config file for messages.

    Returns:
        dict name -> ``nn.Conv2d`` (see :func:`conv_heads`).
    """
    anchor_number = args.get("anchor_number", args.get("anchor_num"))
    if anchor_number is None:
        raise ConfigError(f"{source}: missing key 'model.args.anchor_number'")
    dir_args = args.get("dir_args")
    num_bins = DIR_ARGS.parse(dir_args, "model.args.dir_args", source).num_bins if dir_args else None
    return conv_heads(in_channels, int(anchor_number), num_bins, args.get("cls_prior_prob"), source)


class AnchorHead:
    """Definition of an anchor-based BEV detection head (configuration + the math; holds no parameters).

    Args:
        grid: the :class:`BEVGrid` the anchors are laid on (range, voxel size, feature stride).
        classes: list of :class:`AnchorClass` (the anchor slots of a cell, class-major).
        order: box order ``'hwl'`` or ``'lwh'``.
        score_threshold: sigmoid score a detection must exceed.
        legacy_plus_one: the reference's "+1" stand-up IoU in target assignment.
        dir_args: ``{dir_offset (rad), num_bins}`` or None (no direction head).
    """

    def __init__(self, grid, classes, order="hwl", score_threshold=0.2, legacy_plus_one=False, dir_args=None):
        dims_index(order)
        self.grid = grid
        self.classes = list(classes)
        self.order = order
        self.score_threshold = float(score_threshold)
        self.legacy_plus_one = bool(legacy_plus_one)
        self.dir_offset = None if dir_args is None else float(dir_args["dir_offset"])
        self.num_bins = None if dir_args is None else int(dir_args["num_bins"])
        self.slot_class = tuple(k for k, c in enumerate(self.classes) for _ in c.yaws)  # (A,) class per slot
        self._pos = [self.classes[k].pos_threshold for k in self.slot_class]  # (A,) per slot
        self._neg = [self.classes[k].neg_threshold for k in self.slot_class]

    @classmethod
    def from_config(cls, cfg, source="config", grid=None):
        """Head of a parsed ``postprocess`` section (``VoxelPostprocessor.CONFIG``); ``grid`` overrides its range."""
        if grid is None:
            grid = grid_of(cfg.anchor_args, cfg.gt_range, source)
        check_grid(cfg.anchor_args, grid, source)
        head = cls(grid, parse_classes(cfg.anchor_args, cfg.target_args, source), cfg.order,
                   cfg.target_args.score_threshold, cfg.target_args.legacy_plus_one, cfg.dir_args)
        num = cfg.anchor_args.num
        if num is not None and int(num) != head.num_anchors:
            raise ConfigError(f"{source}: 'postprocess.anchor_args.num' ({num}) must equal the number of anchors "
                              f"per cell, the number of yaws in 'anchor_args.r' over all classes "
                              f"({head.num_anchors})")
        return head

    # ------------------------------------------------------------------ layout
    @property
    def num_anchors(self):
        """Anchors per cell A."""
        return len(self.slot_class)

    @property
    def anchor_class(self):
        """(A,) long class index of each anchor slot of a cell."""
        return torch.as_tensor(self.slot_class, dtype=torch.long)

    @property
    def num_classes(self):
        return len(self.classes)

    @property
    def class_names(self):
        """Class names; the index of a name is the ``object_bbx_class`` of its GT boxes."""
        return [c.name for c in self.classes]

    def _slot_values(self):
        """Per anchor slot ``(dims (A, 3) in h, w, l order, z (A,), yaw (A,))``, float64."""
        dims = np.asarray([[c.h, c.w, c.l] for c in self.classes for _ in c.yaws], dtype=np.float64)
        z = np.asarray([c.z for c in self.classes for _ in c.yaws], dtype=np.float64)
        yaw = np.asarray([y for c in self.classes for y in c.yaws], dtype=np.float64)
        return dims, z, yaw

    def anchors(self):
        """Anchor boxes of the detection grid.

        Centres are ``linspace(xmin + vw, xmax - vw, W // stride)`` along x (likewise y), as the reference
        generates them (not exact cell centres; checkpoints were trained with these); z, size and yaw
        per anchor slot from its class.

        Returns:
            (H', W', A, 7) float32 numpy, ``order`` layout, in the agent's LiDAR frame.
        """
        g = self.grid
        rng, (vw, vh, _), (w_cells, h_cells, _) = g.lidar_range, g.voxel_size, g.anchor_cells
        xs = np.linspace(rng[0] + vw, rng[3] - vw, w_cells // g.feature_stride)  # (W',)
        ys = np.linspace(rng[1] + vh, rng[4] - vh, h_cells // g.feature_stride)  # (H',)
        cx, cy = np.meshgrid(xs, ys)  # (H', W') each
        dims, z, yaw = self._slot_values()
        anchors = np.zeros(cx.shape + (self.num_anchors, 7), dtype=np.float64)  # (H', W', A, 7)
        anchors[..., 0] = cx[..., None]
        anchors[..., 1] = cy[..., None]
        anchors[..., 2] = z
        ih, iw, il = dims_index(self.order)
        anchors[..., ih] = dims[:, 0]
        anchors[..., iw] = dims[:, 1]
        anchors[..., il] = dims[:, 2]
        anchors[..., 6] = yaw
        return anchors.astype(np.float32)

    # ------------------------------------------------------------------ targets
    def _gt_class(self, gt_class, m, device):
        """Checked (M,) long GT classes, or None for a single-class head (class-agnostic)."""
        if self.num_classes == 1:
            return None
        if gt_class is None:
            raise DataError(f"target assignment: a {self.num_classes}-class head ({', '.join(self.class_names)}) "
                            f"needs 'object_bbx_class' for its GT boxes")
        gt_class = torch.as_tensor(gt_class, device=device).long().reshape(-1)
        if gt_class.numel() != m:
            raise DataError(f"target assignment: {gt_class.numel()} GT classes for {m} GT boxes")
        if m and (int(gt_class.min()) < 0 or int(gt_class.max()) >= self.num_classes):
            raise DataError(f"object_bbx_class: class index outside [0, {self.num_classes}) "
                            f"({', '.join(self.class_names)}): {sorted(set(gt_class.tolist()))}")
        return gt_class

    def assign(self, gt_boxes, anchors, anchor_index=None, gt_class=None):
        """Training labels of one sample (see :func:`assign_targets`), on the anchors' device and dtype.

        Args:
            gt_boxes: (M, 7) valid GT boxes, ``order`` layout, in the anchors' frame.
            anchors: (H', W', A, 7) tensor from :meth:`anchors`.
            anchor_index: optional ``sort_standup(standup_bev(anchors.reshape(-1, 7)))``.
            gt_class: (M,) long class index of every GT (required with several classes, ignored with one).

        Returns:
            ``{'pos_equal_one', 'neg_equal_one': (H', W', A), 'targets': (H', W', 7A)}``.
        """
        h, w, a, _ = anchors.shape
        if a != self.num_anchors:
            raise DataError(f"target assignment: anchors have {a} per cell, the head {self.num_anchors}")
        flat = anchors.reshape(-1, 7)  # (N, 7)
        gt_class = self._gt_class(gt_class, gt_boxes.shape[0], flat.device)
        anchor_class = None if gt_class is None else self.anchor_class.to(flat.device).repeat(h * w)  # (N,)
        pos_thr, neg_thr = self._thresholds(h * w, flat)
        pos, neg, targets = assign_targets(flat, gt_boxes, pos_thr, neg_thr, self.order, self.legacy_plus_one,
                                           anchor_index, anchor_class, gt_class)
        return {"pos_equal_one": pos.to(flat.dtype).reshape(h, w, a),
                "neg_equal_one": neg.to(flat.dtype).reshape(h, w, a),
                "targets": targets.reshape(h, w, a * 7)}

    def _thresholds(self, cells, like):
        """(pos, neg) thresholds: floats when every class shares them, else (N,) per-anchor tensors."""
        if len(set(self._pos)) == 1 and len(set(self._neg)) == 1:
            return self._pos[0], self._neg[0]
        pos = torch.tensor(self._pos, dtype=like.dtype, device=like.device).repeat(cells)  # (N,)
        neg = torch.tensor(self._neg, dtype=like.dtype, device=like.device).repeat(cells)
        return pos, neg

    # ------------------------------------------------------------------ decoding
    def decode(self, output, anchors):
        """Detections of one agent in its own frame (the inputs of NMS).

        Sigmoid scores > ``score_threshold``, decode, fix yaw with the direction head, optional IoU-head
        rescoring ``score * ((iou + 1) / 2)^4``, corners.

        Args:
            output: ``{'cls_preds' (1, A, H', W'), 'reg_preds' (1, 7A, H', W'), optional 'dir_preds'
                (1, num_bins*A, H', W'), optional 'iou_preds' (1, A, H', W')}``.
            anchors: (H', W', A, 7) anchors (tensor or numpy).

        Returns:
            ``(corners (K, 8, 3), scores (K,), labels (K,) long class index)`` on the model's device.
        """
        cls = output["cls_preds"].float()  # (1, A, H', W')
        if cls.shape[0] != 1:
            raise ValueError(f"post_process expects batch size 1, got {cls.shape[0]}")
        prob = torch.sigmoid(cls).permute(0, 2, 3, 1).reshape(-1)  # (H'W'A,)
        boxes = delta_to_boxes3d(output["reg_preds"].float(), anchors, self.order)[0]  # (H'W'A, 7)
        keep = prob > self.score_threshold
        boxes, scores = boxes[keep], prob[keep]  # (K, 7), (K,)
        labels = self.anchor_class.to(prob.device).repeat(prob.numel() // self.num_anchors)[keep]  # (K,)
        if "dir_preds" in output:
            if self.num_bins is None:
                raise ConfigError("config: missing key 'postprocess.dir_args' (the model has a direction head)")
            dir_logits = output["dir_preds"].float().permute(0, 2, 3, 1).reshape(-1, self.num_bins)[keep]  # (K, bins)
            boxes[:, 6] = decode_direction(boxes[:, 6], dir_logits.argmax(dim=1), self.dir_offset, self.num_bins)
        if "iou_preds" in output:
            iou = output["iou_preds"].float().permute(0, 2, 3, 1).reshape(-1)[keep]  # (K,)
            scores = scores * ((iou + 1) * 0.5) ** 4
        return box_utils.boxes_to_corners_3d(boxes, self.order), scores, labels

    # ------------------------------------------------------------------ conv heads
    def conv_heads(self, in_channels, cls_prior_prob=None):
        """:func:`conv_heads` of this head (cls A, reg 7A, dir num_bins*A channels)."""
        return conv_heads(in_channels, self.num_anchors, self.num_bins, cls_prior_prob)
