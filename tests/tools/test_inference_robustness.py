"""Robustness sweep tools on the tiny world: every sweep writes its YAML and PNG; bad levels are one-line errors."""
import os

import pytest
import yaml

from opencood.tools import (inference_robustness, inference_w_degradation, inference_w_delay, inference_w_noise,
                            inference_w_weather, trainer)

PP = "opencood/hypes_yaml/demo/m1_pointpillar_attfuse.yaml"


@pytest.fixture(scope="module")
def run_dir(tiny_world, tmp_path_factory):
    from conftest import tiny_config
    tmp = tmp_path_factory.mktemp("robust_run")
    cfg = tiny_config(tiny_world, PP, str(tmp), epoches=1, batch_size=2)
    return trainer.run(trainer.build_parser().parse_args(
        ["-y", cfg, "--log_root", str(tmp / "logs"), "--num_workers", "0", "--skip_test"]))


def _read(out, name):
    assert os.path.getsize(os.path.join(out, f"robustness_{name}.png")) > 5000
    with open(os.path.join(out, f"robustness_{name}.yaml")) as f:
        return yaml.safe_load(f)


def _check(result, levels, n_methods=1):
    assert result["levels"] == levels and len(result["methods"]) == n_methods
    for row in result["methods"].values():
        for variant in ("global_sort", "no_global_sort"):
            assert set(row[variant]) == {"ap30", "ap50", "ap70"}
            assert all(len(v) == len(levels) and all(0 <= x <= 1 for x in v) for v in row[variant].values())


@pytest.mark.slow
def test_every_sweep_writes_yaml_and_png(run_dir, tmp_path):
    common = ["--model_dir", run_dir, "--max_frames", "2", "--out_dir", str(tmp_path)]
    inference_w_noise.main(common + ["--levels", "0,0.8", "--also_laplace"])
    noise = _read(tmp_path, "noise")
    _check(noise, [0.0, 0.8], n_methods=2)
    assert noise["seed"] == 303 and any("Laplace" in k for k in noise["methods"])

    inference_w_delay.main(common + ["--levels", "0,300"])
    delay = _read(tmp_path, "delay")
    _check(delay, [0.0, 300.0])
    inference_w_delay.main(common + ["--levels", "0,300"])
    assert _read(tmp_path, "delay") == delay  # deterministic for a given seed

    inference_w_degradation.main(common + ["--knob", "bits", "--levels", "32,1"])
    bits = _read(tmp_path, "degradation_bits")
    _check(bits, [32, 1])

    inference_w_weather.main(common + ["--weather", "fog", "--levels", "0,5"])
    _check(_read(tmp_path, "weather_fog"), [0, 5])
    # two runs in one plot: one line each
    inference_robustness.main(["--sweep", "weather", "--weather", "snow", "--levels", "0,5", "--model_dir", run_dir,
                               run_dir + "/", "--max_frames", "1", "--out_dir", str(tmp_path)])
    assert len(_read(tmp_path, "weather_snow")["methods"]) == 1  # same folder twice = the same method name


@pytest.mark.parametrize("argv,message", [
    (["--levels", "0,-0.2"], "levels must be numbers >= 0"),
    (["--levels", "0,abc"], "expected comma-separated numbers"),
])
def test_bad_noise_levels_are_one_line_errors(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        inference_w_noise.main(["--model_dir", str(tmp_path)] + argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and err.count("\n") == 1


@pytest.mark.parametrize("tool,argv,message", [
    (inference_w_weather, ["--weather", "rain"], "unknown weather type 'rain'"),
    (inference_w_weather, ["--levels", "0,7"], "levels must lie in 0..5"),
    (inference_w_weather, ["--levels", "0,1.5"], "levels must be integers"),
    (inference_w_degradation, ["--knob", "bits", "--levels", "0"], "levels must lie in 1..32"),
    (inference_w_degradation, ["-f", "late"], "needs -f intermediate"),
    (inference_w_delay, ["--levels", "-100"], "levels must be numbers >= 0"),
])
def test_bad_sweep_input_is_one_line_error(tmp_path, capsys, tool, argv, message):
    with pytest.raises(SystemExit) as e:
        tool.main(["--model_dir", str(tmp_path)] + argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and err.count("\n") == 1


def test_noise_sweep_keeps_the_configs_noise_style():
    """A config selecting V2V4Real's pose-noise model keeps it at every sweep level (default: opencood)."""
    import argparse
    opt = argparse.Namespace(sweep="noise", seed=303)
    h = inference_robustness.level_hypes({"noise_setting": {"args": {"style": "v2v4real"}}}, opt, 0.4)
    assert h["noise_setting"]["args"] == {"pos_std": 0.4, "rot_std": 0.4, "pos_mean": 0.0, "rot_mean": 0.0,
                                          "laplace": False, "style": "v2v4real"}
    assert inference_robustness.level_hypes({}, opt, 0.2)["noise_setting"]["args"]["style"] == "opencood"
