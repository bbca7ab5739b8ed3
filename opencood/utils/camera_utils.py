"""Camera inputs of the Lift-Splat-Shoot encoders: extrinsics, image augmentation, normalisation, collate.

Cameras arrive as :class:`~opencood.data_utils.datasets.basedataset.agent_frame.CameraView` records
(``AgentFrame.cameras``: image, intrinsics, camera->LiDAR extrinsic, depth); each base loader fills them from
its own calibration (OPV2V: :func:`cameras_from_agent_yaml`).

Frames (spec data_eval §1.3): an OPV2V camera's ``cords`` is its UE4 pose in the world (x forward, y right, z
up, degrees); images follow OpenCV camera axes (x right, y down, z forward). The camera->LiDAR matrix used by
the models is ``x1_to_x2(cords, lidar_pose_clean) @ OPENCV_TO_UE4``. Image augmentation is recorded as
``p_aug = post_rot · p + post_tran`` on pixel coordinates (u right, v down) of the original image, so the
model can undo it; ``intrins`` stay those of the original image.
"""
import numpy as np
import torch
from PIL import Image

from opencood.data_utils.datasets.basedataset.agent_frame import CameraView
from opencood.utils.config import REQUIRED, Cfg, Key, Schema
from opencood.utils.errors import ConfigError, DataError
from opencood.utils.transformation_utils import x1_to_x2

# OpenCV camera axes -> UE4 camera axes: UE4 x = OpenCV z, UE4 y = OpenCV x, UE4 z = -OpenCV y.
OPENCV_TO_UE4 = np.array([[0.0, 0.0, 1.0, 0.0],
                          [1.0, 0.0, 0.0, 0.0],
                          [0.0, -1.0, 0.0, 0.0],
                          [0.0, 0.0, 0.0, 1.0]])

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
DEFAULT_CAMS = ("camera0", "camera1", "camera2", "camera3")

# ``data_aug_conf`` of a camera agent type (``heter.modality_setting.mX.data_aug_conf``).
DATA_AUG_CONF = Schema({
    "H": Key(int, REQUIRED, "raw image height, pixels"),
    "W": Key(int, REQUIRED, "raw image width, pixels"),
    "final_dim": Key(list, REQUIRED, "[fH, fW] network input size, pixels", length=2),
    "resize_lim": Key(list, None, "[lo, hi] training resize factor (required in training)", length=2),
    "bot_pct_lim": Key(list, [0.0, 0.0], "[lo, hi] fraction of the resized image cropped from the bottom",
                       length=2),
    "rot_lim": Key(list, [0.0, 0.0], "[lo, hi] training image rotation, degrees", length=2),
    "rand_flip": Key(bool, False, "training: horizontal flip with p = 0.5"),
    "cams": Key(list, list(DEFAULT_CAMS), "camera names used, in this order"),
}, name="camera augmentation")

# ``grid_conf`` of a camera agent type: the Lift-Splat-Shoot BEV grid (read by the LSS encoder and, for the
# BEV extent, by ``opencood.utils.bev_grid``).
GRID_CONF = Schema({
    "xbound": Key(list, REQUIRED, "[min, max, step] along x, metres", length=3),
    "ybound": Key(list, REQUIRED, "[min, max, step] along y, metres", length=3),
    "zbound": Key(list, REQUIRED, "[min, max, step] along z, metres", length=3),
    "ddiscr": Key(list, REQUIRED, "[min depth (m), max depth (m), number of depth bins]", length=3),
    "mode": Key(str, "LID", "depth bin spacing: LID (linear-increasing), UD (uniform), SID (spacing-increasing)",
                choices=("LID", "UD", "SID")),
}, name="camera BEV grid")


def camera_to_lidar(cords, lidar_pose):
    """Camera (OpenCV axes) -> LiDAR (UE4) homogeneous transform.

    Args:
        cords: camera pose [x, y, z, roll, yaw, pitch] in the world (metres, degrees).
        lidar_pose: LiDAR pose in the world, same convention.

    Returns:
        (4, 4) float64 matrix.
    """
    return x1_to_x2(np.asarray(cords, dtype=np.float64), np.asarray(lidar_pose, dtype=np.float64)) @ OPENCV_TO_UE4


