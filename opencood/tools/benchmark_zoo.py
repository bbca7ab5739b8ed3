"""Train and compare every method of the zoo on the synthetic world; write the results table (docs/results.md).

``python opencood/tools/benchmark_zoo.py [--configs A.yaml B.yaml] [--epochs 8] [--time_limit 240]``

For every tiny zoo config (default: all ``opencood/hypes_yaml/demo/zoo/*.yaml`` present when it runs):
 1. the synthetic world is generated under ``--world`` if it is not there (``--preset``, ``--frames``);
 2. the config is pointed at that world and trained from scratch with ``train.py``'s code path, one epoch at a
    time (each later epoch resumes the run folder), until ``--epochs`` epochs or until ``--time_limit`` seconds
    of training have passed (the epoch running at the limit is finished);
 3. the last checkpoint is evaluated twice with ``inference.py``'s code path: ego only (``-f no``: the ego's
    own features, scored on the same all-agent ground truth) and the method's own fusion (``early`` / ``late``
    from ``fusion.core_method``, else ``intermediate``).
The table has AP30/50/70 in both AP variants (global sort and the OPV2V frame order), trainable parameters,
the mean bytes each collaborator sends to the ego per frame (``utils/comm_volume.py``), inference latency
(model + post-processing per frame) on this machine, the machine and library versions, and the command.
"""
import argparse
import glob
import logging
import os
import platform
import subprocess
import sys
import time

import torch
import yaml

from opencood.hypes_yaml.yaml_utils import load_yaml, read_config, save_yaml
from opencood.tools import inference, trainer
from opencood.tools.train_utils import create_model
from opencood.utils.log import setup_logging

logger = logging.getLogger("opencood.tools.benchmark_zoo")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ZOO = os.path.join(REPO, "opencood", "hypes_yaml", "demo", "zoo")
AP_KEYS = ("ap30", "ap_50", "ap_70")


def build_parser():
    p = argparse.ArgumentParser(description="Train every zoo method on the synthetic world; write docs/results.md.")
    p.add_argument("--configs", nargs="*", default=None, help="zoo YAMLs (default: every demo/zoo/*.yaml)")
    p.add_argument("--world", default=os.path.join("opencood", "logs", "zoo", "world"),
                   help="synthetic world root (generated when missing)")
    p.add_argument("--preset", default="tiny", help="synthetic-world preset when it is generated")
    p.add_argument("--frames", type=int, default=None, help="frames per scenario of a generated world")
    p.add_argument("--epochs", type=int, default=8, help="at most this many training epochs per method")
    p.add_argument("--time_limit", type=float, default=240.0, help="training seconds per method (checked per epoch)")
    p.add_argument("--log_root", default=os.path.join("opencood", "logs", "zoo"), help="run folders go here")
    p.add_argument("--out", default=os.path.join("docs", "results.md"), help="the table (markdown)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    return p


def ensure_world(root, preset, frames):
    """Generate the synthetic world under ``root`` unless ``root/OPV2V/train`` exists."""
    if os.path.isdir(os.path.join(root, "OPV2V", "train")):
        return
    from opencood.data_utils.synthetic import generate
    logger.info(f"generating the synthetic world ({preset}) in {root}")
    generate(root, preset=preset, seed=0, progress=False, **({"frames": frames} if frames else {}))


def world_config(src, world, out_dir, epochs):
    """The zoo config ``src`` (with its bases) pointed at ``world``; written to ``out_dir``; returns the path."""
    h = read_config(src)
    for key in ("root_dir", "validate_dir", "test_dir"):
        h[key] = h[key].replace("dataset", world, 1)
    if isinstance(h.get("heter"), dict) and h["heter"].get("assignment_path"):
        h["heter"]["assignment_path"] = h["heter"]["assignment_path"].replace("dataset", world, 1)
    h["train_params"]["epoches"] = epochs
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, os.path.basename(src))
    save_yaml(h, path)
    return path


