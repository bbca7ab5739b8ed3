"""Camera extrinsics (UE4 <-> OpenCV), augmentation bookkeeping and collate of the LSS inputs."""
import numpy as np
import pytest
import torch
from PIL import Image

from opencood.utils.camera_utils import (augmentation_matrices, camera_to_lidar, cameras_from_agent_yaml,
                                         collate_camera, process_camera_data, sample_augmentation)
from opencood.utils.errors import DataError
from opencood.utils.transformation_utils import x_to_world

F_PX, CX, CY = 335.64, 400.0, 300.0
K = [[F_PX, 0.0, CX], [0.0, F_PX, CY], [0.0, 0.0, 1.0]]
LIDAR_POSE = [10.0, 5.0, 1.9, 0.0, 30.0, 0.0]
YAW = np.radians(30.0)
FWD, RIGHT = np.array([np.cos(YAW), np.sin(YAW), 0.0]), np.array([-np.sin(YAW), np.cos(YAW), 0.0])
UP = np.array([0.0, 0.0, 1.0])


def agent_params(lidar_pose=LIDAR_POSE):
    """Front camera 2.5 m ahead / 0.9 m below the LiDAR; others turned by 100, -100, 180 degrees."""
    base = np.array(lidar_pose[:3])
    cams = {}
    for i, (offset, yaw) in enumerate([((2.5, 0, -0.9), 0.0), ((0, 0.3, -0.1), 100.0), ((0, -0.3, -0.1), -100.0),
                                       ((-2.0, 0, -0.4), 180.0)]):
        pos = base + offset[0] * FWD + offset[1] * RIGHT + offset[2] * UP
        cams[f"camera{i}"] = {"cords": [*pos, 0.0, 30.0 + yaw, 0.0], "intrinsic": K, "extrinsic": np.eye(4).tolist()}
    return {"lidar_pose": [0, 0, 0, 0, 0, 0], "lidar_pose_clean": list(lidar_pose), **cams}


def aug_conf(**kw):
    conf = {"resize_lim": [0.65, 0.7], "final_dim": [384, 512], "rot_lim": [-3.6, 3.6], "H": 600, "W": 800,
            "rand_flip": False, "bot_pct_lim": [0.0, 0.05], "cams": ["camera0", "camera1", "camera2", "camera3"],
            "Ncams": 4}
    conf.update(kw)
    return conf


def blank_images(n=4, size=(800, 600)):
    return [Image.new("RGB", size) for _ in range(n)]


def cameras(params=None, images=None, depths=None, names=("camera0", "camera1", "camera2", "camera3")):
    """CameraView records of ``agent_params()`` (LiDAR at its clean pose)."""
    params = agent_params() if params is None else params
    images = blank_images(len(names)) if images is None else images
    return cameras_from_agent_yaml(params, images, depths, params["lidar_pose_clean"], list(names))


def test_extrinsic_maps_world_point_to_expected_pixel():
    params = agent_params()
    cam_pos = np.array(params["camera0"]["cords"][:3])
    world = cam_pos + 20.0 * FWD + 3.0 * RIGHT + 1.0 * UP  # 20 m ahead, 3 m right, 1 m up
    lidar_pt = np.linalg.inv(x_to_world(LIDAR_POSE)) @ np.append(world, 1.0)
    out = process_camera_data(cameras(params), aug_conf(), {}, train=False)
    cam_pt = np.linalg.inv(out["extrinsics"][0].astype(np.float64)) @ lidar_pt  # OpenCV camera frame
    uvw = out["intrins"][0] @ cam_pt[:3]
    assert uvw[2] == pytest.approx(20.0, abs=1e-3)
    assert uvw[0] / uvw[2] == pytest.approx(CX + F_PX * 3.0 / 20.0, abs=1e-2)
    assert uvw[1] / uvw[2] == pytest.approx(CY - F_PX * 1.0 / 20.0, abs=1e-2)
    assert np.allclose(out["rots"], out["extrinsics"][:, :3, :3])
    assert np.allclose(out["trans"], out["extrinsics"][:, :3, 3])


