"""Writers of the OPV2V / OPV2V-H on-disk formats (agent YAML, PNGs, modality JSONs).

Paths and keys follow ``spec/data_eval_spec.md`` section 1; PCDs are written by
:func:`opencood.utils.pcd_utils.write_pcd`.
"""
import json
import os

import cv2
import numpy as np
import yaml

from opencood.utils.atomic_io import atomic_open
from opencood.utils.transformation_utils import x_to_world

BEV_SIZE = 256  # bev_visibility.png side, pixels
BEV_RES = 0.39  # metres per bev_visibility pixel
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def to_builtin(value, digits=6):
    """numpy scalars/arrays (nested in lists/dicts) -> plain Python numbers rounded to ``digits`` (None: full
    precision)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return {k: to_builtin(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [to_builtin(v, digits) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    return float(value) if digits is None else round(float(value), digits)


def write_yaml(path, content, digits=6):
    """Dump ``content`` as PyYAML block-style YAML (keys sorted, as OpenCDA's dumper writes them); floats rounded
    to ``digits`` (None: full precision, as the real OPV2V files)."""
    with open(path, "w") as fh:
        yaml.dump(to_builtin(content, digits), fh, Dumper=_DUMPER, default_flow_style=False)


def write_pcd_float_rgb(path, points, encoding="ascii"):
    """Write a PCD whose ``rgb`` field is ``TYPE F``: the packed (r, 0, 0) colour's bit pattern read as float32,
    as older Open3D versions wrote the released OPV2V clouds (ascii rows print tiny denormals such as
    ``2.341805152e-38``). Fields, header and quantisation otherwise as ``pcd_utils.write_pcd``.

    Args:
        path: destination ``.pcd``.
        points: (N, 4) ``[x, y, z, intensity]``, intensity in [0, 1] (stored as ``r = round(i * 255)``).
        encoding: ``"ascii"`` or ``"binary"``.
    """
    if encoding not in ("ascii", "binary"):
        raise ValueError(f"write_pcd_float_rgb: encoding must be 'ascii' or 'binary', got '{encoding}'")
    pts = np.asarray(points)
    n = pts.shape[0]
    rec = np.empty(n, np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")]))
    rec["x"], rec["y"], rec["z"] = (pts[:, j].astype(np.float32) for j in range(3))
    rec["rgb"] = np.round(np.clip(pts[:, 3].astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint32) << 16
    header = ("# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS x y z rgb\nSIZE 4 4 4 4\n"
              f"TYPE F F F F\nCOUNT 1 1 1 1\nWIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\n"
              f"DATA {encoding}\n")
    if encoding == "binary":
        body = rec.tobytes()
    else:
        rgb = rec["rgb"].view("<f4")
        values = tuple(v for row in zip(*(rec[f].astype(np.float64).tolist() for f in ("x", "y", "z")),
                                        rgb.astype(np.float64).tolist()) for v in row)
        body = (("%.10g %.10g %.10g %.10g\n" * n) % values).encode("ascii")
    with atomic_open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(body)


def write_json(path, content):
    """Write ``content`` as indented JSON."""
    with open(path, "w") as fh:
        json.dump(content, fh, indent=2, sort_keys=True)
        fh.write("\n")


def write_rgb_png(path, rgb):
    """Write an (H, W, 3) uint8 RGB image as PNG (fast compression)."""
    cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])


def write_depth_png(path, depth):
    """Write planar depth (H, W) metres as a single-channel uint8 PNG: value = metres, clipped to 255."""
    img = np.clip(np.round(np.nan_to_num(depth, posinf=255.0)), 0, 255).astype(np.uint8)
    cv2.imwrite(path, img, [cv2.IMWRITE_PNG_COMPRESSION, 1])


def bev_pixel(x, y):
    """Integer (row, col) of LiDAR-frame (x, y) in bev_visibility.png, the loader's formula."""
    return 127 - int(x / BEV_RES), 127 + int(y / BEV_RES)


def bev_visibility(corners_xy, centres_xy):
    """256 x 256 uint8 mask, 255 on the BEV footprint of each visible vehicle.

    Args:
        corners_xy: (K, 4, 2) footprint corners (x, y) in the agent's LiDAR frame, metres.
        centres_xy: (K, 2) box centres (x, y) in the same frame; their loader pixel is always set.

    Returns:
        (256, 256) uint8, heading up (row = 127 - x / 0.39, col = 127 + y / 0.39).
    """
    img = np.zeros((BEV_SIZE, BEV_SIZE), np.uint8)
    for quad, (cx, cy) in zip(corners_xy, centres_xy):
        rows = 127.0 - quad[:, 0] / BEV_RES
        cols = 127.0 + quad[:, 1] / BEV_RES
        poly = np.round(np.stack([cols, rows], axis=1)).astype(np.int32)  # (4, 2) as (col, row)
        cv2.fillPoly(img, [poly], 255)
        r, c = bev_pixel(cx, cy)
        if 0 <= r < BEV_SIZE and 0 <= c < BEV_SIZE:
            img[r, c] = 255
    return img


def write_gray_png(path, img):
    """Write an (H, W) uint8 image as PNG."""
    cv2.imwrite(path, img, [cv2.IMWRITE_PNG_COMPRESSION, 1])


def camera_entry(cords, intrinsic, lidar_pose):
    """``cameraN`` YAML entry: world pose, intrinsics and LiDAR->camera extrinsic (UE4 axes).

    Args:
        cords: (6,) camera world pose ``[x, y, z, roll, yaw, pitch]`` (metres, degrees).
        intrinsic: (3, 3) pixel intrinsics of the written image.
        lidar_pose: (6,) LiDAR world pose.
    """
    extrinsic = np.linalg.inv(x_to_world(cords)) @ x_to_world(lidar_pose)  # (4, 4) T_cam<-lidar
    return {"cords": list(cords), "intrinsic": np.asarray(intrinsic).tolist(), "extrinsic": extrinsic.tolist()}


def modality_assignment(scenarios_by_split):
    """The seed-303 ``*_4modality.json`` recipe.

    Args:
        scenarios_by_split: ``{split: {scenario: [cav ids]}}`` for train, validate, test (in that order).

    Returns:
        ``{scenario: {cav_id_str: 'm1'..'m4'}}``; per scenario (splits in order, names sorted) a permutation
        of 1..4 from ``RandomState(303)``; string-sorted ids get ``m{perm[j % 4]}``.
    """
    rs = np.random.RandomState(303)
    out = {}
    for split in ("train", "validate", "test"):
        for scenario in sorted(scenarios_by_split.get(split, {})):
            perm = rs.permutation(4) + 1
            ids = sorted(str(i) for i in scenarios_by_split[split][scenario])
            out[scenario] = {cav: f"m{perm[j % 4]}" for j, cav in enumerate(ids)}
    return out


def modality_in_order(test_scenarios):
    """``*_in_order.json``: test scenarios, sorted ids with '-1' last, ``m{j % 4 + 1}``.

    Args:
        test_scenarios: ``{scenario: [cav ids]}`` of the test split.
    """
    out = {}
    for scenario in sorted(test_scenarios):
        ids = sorted(str(i) for i in test_scenarios[scenario])
        if "-1" in ids:
            ids.remove("-1")
            ids.append("-1")
        out[scenario] = {cav: f"m{j % 4 + 1}" for j, cav in enumerate(ids)}
    return out


def ensure_dir(path):
    """``os.makedirs(path, exist_ok=True)``; returns ``path``."""
    os.makedirs(path, exist_ok=True)
    return path