def fusion_mode(hypes):
    """The ``--fusion_method`` a config is evaluated with: early / late from ``fusion.core_method``."""
    core = str(hypes["fusion"]["core_method"]).lower()
    return next((m for m in ("early", "late") if core.startswith(m)), "intermediate")


def _set_epochs(run_dir, n):
    path = os.path.join(run_dir, "config.yaml")
    with open(path) as f:
        h = yaml.safe_load(f)
    h["train_params"]["epoches"] = n
    save_yaml(h, path)


def train_budgeted(cfg, log_root, epochs, time_limit, seed):
    """Train one epoch at a time until ``epochs`` or ``time_limit`` seconds; returns (run dir, epochs, seconds)."""
    t0 = time.time()
    common = ["--num_workers", "0", "--skip_test", "--seed", str(seed)]
    run_dir = trainer.run(trainer.build_parser().parse_args(["-y", cfg, "--log_root", log_root] + common))
    done = 1
    while done < epochs and time.time() - t0 < time_limit:
        done += 1
        _set_epochs(run_dir, done)
        trainer.run(trainer.build_parser().parse_args(["-y", "None", "--model_dir", run_dir] + common))
    return run_dir, done, time.time() - t0


def evaluate(run_dir, mode):
    """Run inference with ``-f mode``; returns the two eval YAMLs ``{'gs': {...}, 'ngs': {...}}``."""
    inference.run(inference.build_parser().parse_args(["--model_dir", run_dir, "-f", mode, "--num_workers", "0"]))
    out = {}
    for key, prefix in (("gs", "eval_global_sort_"), ("ngs", "eval_")):
        files = sorted(glob.glob(os.path.join(run_dir, f"{prefix}{mode}_*.yaml")), key=os.path.getmtime)
        with open(files[-1]) as f:
            out[key] = yaml.safe_load(f)
    return out


def bench_method(src, opt):
    """Train + evaluate one zoo config; returns its row dict."""
    stem = os.path.splitext(os.path.basename(src))[0]
    cfg = world_config(src, os.path.abspath(opt.world), os.path.join(opt.log_root, "configs"), opt.epochs)
    hypes = load_yaml(cfg)
    mode = fusion_mode(hypes)
    params = create_model(hypes).trainable_parameter_count()
    run_dir, epochs, seconds = train_budgeted(cfg, opt.log_root, opt.epochs, opt.time_limit, opt.seed)
    ego_mode = "no" if mode == "intermediate" else "single"  # the early/late datasets have no use_cav
    return {"method": stem, "mode": mode, "ego_mode": ego_mode, "params": params, "epochs": epochs,
            "train_s": seconds, "run_dir": run_dir, "ego": evaluate(run_dir, ego_mode),
            "collab": evaluate(run_dir, mode)}


def _cpu_name():
    """The CPU model from /proc/cpuinfo (Linux), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else (platform.processor() or "CPU")


def machine_line():
    """CPU / GPU, core count, Python, torch and the git commit."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = "unknown"
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else _cpu_name()
    return (f"{device}, {os.cpu_count()} logical CPUs ({torch.get_num_threads()} torch threads), "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}, torch {torch.__version__}, "
            f"commit {commit}")


def _aps(result):
    return [result["gs"][k] for k in AP_KEYS] + [result["ngs"][k] for k in AP_KEYS]


def _bytes_cell(result):
    volume = result["gs"].get("comm_bytes_per_agent", 0.0)
    log2 = result["gs"].get("comm_log2_bytes")
    return "0" if not volume else f"{volume:,.0f} (2^{log2:.1f})"


