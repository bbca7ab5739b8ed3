"""VoxelNet (models/voxel_net.py, loss/voxel_net_loss.py): parameter count of the reference layer list, the
dense scatter, config checks, the loss on hand-made labels, training steps lowering the loss on the tiny world,
CLI inference."""
import glob
import os

import pytest
import torch
import yaml

from opencood.data_utils.datasets import build_dataset
from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.loss.voxel_net_loss import VoxelNetLoss
from opencood.models.voxel_net import VoxelNet
from opencood.tools import inference, trainer, train_utils
from opencood.utils.errors import ConfigError

ZOO = "opencood/hypes_yaml/demo/zoo/lidar_voxelnet.yaml"
FULL = "opencood/hypes_yaml/opv2v/LiDAROnly/lidar_voxelnet.yaml"
VFE = {"use_norm": True, "with_distance": False, "use_absolute_xyz": True, "num_filters": [64]}


def _conv(c_in, c_out, k, dims=2):  # conv with bias + BatchNorm
    return c_in * c_out * k ** dims + c_out + 2 * c_out


def test_reference_layer_list_parameter_count():
    """VFE 10->64 (no bias) + BN; CML 3 x Conv3d 64->64 k3; RPN 128x4, 128x6, 256x6 convs, deconvs k4/k2/k1 to
    256 + BN; heads 768 -> 2 / 14 (OpenCOOD's voxel_net at D = 10)."""
    model = VoxelNet({"voxel_size": [0.4, 0.4, 0.4], "lidar_range": [-51.2, -25.6, -3, 51.2, 25.6, 1],
                      "pillar_vfe": VFE, "anchor_num": 2})
    vfe = 10 * 64 + 2 * 64
    cml = 3 * _conv(64, 64, 3, dims=3)
    rpn = (4 * _conv(128, 128, 3) + 6 * _conv(128, 128, 3) + _conv(128, 256, 3) + 5 * _conv(256, 256, 3)
           + (256 * 256 * 16 + 256 + 512) + (128 * 256 * 4 + 256 + 512) + (128 * 256 + 256 + 512))
    heads = 768 * 2 + 2 + 768 * 14 + 14
    assert model.trainable_parameter_count() == vfe + cml + rpn + heads == 6_287_184
    assert model.grid == (10, 128, 256)


def test_dense_scatter_places_each_voxel():
    model = VoxelNet(load_yaml(ZOO)["model"]["args"])
    feats = torch.arange(6, dtype=torch.float32).view(2, 3).repeat(1, 11)[:, :32]  # (2, 32)
    coords = torch.tensor([[0, 4, 10, 20], [1, 0, 63, 127]])
    dense = model.voxel_indexing(feats, coords, 2)
    assert dense.shape == (2, 32, 5, 64, 128) and dense.abs().sum() == feats.abs().sum()
    assert torch.equal(dense[0, :, 4, 10, 20], feats[0]) and torch.equal(dense[1, :, 0, 63, 127], feats[1])


def test_config_checks():
    args = dict(load_yaml(ZOO)["model"]["args"])
    with pytest.raises(ConfigError, match="model.args.D = 7"):
        VoxelNet(dict(args, D=7))
    with pytest.raises(ConfigError, match="no output"):
        VoxelNet(dict(args, voxel_size=[0.8, 0.8, 4.0], anchor_voxel_size=None))
    with pytest.raises(ConfigError, match="feature_stride = 4"):
        VoxelNet(dict(args, feature_stride=4))


def test_loss_on_hand_made_labels():
    """One positive, two negatives, one ignored anchor: BCE terms and smooth-L1 by hand."""
    logits = torch.tensor([2.0, -1.0, 0.5, 3.0]).view(1, 4, 1, 1)  # A = 4 anchors in one cell
    reg = torch.zeros(1, 28, 1, 1)
    reg[0, :7, 0, 0] = torch.tensor([0.5, 2.0, 0, 0, 0, 0, 0])
    labels = {"pos_equal_one": torch.tensor([1.0, 0, 0, 0]).view(1, 1, 1, 4),
              "neg_equal_one": torch.tensor([0, 1.0, 1.0, 0]).view(1, 1, 1, 4),
              "targets": torch.zeros(1, 1, 1, 28)}
    loss = VoxelNetLoss({"alpha": 1.5, "beta": 1.0, "reg": 2.0})
    total = loss({"cls_preds": logits, "reg_preds": reg}, labels)
    sig = torch.sigmoid(torch.tensor([2.0, -1.0, 0.5]))
    conf = 1.5 * -torch.log(sig[0]) + (-torch.log(1 - sig[1]) - torch.log(1 - sig[2])) / 2
    smooth_l1 = 0.5 * 0.5 ** 2 + (2.0 - 0.5)
    assert float(total) == pytest.approx(float(conf) + 2.0 * smooth_l1, rel=1e-5)


def test_training_steps_lower_the_loss(make_tiny_config):
    hypes = load_yaml(make_tiny_config(ZOO, batch_size=2))
    torch.manual_seed(0)
    model, criterion = train_utils.create_model(hypes), train_utils.create_loss(hypes)
    ds = build_dataset(hypes, train=True)
    batch = ds.collate_batch_train([ds[0], ds[1]])
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(6):
        loss, _ = model.training_step(batch, criterion)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    out = model(batch["ego"])
    assert out["cls_preds"].shape == (2, 2, 32, 64) and out["reg_preds"].shape == (2, 14, 32, 64)
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < 0.7 * losses[0]


def test_full_config_builds():
    model = train_utils.create_model(load_yaml(FULL))
    assert model.trainable_parameter_count() == 6_287_184


@pytest.mark.slow
def test_cli_train_and_early_inference(make_tiny_config, tmp_path):
    run = trainer.run(trainer.build_parser().parse_args(["-y", make_tiny_config(ZOO, epoches=1), "--log_root",
                                                         str(tmp_path), "--num_workers", "0", "--skip_test"]))
    inference.main(["--model_dir", run, "-f", "early", "--num_workers", "0"])
    res = yaml.safe_load(open(glob.glob(os.path.join(run, "eval_global_sort_early_*.yaml"))[0]))
    assert 0 <= res["ap_50"] <= 1 and res["comm_bytes_per_agent"] > 0
