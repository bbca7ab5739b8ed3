"""Camera inputs of the Lift-Splat-Shoot encoders: extrinsics, image augmentation, normalisation, collate.

Frames (spec data_eval §1.3): a camera's ``cords`` is its UE4 pose in the world (x forward, y right, z up,
degrees); images follow OpenCV camera axes (x right, y down, z forward). The camera->LiDAR matrix used by
the models is ``x1_to_x2(cords, lidar_pose_clean) @ OPENCV_TO_UE4``. Image augmentation is recorded as
``p_aug = post_rot · p + post_tran`` on pixel coordinates (u right, v down) of the original image, so the
model can undo it; ``intrins`` stay those of the original image.
"""
import numpy as np
import torch
from PIL import Image

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


def sample_augmentation(data_aug_conf, train, rng):
    """Draw (or fix, at eval) the resize / crop / flip / rotation of one camera image.

    Train: resize ~ U(resize_lim), crop bottom-biased by ``bot_pct_lim``, random horizontal offset, flip with
    p=0.5 if ``rand_flip``, rotation ~ U(rot_lim) degrees. Eval: resize = max(fH/H, fW/W), centred crop,
    top offset ``int((1 − mean(bot_pct_lim))·newH) − fH`` (negative means padding).

    Args:
        data_aug_conf: ``H``, ``W`` (raw image), ``final_dim`` [fH, fW], ``resize_lim``, ``bot_pct_lim``,
            ``rot_lim`` (degrees), ``rand_flip``.
        train: random (True) or deterministic (False).
        rng: numpy Generator used when ``train``.

    Returns:
        resize (float), resize_dims (newW, newH), crop (x0, y0, x1, y1), flip (bool), rotate (degrees).
    """
    height, width = int(data_aug_conf["H"]), int(data_aug_conf["W"])
    f_h, f_w = (int(v) for v in data_aug_conf["final_dim"])
    bot_pct_lim = data_aug_conf.get("bot_pct_lim", [0.0, 0.0])
    if train:
        resize = float(rng.uniform(*data_aug_conf["resize_lim"]))
        new_w, new_h = int(width * resize), int(height * resize)
        crop_h = int((1.0 - rng.uniform(*bot_pct_lim)) * new_h) - f_h
        crop_w = int(rng.uniform(0, max(0, new_w - f_w)))
        flip = bool(data_aug_conf.get("rand_flip", False)) and bool(rng.integers(0, 2))
        rotate = float(rng.uniform(*data_aug_conf.get("rot_lim", [0.0, 0.0])))
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


def process_camera_data(cav_params, camera_data, depth_data, data_aug_conf, grid_conf, train, rng=None):
    """Per-agent camera inputs of the LSS encoders.

    Args:
        cav_params: agent YAML dict with ``camera0``..``camera3`` ({``cords`` (6,), ``intrinsic`` (3, 3)}) and
            ``lidar_pose_clean`` (6,) (falls back to ``lidar_pose``).
        camera_data: list of Ncam PIL RGB images (or HxWx3 uint8 arrays), ordered as ``data_aug_conf.cams``.
        depth_data: list of Ncam depth images (pixel value = metres) or None.
        data_aug_conf: see :func:`sample_augmentation` (+ ``cams``, default camera0..3).
        grid_conf: BEV grid of the encoder (unused here; kept for the dataset call signature).
        train: random augmentation (True) or deterministic (False).
        rng: numpy Generator for the training augmentation (a fresh one if None).

    Returns:
        dict of numpy arrays: ``imgs`` (Ncam, 3|4, fH, fW) float32 (ImageNet-normalised RGB [+ depth, metres]),
        ``intrins`` (Ncam, 3, 3), ``extrinsics`` (Ncam, 4, 4) camera->LiDAR, ``rots`` (Ncam, 3, 3),
        ``trans`` (Ncam, 3), ``post_rots`` (Ncam, 3, 3), ``post_trans`` (Ncam, 3), all float32.
    """
    for key in ("H", "W", "final_dim"):
        if key not in data_aug_conf:
            raise ConfigError(f"data_aug_conf: missing key '{key}'")
    if train and "resize_lim" not in data_aug_conf:
        raise ConfigError("data_aug_conf: missing key 'resize_lim'")
    if train and rng is None:
        rng = np.random.default_rng()
    cams = list(data_aug_conf.get("cams", DEFAULT_CAMS))
    if len(camera_data) != len(cams):
        raise DataError(f"camera_data: expected {len(cams)} images ({', '.join(cams)}), got {len(camera_data)}")
    if depth_data is not None and len(depth_data) != len(cams):
        raise DataError(f"depth_data: expected {len(cams)} images, got {len(depth_data)}")
    lidar_pose = cav_params.get("lidar_pose_clean", cav_params.get("lidar_pose"))
    if lidar_pose is None:
        raise DataError("agent yaml: missing key 'lidar_pose'")

    out = {k: [] for k in ("imgs", "intrins", "extrinsics", "rots", "trans", "post_rots", "post_trans")}
    for i, cam in enumerate(cams):
        if cam not in cav_params:
            raise DataError(f"agent yaml: missing key '{cam}'")
        for key in ("cords", "intrinsic"):
            if key not in cav_params[cam]:
                raise DataError(f"agent yaml: missing key '{cam}.{key}'")
        extrinsic = camera_to_lidar(cav_params[cam]["cords"], lidar_pose)  # (4, 4)
        intrinsic = np.asarray(cav_params[cam]["intrinsic"], dtype=np.float32).reshape(3, 3)

        resize, resize_dims, crop, flip, rotate = sample_augmentation(data_aug_conf, train, rng)
        post_rot, post_tran = augmentation_matrices(resize, crop, flip, rotate)
        img = _apply(_to_pil(camera_data[i], f"camera_data[{i}]").convert("RGB"), resize_dims, crop, flip,
                     rotate, Image.Resampling.BILINEAR)
        rgb = (np.asarray(img, dtype=np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD  # (fH, fW, 3)
        channels = [rgb.transpose(2, 0, 1)]  # [(3, fH, fW)]
        if depth_data is not None:
            depth_img = Image.fromarray(_depth_metres(_to_pil(depth_data[i], f"depth_data[{i}]")))
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
