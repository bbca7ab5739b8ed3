"""HEAL proper on the tiny synthetic world through the CLI entry points: the m1 Pyramid-Fusion base (stage 1), merge
into the m3 backward-alignment run, heter_pyramid_single on lateheter samples (only encoder/backbone/aligner_m3
move; frozen BatchNorm buffers bit-identical), merge into final_infer, static and in-order inference."""
import os

import pytest
import torch

from opencood.tools import heal_tools, inference, inference_heter_in_order
from opencood.utils.checkpoint import read_state_dict
from tests.tools.pipeline_steps import stage_dir, train_cli

TINY = "opencood/hypes_yaml/opv2v/MoreModality/HEAL/tiny"


@pytest.mark.slow
def test_heal_recipe(make_tiny_config, tmp_path):
    base = train_cli(["-y", make_tiny_config(f"{TINY}/stage1/m1_pyramid.yaml", epoches=1), "--log_root",
                      str(tmp_path / "logs")])
    s2 = stage_dir(tmp_path, "m3_single", make_tiny_config(f"{TINY}/stage2/m3_single_pyramid.yaml", epoches=2,
                                                           eval_freq=1))
    heal_tools.merge_and_save_final([base], s2)
    train_cli(["-y", "None", "--model_dir", s2])  # continues from the merged net_epoch1.pth
    merged = read_state_dict(os.path.join(s2, "net_epoch1.pth"))
    trained = read_state_dict(os.path.join(s2, "net_epoch2.pth"))
    changed = {k.split(".")[0] for k in trained if k not in merged or not torch.equal(merged[k], trained[k])}
    assert changed == {"encoder_m3", "backbone_m3", "aligner_m3"}, changed
    final = stage_dir(tmp_path, "final_infer", make_tiny_config(f"{TINY}/final_infer/m1m3.yaml"))
    heal_tools.merge_and_save_final([s2, base], final)
    inference.main(["--model_dir", final, "--fusion_method", "intermediate", "--num_workers", "0"])
    inference.main(["--model_dir", s2, "--fusion_method", "late", "--num_workers", "0"])  # m3 alone, late fusion
    results = inference_heter_in_order.main(["--model_dir", final, "--use_cav", "[1,2,3]", "--num_workers", "0"])
    assert sorted(results) == [1, 2, 3]
    assert any(f.startswith("eval_global_sort_") for f in os.listdir(s2))
