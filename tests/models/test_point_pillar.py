"""Single-agent point_pillar (early/late fusion detector) and the classic point_pillar_fcooper: names, config
checks, training steps lowering the loss on the tiny world, and inference from the CLI with the volume columns."""
import glob
import os

import pytest
import torch
import yaml

from opencood.data_utils.datasets import build_dataset
from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.tools import inference, trainer, train_utils
from opencood.utils import comm_volume
from opencood.utils.errors import ConfigError
from opencood.utils.registry import MODELS

EARLY = "opencood/hypes_yaml/demo/zoo/lidar_early.yaml"
LATE = "opencood/hypes_yaml/demo/zoo/lidar_late.yaml"


def test_single_agent_model_has_no_fusion_and_opencood_names():
    hypes = load_yaml(EARLY)
    model = train_utils.create_model(hypes)
    prefixes = {k.split(".")[0] for k in model.state_dict()}
    assert prefixes == {"pillar_vfe", "backbone", "shrink_conv", "cls_head", "reg_head", "dir_head"}
    args = dict(hypes["model"]["args"], fusion_method="att")
    with pytest.raises(ConfigError, match="fusion_method"):
        MODELS.get("point_pillar")(args)


def test_fcooper_model_is_the_baseline_with_max_fusion():
    args = dict(load_yaml(EARLY)["model"]["args"])
    fcooper = MODELS.get("point_pillar_fcooper")(args)
    baseline = MODELS.get("point_pillar_baseline")(dict(args, fusion_method="max"))
    assert type(fcooper.fusion_net).__name__ == "MaxFusion"
    assert list(fcooper.state_dict()) == list(baseline.state_dict())
    with pytest.raises(ConfigError, match="fusion_method"):
        MODELS.get("point_pillar_fcooper")(dict(args, fusion_method="att", att={"feat_dim": 64}))


@pytest.mark.parametrize("cfg", [EARLY, LATE], ids=["early", "late"])
def test_training_steps_lower_the_loss(make_tiny_config, cfg):
    hypes = load_yaml(make_tiny_config(cfg, batch_size=2))
    torch.manual_seed(0)
    model, criterion = train_utils.create_model(hypes), train_utils.create_loss(hypes)
    ds = build_dataset(hypes, train=True)
    batch = ds.collate_batch_train([ds[0], ds[1]])
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(8):
        loss, _ = model.training_step(batch, criterion)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < 0.7 * losses[0]


@pytest.mark.slow
@pytest.mark.parametrize("cfg,mode", [(EARLY, "early"), (LATE, "late")], ids=["early", "late"])
def test_cli_inference_writes_ap_and_volume(make_tiny_config, tmp_path, cfg, mode):
    path = make_tiny_config(cfg, epoches=1)
    run = trainer.run(trainer.build_parser().parse_args(["-y", path, "--log_root", str(tmp_path), "--num_workers",
                                                         "0", "--skip_test"]))
    inference.main(["--model_dir", run, "-f", mode, "--num_workers", "0"])
    res = yaml.safe_load(open(glob.glob(os.path.join(run, f"eval_global_sort_{mode}_*.yaml"))[0]))
    assert {"ap30", "ap_50", "ap_70", "comm_bytes_per_agent", "infer_ms_per_frame"} <= set(res)
    if mode == "early":  # the collaborators' points inside the ego range, 16 bytes each
        hypes = load_yaml(os.path.join(run, "config.yaml"))
        ds = build_dataset(dict(hypes, validate_dir=hypes["test_dir"]), train=False)
        sizes = [s for i in range(len(ds)) for s in comm_volume.early_bytes(ds.collate_batch_test([ds[i]]))]
        assert res["comm_bytes_per_agent"] == pytest.approx(sum(sizes) / len(sizes)) and min(sizes) > 0
    else:  # whole boxes of 32 bytes
        assert res["comm_bytes_per_agent"] * res["comm_collaborators_per_frame"] * 3 % 32 == pytest.approx(0)
