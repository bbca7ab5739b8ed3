"""Robustness sweeps: AP of trained runs as one disturbance grows (spec data_eval §7, baselines §D).

``python opencood/tools/inference_robustness.py --sweep SWEEP --model_dir RUN [RUN ...] [--levels a,b,...]``
(aliases: ``inference_w_noise.py``, ``inference_w_delay.py``, ``inference_w_degradation.py``,
``inference_w_weather.py`` = this tool with ``--sweep`` fixed). Sweeps and their default levels:

* ``noise``: pose error, pos_std = rot_std (m / deg) 0, 0.2, 0.4, 0.6, 0.8 on every agent (``--also_laplace``
  adds the Laplace rows), as the reference's ``inference_w_noise.py`` (seed 303);
* ``delay``: communication delay of every collaborator, ``async_overhead`` 0..500 ms (sim mode,
  ``--async_method fixed`` or the reference's ``random``): delayed point cloud, cameras and pose;
* ``degradation``: one knob of ``model.args.comm_degradation`` (``--knob mask_ratio`` 0..0.8, ``noise_std``
  0..4, ``bits`` 32..1) on what collaborators transmit (intermediate fusion only);
* ``weather``: ``lidar_weather`` severity 0..5 of ``--weather fog|snow`` on every agent's LiDAR.

Each run's model is loaded once; per level the test set is rebuilt with the disturbance and scored by the
evaluation loop of ``inference.py`` (the same datasets, post-processing and AP code). Randomness (noise draws,
delays, weather, degradation, GenComm's sampling) is seeded by ``--seed`` at every level, so a sweep is
reproducible. Output in ``--out_dir`` (default: the first run folder): ``robustness_<sweep>[_<knob>].yaml`` with
AP30/50/70 of both variants (global sort and not) per level and method, and ``robustness_<sweep>[_<knob>].png``
(AP vs level, one line per method, one panel per IoU threshold).
"""
import argparse
import copy
import logging
import os
import re

import numpy as np
import torch

from opencood.data_utils.datasets import build_dataset
from opencood.hypes_yaml.yaml_utils import load_yaml, save_yaml
from opencood.models.sub_modules.degradation import MessageDegradation
from opencood.tools import inference, train_utils
from opencood.utils import eval_utils
from opencood.utils.errors import ConfigError, exit_on_error
from opencood.utils.log import setup_logging

logger = logging.getLogger("opencood.tools.inference_robustness")

SWEEPS = ("noise", "delay", "degradation", "weather")
KNOBS = {"mask_ratio": (0.0, 0.1, 0.2, 0.4, 0.6, 0.8), "noise_std": (0.0, 0.5, 1.0, 2.0, 4.0),
         "bits": (32, 16, 8, 4, 2, 1)}
DEFAULT_LEVELS = {"noise": (0.0, 0.2, 0.4, 0.6, 0.8), "delay": (0, 100, 200, 300, 400, 500),
                  "weather": (0, 1, 2, 3, 4, 5)}
UNITS = {"noise": "pose error std (m, deg)", "delay": "communication overhead (ms)", "weather": "severity",
         "mask_ratio": "share of message values lost", "noise_std": "message noise std", "bits": "bits per value"}
AP_KEYS = (("ap30", "ap30"), ("ap50", "ap_50"), ("ap70", "ap_70"))


def build_parser(sweep=None):
    p = argparse.ArgumentParser(description="AP of trained runs under growing pose error, delay, message "
                                            "degradation or bad weather; writes a YAML table and a PNG plot.")
    if sweep is None:
        p.add_argument("--sweep", required=True, choices=SWEEPS)
    p.add_argument("--model_dir", required=True, nargs="+", help="run folder(s), one line per run in the plot")
    p.add_argument("--levels", default=None, help="comma-separated levels (default: the sweep's own)")
    p.add_argument("--fusion_method", "-f", default="auto", choices=("auto",) + inference.FUSION_METHODS,
                   help="auto (default): each run's own fusion (early / late / intermediate, from its config)")
    p.add_argument("--labels", default=None, help="comma-separated plot labels, one per run (default: the run "
                                                  "folder names without their time stamp)")
    p.add_argument("--seed", type=int, default=303, help="seed of every random draw, at every level")
    p.add_argument("--out_dir", default=None, help="where the YAML and PNG go (default: the first run folder)")
    p.add_argument("--also_laplace", action="store_true", help="noise: also Laplace pose error")
    p.add_argument("--async_method", default="fixed", choices=("fixed", "random"),
                   help="delay: fixed = overhead ms; random = U_int[0, overhead) + 100 ms (the reference)")
    p.add_argument("--knob", default="mask_ratio", choices=tuple(KNOBS), help="degradation: what grows")
    p.add_argument("--weather", default="fog", help="weather: fog | snow")
    p.add_argument("--max_frames", type=int, default=None, help="stop after N test frames per level")
    p.add_argument("--num_workers", type=int, default=0)
    p.set_defaults(fixed_sweep=sweep)
    return p


