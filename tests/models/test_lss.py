"""Lift-Splat-Shoot: depth bins, frustum geometry against hand-computed camera maths, splat, forward/backward."""
import numpy as np
import pytest
import torch
from PIL import Image

from opencood.models.sub_modules.lift_splat_shoot import LiftSplatShoot
from opencood.models.sub_modules.lss_submodule import (bin_depths, create_frustum, depth_bin_values,
                                                       frustum_to_lidar, gen_dx_bx, splat_sum)
from opencood.data_utils.datasets.basedataset.agent_frame import CameraView
from opencood.utils.camera_utils import camera_to_lidar, collate_camera, process_camera_data
from opencood.utils.errors import ConfigError
from opencood.utils.registry import ENCODERS
from tests.models.module_state import attribute_snapshot

F_PX, CX, CY = 40.0, 48.0, 32.0
YAW = np.radians(30.0)
FWD, RIGHT, UP = np.array([np.cos(YAW), np.sin(YAW), 0.0]), np.array([-np.sin(YAW), np.cos(YAW), 0.0]), np.eye(3)[2]
LIDAR_POSE = [10.0, 5.0, 1.9, 0.0, 30.0, 0.0]
GRID = {"xbound": [-25.6, 25.6, 0.4], "ybound": [-25.6, 25.6, 0.4], "zbound": [-10, 10, 20],
        "ddiscr": [2, 50, 48], "mode": "LID"}


def lss_args(**kw):
    args = {"grid_conf": dict(GRID), "data_aug_conf": {"final_dim": [64, 96], "H": 64, "W": 96},
            "img_downsample": 8, "img_features": 16, "camera_encoder": "EfficientNet", "use_depth_gt": False,
            "depth_supervision": True, "pretrained": False}
    args.update(kw)
    return args


def camera_inputs(augment=False):
    """4 cameras (front 2.5 m ahead, right, left, rear 2 m behind) of a LiDAR at LIDAR_POSE.

    Without ``augment`` the images are not resized, cropped or rotated; with it, training augmentation.
    """
    base = np.array(LIDAR_POSE[:3])
    mounts = [((2.5, 0, -0.9), 0.0), ((0, 0.3, -0.1), 100.0), ((0, -0.3, -0.1), -100.0), ((-2.0, 0, -0.4), 180.0)]
    intrinsic = np.array([[F_PX, 0, CX], [0, F_PX, CY], [0, 0, 1]])
    views = []
    for i, (off, yaw) in enumerate(mounts):
        pos = base + off[0] * FWD + off[1] * RIGHT + off[2] * UP
        views.append(CameraView(f"camera{i}", Image.new("RGB", (96, 64)), intrinsic,
                                camera_to_lidar([*pos, 0.0, 30.0 + yaw, 0.0], LIDAR_POSE)))
    conf = {"final_dim": [64, 96], "H": 64, "W": 96, "bot_pct_lim": [0.0, 0.0], "resize_lim": [1.0, 1.0]}
    if augment:
        conf.update(resize_lim=[1.1, 1.3], bot_pct_lim=[0.0, 0.1], rot_lim=[-8.0, 8.0], rand_flip=True)
    rng = np.random.default_rng(5)
    return collate_camera([process_camera_data(views, conf, GRID, train=augment, rng=rng)])


def test_lid_depth_bins_and_inverse():
    values = depth_bin_values(2.0, 50.0, 48, "LID")
    b = 2 * 48.0 / (48 * 49)
    assert values[0] == pytest.approx(2.0) and values[5] == pytest.approx(2.0 + b * 15, rel=1e-6)
    assert torch.equal(bin_depths(values, 2.0, 50.0, 48, "LID"), torch.arange(48))
    assert torch.equal(bin_depths(torch.tensor([0.0, 1.9, 60.0, 255.0]), 2.0, 50.0, 48, "LID"),
                       torch.tensor([0, 0, 47, 47]))
    for mode in ("UD", "SID"):
        vals = depth_bin_values(2.0, 50.0, 10, mode)
        assert torch.equal(bin_depths(vals + 1e-3, 2.0, 50.0, 10, mode), torch.arange(10))
    with pytest.raises(ConfigError, match="XYZ"):
        depth_bin_values(2.0, 50.0, 10, "XYZ")


def test_frustum_cells_and_grid():
    fr = create_frustum((64, 96), 8, torch.tensor([2.0, 3.0]))
    assert fr.shape == (2, 8, 12, 3)
    assert fr[0, 0, 0].tolist() == [3.5, 3.5, 2.0] and fr[1, 7, 11].tolist() == [91.5, 59.5, 3.0]
    dx, bx, nx = gen_dx_bx([-51.2, 51.2, 0.4], [-51.2, 51.2, 0.4], [-10, 10, 20])
    assert nx.tolist() == [256, 256, 1] and bx[0] == pytest.approx(-51.0)