def table_rows(rows):
    """Markdown rows: ego-only and the method's fusion per method, then the verdicts."""
    lines = ["| method | evaluated as | AP30 | AP50 | AP70 | AP30 (frame order) | AP50 (frame order) "
             "| AP70 (frame order) | trainable params | bytes / collaborator / frame | latency ms / frame "
             "| epochs (train s) |", "|---|---|" + "---|" * 10]
    verdicts = []
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | failed: {r['error']} |" + " |" * 10)
            verdicts.append(f"- {r['method']}: did not run to the end ({r['error']}).")
            continue
        for label, res in ((f"ego only (-f {r['ego_mode']})", r["ego"]), (f"{r['mode']} (-f {r['mode']})", r["collab"])):
            aps = " | ".join(f"{v:.3f}" for v in _aps(res))
            lines.append(f"| {r['method']} | {label} | {aps} | {r['params']:,} | {_bytes_cell(res)} "
                         f"| {res['gs'].get('infer_ms_per_frame', float('nan')):.1f} "
                         f"| {r['epochs']} ({r['train_s']:.0f}) |")
        gain = [c - e for c, e in zip(_aps(r["collab"])[:3], _aps(r["ego"])[:3])]
        word = "beats" if gain[1] > 0 else ("ties with" if gain[1] == 0 else "does NOT beat")
        verdicts.append(f"- {r['method']}: {r['mode']} fusion {word} ego-only at AP50 (global sort; "
                        f"AP30/50/70 change {gain[0]:+.4f} / {gain[1]:+.4f} / {gain[2]:+.4f}).")
    return lines, verdicts


def write_results(rows, opt, argv, path):
    """docs/results.md: the table, what each column means, the verdicts, machine and command."""
    lines, verdicts = table_rows(rows)
    cmd = "python opencood/tools/benchmark_zoo.py " + " ".join(argv)
    text = "\n".join([
        "# Collaborative-perception zoo on the synthetic world",
        "",
        f"Produced by `opencood/tools/benchmark_zoo.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
        f"Each method is a tiny CPU config (`opencood/hypes_yaml/demo/zoo/`), trained from scratch on the synthetic "
        f"world (preset `{opt.preset}`) for at most {opt.epochs} epochs or {opt.time_limit:.0f} s, then evaluated "
        "on its test split from the last checkpoint. These are smoke-scale numbers (minutes of CPU training on a "
        "few frames): they rank nothing about the real OPV2V results; they show every method runs end to end and "
        "how the communication volume compares.",
        "",
        "AP: VOC all-point AP at BEV IoU 0.3 / 0.5 / 0.7; first three with detections sorted over the whole test "
        "set (global sort), last three in the OPV2V frame order (see `utils/eval_utils.py`). Ego only: the same "
        "checkpoint with `-f no` (the ego's own input, scored on the same all-agent ground truth); early and late "
        "fusion, whose datasets have no `use_cav`, with `-f single` (the ego's input and its own ground truth, "
        "so that row is not scored on the same boxes). Bytes: mean "
        "over (frame, collaborator) pairs of what one collaborator sends to the ego (dense maps at their dtype, "
        "boxes 8 float32, points 4 float32; `docs/communication.md`), 2^x = log2 of bytes. Latency: model + "
        "post-processing per test frame at batch 1, without data loading.",
        "",
        *lines,
        "",
        "Collaboration versus ego only:",
        "",
        *verdicts,
        "",
        f"Machine: {machine_line()}.",
        "",
        f"Reproduce: `{cmd}`",
        "",
    ])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return text


def run(opt, argv=()):
    setup_logging()
    torch.set_num_threads(opt.threads)
    configs = opt.configs or sorted(glob.glob(os.path.join(ZOO, "*.yaml")))
    if not configs:
        raise SystemExit(f"no zoo configs in {ZOO}")
    ensure_world(opt.world, opt.preset, opt.frames)
    rows = []
    for src in configs:
        logger.info(f"=== {os.path.basename(src)}")
        try:
            rows.append(bench_method(src, opt))
        except Exception as err:  # one broken method must not lose the others' rows; its error is in the table
            logger.exception(f"{os.path.basename(src)} failed")
            message = " ".join(str(err).split())[:200].replace("|", "/")
            rows.append({"method": os.path.splitext(os.path.basename(src))[0], "error": message})
    text = write_results(rows, opt, list(argv), opt.out)
    logger.info(text)
    return rows


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    return run(build_parser().parse_args(argv), argv)


if __name__ == "__main__":
    main()
