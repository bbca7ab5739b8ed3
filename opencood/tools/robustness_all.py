"""Every robustness sweep over a set of trained runs, in one command: YAMLs, PNGs and a markdown table.

``python opencood/tools/robustness_all.py --model_dir RUN [RUN ...] [--labels a,b,...]
[--out_dir images/robustness/all] [--parallel N] [--n_levels K] [--max_frames N]``

Runs the sweeps of ``inference_robustness.py`` (one process each, up to ``--parallel`` side by side, every run
in each, so each plot has one line per run): pose error (``noise``), communication delay (``delay``), message
degradation with each knob (``degradation_mask_ratio``, ``degradation_noise_std``, ``degradation_bits``; only
the runs with intermediate fusion: early and late fusion send points and boxes, not feature maps) and LiDAR
weather (``weather_fog``, ``weather_snow``). Each run is swept with its own fusion (``-f auto``). Also
evaluates each run once clean and ego only (``-f no``; ``-f single`` for early / late fusion), the line below
which collaboration stops paying off.

Output in ``--out_dir``: ``robustness_<sweep>.yaml`` / ``.png`` per sweep (see ``inference_robustness.py``),
``robustness_ego_only.yaml``, ``logs/<sweep>.log`` per sweep process, and ``robustness_table.md``: one markdown
table (AP30 / AP50 / AP70, global sort, per level) to paste into ``docs/robustness.md``, with the image links.
A sweep that fails is named in the table (its log says why); the others still run.
"""
import argparse
import logging
import os
import shlex
import subprocess
import sys
import time

import numpy as np
import torch
import yaml

from opencood.data_utils.datasets import build_dataset
from opencood.hypes_yaml.yaml_utils import load_yaml, save_yaml
from opencood.tools import inference, inference_robustness as robust
from opencood.utils import eval_utils
from opencood.utils.atomic_io import atomic_open
from opencood.utils.errors import ConfigError, exit_on_error
from opencood.utils.log import setup_logging

logger = logging.getLogger("opencood.tools.robustness_all")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# name -> the inference_robustness.py flags of that sweep; intermediate: only runs with intermediate fusion
SWEEPS = {
    "noise": {"args": ["--sweep", "noise"], "title": "pose error (m, deg)"},
    "delay": {"args": ["--sweep", "delay"], "title": "delay (ms)"},
    "degradation_mask_ratio": {"args": ["--sweep", "degradation", "--knob", "mask_ratio"],
                               "title": "message loss (ratio)", "intermediate": True},
    "degradation_noise_std": {"args": ["--sweep", "degradation", "--knob", "noise_std"],
                              "title": "message noise (std)", "intermediate": True},
    "degradation_bits": {"args": ["--sweep", "degradation", "--knob", "bits"], "title": "bits per value",
                         "intermediate": True},
    "weather_fog": {"args": ["--sweep", "weather", "--weather", "fog"], "title": "fog (severity)"},
    "weather_snow": {"args": ["--sweep", "weather", "--weather", "snow"], "title": "snow (severity)"},
}


def build_parser():
    p = argparse.ArgumentParser(description="Run every robustness sweep over trained runs; write the YAMLs, the "
                                            "PNGs and a markdown table.")
    p.add_argument("--model_dir", required=True, nargs="+", help="run folders (one line each per plot)")
    p.add_argument("--labels", default=None, help="comma-separated labels, one per run (default: folder names "
                                                  "without their time stamp)")
    p.add_argument("--out_dir", default=os.path.join("images", "robustness", "all"),
                   help="YAMLs, PNGs, logs and robustness_table.md (image links relative to docs/)")
    p.add_argument("--sweeps", default=",".join(SWEEPS), help=f"comma-separated subset of {', '.join(SWEEPS)}")
    p.add_argument("--n_levels", type=int, default=None,
                   help="K levels of each sweep's defaults, evenly spaced, first and last kept (1: the last = "
                        "strongest; default: all)")
    p.add_argument("--parallel", type=int, default=1, help="sweep processes side by side")
    p.add_argument("--max_frames", type=int, default=None, help="test frames per level")
    p.add_argument("--num_workers", type=int, default=0, help="DataLoader workers of each sweep process")
    p.add_argument("--seed", type=int, default=303)
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    return p


