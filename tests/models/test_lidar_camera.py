"""LiDAR + camera agent type (sub_modules/lidar_camera_encoder.py, sensor_type lidar_camera in the heterogeneous
dataset): both sensors reach the fused map, the cells are checked, training steps lower the loss on the tiny world,
CLI inference."""
import copy
import glob
import os

import pytest
import torch
import yaml

from opencood.data_utils.datasets import build_dataset
from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.models.sub_modules.lidar_camera_encoder import LidarCameraEncoder
from opencood.tools import inference, trainer, train_utils
from opencood.utils.errors import ConfigError

ZOO = "opencood/hypes_yaml/demo/zoo/lidar_camera_att.yaml"


@pytest.fixture(scope="module")
def setup(tiny_world, tmp_path_factory):
    from conftest import tiny_config
    path = tiny_config(tiny_world, ZOO, str(tmp_path_factory.mktemp("lc")), batch_size=2)
    hypes = load_yaml(path)
    ds = build_dataset(hypes, train=True)
    return hypes, ds.collate_batch_train([ds[0], ds[1]])


def test_batch_carries_both_sensors_of_each_agent(setup):
    _, batch = setup
    inputs = batch["ego"]["inputs_m1"]
    n = int(batch["ego"]["record_len"].sum())
    assert {"voxel_features", "voxel_coords", "voxel_num_points", "imgs", "intrins", "rots", "trans"} <= set(inputs)
    assert inputs["imgs"].shape[:2] == (n, 4) and int(inputs["voxel_coords"][:, 0].max()) == n - 1


def test_both_sensors_change_the_fused_map(setup):
    hypes, batch = setup
    torch.manual_seed(0)
    model = train_utils.create_model(hypes).eval()
    enc = model.encoder_m1
    with torch.no_grad():
        base, _ = enc(batch["ego"], "m1")
        dark = copy.deepcopy(batch["ego"])
        dark["inputs_m1"]["imgs"] = torch.zeros_like(dark["inputs_m1"]["imgs"])
        no_cam, _ = enc(dark, "m1")
        empty = copy.deepcopy(batch["ego"])
        empty["inputs_m1"]["voxel_features"] = torch.zeros_like(empty["inputs_m1"]["voxel_features"])
        no_lidar, _ = enc(empty, "m1")
    assert base.shape == (int(batch["ego"]["record_len"].sum()), 64, 64, 128)  # raw BEV, 0.8 m pillars
    # the camera square (64 x 64 cells) covers the middle columns 32..95: outside it the camera branch is padding
    cam_effect = (base - no_cam).abs()
    assert cam_effect[..., 32:96].sum() > 0 and torch.equal(cam_effect[..., :32], torch.zeros_like(cam_effect[..., :32]))
    assert (base - no_lidar).abs().sum() > 0


def test_cell_mismatch_is_a_config_error():
    args = copy.deepcopy(load_yaml(ZOO)["model"]["args"]["m1"]["encoder_args"])
    for axis in ("xbound", "ybound"):
        args["camera"]["grid_conf"][axis] = [-25.6, 25.6, 0.4]
    with pytest.raises(ConfigError, match="camera.grid_conf cells"):
        LidarCameraEncoder(args)


def test_training_steps_lower_the_loss(setup):
    hypes, batch = setup
    torch.manual_seed(0)
    model, criterion = train_utils.create_model(hypes), train_utils.create_loss(hypes)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(5):
        loss, _ = model.training_step(batch, criterion)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    cam_grad = sum(p.grad.abs().sum() for p in model.encoder_m1.camera_encoder.parameters() if p.grad is not None)
    assert cam_grad > 0
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < 0.7 * losses[0]


@pytest.mark.slow
def test_cli_train_and_inference(make_tiny_config, tmp_path):
    run = trainer.run(trainer.build_parser().parse_args(["-y", make_tiny_config(ZOO, epoches=1), "--log_root",
                                                         str(tmp_path), "--num_workers", "0", "--skip_test"]))
    inference.main(["--model_dir", run, "-f", "intermediate", "--num_workers", "0"])
    res = yaml.safe_load(open(glob.glob(os.path.join(run, "eval_global_sort_intermediate_*.yaml"))[0]))
    assert 0 <= res["ap_50"] <= 1 and res["comm_bytes_per_agent"] == 64 * 32 * 64 * 4
