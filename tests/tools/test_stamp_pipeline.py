"""The STAMP recipe on the tiny synthetic world through the CLI entry points: stage-1 bases m0 (protocol), m1 and
m3; merge per type (m0 first, the type last); train_adapter for m0m1 and m0m3 (only adapter_/reverter_ move, frozen
BatchNorm buffers bit-identical) and its static test (round-trip features); merge the two runs into the m1m3
infer folder; static inference and dynamic joining of 1..4 agents through inference_heter_in_order."""
import os

import pytest
import torch

from opencood.tools import heal_tools, inference, inference_heter_in_order
from opencood.utils.checkpoint import read_state_dict
from tests.tools.pipeline_steps import stage_dir, train_cli

TINY = "opencood/hypes_yaml/opv2v/GenComm_yamls/baselines/tiny"


@pytest.mark.slow
def test_stamp_recipe(make_tiny_config, tmp_path):
    s1 = {m: train_cli(["-y", make_tiny_config(f"{TINY}/stage1/{m}_att.yaml", epoches=1), "--log_root",
                        str(tmp_path / "logs")]) for m in ("m0", "m1", "m3")}
    s2 = {}
    for m in ("m1", "m3"):
        s2[m] = stage_dir(tmp_path, f"m0{m}", make_tiny_config(f"{TINY}/stage2/STAMP/m0{m}_att.yaml", epoches=2,
                                                               eval_freq=1))
        heal_tools.merge_and_save_final([s1["m0"], s1[m]], s2[m])
        train_cli(["-y", "None", "--model_dir", s2[m]])  # continues from the merged net_epoch1.pth
        merged = read_state_dict(os.path.join(s2[m], "net_epoch1.pth"))
        trained = read_state_dict(os.path.join(s2[m], "net_epoch2.pth"))
        assert set(trained) == set(merged) | {k for k in trained if k.startswith(("adapter_", "reverter_"))}
        changed = {k.split(".")[0] for k in trained if k not in merged or not torch.equal(merged[k], trained[k])}
        assert changed == {f"adapter_{m}", f"reverter_{m}"}, changed  # frozen chains and BN buffers untouched
    # the alignment run's own test: the m3 features after the round trip through the protocol space, m3's heads
    inference.main(["--model_dir", s2["m3"], "--fusion_method", "intermediate", "--num_workers", "0"])
    assert any(f.startswith("eval_global_sort_") for f in os.listdir(s2["m3"]))
    final = stage_dir(tmp_path, "m1m3_infer", make_tiny_config(f"{TINY}/stage2/STAMP/m1m3_att_infer.yaml"))
    heal_tools.merge_and_save_final([s2["m3"], s2["m1"]], final)
    inference.main(["--model_dir", final, "--fusion_method", "intermediate", "--num_workers", "0"])
    results = inference_heter_in_order.main(["--model_dir", final, "--use_cav", "[1,2,3,4]", "--num_workers", "0"])
    assert sorted(results) == [1, 2, 3, 4]
    files = os.listdir(final)
    assert all(any(f.endswith(f"_use_cav{n}.yaml") for f in files) for n in (1, 2, 3, 4)), files


@pytest.mark.slow
def test_stamp_four_types_join_one_by_one(make_tiny_config, tmp_path):
    """m0..m4 stage-1 bases (1 epoch), the four m0mX alignment runs (1 epoch each), the merged m1m2m3m4 infer
    model; inference_heter_in_order with 1..4 agents (types m1, m2, m3, m4 in sorted-id order)."""
    s1 = {m: train_cli(["-y", make_tiny_config(f"{TINY}/stage1/{m}_att.yaml", epoches=1), "--log_root",
                        str(tmp_path / "logs")]) for m in ("m0", "m1", "m2", "m3", "m4")}
    s2 = {}
    for m in ("m1", "m2", "m3", "m4"):
        s2[m] = stage_dir(tmp_path, f"m0{m}", make_tiny_config(f"{TINY}/stage2/STAMP/m0{m}_att.yaml", epoches=2,
                                                               eval_freq=2))
        heal_tools.merge_and_save_final([s1["m0"], s1[m]], s2[m])
        train_cli(["-y", "None", "--model_dir", s2[m]])
    final = stage_dir(tmp_path, "infer", make_tiny_config(f"{TINY}/stage2/STAMP/m1m2m3m4_att_infer.yaml"))
    heal_tools.merge_and_save_final([s2["m2"], s2["m3"], s2["m4"], s2["m1"]], final)
    results = inference_heter_in_order.main(["--model_dir", final, "--use_cav", "[1,2,3,4]", "--num_workers", "0"])
    assert sorted(results) == [1, 2, 3, 4]