@pytest.mark.parametrize("cam,augment", [(0, False), (3, False), (0, True), (3, True)])
def test_geometry_matches_hand_projection_and_lands_in_bev_cell(cam, augment):
    frustum = create_frustum((64, 96), 8, depth_bin_values(2.0, 50.0, 48, "LID"))
    inputs = camera_inputs(augment)
    geom = frustum_to_lidar(frustum, inputs["rots"], inputs["trans"], inputs["intrins"], inputs["post_rots"],
                            inputs["post_trans"])  # (1, 4, D, fH, fW, 3)
    assert geom.shape == (1, 4, 48, 8, 12, 3)

    j, r, c = 20, 2, 9
    u, v, d = frustum[j, r, c].tolist()  # pixel of the augmented image
    post_rot, post_tran = inputs["post_rots"][0, cam].double(), inputs["post_trans"][0, cam].double()
    u, v, _ = torch.linalg.solve(post_rot, torch.tensor([u, v, 0.0], dtype=torch.float64) - post_tran).tolist()
    right, down = (u - CX) * d / F_PX, (v - CY) * d / F_PX  # OpenCV x, y at depth d
    if cam == 0:  # looks along LiDAR +x from (2.5, 0, -0.9)
        expected = [2.5 + d, right, -0.9 - down]
    else:  # looks along LiDAR -x from (-2, 0, -0.4): its right is LiDAR -y
        expected = [-2.0 - d, -right, -0.4 - down]
    assert geom[0, cam, j, r, c].tolist() == pytest.approx(expected, abs=1e-3)

    feats = torch.zeros(1, 4, 48, 8, 12, 1)
    feats[0, cam, j, r, c, 0] = 1.0
    dx, bx, nx = gen_dx_bx(GRID["xbound"], GRID["ybound"], GRID["zbound"])
    bev = splat_sum(feats, geom, dx, bx, nx)  # (1, 1, 1, ny, nx)
    row, col = int(np.floor((expected[1] + 25.6) / 0.4)), int(np.floor((expected[0] + 25.6) / 0.4))
    assert bev.shape == (1, 1, 1, 128, 128)
    assert bev[0, 0, 0, row, col] == 1.0 and bev.sum() == 1.0


def test_splat_sums_and_drops_out_of_grid():
    dx, bx, nx = gen_dx_bx([0, 4, 1], [0, 2, 1], [-1, 1, 2])
    geom = torch.tensor([[0.5, 0.5, 0.0], [0.7, 0.2, 0.5], [3.5, 1.5, 0.0], [9.0, 0.5, 0.0]]).view(1, 1, 4, 1, 1, 3)
    feats = torch.tensor([[1.0, 10.0], [2.0, 20.0], [4.0, 40.0], [8.0, 80.0]]).view(1, 1, 4, 1, 1, 2)
    bev = splat_sum(feats, geom, dx, bx, nx)  # (1, 1, 2, 2, 4)
    assert bev.shape == (1, 1, 2, 2, 4)
    assert bev[0, 0, :, 0, 0].tolist() == [3.0, 30.0] and bev[0, 0, :, 1, 3].tolist() == [4.0, 40.0]
    assert bev.sum() == 77.0  # the point at x = 9 m is outside


def test_lss_forward_backward_with_depth_supervision():
    torch.manual_seed(0)
    enc = ENCODERS.get("lift_splat_shoot")(lss_args())
    inputs = camera_inputs()
    depth = torch.full((1, 4, 1, 64, 96), 10.0)
    inputs["imgs"] = torch.cat([torch.randn(1, 4, 3, 64, 96), depth], dim=2)
    before = attribute_snapshot(enc)
    out, aux = enc({"inputs_m2": inputs}, "m2")
    assert out.shape == (1, 16, 128, 128)
    assert (enc.feature_info(lss_args()).shape, enc.feature_info(lss_args()).cell) == (out.shape[1:], (0.4, 0.4))
    logits, gt = aux["depth_items"]
    assert attribute_snapshot(enc) == before  # nothing stored on the modules in forward
    assert logits.shape == (4, 48, 8, 12) and gt.shape == (4, 8, 12)
    assert torch.all(gt == bin_depths(torch.tensor(10.0), 2.0, 50.0, 48, "LID"))
    assert out.abs().sum() > 0
    (out.sum() + logits.sum()).backward()
    assert enc.camencode.depth_head.weight.grad.abs().sum() > 0
    assert enc.camencode.trunk.stem_to_r3[0][0].weight.grad.abs().sum() > 0


def test_lss_config_errors():
    args = lss_args()
    del args["grid_conf"]
    with pytest.raises(ConfigError, match="grid_conf"):
        LiftSplatShoot(args)
    with pytest.raises(ConfigError, match="final_dim"):
        LiftSplatShoot(lss_args(data_aug_conf={"final_dim": [60, 96]}))
    with pytest.raises(ConfigError, match="camera_encoder"):
        LiftSplatShoot(lss_args(camera_encoder="VGG"))
    with pytest.raises(ConfigError, match="unknown key 'model.args.encoder_args.img_featurs'; did you mean"):
        LiftSplatShoot(dict(lss_args(), img_featurs=16))


def test_voxel_variant_merges_z_bins():
    grid = dict(GRID, zbound=[-10, 10, 5])  # 4 z bins
    assert LiftSplatShoot.feature_info(lss_args(grid_conf=grid)).channels == 16 * 4
    assert ENCODERS.get("lift_splat_shoot_voxel").feature_info(lss_args(grid_conf=grid)).channels == 16


@pytest.mark.slow
def test_resnet101_lss_and_gt_depth_lift():
    enc = ENCODERS.get("lift_splat_shoot")(lss_args(camera_encoder="Resnet101", use_depth_gt=True))
    inputs = camera_inputs()
    inputs["imgs"] = torch.cat([torch.randn(1, 4, 3, 64, 96), torch.full((1, 4, 1, 64, 96), 20.0)], dim=2)
    with torch.no_grad():
        out, aux = enc({"inputs_m4": inputs}, "m4")
    assert out.shape == (1, 16, 128, 128)
    assert aux == {}  # nothing to supervise when the lift uses the GT depth
