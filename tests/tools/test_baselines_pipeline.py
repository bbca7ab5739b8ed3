"""The BackAlign recipe on the tiny synthetic world through the CLI entry points: stage-1 bases m1 and m3
(heter_model_baseline), merge with m1 as the collaboration base, BackAlign stage 2, static inference."""
import os

import pytest
import torch

from opencood.tools import heal_tools, inference
from opencood.utils.checkpoint import read_state_dict
from tests.tools.pipeline_steps import stage_dir, train_cli

TINY = "opencood/hypes_yaml/opv2v/GenComm_yamls/baselines/tiny"


@pytest.mark.slow
def test_backalign_recipe(make_tiny_config, tmp_path):
    s1 = {m: train_cli(["-y", make_tiny_config(f"{TINY}/stage1/{m}_att.yaml", epoches=1), "--log_root",
                        str(tmp_path / "logs")]) for m in ("m1", "m3")}
    s2 = stage_dir(tmp_path, "m1m3", make_tiny_config(f"{TINY}/stage2/BackAlign/m1m3_att.yaml", epoches=2,
                                                      eval_freq=1))
    heal_tools.merge_and_save_final([s1["m3"], s1["m1"]], s2)
    train_cli(["-y", "None", "--model_dir", s2])  # continues from the merged net_epoch1.pth
    merged = read_state_dict(os.path.join(s2, "net_epoch1.pth"))
    trained = read_state_dict(os.path.join(s2, "net_epoch2.pth"))
    changed = {k.split(".")[0] for k in merged if not torch.equal(merged[k], trained[k])}
    assert changed == {"encoder_m3", "backbone_m3", "shrinker_m3"}, changed  # frozen BN buffers bit-identical
    inference.main(["--model_dir", s2, "--fusion_method", "intermediate", "--num_workers", "0"])
    assert any(f.startswith("eval_global_sort_") for f in os.listdir(s2))