def parse_levels(opt):
    """The levels of the sweep (floats; ints for bits and weather).

    Raises:
        ConfigError: non-numeric, negative or out-of-range levels (one line naming the flag).
    """
    default = KNOBS[opt.knob] if opt.sweep == "degradation" else DEFAULT_LEVELS[opt.sweep]
    if opt.levels is None:
        return list(default)
    try:
        levels = [float(v) for v in opt.levels.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--levels: expected comma-separated numbers, got '{opt.levels}'") from None
    if not levels or any(not np.isfinite(v) or v < 0 for v in levels):
        raise ConfigError(f"--levels: levels must be numbers >= 0, got '{opt.levels}'")
    return check_level_range(opt, levels)


def check_level_range(opt, levels):
    """Integer and range rules of a sweep's levels (weather severity 0..5, bits 1..32, mask ratio 0..1)."""
    knob = opt.knob if opt.sweep == "degradation" else opt.sweep
    integer = knob in ("weather", "bits")
    if integer and any(v != int(v) for v in levels):
        raise ConfigError(f"--levels: {sweep_name(opt)} levels must be integers, got '{opt.levels}'")
    bounds = {"weather": (0, 5), "bits": (1, 32), "mask_ratio": (0, 1)}.get(knob)
    if bounds and any(not bounds[0] <= v <= bounds[1] for v in levels):
        raise ConfigError(f"--levels: {sweep_name(opt)} levels must lie in {bounds[0]}..{bounds[1]}, got "
                          f"'{opt.levels}'")
    return [int(v) for v in levels] if integer else levels


def sweep_name(opt):
    """``noise`` | ``delay`` | ``degradation_<knob>`` | ``weather_<type>``: names the output files."""
    return {"degradation": f"degradation_{opt.knob}", "weather": f"weather_{opt.weather}"}.get(opt.sweep, opt.sweep)


def check_options(opt):
    """Sweep-specific checks before anything is loaded (one-line ConfigErrors)."""
    if opt.sweep == "weather" and opt.weather not in ("fog", "snow"):
        raise ConfigError(f"--weather: unknown weather type '{opt.weather}'; known: fog, snow")
    if opt.sweep == "degradation" and opt.fusion_method not in ("intermediate", "auto"):
        raise ConfigError(f"--sweep degradation: degrades transmitted feature maps, so it needs -f intermediate "
                          f"(got -f {opt.fusion_method})")
    if opt.labels is not None and len(opt.labels.split(",")) != len(opt.model_dir):
        raise ConfigError(f"--labels: {len(opt.labels.split(','))} labels for {len(opt.model_dir)} runs")


_STAMP = re.compile(r"_\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2}$")  # train.py's run-folder time stamp


def run_label(model_dir):
    """Plot label of a run: its folder name without train.py's ``_YYYY_MM_DD_hh_mm_ss`` suffix."""
    return _STAMP.sub("", os.path.basename(os.path.normpath(model_dir)))


def run_fusion(model_dir, opt):
    """The ``-f`` a run is swept with: ``--fusion_method``, or (auto) the one its config's dataset builds.

    Raises:
        ConfigError: degradation of a run whose fusion sends no feature map (early / late).
    """
    if opt.fusion_method != "auto":
        return opt.fusion_method
    mode = inference.dataset_fusion(load_yaml(os.path.join(model_dir, "config.yaml")))
    if opt.sweep == "degradation" and mode != "intermediate":
        raise ConfigError(f"{model_dir}: --sweep degradation degrades transmitted feature maps; this run is "
                          f"{mode} fusion (nothing to degrade)")
    return mode


def level_hypes(hypes, opt, level, laplace=False):
    """The test config of one level (data side); the degradation knob is set on the model instead."""
    h = copy.deepcopy(hypes)
    h["seed"] = opt.seed
    if opt.sweep == "noise":
        style = ((hypes.get("noise_setting") or {}).get("args") or {}).get("style", "opencood")  # whose model
        h["noise_setting"] = {"add_noise": True, "add_pose_noise": True,
                              "args": {"pos_std": level, "rot_std": level, "pos_mean": 0.0, "rot_mean": 0.0,
                                       "laplace": laplace, "style": style}}
    elif opt.sweep == "delay":
        h["noise_setting"] = {"add_noise": True, "add_pose_noise": False, "add_async_noise": True,
                              "async_args": {"async_mode": "sim", "async_method": opt.async_method,
                                             "async_overhead": level}}
    elif opt.sweep == "weather":
        h["lidar_weather"] = {"type": opt.weather, "severity": int(level), "seed": opt.seed}
    return h


def set_degradation(model, opt, level):
    """Degradation sweep: the model's transmitted-message degradation at ``level`` of ``--knob``."""
    if not hasattr(model, "degradation"):
        raise ConfigError(f"--sweep degradation: model {type(model).__name__} has no transmitted message to degrade")
    model.degradation = MessageDegradation.from_args({opt.knob: level, "seed": opt.seed}, "--levels")


def evaluate_level(model, hypes, inf_opt, opt, level, device, tag):
    """APs of one level: ``{'global_sort': {ap30, ap50, ap70}, 'no_global_sort': {...}}`` (floats)."""
    np.random.seed(opt.seed)
    torch.manual_seed(opt.seed)
    if opt.sweep == "degradation":
        set_degradation(model, opt, level)
    dataset = build_dataset(hypes, visualize=True, train=False)
    result_stat, _ = inference.evaluate(model, dataset, inf_opt, opt.out_dir, tag, device)
    aps = eval_utils.eval_final_results_dict(result_stat)
    return {variant: {name: float(values[key]) for name, key in AP_KEYS} for variant, values in aps.items()}


def load_run(model_dir, fusion, opt, device):
    """``(inference options, test hypes, model in eval mode on device)`` of one run folder evaluated with
    ``-f fusion`` (``opt``: ``num_workers``, ``max_frames``), as ``inference.py`` would prepare them."""
    inf_opt = inference.build_parser().parse_args(
        ["--model_dir", model_dir, "-f", fusion, "--num_workers", str(opt.num_workers)]
        + ([] if opt.max_frames is None else ["--max_frames", str(opt.max_frames)]))
    hypes = inference.prepare_hypes(inf_opt)
    model = train_utils.create_model(hypes)
    _, model = train_utils.load_saved_model(model_dir, model)
    return inf_opt, hypes, model.to(device).eval()


def sweep_run(model_dir, opt, levels, device, name=None):
    """Every level of one run folder. Returns ``{label: {'model_dir', 'fusion_method', 'global_sort': {ap30:
    [per level], ...}, 'no_global_sort': {...}}}`` (two labels with ``--also_laplace``)."""
    fusion = run_fusion(model_dir, opt)
    inf_opt, hypes, model = load_run(model_dir, fusion, opt, device)
    name = name or run_label(model_dir)
    rows = {}
    for laplace in ([False, True] if opt.sweep == "noise" and opt.also_laplace else [False]):
        label = f"{name} (Laplace)" if laplace else name
        row = {"model_dir": model_dir, "fusion_method": fusion, "global_sort": {k: [] for k, _ in AP_KEYS},
               "no_global_sort": {k: [] for k, _ in AP_KEYS}}
        for level in levels:
            aps = evaluate_level(model, level_hypes(hypes, opt, level, laplace), inf_opt, opt, level, device,
                                 f"{sweep_name(opt)}_{level:g}")
            for variant, values in aps.items():
                for key, value in values.items():
                    row[variant][key].append(value)
            logger.info(f"{label} {sweep_name(opt)} {level:g}: AP30 {aps['global_sort']['ap30']:.3f} "
                        f"AP50 {aps['global_sort']['ap50']:.3f} AP70 {aps['global_sort']['ap70']:.3f}")
        rows[label] = row
    return rows


def plot(result, path):
    """AP (global sort) vs level, one line per method, one panel per IoU threshold; written to ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    for ax, (key, _) in zip(axes, AP_KEYS):
        for label, row in result["methods"].items():
            ax.plot(result["levels"], row["global_sort"][key], marker="o", label=label)
        ax.set_title(f"{key.upper()} vs {result['sweep']}")
        ax.set_xlabel(result["unit"])
        ax.grid(alpha=0.3)
        if result["sweep"] == "degradation_bits":
            ax.invert_xaxis()
    axes[0].set_ylabel("AP (global sort)")
    axes[0].set_ylim(0, 1)
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(opt):
    opt.sweep = opt.fixed_sweep or opt.sweep
    levels = parse_levels(opt)
    check_options(opt)
    opt.out_dir = opt.out_dir or opt.model_dir[0]
    os.makedirs(opt.out_dir, exist_ok=True)
    setup_logging(opt.out_dir, "robustness.log")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = sweep_name(opt)
    labels = opt.labels.split(",") if opt.labels else [None] * len(opt.model_dir)
    for model_dir in opt.model_dir:  # every run's fusion is checked before the first one is swept
        run_fusion(model_dir, opt)
    methods = {}
    for model_dir, label in zip(opt.model_dir, labels):
        methods.update(sweep_run(model_dir, opt, levels, device, label))
    result = {"sweep": name, "unit": UNITS[opt.knob if opt.sweep == "degradation" else opt.sweep],
              "levels": levels, "seed": opt.seed, "fusion_method": opt.fusion_method,
              "max_frames": opt.max_frames, "methods": methods}
    save_yaml(result, os.path.join(opt.out_dir, f"robustness_{name}.yaml"))
    plot(result, os.path.join(opt.out_dir, f"robustness_{name}.png"))
    logger.info(f"wrote robustness_{name}.yaml / .png in {opt.out_dir}")
    return result


def main(argv=None, sweep=None):
    return exit_on_error(run, build_parser(sweep).parse_args(argv))


if __name__ == "__main__":
    main()