def _rotation_2d(angle_rad):
    """2x2 rotation of pixel coordinates (v down) for an image rotated counter-clockwise by ``angle_rad``."""
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.array([[c, s], [-s, c]])


def parse_data_aug_conf(data_aug_conf, path="data_aug_conf", source="config"):
    """``data_aug_conf`` with defaults filled in (a parsed :class:`~opencood.utils.config.Cfg` is returned as is)."""
    if isinstance(data_aug_conf, Cfg):
        return data_aug_conf
    return DATA_AUG_CONF.parse(data_aug_conf, path, source)


def sample_augmentation(data_aug_conf, train, rng):
    """Draw (or fix, at eval) the resize / crop / flip / rotation of one camera image.

    Train: resize ~ U(resize_lim), crop bottom-biased by ``bot_pct_lim``, random horizontal offset, flip with
    p=0.5 if ``rand_flip``, rotation ~ U(rot_lim) degrees. Eval: resize = max(fH/H, fW/W), centred crop,
    top offset ``int((1 − mean(bot_pct_lim))·newH) − fH`` (negative means padding).

    Args:
        data_aug_conf: :data:`DATA_AUG_CONF` mapping (parsed or raw): ``H``, ``W`` (raw image), ``final_dim``
            [fH, fW], ``resize_lim``, ``bot_pct_lim``, ``rot_lim`` (degrees), ``rand_flip``.
        train: random (True) or deterministic (False).
        rng: numpy Generator used when ``train``.

    Returns:
        resize (float), resize_dims (newW, newH), crop (x0, y0, x1, y1), flip (bool), rotate (degrees).
    """
    conf = parse_data_aug_conf(data_aug_conf)
    height, width = int(conf.H), int(conf.W)
    f_h, f_w = (int(v) for v in conf.final_dim)
    bot_pct_lim = conf.bot_pct_lim
    if train:
        if conf.resize_lim is None:
            raise ConfigError("config: missing key 'data_aug_conf.resize_lim' (needed in training)")
        resize = float(rng.uniform(*conf.resize_lim))
        new_w, new_h = int(width * resize), int(height * resize)
        crop_h = int((1.0 - rng.uniform(*bot_pct_lim)) * new_h) - f_h
        crop_w = int(rng.uniform(0, max(0, new_w - f_w)))
        flip = bool(conf.rand_flip) and bool(rng.integers(0, 2))
        rotate = float(rng.uniform(*conf.rot_lim))
    else:
        resize = max(f_h / height, f_w / width)
        new_w, new_h = int(width * resize), int(height * resize)
        crop_h = int((1.0 - float(np.mean(bot_pct_lim))) * new_h) - f_h
        crop_w = int(max(0, new_w - f_w) / 2)
        flip = False
        rotate = 0.0
    crop = (crop_w, crop_h, crop_w + f_w, crop_h + f_h)
    return resize, (new_w, new_h), crop, flip, rotate


def augmentation_matrices(resize, crop, flip, rotate):
    """Pixel transform of :func:`sample_augmentation`'s parameters as ``p_aug = post_rot · p + post_tran``.

    Returns:
        post_rot (3, 3) and post_tran (3,) float32 (third row/entry is the identity / zero).
    """
    rot = np.eye(2) * resize
    tran = -np.asarray(crop[:2], dtype=np.float64)
    crop_w, crop_h = crop[2] - crop[0], crop[3] - crop[1]
    if flip:
        a = np.array([[-1.0, 0.0], [0.0, 1.0]])
        rot, tran = a @ rot, a @ tran + np.array([crop_w, 0.0])
    a = _rotation_2d(np.radians(rotate))
    centre = np.array([crop_w, crop_h]) / 2.0
    rot, tran = a @ rot, a @ (tran - centre) + centre
    post_rot, post_tran = np.eye(3, dtype=np.float32), np.zeros(3, dtype=np.float32)
    post_rot[:2, :2], post_tran[:2] = rot, tran
    return post_rot, post_tran


def _apply(img, resize_dims, crop, flip, rotate, resample):
    """Resize, crop (zero padding outside), flip, rotate a PIL image."""
    img = img.resize(resize_dims, resample=resample).crop(crop)
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img.rotate(rotate, resample=resample)


