"""The CodeFilling and MPDA recipes on the tiny synthetic world through the CLI entry points: stage-1 bases m1
and m3 (heter_model_baseline); merge with m1 as the collaboration base; stage 2 (CodeFilling: only the codebook
moves; MPDA: resizer, CDT, domain classifier and heads move; frozen encoders and BatchNorm buffers
bit-identical); static inference (with the message size) and dynamic joining of 1..4 agents."""
import glob
import os

import pytest
import torch
import yaml

from opencood.tools import heal_tools, inference, inference_heter_in_order
from opencood.utils.checkpoint import read_state_dict
from tests.tools.pipeline_steps import stage_dir, train_cli

TINY = "opencood/hypes_yaml/opv2v/GenComm_yamls/baselines/tiny"
MOVED = {"CodeFilling": {"codebook"},
         "MPDA": {"resizer", "cdt", "domain_classifier", "cls_head", "reg_head", "dir_head"}}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["CodeFilling", "MPDA"])
def test_stage2_recipe(method, make_tiny_config, tmp_path):
    s1 = {m: train_cli(["-y", make_tiny_config(f"{TINY}/stage1/{m}_att.yaml", epoches=1), "--log_root",
                        str(tmp_path / "logs")]) for m in ("m1", "m3")}
    s2 = stage_dir(tmp_path, f"m1m3_{method}", make_tiny_config(f"{TINY}/stage2/{method}/m1m3_att.yaml", epoches=2,
                                                                eval_freq=1))
    heal_tools.merge_and_save_final([s1["m3"], s1["m1"]], s2)  # the collaboration base (m1) last
    train_cli(["-y", "None", "--model_dir", s2])  # continues from the merged net_epoch1.pth
    merged = read_state_dict(os.path.join(s2, "net_epoch1.pth"))
    trained = read_state_dict(os.path.join(s2, "net_epoch2.pth"))
    changed = {k.split(".")[0] for k in trained if k not in merged or not torch.equal(merged[k], trained[k])}
    assert changed == MOVED[method], changed  # every encoder/backbone/shrinker and BN buffer untouched
    assert all(k in trained for k in merged)
    inference.main(["--model_dir", s2, "--fusion_method", "intermediate", "--num_workers", "0"])
    evals = glob.glob(os.path.join(s2, "eval_global_sort_*.yaml"))
    assert evals
    result = yaml.safe_load(open(evals[0]))
    assert result["comm_collaborators_per_frame"] > 0
    if method == "CodeFilling":  # 32 x 64 cells x 24 bit of indices + a 1-bit-per-cell mask (thre 0: all sent)
        assert result["comm_bytes_per_agent"] == 32 * 64 * 24 / 8 + 32 * 64 / 8
    else:  # a dense 64-channel float32 map
        assert result["comm_bytes_per_agent"] == 64 * 32 * 64 * 4
    results = inference_heter_in_order.main(["--model_dir", s2, "--use_cav", "[1,2,3,4]", "--num_workers", "0"])
    assert sorted(results) == [1, 2, 3, 4]


def _stage2(make_tiny_config, tmp_path, method, combo, stage1_runs, epoches=2):
    out = stage_dir(tmp_path, f"{combo}_{method}",
                    make_tiny_config(f"{TINY}/stage2/{method}/{combo}_att.yaml", epoches=epoches, eval_freq=1))
    heal_tools.merge_and_save_final(stage1_runs, out)
    train_cli(["-y", "None", "--model_dir", out])
    return out


@pytest.mark.slow
def test_four_type_sets_retrained_and_agents_joining_one_by_one(make_tiny_config, tmp_path):
    """CodeFilling and MPDA retrain for m1m2m3m4 (stage-1 bases of all four types, m1 merged last), then
    dynamic joining of m1, +m2, +m3, +m4."""
    s1 = {m: train_cli(["-y", make_tiny_config(f"{TINY}/stage1/{m}_att.yaml", epoches=1), "--log_root",
                        str(tmp_path / "logs")]) for m in ("m1", "m2", "m3", "m4")}
    for method in ("CodeFilling", "MPDA"):
        run = _stage2(make_tiny_config, tmp_path, method, "m1m2m3m4", [s1["m2"], s1["m3"], s1["m4"], s1["m1"]])
        merged = read_state_dict(os.path.join(run, "net_epoch1.pth"))
        trained = read_state_dict(os.path.join(run, "net_epoch2.pth"))
        changed = {k.split(".")[0] for k in trained if k not in merged or not torch.equal(merged[k], trained[k])}
        assert changed == MOVED[method], changed
        results = inference_heter_in_order.main(["--model_dir", run, "--use_cav", "[1,2,3,4]", "--num_workers", "0"])
        assert sorted(results) == [1, 2, 3, 4]
        for n in (1, 4):
            files = glob.glob(os.path.join(run, f"eval_global_sort_*_use_cav{n}.yaml"))
            assert len(files) == 1 and set(yaml.safe_load(open(files[0]))) >= {"ap_50", "ap_70"}
