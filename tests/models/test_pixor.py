"""PIXOR (models/pixor.py, BevPreprocessor, BevPostprocessor, pixor_loss): the BEV image by hand, labels and their
decoding round trip, shapes, training steps lowering the loss on the tiny world, CLI inference."""
import glob
import os

import numpy as np
import pytest
import torch
import yaml

from opencood.data_utils.datasets import build_dataset
from opencood.data_utils.post_processor.bev_postprocessor import TARGET_MEAN, TARGET_STD
from opencood.data_utils.pre_processor.bev_preprocessor import BevPreprocessor
from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.tools import inference, trainer, train_utils
from opencood.utils.box_utils import corner_to_center
from opencood.utils.errors import ConfigError

ZOO = "opencood/hypes_yaml/demo/zoo/lidar_pixor.yaml"


def test_bev_image_occupancy_and_mean_intensity():
    pre = BevPreprocessor({"core_method": "BevPreprocessor", "args": {"voxel_size": [1.0, 1.0, 1.0]},
                           "cav_lidar_range": [0, 0, -2, 4, 2, 2]}, train=False)
    points = np.array([[0.5, 0.5, -1.5, 0.2], [0.7, 0.2, 1.5, 0.6],  # column (y 0, x 0): z slices 0 and 3
                       [3.5, 1.5, 0.1, 1.0],  # column (1, 3), slice 2
                       [9.0, 0.5, 0.0, 1.0]], dtype=np.float32)  # outside
    bev = pre.preprocess(points)["bev_input"]
    assert bev.shape == (5, 2, 4) and pre.channels == 5
    occ = np.zeros((4, 2, 4))
    occ[0, 0, 0] = occ[3, 0, 0] = occ[2, 1, 3] = 1
    assert np.array_equal(bev[:4], occ)
    intensity = np.zeros((2, 4))
    intensity[0, 0], intensity[1, 3] = 0.4, 1.0
    assert np.allclose(bev[4], intensity)


@pytest.fixture(scope="module")
def hypes_and_ds(tiny_world, tmp_path_factory):
    from conftest import tiny_config
    hypes = load_yaml(tiny_config(tiny_world, ZOO, str(tmp_path_factory.mktemp("pixor")), batch_size=2))
    return hypes, build_dataset(hypes, train=True)


def test_labels_hand_box_and_decoding_round_trip(hypes_and_ds):
    _, ds = hypes_and_ds
    post, anchors = ds.post_processor, ds.anchor_box  # (16 x 32 ... ) cells of 1.6 m
    box = np.zeros((150, 7), dtype=np.float32)
    cell = anchors[10, 20, 0]
    box[0] = [cell[0] + 0.3, cell[1] - 0.2, -1.0, 1.56, 1.6, 3.9, 0.0]  # hwl, along x
    mask = np.zeros(150)
    mask[0] = 1
    label = post.generate_label(box, anchors, mask)
    pos = label["pos_equal_one"][..., 0]
    # reference points within |dx| <= 1.95 m, |dy| <= 0.8 m: x offsets 0.3 - 1.6, 0.3, 0.3 + 1.6 (|1.9| <= 1.95),
    # y offset -0.2 only (1.6 - 0.2 > 0.8): three cells in row 10
    assert pos.sum() == 3 and pos[10, 19:22].all()
    t = label["targets"][10, 20] * TARGET_STD + TARGET_MEAN
    assert np.allclose(t, [1, 0, 0.3, -0.2, np.log(1.6), np.log(3.9)], atol=1e-5)
    assert np.array_equal(label["neg_equal_one"][..., 0], 1 - pos)
    # decoding the labels as if they were predictions gives the box back
    logits = torch.from_numpy(np.where(pos > 0, 10.0, -10.0)).float()[None, None]
    reg = torch.from_numpy(label["targets"]).permute(2, 0, 1)[None]
    corners, scores, _ = post.decode_cells({"cls_preds": logits, "reg_preds": reg}, torch.from_numpy(anchors))
    centres = torch.as_tensor(corner_to_center(corners, "hwl")).float()
    assert corners.shape == (3, 8, 3) and torch.allclose(centres[:, [0, 1, 4, 5]],
                                                         torch.tensor(box[0, [0, 1, 4, 5]]).expand(3, 4), atol=1e-4)


def test_model_shapes_and_config_checks(hypes_and_ds):
    hypes, ds = hypes_and_ds
    model = train_utils.create_model(hypes)
    batch = ds.collate_batch_train([ds[0], ds[1]])
    assert batch["ego"]["processed_lidar"]["bev_input"].shape == (2, 11, 128, 256)
    out = model(batch["ego"])
    assert out["cls_preds"].shape == (2, 1, 32, 64) and out["reg_preds"].shape == (2, 6, 32, 64)
    assert torch.allclose(torch.sigmoid(model.header.cls_head.bias), torch.tensor(0.01))
    with pytest.raises(ConfigError, match="feature_stride = 2"):
        type(model)(dict(hypes["model"]["args"], feature_stride=2))


def test_training_steps_lower_the_loss(hypes_and_ds):
    hypes, ds = hypes_and_ds
    torch.manual_seed(0)
    model, criterion = train_utils.create_model(hypes), train_utils.create_loss(hypes)
    batch = ds.collate_batch_train([ds[0], ds[1]])
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(6):
        loss, _ = model.training_step(batch, criterion)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < 0.7 * losses[0]


@pytest.mark.slow
def test_cli_train_and_early_inference(make_tiny_config, tmp_path):
    run = trainer.run(trainer.build_parser().parse_args(["-y", make_tiny_config(ZOO, epoches=1), "--log_root",
                                                         str(tmp_path), "--num_workers", "0", "--skip_test"]))
    inference.main(["--model_dir", run, "-f", "early", "--num_workers", "0"])
    res = yaml.safe_load(open(glob.glob(os.path.join(run, "eval_global_sort_early_*.yaml"))[0]))
    assert 0 <= res["ap_50"] <= 1 and res["comm_bytes_per_agent"] > 0
