"""robustness_all.py: every sweep over a zoo run (heterogeneous model path), a late-fusion zoo run and a merged
GenComm run (its 2-channel message degraded), one line per run; the levels and the bad-input checks."""
import argparse
import os
import shutil

import pytest
import torch
import yaml

from opencood.tools import heal_tools, inference, inference_robustness, robustness_all, trainer, train_utils
from opencood.utils.errors import ConfigError


def test_levels_keep_first_and_last():
    assert robustness_all.sweep_levels("noise", None) == [0.0, 0.2, 0.4, 0.6, 0.8]
    assert robustness_all.sweep_levels("noise", 3) == [0.0, 0.4, 0.8]
    assert robustness_all.sweep_levels("degradation_bits", 1) == [1]
    assert robustness_all.sweep_levels("weather_snow", 2) == [0, 5]
    assert robustness_all.sweep_levels("delay", 99) == [0, 100, 200, 300, 400, 500]


def _opt(tmp_path, **kw):
    opt = robustness_all.build_parser().parse_args(["--model_dir", str(tmp_path)])
    vars(opt).update(kw)
    return opt


def test_bad_input_is_refused_before_anything_runs(tmp_path):
    (tmp_path / "config.yaml").write_text("name: x\n")
    with pytest.raises(ConfigError, match="unknown sweep"):
        robustness_all.check(_opt(tmp_path, sweeps="noise,rain"))
    with pytest.raises(ConfigError, match="2 labels for 1 runs"):
        robustness_all.check(_opt(tmp_path, labels="a,b"))
    with pytest.raises(ConfigError, match="distinct labels"):
        robustness_all.check(_opt(tmp_path, model_dir=[str(tmp_path), str(tmp_path) + "/"]))
    with pytest.raises(ConfigError, match="no config.yaml"):
        robustness_all.check(_opt(tmp_path, model_dir=[str(tmp_path / "missing")]))
    assert inference_robustness.run_label("/a/zoo_lidar_att_2026_12_02_17_38_24") == "zoo_lidar_att"


def _train(cfg, log_root):
    return trainer.run(trainer.build_parser().parse_args(
        ["-y", cfg, "--log_root", str(log_root), "--num_workers", "0", "--skip_test"]))


@pytest.fixture(scope="module")
def runs(tiny_world, tmp_path_factory):
    """{label: run folder}: zoo AttFuse and late fusion (1 epoch), GenComm m1 + m3 stage 1 merged into m1m3."""
    from conftest import tiny_config
    tmp = tmp_path_factory.mktemp("robust_all")
    out = {}
    for label, rel, tp in (("att", "demo/zoo/lidar_att.yaml", {}), ("late", "demo/zoo/lidar_late.yaml", {}),
                           ("g1", "demo/gencomm/stage1/m1_att.yaml", {"batch_size": 1}),
                           ("g3", "demo/gencomm/stage1/m3_att.yaml", {"batch_size": 1})):
        d = tmp / label
        d.mkdir()
        out[label] = _train(tiny_config(tiny_world, f"opencood/hypes_yaml/{rel}", str(d), epoches=1, **tp), d / "logs")
    merged = tmp / "gencomm_m1m3"
    merged.mkdir()
    cfg = tiny_config(tiny_world, "opencood/hypes_yaml/demo/gencomm/stage2/m1m3_att.yaml", str(merged))
    shutil.copy(cfg, merged / "config.yaml")
    heal_tools.merge_and_save_final([out.pop("g3"), out.pop("g1")], str(merged))
    out["gencomm"] = str(merged)
    return out


@pytest.mark.slow
def test_gencomm_degradation_acts_on_its_two_channel_message(runs):
    inf_opt = inference.build_parser().parse_args(["--model_dir", runs["gencomm"], "--num_workers", "0"])
    hypes = inference.prepare_hypes(inf_opt)
    _, model = train_utils.load_saved_model(runs["gencomm"], train_utils.create_model(hypes))
    model.eval()
    from opencood.data_utils.datasets import build_dataset
    ds = build_dataset(hypes, visualize=False, train=False)
    batch = ds.collate_batch_test([ds[0]])["ego"]
    with torch.no_grad():
        clean = model(batch)["message"]  # (N, 2, H, W)
        inference_robustness.set_degradation(model, argparse.Namespace(knob="mask_ratio", seed=0), 0.8)
        lossy = model(batch)["message"]
    assert clean.shape[1] == 2 and clean.shape[0] >= 2
    assert torch.equal(clean[0], lossy[0])  # the ego's own message is never degraded
    zeroed = (lossy[1:] == 0).float().mean().item()
    assert 0.6 < zeroed < 0.95 and not torch.equal(clean[1:], lossy[1:])


@pytest.mark.slow
def test_every_sweep_over_zoo_late_and_gencomm_runs(runs, tmp_path):
    out = tmp_path / "rob"
    dirs = [runs["att"], runs["late"], runs["gencomm"]]
    status = robustness_all.main(["--model_dir", *dirs, "--labels", "attfuse,late,gencomm", "--out_dir", str(out),
                                  "--n_levels", "1", "--max_frames", "1", "--parallel", "2", "--device", "cpu"])
    assert status == {name: 0 for name in robustness_all.SWEEPS}
    for name in robustness_all.SWEEPS:
        with open(out / f"robustness_{name}.yaml") as f:
            result = yaml.safe_load(f)
        expected = ["attfuse", "gencomm"] if name.startswith("degradation") else ["attfuse", "late", "gencomm"]
        assert list(result["methods"]) == expected, name
        assert result["levels"] == robustness_all.sweep_levels(name, 1)
        assert result["methods"]["attfuse"]["fusion_method"] == "intermediate"
        if "late" in result["methods"]:
            assert result["methods"]["late"]["fusion_method"] == "late"
        assert os.path.getsize(out / f"robustness_{name}.png") > 5000
    with open(out / "robustness_ego_only.yaml") as f:
        ego = yaml.safe_load(f)["methods"]
    assert ego["late"]["fusion_method"] == "single" and ego["gencomm"]["fusion_method"] == "no"
    table = (out / "robustness_table.md").read_text()
    rows = [ln for ln in table.splitlines() if ln.startswith("| ") and "AP30/AP50/AP70" not in ln]
    assert len([r for r in rows if r.count("|") == 5]) == 4 * 3 + 3 * 2  # (sweep, run) rows
    assert "| fog (severity) | 5 | gencomm |" in table and "robustness_weather_snow.png)" in table