def test_rear_camera_looks_backwards():
    rear = camera_to_lidar(agent_params()["camera3"]["cords"], LIDAR_POSE)
    # OpenCV optical axis (z) points to LiDAR -x; image right (x) to LiDAR -y; image down (y) to -z
    assert np.allclose(rear[:3, :3], [[0, 0, -1], [-1, 0, 0], [0, -1, 0]], atol=1e-9)
    assert np.allclose(rear[:3, 3], [-2.0, 0.0, -0.4], atol=1e-9)


def test_eval_augmentation_is_deterministic_with_top_padding():
    resize, dims, crop, flip, rotate = sample_augmentation(aug_conf(), False, None)
    assert resize == pytest.approx(0.64) and dims == (512, 384)
    assert crop == (0, -10, 512, 374) and not flip and rotate == 0.0  # int(0.975*384) - 384 = -10
    post_rot, post_tran = augmentation_matrices(resize, crop, flip, rotate)
    assert np.allclose(post_rot, np.diag([0.64, 0.64, 1.0])) and np.allclose(post_tran, [0.0, 10.0, 0.0])


@pytest.mark.parametrize("flip", [False, True])
def test_train_augmentation_moves_pixels_as_post_rot_says(flip):
    u0, v0 = 300, 420
    rgb = np.zeros((600, 800, 3), np.uint8)
    rgb[v0 - 8:v0 + 9, u0 - 8:u0 + 9] = 255
    depth = np.zeros((600, 800), np.uint8)
    depth[v0 - 8:v0 + 9, u0 - 8:u0 + 9] = 30
    conf = aug_conf(rot_lim=[-10.0, 10.0], rand_flip=flip, cams=["camera0"])
    rng = np.random.default_rng(3)
    views = cameras(images=[Image.fromarray(rgb)], depths=[Image.fromarray(depth)], names=["camera0"])
    out = process_camera_data(views, conf, {}, True, rng)
    assert out["imgs"].shape == (1, 4, 384, 512) and out["imgs"].dtype == np.float32
    expected = out["post_rots"][0] @ np.array([u0, v0, 1.0]) + out["post_trans"][0]
    bright = out["imgs"][0, 0] > 1.0  # normalised white
    vs, us = np.nonzero(bright)
    assert abs(us.mean() - expected[0]) < 1.5 and abs(vs.mean() - expected[1]) < 1.5
    du, dv = int(round(expected[0])), int(round(expected[1]))
    assert out["imgs"][0, 3, dv, du] == 30.0  # depth channel in metres, same warp


def test_collate_and_errors():
    params = agent_params()
    items = [process_camera_data(cameras(params), aug_conf(), {}, train=True, rng=np.random.default_rng(i))
             for i in range(2)]
    batch = collate_camera(items)
    assert batch["imgs"].shape == (2, 4, 3, 384, 512)
    assert batch["intrins"].shape == (2, 4, 3, 3) and batch["extrinsics"].shape == (2, 4, 4, 4)
    assert batch["trans"].shape == (2, 4, 3) and batch["post_trans"].dtype == torch.float32
    views = cameras(params)
    with pytest.raises(DataError, match="no camera 'camera2'"):
        process_camera_data(views[:2] + views[3:], aug_conf(), {}, train=False)
    del params["camera2"]
    with pytest.raises(DataError, match="000068.yaml: missing key 'camera2'"):
        cameras_from_agent_yaml(params, blank_images(), None, LIDAR_POSE, source="000068.yaml")
    with pytest.raises(DataError, match="expected 4 images"):
        cameras(images=blank_images(3))


def test_cameras_selected_by_name_and_extrinsic_from_clean_pose():
    views = cameras()
    np.testing.assert_array_equal(views[1].T_lidar_cam, camera_to_lidar(agent_params()["camera1"]["cords"],
                                                                        LIDAR_POSE))
    conf = aug_conf(cams=["camera3", "camera0"])
    out = process_camera_data(views, conf, {}, train=False)
    np.testing.assert_allclose(out["extrinsics"][0], views[3].T_lidar_cam.astype(np.float32))
    assert out["imgs"].shape == (2, 3, 384, 512)
    with pytest.raises(DataError, match="depth images for 1 of 2"):
        views[0].depth = Image.new("L", (800, 600))
        process_camera_data(views, conf, {}, train=False)