def _to_pil(image, what):
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, np.ndarray):
        return Image.fromarray(image)
    raise DataError(f"{what}: expected a PIL image or an HxW(x3) uint8 array, got {type(image).__name__}")


def _depth_metres(img):
    """(H, W) float32 depth in metres from a depth image (first channel if it has several)."""
    arr = np.asarray(img, dtype=np.float32)
    return arr[..., 0] if arr.ndim == 3 else arr


def cameras_from_agent_yaml(agent_params, images, depths, lidar_pose, names=DEFAULT_CAMS, source="agent yaml"):
    """The cameras of an OPV2V-format agent YAML as :class:`CameraView` records.

    Args:
        agent_params: agent YAML dict with ``camera0``..``camera3`` = {``cords`` (6,) world pose (metres,
            degrees, UE4 axes), ``intrinsic`` (3, 3)}.
        images: one RGB image per name of ``names`` (PIL or (H, W, 3) uint8), same order.
        depths: one depth image per name (pixel value = metres), or None.
        lidar_pose: (6,) CLEAN LiDAR pose of the agent in the world (metres, degrees).
        names: camera keys of the YAML, in image order.
        source: file name for error messages.

    Returns:
        list of :class:`CameraView` (``T_lidar_cam`` = :func:`camera_to_lidar` of ``cords``).

    Raises:
        DataError: a camera entry or its ``cords`` / ``intrinsic`` is missing, or the image counts differ.
    """
    if len(images) != len(names):
        raise DataError(f"{source}: expected {len(names)} images ({', '.join(names)}), got {len(images)}")
    if depths is not None and len(depths) != len(names):
        raise DataError(f"{source}: expected {len(names)} depth images, got {len(depths)}")
    views = []
    for i, name in enumerate(names):
        entry = agent_params.get(name)
        if not isinstance(entry, dict):
            raise DataError(f"{source}: missing key '{name}'")
        for key in ("cords", "intrinsic"):
            if key not in entry:
                raise DataError(f"{source}: missing key '{name}.{key}'")
        intrinsic = _numbers(entry["intrinsic"], (3, 3), f"{name}.intrinsic", source)
        _check_image_size(images[i], intrinsic, f"{name}", source)
        if depths is not None and _image_size(depths[i]) != _image_size(images[i]):
            raise DataError(f"{source}: depth image of '{name}' is {_image_size(depths[i])} (W, H), its RGB "
                            f"image {_image_size(images[i])}")
        views.append(CameraView(name=name, image=images[i], intrinsic=intrinsic,
                                T_lidar_cam=camera_to_lidar(_numbers(entry["cords"], (6,), f"{name}.cords", source),
                                                            lidar_pose),
                                depth=None if depths is None else depths[i]))
    return views


