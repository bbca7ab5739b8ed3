"""Global LiDAR augmentation for early and late fusion (spec data_eval §4).

YAML (top level, HEAL/OpenPCDet style)::

    data_augment:
      - NAME: random_world_flip
        ALONG_AXIS_LIST: [x]
      - NAME: random_world_rotation
        WORLD_ROT_ANGLE: [-0.78539816, 0.78539816]   # radians
      - NAME: random_world_scaling
        WORLD_SCALE_RANGE: [0.95, 1.05]

Boxes are 7-vectors (x, y, z, d0, d1, d2, yaw) with the dimensions at indices 3..5 (either ``hwl`` or
``lwh`` order: every operation treats the three dimensions alike) and yaw in radians. Points are
(P, >=3) in the same frame (metres). Intermediate fusion ignores augmentation (agents stay in their own
frames, where a per-agent transform would break the pairwise poses).
"""
import numpy as np

from opencood.utils.config import REQUIRED, Context, Key, LookupFailed, Schema
from opencood.utils.errors import ConfigError


def random_world_flip(boxes, points, along_axis_list, rng):
    """Mirror the scene with probability 0.5 per listed axis.

    ``x``: mirror across the x axis (y -> -y, yaw -> -yaw); ``y``: across the y axis
    (x -> -x, yaw -> -(yaw + pi)).

    Args:
        boxes: (M, 7) float.
        points: (P, >=3) float.
        along_axis_list: subset of ['x', 'y'].
        rng: np.random.Generator.

    Returns:
        (boxes, points), new arrays.
    """
    boxes, points = boxes.copy(), points.copy()
    for axis in along_axis_list:
        if axis not in ("x", "y"):
            raise ConfigError(f"config: data_augment random_world_flip: ALONG_AXIS_LIST has '{axis}', "
                              f"expected 'x' or 'y'")
        if rng.random() >= 0.5:
            continue
        if axis == "x":
            boxes[:, 1] = -boxes[:, 1]
            boxes[:, 6] = -boxes[:, 6]
            points[:, 1] = -points[:, 1]
        else:
            boxes[:, 0] = -boxes[:, 0]
            boxes[:, 6] = -(boxes[:, 6] + np.pi)
            points[:, 0] = -points[:, 0]
    return boxes, points


def rotate_points_z(xy, angle):
    """Rotate (N, 2) BEV coordinates by ``angle`` rad about z (+x turns toward +y)."""
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]], dtype=xy.dtype)
    return xy @ rot.T  # (N, 2)


def random_world_rotation(boxes, points, rot_range, rng):
    """Rotate the scene about the z axis by an angle ~ U(rot_range) radians (yaw += angle)."""
    lo, hi = (-rot_range, rot_range) if np.isscalar(rot_range) else rot_range
    angle = rng.uniform(lo, hi)
    boxes, points = boxes.copy(), points.copy()
    points[:, :2] = rotate_points_z(points[:, :2], angle)
    boxes[:, :2] = rotate_points_z(boxes[:, :2], angle)
    boxes[:, 6] = boxes[:, 6] + angle
    return boxes, points


def random_world_scaling(boxes, points, scale_range, rng):
    """Scale xyz of points, box centres and box dimensions by a factor ~ U(scale_range)."""
    scale = rng.uniform(scale_range[0], scale_range[1])
    boxes, points = boxes.copy(), points.copy()
    points[:, :3] *= scale
    boxes[:, :6] *= scale
    return boxes, points


# NAME -> (operation, its argument key, the Key declaring that argument)
_OPS = {
    "random_world_flip": (random_world_flip, "ALONG_AXIS_LIST",
                          Key(list, REQUIRED, "axes mirrored with p = 0.5 each: 'x' (y -> -y) and/or 'y' (x -> -x)")),
    "random_world_rotation": (random_world_rotation, "WORLD_ROT_ANGLE",
                              Key((float, list), REQUIRED, "[lo, hi] rotation about z, radians (a number a: "
                                                           "[-a, a])")),
    "random_world_scaling": (random_world_scaling, "WORLD_SCALE_RANGE",
                             Key(list, REQUIRED, "[lo, hi] scale factor of points and boxes", length=2)),
}
# One ``data_augment`` entry per operation NAME.
OP_SCHEMAS = {name: Schema({"NAME": Key(str, REQUIRED, "operation"), key: arg}, name=name)
              for name, (_, key, arg) in _OPS.items()}


class _RaisingContext(Context):
    """Validation context whose failures become :class:`LookupFailed` (a ``Key.schema`` callable's error)."""

    def fail(self, message):
        raise LookupFailed(message)


def _check_entry(i, entry, ctx):
    """Validate ``data_augment[i]``; problems go to ``ctx.fail`` (one line)."""
    name = entry.get("NAME") if isinstance(entry, dict) else None
    if name not in _OPS:
        ctx.fail(f"unknown data_augment[{i}].NAME '{name}'; known: {', '.join(_OPS)}")
    OP_SCHEMAS[name].validate(entry, f"data_augment[{i}]", ctx)
    if name == "random_world_flip":
        bad = [a for a in entry["ALONG_AXIS_LIST"] if a not in ("x", "y")]
        if bad:
            ctx.fail(f"key 'data_augment[{i}].ALONG_AXIS_LIST' has '{bad[0]}', expected 'x' or 'y'")


def check_augment_list(parent, value):
    """``Key.schema`` callable of the top-level ``data_augment`` list: validates every entry at load."""
    ctx = _RaisingContext()
    for i, entry in enumerate(value or []):
        _check_entry(i, entry, ctx)
    return None


class DataAugmentor:
    """Apply the configured augmentations in order (training only).

    Args:
        augment_config: the ``data_augment`` list: dicts with ``NAME`` and the operation's key (``OP_SCHEMAS``).
        train: augment only when True.
        source: config file name for error messages.
    """

    # ``data_augment`` is a list, so it is declared as one top-level Key (entries validated by check_augment_list)
    CONFIG_KEY = Key(list, [], "LiDAR augmentation of early/late fusion training, applied in order: entries "
                           f"{{NAME, <argument>}}, NAME one of {', '.join(_OPS)}", schema=check_augment_list)

    def __init__(self, augment_config, train=True, source="config"):
        self.train = train
        self.ops = []
        ctx = Context(source)
        for i, cfg in enumerate(augment_config or []):
            _check_entry(i, cfg, ctx)
            fn, key, _ = _OPS[cfg["NAME"]]
            self.ops.append((fn, cfg[key]))

    def forward(self, data_dict, rng):
        """Augment ``data_dict`` in place.

        Args:
            data_dict: {'lidar_np' (P, >=3), 'object_bbx_center' (M, 7), 'object_bbx_mask' (M,)}; only the
                rows with mask 1 are transformed.
            rng: np.random.Generator.

        Returns:
            ``data_dict`` with augmented points and boxes.
        """
        if not self.train or not self.ops:
            return data_dict
        valid = data_dict["object_bbx_mask"].astype(bool)
        boxes = data_dict["object_bbx_center"][valid]
        points = data_dict["lidar_np"]
        for fn, arg in self.ops:
            boxes, points = fn(boxes, points, arg, rng)
        data_dict["object_bbx_center"] = data_dict["object_bbx_center"].copy()
        data_dict["object_bbx_center"][valid] = boxes
        data_dict["lidar_np"] = points
        return data_dict

    __call__ = forward