def sweep_levels(name, n_levels):
    """The levels of sweep ``name``: its defaults, or ``n_levels`` of them evenly spaced (first and last kept)."""
    knob = name.split("_", 1)[1] if name.startswith("degradation_") else None
    levels = list(robust.KNOBS[knob] if knob else robust.DEFAULT_LEVELS[name.split("_")[0]])
    if n_levels is None or n_levels >= len(levels):
        return levels
    if n_levels == 1:
        return levels[-1:]
    idx = np.round(np.linspace(0, len(levels) - 1, n_levels)).astype(int)
    return [levels[i] for i in sorted(set(idx))]


def check(opt):
    """Options and run folders, before anything runs (one-line ConfigErrors)."""
    names = [s.strip() for s in opt.sweeps.split(",") if s.strip()]
    unknown = [s for s in names if s not in SWEEPS]
    if unknown or not names:
        raise ConfigError(f"--sweeps: unknown sweep(s) {unknown}; known: {', '.join(SWEEPS)}")
    if opt.n_levels is not None and opt.n_levels < 1 or opt.parallel < 1:
        raise ConfigError("--n_levels and --parallel must be >= 1")
    for d in opt.model_dir:
        if not os.path.isfile(os.path.join(d, "config.yaml")):
            raise ConfigError(f"--model_dir {d}: no config.yaml (not a run folder)")
    labels = opt.labels.split(",") if opt.labels else [robust.run_label(d) for d in opt.model_dir]
    if len(labels) != len(opt.model_dir):
        raise ConfigError(f"--labels: {len(labels)} labels for {len(opt.model_dir)} runs")
    if len(set(labels)) != len(labels):
        raise ConfigError(f"--labels: runs need distinct labels, got {labels} (pass --labels)")
    if opt.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is visible")
    return names, labels


def fusion_of(model_dir):
    """early | late | intermediate: what the run's config's fusion dataset builds."""
    return inference.dataset_fusion(load_yaml(os.path.join(model_dir, "config.yaml")))


def sweep_command(name, runs, labels, opt):
    """The ``inference_robustness.py`` command line of one sweep over ``runs``."""
    levels = ",".join(f"{v:g}" for v in sweep_levels(name, opt.n_levels))
    cmd = [sys.executable, os.path.join(REPO, "opencood", "tools", "inference_robustness.py"),
           *SWEEPS[name]["args"], "--model_dir", *runs, "--labels", ",".join(labels), "--levels", levels,
           "--out_dir", opt.out_dir, "--seed", str(opt.seed), "--num_workers", str(opt.num_workers)]
    return cmd + ([] if opt.max_frames is None else ["--max_frames", str(opt.max_frames)])


def run_sweeps(names, labels, opt, env):
    """Every sweep as its own process, up to ``opt.parallel`` at a time. Returns ``{name: exit status}``
    (None: skipped, no run fits it)."""
    status, waiting, running = {}, list(names), {}
    os.makedirs(os.path.join(opt.out_dir, "logs"), exist_ok=True)
    try:
        while waiting or running:
            while waiting and len(running) < opt.parallel:
                name = waiting.pop(0)
                pairs = [(d, lab) for d, lab in zip(opt.model_dir, labels)
                         if not SWEEPS[name].get("intermediate") or fusion_of(d) == "intermediate"]
                if not pairs:
                    status[name] = None
                    continue
                cmd = sweep_command(name, [d for d, _ in pairs], [lab for _, lab in pairs], opt)
                log = open(os.path.join(opt.out_dir, "logs", f"{name}.log"), "w")
                logger.info(f"start {name}: {shlex.join(cmd[1:])}")
                running[name] = (subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT),
                                 log, time.time())
            for name, (proc, log, t0) in list(running.items()):
                if proc.poll() is None:
                    continue
                log.close()
                status[name] = proc.returncode
                del running[name]
                logger.info(f"{name}: {'done' if proc.returncode == 0 else 'FAILED'} in {time.time() - t0:.0f} s")
            time.sleep(0.5)
    finally:
        for proc, log, _ in running.values():  # interrupted: stop the sweep processes we started
            proc.terminate()
            proc.wait()
            log.close()
    return status


