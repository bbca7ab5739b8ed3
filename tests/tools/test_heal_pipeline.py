"""HEAL proper on the tiny synthetic world through the CLI entry points: the m1 Pyramid-Fusion base (stage 1), merge
into the m3 backward-alignment run, heter_pyramid_single on lateheter samples (only encoder/backbone/aligner_m3
move; frozen BatchNorm buffers bit-identical), merge into final_infer, static and in-order inference."""
import os
import shutil

import pytest
import torch

from opencood.tools import heal_tools, inference, inference_heter_in_order, trainer
from opencood.utils.checkpoint import read_state_dict

TINY = "opencood/hypes_yaml/opv2v/MoreModality/HEAL/tiny"


def _train(args):
    return trainer.run(trainer.build_parser().parse_args(args + ["--num_workers", "0", "--skip_test"]))


def _stage_dir(make_tiny_config, tmp_path, rel, name, **tp):
    out = str(tmp_path / name)
    os.mkdir(out)
    shutil.copy(make_tiny_config(rel, **tp), os.path.join(out, "config.yaml"))
    return out


@pytest.mark.slow
def test_heal_recipe(make_tiny_config, tmp_path):
    base = _train(["-y", make_tiny_config(f"{TINY}/stage1/m1_pyramid.yaml", epoches=1), "--log_root",
                   str(tmp_path / "logs")])
    s2 = _stage_dir(make_tiny_config, tmp_path, f"{TINY}/stage2/m3_single_pyramid.yaml", "m3_single",
                    epoches=2, eval_freq=1)
    heal_tools.merge_and_save_final([base], s2)
    _train(["-y", "None", "--model_dir", s2])  # continues from the merged net_epoch1.pth
    merged = read_state_dict(os.path.join(s2, "net_epoch1.pth"))
    trained = read_state_dict(os.path.join(s2, "net_epoch2.pth"))
    changed = {k.split(".")[0] for k in trained if k not in merged or not torch.equal(merged[k], trained[k])}
    assert changed == {"encoder_m3", "backbone_m3", "aligner_m3"}, changed
    final = _stage_dir(make_tiny_config, tmp_path, f"{TINY}/final_infer/m1m3.yaml", "final_infer")
    heal_tools.merge_and_save_final([s2, base], final)
    inference.main(["--model_dir", final, "--fusion_method", "intermediate", "--num_workers", "0"])
    inference.main(["--model_dir", s2, "--fusion_method", "late", "--num_workers", "0"])  # m3 alone, late fusion
    results = inference_heter_in_order.main(["--model_dir", final, "--use_cav", "[1,2,3]", "--num_workers", "0"])
    assert sorted(results) == [1, 2, 3]
    assert any(f.startswith("eval_global_sort_") for f in os.listdir(s2))
