"""Classic standalone SECOND (models/second.py): OpenCOOD's module names, the sparse backbone's hand-counted
parameters, config checks, training steps lowering the loss on the tiny world, CLI inference."""
import glob
import os

import pytest
import torch
import yaml

from opencood.data_utils.datasets import build_dataset
from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.tools import inference, trainer, train_utils
from opencood.utils.errors import ConfigError

ZOO = "opencood/hypes_yaml/demo/zoo/lidar_second.yaml"


def test_names_and_sparse_backbone_parameters():
    hypes = load_yaml(ZOO)
    model = train_utils.create_model(hypes)
    assert {k.split(".")[0] for k in model.state_dict()} == {"backbone_3d", "backbone_2d", "cls_head", "reg_head",
                                                            "dir_head"}
    # 27-tap sparse convs without bias + BN (2 per channel): 4->16, 16, 16->32 +2x32, 32->64 +2x64, 64->64 +2x64,
    # then (3,1,1) 64->32
    taps = [(4, 16), (16, 16), (16, 32), (32, 32), (32, 32), (32, 64), (64, 64), (64, 64), (64, 64), (64, 64),
            (64, 64)]
    expected = sum(27 * a * b + 2 * b for a, b in taps) + 3 * 64 * 32 + 2 * 32
    assert sum(p.numel() for p in model.backbone_3d.parameters()) == expected
    assert model.feature.channels == 64 and model.feature.size == (32, 64)


def test_height_compression_channels_are_checked():
    args = dict(load_yaml(ZOO)["model"]["args"], height_compression={"feature_num": 128})
    from opencood.utils.registry import MODELS
    with pytest.raises(ConfigError, match="feature_num = 128"):
        MODELS.get("second")(args)


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


@pytest.mark.slow
def test_cli_train_and_early_inference(make_tiny_config, tmp_path):
    run = trainer.run(trainer.build_parser().parse_args(["-y", make_tiny_config(ZOO, epoches=1), "--log_root",
                                                         str(tmp_path), "--num_workers", "0", "--skip_test"]))
    inference.main(["--model_dir", run, "-f", "early", "--num_workers", "0"])
    res = yaml.safe_load(open(glob.glob(os.path.join(run, "eval_global_sort_early_*.yaml"))[0]))
    assert 0 <= res["ap_50"] <= 1 and res["comm_bytes_per_agent"] > 0