def ego_only(model_dir, opt, device):
    """Clean ego-only APs of one run: ``{'fusion_method', 'global_sort': {ap30, ap50, ap70}, 'no_global_sort'}``."""
    mode = "no" if fusion_of(model_dir) == "intermediate" else "single"
    inf_opt, hypes, model = robust.load_run(model_dir, mode, opt, device)
    np.random.seed(opt.seed)
    torch.manual_seed(opt.seed)
    stat, _ = inference.evaluate(model, build_dataset(hypes, visualize=True, train=False), inf_opt, opt.out_dir,
                                 "ego_only", device)
    aps = eval_utils.eval_final_results_dict(stat)
    row = {v: {name: float(values[key]) for name, key in robust.AP_KEYS} for v, values in aps.items()}
    return {"fusion_method": mode, **row}


def _aps(row, i):
    return "/".join(f"{row['global_sort'][k][i]:.3f}".lstrip("0") if row["global_sort"][k][i] < 1 else "1.0"
                    for k in ("ap30", "ap50", "ap70"))


def table(names, status, ego, out_dir, md_dir):
    """The markdown snippet: ego only per run, then one row per (sweep, run) with AP30/50/70 per level."""
    rel = os.path.relpath(out_dir, md_dir)
    lines = ["Clean, ego only (the same checkpoint with `-f no`; `-f single` for early / late fusion), AP30 / AP50 "
             "/ AP70, global sort:", "", "| run | ego only |", "|---|---|"]
    for label, row in ego.items():
        g = row["global_sort"]
        lines.append(f"| {label} | {g['ap30']:.3f} / {g['ap50']:.3f} / {g['ap70']:.3f} (-f {row['fusion_method']}) |")
    lines += ["", "AP30 / AP50 / AP70 per level, global sort (the no-global-sort variant is in the YAMLs):", "",
              "| sweep | levels | run | AP30/AP50/AP70 per level |", "|---|---|---|---|"]
    images = []
    for name in names:
        if status.get(name) is None:
            lines.append(f"| {SWEEPS[name]['title']} | | | skipped: no run with intermediate fusion |")
            continue
        path = os.path.join(out_dir, f"robustness_{name}.yaml")
        if status[name] != 0 or not os.path.isfile(path):
            lines.append(f"| {SWEEPS[name]['title']} | | | FAILED (exit {status[name]}; see "
                         f"`{rel}/logs/{name}.log`) |")
            continue
        with open(path) as f:
            result = yaml.safe_load(f)
        levels = ", ".join(f"{v:g}" for v in result["levels"])
        for label, row in result["methods"].items():
            per_level = ", ".join(_aps(row, i) for i in range(len(result["levels"])))
            lines.append(f"| {SWEEPS[name]['title']} | {levels} | {label} | {per_level} |")
        images.append(f"![{SWEEPS[name]['title']}]({rel}/robustness_{name}.png)")
    return "\n".join(lines + [""] + images + [""])


def run(opt):
    setup_logging()
    names, labels = check(opt)
    opt.out_dir = os.path.abspath(opt.out_dir)
    os.makedirs(opt.out_dir, exist_ok=True)
    env = dict(os.environ)
    if opt.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    device = torch.device("cuda" if opt.device != "cpu" and torch.cuda.is_available() else "cpu")
    t0 = time.time()
    ego = {label: ego_only(d, opt, device) for d, label in zip(opt.model_dir, labels)}
    save_yaml({"seed": opt.seed, "max_frames": opt.max_frames, "methods": ego},
              os.path.join(opt.out_dir, "robustness_ego_only.yaml"))
    status = run_sweeps(names, labels, opt, env)
    md_dir = os.path.join(REPO, "docs")
    text = table(names, status, ego, opt.out_dir, md_dir)
    with atomic_open(os.path.join(opt.out_dir, "robustness_table.md"), "w") as f:
        f.write(text)
    logger.info(f"all sweeps in {time.time() - t0:.0f} s; table: {os.path.join(opt.out_dir, 'robustness_table.md')}")
    logger.info(text)
    return status


def main(argv=None):
    return exit_on_error(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