def _numbers(value, shape, key, source):
    """``value`` as a float64 array of ``shape`` with finite entries, else a DataError naming the key."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.size != int(np.prod(shape)) or not np.all(np.isfinite(arr)):
        raise DataError(f"{source}: key '{key}' must be {' x '.join(map(str, shape))} finite numbers, got {value!r:.80}")
    return arr.reshape(shape)


def _image_size(image):
    """(W, H) of a PIL image or an (H, W[, C]) array."""
    return tuple(image.size) if hasattr(image, "size") and not isinstance(image, np.ndarray) else \
        (int(image.shape[1]), int(image.shape[0]))


def _check_image_size(image, intrinsic, name, source):
    """The principal point of ``intrinsic`` must lie inside the image: an image of another size than the one
    the intrinsics were calibrated for (e.g. a half-size copy) would otherwise project every point wrongly."""
    w, h = _image_size(image)
    cx, cy = intrinsic[0, 2], intrinsic[1, 2]
    if not (0 <= cx < w and 0 <= cy < h):
        raise DataError(f"{source}: image of '{name}' is {w}x{h} but key '{name}.intrinsic' has its principal "
                        f"point at ({cx:g}, {cy:g}), outside the image (the image does not fit its intrinsics)")


def _select_cameras(cameras, names):
    """The views named by ``names`` (``data_aug_conf.cams``), in that order."""
    by_name = {view.name: view for view in cameras}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise DataError(f"cameras: no camera '{missing[0]}' (the agent has {', '.join(by_name) or 'none'}; "
                        f"key 'data_aug_conf.cams')")
    views = [by_name[n] for n in names]
    with_depth = [view.depth is not None for view in views]
    if any(with_depth) and not all(with_depth):
        raise DataError(f"cameras: depth images for {sum(with_depth)} of {len(views)} cameras")
    return views


def process_camera_data(cameras, data_aug_conf, grid_conf, train, rng=None):
    """Per-agent camera inputs of the LSS encoders.

    Args:
        cameras: the agent's :class:`CameraView` list (``AgentFrame.cameras``); the views named by
            ``data_aug_conf.cams`` are used, in that order; a depth channel is added when they carry depth.
        data_aug_conf: the type's ``data_aug_conf`` (:data:`DATA_AUG_CONF`; see :func:`sample_augmentation`).
        grid_conf: BEV grid of the encoder (unused here; kept for the dataset call signature).
        train: random augmentation (True) or deterministic (False).
        rng: numpy Generator for the training augmentation (a fresh one if None).

    Returns:
        dict of numpy arrays: ``imgs`` (Ncam, 3|4, fH, fW) float32 (ImageNet-normalised RGB [+ depth, metres]),
        ``intrins`` (Ncam, 3, 3), ``extrinsics`` (Ncam, 4, 4) camera->LiDAR, ``rots`` (Ncam, 3, 3),
        ``trans`` (Ncam, 3), ``post_rots`` (Ncam, 3, 3), ``post_trans`` (Ncam, 3), all float32.
    """
    conf = parse_data_aug_conf(data_aug_conf)
    if train and rng is None:
        rng = np.random.default_rng()
    views = _select_cameras(cameras, list(conf.cams))
    out = {k: [] for k in ("imgs", "intrins", "extrinsics", "rots", "trans", "post_rots", "post_trans")}
    for view in views:
        extrinsic = np.asarray(view.T_lidar_cam, dtype=np.float64)  # (4, 4) camera -> LiDAR
        intrinsic = np.asarray(view.intrinsic, dtype=np.float32).reshape(3, 3)

        resize, resize_dims, crop, flip, rotate = sample_augmentation(conf, train, rng)
        post_rot, post_tran = augmentation_matrices(resize, crop, flip, rotate)
        img = _apply(_to_pil(view.image, f"{view.name} image").convert("RGB"), resize_dims, crop, flip,
                     rotate, Image.Resampling.BILINEAR)
        rgb = (np.asarray(img, dtype=np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD  # (fH, fW, 3)
        channels = [rgb.transpose(2, 0, 1)]  # [(3, fH, fW)]
        if view.depth is not None:
            depth_img = Image.fromarray(_depth_metres(_to_pil(view.depth, f"{view.name} depth")))
            depth = _apply(depth_img, resize_dims, crop, flip, rotate, Image.Resampling.NEAREST)
            channels.append(np.asarray(depth, dtype=np.float32)[None])  # (1, fH, fW)

        out["imgs"].append(np.concatenate(channels, axis=0))
        out["intrins"].append(intrinsic)
        out["extrinsics"].append(extrinsic.astype(np.float32))
        out["rots"].append(extrinsic[:3, :3].astype(np.float32))
        out["trans"].append(extrinsic[:3, 3].astype(np.float32))
        out["post_rots"].append(post_rot)
        out["post_trans"].append(post_tran)
    return {k: np.stack(v).astype(np.float32) for k, v in out.items()}


def collate_camera(items):
    """Stack per-agent :func:`process_camera_data` outputs.

    Args:
        items: list of N dicts (one per agent, batch order).

    Returns:
        dict of float32 tensors: ``imgs`` (N, Ncam, 3|4, fH, fW), ``intrins``/``rots``/``post_rots``
        (N, Ncam, 3, 3), ``extrinsics`` (N, Ncam, 4, 4), ``trans``/``post_trans`` (N, Ncam, 3).
    """
    if not items:
        raise DataError("collate_camera: no camera inputs to collate")
    return {k: torch.from_numpy(np.stack([item[k] for item in items])) for k in items[0]}
