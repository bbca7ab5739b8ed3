"""The whole GenComm 3-stage pipeline on the tiny synthetic world, through the CLI entry points:
stage 1 for m1..m4, merge, stage 2 (DME only) for m1m2/m1m3/m1m4, merge, dynamic in-order inference."""
import glob
import os

import pytest
import torch
import yaml

from opencood.tools import demo, heal_tools, inference, inference_heter_in_order, trainer
from opencood.utils.checkpoint import read_state_dict
from tests.tools.pipeline_steps import stage_dir, train_cli

DEMO = "opencood/hypes_yaml/demo/gencomm"


def _infer(model_dir, fusion):
    inference.main(["--model_dir", model_dir, "--fusion_method", fusion, "--num_workers", "0"])


@pytest.mark.slow
def test_three_stage_pipeline(make_tiny_config, tmp_path, capsys):
    s1 = {}
    for m in ("m1", "m2", "m3", "m4"):
        cfg = make_tiny_config(f"{DEMO}/stage1/{m}_att.yaml", epoches=1, batch_size=1)
        s1[m] = train_cli(["-y", cfg, "--log_root", str(tmp_path / "logs")])
    for fusion in ("intermediate", "no", "single"):
        _infer(s1["m1"], fusion)
    s2 = {}
    for m in ("m2", "m3", "m4"):
        cfg = make_tiny_config(f"{DEMO}/stage2/m1{m}_att.yaml", epoches=2, batch_size=1, eval_freq=1)
        s2[m] = stage_dir(tmp_path, f"m1{m}", cfg)
        heal_tools.merge_and_save_final([s1[m], s1["m1"]], s2[m])
        train_cli(["-y", "None", "--model_dir", s2[m]])  # continues from the merged net_epoch1.pth
        merged = read_state_dict(os.path.join(s2[m], "net_epoch1.pth"))
        trained = read_state_dict(os.path.join(s2[m], "net_epoch2.pth"))
        changed = {k.split(".")[0] for k in merged if not torch.equal(merged[k], trained[k])}
        assert changed == {f"message_extractor_{m}"}, changed  # only the new agent's DME moved (BN included)
        base = read_state_dict(glob.glob(os.path.join(s1["m1"], "net_epoch*.pth"))[0])
        assert all(torch.equal(base[k], trained[k]) for k in base if k.startswith(("encoder_m1", "cls_head")))
        _infer(s2[m], "intermediate")

    final = stage_dir(tmp_path, "final", make_tiny_config(f"{DEMO}/stage2/m1m2m3m4_att_infer.yaml"))
    heal_tools.merge_and_save_final([s2["m2"], s2["m3"], s2["m4"]], final)
    res = inference_heter_in_order.main(["--model_dir", final, "--use_cav", "[1,2,3,4]", "--num_workers", "0"])
    assert set(res) == {1, 2, 3, 4}
    for n in (1, 4):
        files = glob.glob(os.path.join(final, f"eval_global_sort_*_use_cav{n}.yaml"))
        assert len(files) == 1 and set(yaml.safe_load(open(files[0]))) >= {"ap30", "ap_50", "ap_70"}

    capsys.readouterr()
    demo.print_summary(s1, s2, final)  # the table `make demo` ends with, from these runs' result files
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 10 and "share of the homogeneous AP30 / AP50 gain" in table[0]
    assert all(row.count("|") == 10 for row in table)


def test_stage2_refuses_merged_checkpoint_without_ego_modules(make_tiny_config, tmp_path, capsys):
    from opencood.hypes_yaml.yaml_utils import load_yaml
    from opencood.tools.train_utils import create_model
    from opencood.utils.checkpoint import atomic_torch_save
    cfg = make_tiny_config(f"{DEMO}/stage2/m1m2_att.yaml")
    run = stage_dir(tmp_path, "m1m2", cfg)
    sd = {k: v for k, v in create_model(load_yaml(cfg)).state_dict().items() if not k.startswith("encoder_m1")}
    atomic_torch_save(sd, os.path.join(run, "net_epoch1.pth"))
    with pytest.raises(SystemExit) as e:
        trainer.main(["-y", "None", "--model_dir", run, "--num_workers", "0", "--skip_test"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "net_epoch1.pth" in err and "encoder_m1" in err
