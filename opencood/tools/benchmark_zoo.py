"""Train and compare every method of the zoo on the synthetic world; write the results table (docs/results.md).

``python opencood/tools/benchmark_zoo.py [--budget gpu] [--configs A.yaml B.yaml] [--epochs 8] [--time_limit 240]
[--device auto|cuda|cpu] [--parallel N]``

For every zoo config (default: all ``opencood/hypes_yaml/demo/zoo/*.yaml`` present when it runs):
 1. the synthetic world is generated under ``--world`` if it is not there (``--preset``, ``--frames``);
 2. the config is pointed at that world (and at one decoded-file cache shared by every run), its
    ``train_params.epoches`` set to ``--epochs`` (validation and a checkpoint every epoch; a multistep
    learning-rate schedule scaled to it, :func:`scale_lr_steps`), and trained from
    scratch by ``train.py`` in its own process; a training still running after ``--time_limit`` seconds is
    stopped (its process group is sent SIGTERM, then SIGKILL) and evaluated from the checkpoints it has written;
 3. the checkpoint ``inference.py`` picks (the best-validation one) is evaluated twice: ego only (``-f no``:
    the ego's own features, scored on the same all-agent ground truth; ``-f single`` for early and late fusion,
    whose datasets have no ``use_cav``) and with the method's own fusion (early / late / intermediate, from the
    config's fusion dataset).
DiscoNet (a config with ``kd_flag``) needs its early-fusion teacher: ``lidar_early`` is trained first (added when
not selected) and its checkpoint becomes the student's ``kd_flag.teacher_path``.

Each method runs in a worker process (``--worker``, this file) that writes its row to
``<log_root>/rows/<method>.yaml`` and its output to ``<log_root>/logs/<method>.log``; up to ``--parallel``
workers run side by side (dependency order kept; on a GPU several small trainings share the card). The table is
rewritten after every finished method, so a run cut short still leaves a table (unfinished methods say so).
Columns: AP30/50/70 in both AP variants (global sort and the OPV2V frame order), trainable parameters, the mean
bytes each collaborator sends to the ego per frame (``utils/comm_volume.py``), inference latency (model +
post-processing per frame), epochs and training seconds; then the machine, device, dates and the command.

``--budget gpu`` = ``--preset demo --epochs 15 --time_limit 100 --parallel 6 --num_workers 2 --threads 1
--device cuda`` (flags given explicitly win): the whole zoo on the demo-size world within ~8 minutes on one GPU
(estimated from CPU step times). A multistep learning-rate schedule is scaled to the epochs.
"""
import argparse
import glob
import logging
import os
import platform
import shlex
import signal
import subprocess
import sys
import threading
import time

import torch
import yaml

from opencood.hypes_yaml.yaml_utils import load_yaml, read_config, save_yaml
from opencood.tools import inference
from opencood.tools.train_utils import create_model
from opencood.utils import checkpoint as ckpt
from opencood.utils.atomic_io import atomic_open
from opencood.utils.errors import ConfigError, exit_on_error
from opencood.utils.log import setup_logging

logger = logging.getLogger("opencood.tools.benchmark_zoo")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ZOO = os.path.join(REPO, "opencood", "hypes_yaml", "demo", "zoo")
AP_KEYS = ("ap30", "ap_50", "ap_70")
TEACHER = "lidar_early"  # the early-fusion PointPillars run whose checkpoint a kd_flag (DiscoNet) config distils
# Started first when they are selected: the teacher (others wait for it) and the slowest trainings
# (measured: LiDAR + camera LSS and V2VNet's ConvGRU iterations), so they do not finish last alone.
FIRST = (TEACHER, "lidar_camera_att", "lidar_v2vnet", "lidar_voxelnet", "lidar_v2xvit")
DEFAULTS = {"preset": "tiny", "epochs": 8, "time_limit": 240.0, "parallel": 1, "num_workers": 0, "threads": 1,
            "device": "auto"}
BUDGETS = {  # --budget NAME: defaults for the flags not given (see the module docstring)
    "gpu": {"preset": "demo", "epochs": 15, "time_limit": 100.0, "parallel": 6, "num_workers": 2, "threads": 1,
            "device": "cuda"},
}
STOP_GRACE_S = 15.0  # seconds between SIGTERM and SIGKILL of a training past its time limit


def build_parser():
    p = argparse.ArgumentParser(description="Train every zoo method on the synthetic world; write docs/results.md.")
    p.add_argument("--configs", nargs="*", default=None, help="zoo YAMLs (default: every demo/zoo/*.yaml)")
    p.add_argument("--budget", choices=tuple(BUDGETS), default=None,
                   help="defaults of the flags below for a machine (gpu: one GPU, ~16 cores)")
    p.add_argument("--world", default=os.path.join("opencood", "logs", "zoo", "world"),
                   help="synthetic world root (generated when missing)")
    p.add_argument("--preset", default=None, help="synthetic-world preset when it is generated (default tiny)")
    p.add_argument("--frames", type=int, default=None, help="frames per scenario of a generated world")
    p.add_argument("--epochs", type=int, default=None, help="training epochs per method (default 8)")
    p.add_argument("--time_limit", type=float, default=None,
                   help="training seconds per method; a training past it is stopped (default 240)")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default=None,
                   help="where trainings and evaluations run (auto: cuda when available)")
    p.add_argument("--parallel", type=int, default=None, help="methods trained side by side (default 1)")
    p.add_argument("--num_workers", type=int, default=None, help="DataLoader workers of each run (default 0)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of each run (default 1)")
    p.add_argument("--log_root", default=os.path.join("opencood", "logs", "zoo"), help="run folders go here")
    p.add_argument("--out", default=os.path.join("docs", "results.md"), help="the table (markdown)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: run this one config
    p.add_argument("--teacher_path", default=None, help=argparse.SUPPRESS)  # internal: kd_flag.teacher_path
    return p


def resolve_options(opt):
    """Fill the flags not given from ``--budget`` (if any), then from the plain defaults; check them.

    Raises:
        ConfigError: ``--device cuda`` without a CUDA device, or non-positive counts (one line).
    """
    budget = BUDGETS.get(opt.budget, {})
    for key, default in DEFAULTS.items():
        if getattr(opt, key) is None:
            setattr(opt, key, budget.get(key, default))
    if opt.device == "auto":
        opt.device = "cuda" if torch.cuda.is_available() else "cpu"
    if opt.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is visible (use --device cpu)")
    for key in ("epochs", "parallel", "threads"):
        if getattr(opt, key) < 1:
            raise ConfigError(f"--{key}: must be >= 1, got {getattr(opt, key)}")
    if opt.time_limit <= 0 or opt.num_workers < 0:
        raise ConfigError("--time_limit must be > 0 and --num_workers >= 0")
    return opt


def child_env(opt):
    """Environment of the worker and training processes: ``cpu`` hides every GPU; CPU threads per run."""
    env = dict(os.environ, OMP_NUM_THREADS=str(opt.threads), MKL_NUM_THREADS=str(opt.threads))
    if opt.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def ensure_world(root, preset, frames):
    """Generate the synthetic world under ``root`` unless ``root/OPV2V/train`` exists (all CPU cores)."""
    if os.path.isdir(os.path.join(root, "OPV2V", "train")):
        return
    from opencood.data_utils.synthetic import generate
    logger.info(f"generating the synthetic world ({preset}) in {root}")
    generate(root, preset=preset, seed=0, workers=os.cpu_count() or 1, progress=False,
             **({"frames": frames} if frames else {}))


def world_size(root):
    """``{split: (scenarios, frames)}`` of the OPV2V world under ``root`` (frames = the first agent's YAMLs)."""
    out = {}
    for split in ("train", "validate", "test"):
        scenarios = sorted(glob.glob(os.path.join(root, "OPV2V", split, "*", "")))
        frames = 0
        for scenario in scenarios:
            agents = sorted(glob.glob(os.path.join(scenario, "*", "")))
            frames += len(glob.glob(os.path.join(agents[0], "*.yaml"))) if agents else 0
        out[split] = (len(scenarios), frames)
    return out


def stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def world_config(src, world, out_dir, epochs, cache_dir=None, teacher_path=None):
    """The zoo config ``src`` (with its bases) pointed at ``world``, ``epochs`` epochs with validation and a
    checkpoint every epoch, the shared decode cache and (DiscoNet) the teacher; written to ``out_dir``.

    Raises:
        ConfigError: a ``kd_flag`` config without ``teacher_path``.
    """
    h = read_config(src)
    for key in ("root_dir", "validate_dir", "test_dir"):
        h[key] = h[key].replace("dataset", world, 1)
    if isinstance(h.get("heter"), dict) and h["heter"].get("assignment_path"):
        h["heter"]["assignment_path"] = h["heter"]["assignment_path"].replace("dataset", world, 1)
    scale_lr_steps(h, epochs)
    h["train_params"].update(epoches=epochs, eval_freq=1, save_freq=1)
    if cache_dir:
        h["data_cache_dir"] = cache_dir
    if "kd_flag" in h:
        if not teacher_path:
            raise ConfigError(f"{src}: kd_flag needs the teacher's checkpoint: run it with {TEACHER}.yaml "
                              f"(benchmark_zoo trains that first)")
        h["kd_flag"]["teacher_path"] = os.path.abspath(teacher_path)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, os.path.basename(src))
    save_yaml(h, path)
    return path


def scale_lr_steps(h, epochs):
    """A multistep schedule's ``step_size`` epochs scaled from the config's ``epoches`` to ``epochs`` (rounded,
    at least 1), so the learning rate drops at the same fraction of a longer or shorter training."""
    sched, written = h.get("lr_scheduler") or {}, int(h["train_params"]["epoches"])
    if sched.get("core_method") == "multistep" and sched.get("step_size") is not None and written > 0 \
            and epochs != written:
        steps = sched["step_size"] if isinstance(sched["step_size"], list) else [sched["step_size"]]
        sched["step_size"] = [max(1, round(int(e) * epochs / written)) for e in steps]


def needs_teacher(src):
    return "kd_flag" in read_config(src)


# --- one method (the worker process) ------------------------------------------------------------------


def stop_process_group(proc):
    """SIGTERM the process group of ``proc`` (started with ``start_new_session``), SIGKILL after a grace time."""
    for sig, wait in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def train_limited(cfg, log_root, opt, env):
    """``train.py -y cfg`` in its own process group, stopped after ``opt.time_limit`` seconds.

    Returns:
        (run folder, last epoch checkpointed, training seconds, stopped by the time limit).
    """
    os.makedirs(log_root, exist_ok=True)
    cmd = [sys.executable, os.path.join(REPO, "opencood", "tools", "train.py"), "-y", cfg, "--log_root", log_root,
           "--num_workers", str(opt.num_workers), "--skip_test", "--seed", str(opt.seed)]
    logger.info("$ " + shlex.join(cmd))
    before = set(glob.glob(os.path.join(log_root, "*", "")))  # an earlier benchmark's runs stay where they are
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True)
    stopped = False
    try:
        rc = proc.wait(timeout=opt.time_limit)
    except subprocess.TimeoutExpired:
        stopped = True
        logger.info(f"time limit {opt.time_limit:.0f} s reached: stopping the training")
        stop_process_group(proc)
        rc = 0
    finally:
        if proc.poll() is None:
            stop_process_group(proc)
    seconds = time.time() - t0
    if rc != 0:
        raise RuntimeError(f"train.py exited with status {rc} (see the method's log)")
    runs = sorted(d for d in set(glob.glob(os.path.join(log_root, "*", ""))) - before
                  if os.path.isfile(d + "config.yaml"))
    if len(runs) != 1:
        raise RuntimeError(f"{log_root}: expected one new run folder, found {len(runs)}")
    run_dir = runs[0].rstrip(os.sep)
    last, _ = ckpt.find_checkpoint(run_dir, prefer_bestval=False)
    if not last:
        raise RuntimeError(f"no checkpoint within the {opt.time_limit:.0f} s time limit")
    return run_dir, last, seconds, stopped


def evaluate(run_dir, mode, num_workers):
    """Run inference with ``-f mode``; returns the two eval YAMLs ``{'gs': {...}, 'ngs': {...}}``."""
    inference.run(inference.build_parser().parse_args(["--model_dir", run_dir, "-f", mode,
                                                        "--num_workers", str(num_workers)]))
    out = {}
    for key, prefix in (("gs", "eval_global_sort_"), ("ngs", "eval_")):
        files = sorted(glob.glob(os.path.join(run_dir, f"{prefix}{mode}_*.yaml")), key=os.path.getmtime)
        with open(files[-1]) as f:
            out[key] = yaml.safe_load(f)
    return out


def bench_method(src, opt):
    """Train + evaluate one zoo config (in this process); returns its row dict."""
    name = stem(src)
    root = os.path.abspath(opt.log_root)
    cfg = world_config(src, os.path.abspath(opt.world), os.path.join(root, "configs"), opt.epochs,
                       os.path.join(root, "decode_cache"), opt.teacher_path)
    hypes = load_yaml(cfg)
    mode = inference.dataset_fusion(hypes)
    params = create_model(hypes).trainable_parameter_count()
    run_dir, epochs, seconds, stopped = train_limited(cfg, os.path.join(root, "runs", name), opt, child_env(opt))
    ego_mode = "no" if mode == "intermediate" else "single"  # the early/late datasets have no use_cav
    evaluated, path = ckpt.find_checkpoint(run_dir)
    return {"method": name, "mode": mode, "ego_mode": ego_mode, "params": params, "epochs": epochs,
            "stopped": stopped, "train_s": seconds, "run_dir": run_dir, "checkpoint": path,
            "evaluated_epoch": evaluated, "device": "cuda" if torch.cuda.is_available() else "cpu",
            "ego": evaluate(run_dir, ego_mode, opt.num_workers), "collab": evaluate(run_dir, mode, opt.num_workers)}


def row_path(log_root, name):
    return os.path.join(log_root, "rows", f"{name}.yaml")


def run_worker(opt):
    """``--worker CONFIG``: one method; its row (or its error) goes to ``rows/<method>.yaml``."""
    setup_logging()
    torch.set_num_threads(opt.threads)
    name = stem(opt.worker)
    try:
        row = bench_method(opt.worker, opt)
    except Exception as err:  # the row says why; the scheduler goes on with the other methods
        logger.exception(f"{name} failed")
        row = {"method": name, "error": " ".join(str(err).split())[:200].replace("|", "/")}
    os.makedirs(os.path.dirname(row_path(opt.log_root, name)), exist_ok=True)
    save_yaml(row, row_path(opt.log_root, name))
    return row


# --- the scheduler (the main process) -------------------------------------------------------------------


def plan(configs):
    """Order of the methods and their dependencies: ``([config paths], {method: teacher method})``.

    A ``kd_flag`` config depends on :data:`TEACHER` (added from the zoo folder when not selected); the
    teacher and the slow trainings of :data:`FIRST` start first, the rest keep the given order.

    Raises:
        ConfigError: a kd_flag config is selected and the teacher config does not exist.
    """
    configs = list(dict.fromkeys(os.path.abspath(c) for c in configs))
    deps = {stem(c): TEACHER for c in configs if needs_teacher(c)}
    if deps and TEACHER not in {stem(c) for c in configs}:
        teacher = os.path.join(ZOO, f"{TEACHER}.yaml")
        if not os.path.isfile(teacher):
            raise ConfigError(f"{', '.join(deps)}: the teacher config {teacher} is missing")
        configs.insert(0, teacher)
    rank = {name: i for i, name in enumerate(FIRST)}
    ordered = sorted(configs, key=lambda c: rank.get(stem(c), len(FIRST)))  # stable: given order otherwise
    return ordered, deps


def read_row(log_root, name, rc):
    path = row_path(log_root, name)
    if os.path.isfile(path):
        with open(path) as f:
            return yaml.safe_load(f)
    return {"method": name, "error": f"worker exited with status {rc} before writing its row "
                                     f"(see {os.path.join(log_root, 'logs', name + '.log')})"}


def schedule(configs, opt, on_change):
    """Run every method's worker, up to ``opt.parallel`` at a time, teachers before their students.

    Args:
        configs: zoo YAML paths (see :func:`plan`).
        on_change: called with ``{method: row | None}`` (None = not finished) after every finished method.

    Returns:
        ``{method: row}`` in plan order (rows of methods never finished say so).
    """
    ordered, deps = plan(configs)
    rows = {stem(c): None for c in ordered}
    waiting, running = list(ordered), {}
    log_root = os.path.abspath(opt.log_root)
    os.makedirs(os.path.join(log_root, "logs"), exist_ok=True)
    os.makedirs(os.path.join(log_root, "rows"), exist_ok=True)
    env = child_env(opt)
    passthrough = ["--world", os.path.abspath(opt.world), "--log_root", log_root, "--epochs", str(opt.epochs),
                   "--time_limit", str(opt.time_limit), "--device", opt.device, "--num_workers",
                   str(opt.num_workers), "--threads", str(opt.threads), "--seed", str(opt.seed)]
    try:
        while waiting or running:
            for src in list(waiting):
                if len(running) >= opt.parallel:
                    break
                name, teacher = stem(src), deps.get(stem(src))
                extra = []
                if teacher is not None:
                    if rows[teacher] is None:
                        continue  # the teacher is still training
                    if "error" in rows[teacher]:
                        rows[name] = {"method": name, "error": f"its teacher {teacher} failed"}
                        waiting.remove(src)
                        on_change(rows)
                        continue
                    extra = ["--teacher_path", rows[teacher]["checkpoint"]]
                if os.path.exists(row_path(log_root, name)):  # an earlier benchmark's row of this method
                    os.remove(row_path(log_root, name))
                log = open(os.path.join(log_root, "logs", f"{name}.log"), "w")
                cmd = [sys.executable, os.path.abspath(__file__), "--worker", src] + passthrough + extra
                logger.info(f"start {name} (log {os.path.relpath(log.name)})")
                running[name] = (subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                  start_new_session=True), log, time.time())
                waiting.remove(src)
            for name, (proc, log, t0) in list(running.items()):
                if proc.poll() is None:
                    continue
                log.close()
                rows[name] = read_row(log_root, name, proc.returncode)
                del running[name]
                state = "failed: " + rows[name]["error"] if "error" in rows[name] else "done"
                logger.info(f"{name} {state} after {time.time() - t0:.0f} s")
                on_change(rows)
            time.sleep(0.5)
    finally:
        for proc, log, _ in running.values():  # interrupted: stop the workers we started, by their group
            stop_process_group(proc)
            log.close()
    return rows


# --- the table -------------------------------------------------------------------------------------------


def _cpu_name():
    """The CPU model from /proc/cpuinfo (Linux), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else (platform.processor() or "CPU")


def machine_line(device):
    """Device (GPU name or CPU model), core count, OS, Python, torch and the git commit."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True).stdout.strip() or "unknown"
    except OSError:
        commit = "unknown"
    where = f"{torch.cuda.get_device_name(0)} (cuda)" if device == "cuda" else f"CPU only ({_cpu_name()})"
    return (f"{where}; host CPU {_cpu_name()}, {os.cpu_count()} logical CPUs; {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}, torch {torch.__version__}, commit {commit}")


def _aps(result):
    return [result["gs"][k] for k in AP_KEYS] + [result["ngs"][k] for k in AP_KEYS]


def _bytes_cell(result):
    volume = result["gs"].get("comm_bytes_per_agent", 0.0)
    log2 = result["gs"].get("comm_log2_bytes")
    return "0" if not volume else f"{volume:,.0f} (2^{log2:.1f})"


def table_rows(rows):
    """Markdown rows: ego-only and the method's fusion per method, then the verdicts.

    Args:
        rows: row dicts; ``{'method', 'error'}`` for a failed one, ``{'method', 'pending': True}`` for one that
            has not finished.
    """
    lines = ["| method | evaluated as | AP30 | AP50 | AP70 | AP30 (frame order) | AP50 (frame order) "
             "| AP70 (frame order) | trainable params | bytes / collaborator / frame | latency ms / frame "
             "| epochs (train s) |", "|---|---|" + "---|" * 10]
    verdicts = []
    for r in rows:
        if r.get("pending"):
            lines.append(f"| {r['method']} | not finished when this table was written |" + " |" * 10)
            verdicts.append(f"- {r['method']}: not finished when this table was written.")
            continue
        if "error" in r:
            lines.append(f"| {r['method']} | failed: {r['error']} |" + " |" * 10)
            verdicts.append(f"- {r['method']}: did not run to the end ({r['error']}).")
            continue
        trained = f"{r['epochs']}{' (time limit)' if r.get('stopped') else ''}"
        for label, res in ((f"ego only (-f {r['ego_mode']})", r["ego"]), (f"{r['mode']} (-f {r['mode']})", r["collab"])):
            aps = " | ".join(f"{v:.3f}" for v in _aps(res))
            lines.append(f"| {r['method']} | {label} | {aps} | {r['params']:,} | {_bytes_cell(res)} "
                         f"| {res['gs'].get('infer_ms_per_frame', float('nan')):.1f} "
                         f"| {trained} ({r['train_s']:.0f}) |")
        gain = [c - e for c, e in zip(_aps(r["collab"])[:3], _aps(r["ego"])[:3])]
        word = "beats" if gain[1] > 0 else ("ties with" if gain[1] == 0 else "does NOT beat")
        verdicts.append(f"- {r['method']}: {r['mode']} fusion {word} ego-only at AP50 (global sort; "
                        f"AP30/50/70 change {gain[0]:+.4f} / {gain[1]:+.4f} / {gain[2]:+.4f}).")
    return lines, verdicts


def write_results(rows, opt, argv, path, started, finished=None):
    """docs/results.md (atomically): the setup as run, the table, the verdicts, machine, dates and command."""
    lines, verdicts = table_rows(rows)
    cmd = "python opencood/tools/benchmark_zoo.py " + shlex.join(argv)
    size = world_size(opt.world)
    world = ", ".join(f"{split} {s} scenarios / {f} frames" for split, (s, f) in size.items())
    fmt = "%Y-%m-%d %H:%M:%S UTC"
    when = (f"started {time.strftime(fmt, time.gmtime(started))}, "
            + (f"finished {time.strftime(fmt, time.gmtime(finished))} ({finished - started:.0f} s)"
               if finished else f"written {time.strftime(fmt, time.gmtime())} while still running"))
    text = "\n".join([
        "# Collaborative-perception zoo on the synthetic world",
        "",
        f"Produced by `opencood/tools/benchmark_zoo.py` ({when}). Each method is a small zoo config "
        f"(`opencood/hypes_yaml/demo/zoo/`), trained from scratch on the synthetic world at `{opt.world}` "
        f"(preset `{opt.preset}` when generated; {world}) for {opt.epochs} epochs or until {opt.time_limit:.0f} s "
        f"of training (`(time limit)` marks a training stopped there; multistep learning-rate steps scaled to "
        f"the epochs), on `{opt.device}`, {opt.parallel} "
        f"training(s) side by side with {opt.num_workers} DataLoader worker(s) and {opt.threads} CPU thread(s) "
        "each; evaluated on the test split from the best-validation checkpoint. The synthetic world is small: "
        "these numbers rank nothing about the real OPV2V results; they show every method runs end to end, what "
        "collaboration adds on this world, and how the communication volume compares.",
        "",
        "AP: VOC all-point AP at BEV IoU 0.3 / 0.5 / 0.7; first three with detections sorted over the whole test "
        "set (global sort), last three in the OPV2V frame order (see `utils/eval_utils.py`). Ego only: the same "
        "checkpoint with `-f no` (the ego's own input, scored on the same all-agent ground truth); early and late "
        "fusion, whose datasets have no `use_cav`, with `-f single` (the ego's input and its own ground truth, "
        "so that row is not scored on the same boxes). Bytes: mean over (frame, collaborator) pairs of what one "
        "collaborator sends to the ego (dense maps at their dtype, masked cells with their positions, boxes "
        "8 float32, points 4 float32; `docs/communication.md`), 2^x = log2 of bytes. Latency: model + "
        "post-processing per test frame at batch 1, without data loading"
        + (f", measured while up to {opt.parallel} runs shared the device (so an upper bound)."
           if opt.parallel > 1 else "."),
        "",
        *lines,
        "",
        "Collaboration versus ego only:",
        "",
        *verdicts,
        "",
        f"Machine: {machine_line(opt.device)}.",
        "",
        f"Reproduce: `{cmd}`",
        "",
    ])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_open(path, "w") as f:
        f.write(text)
    return text


def run(opt, argv=()):
    """Generate the world if needed, run every method (see :func:`schedule`), keep the table up to date.

    Returns:
        row dicts in the order of ``--configs`` (plus the teacher when it was added), failed ones with ``error``.
    """
    setup_logging()
    resolve_options(opt)
    configs = opt.configs or sorted(glob.glob(os.path.join(ZOO, "*.yaml")))
    if not configs:
        raise SystemExit(f"no zoo configs in {ZOO}")
    missing = [c for c in configs if not os.path.isfile(c)]
    if missing:
        raise ConfigError(f"--configs: no such file {missing[0]}")
    started = time.time()
    ensure_world(opt.world, opt.preset, opt.frames)
    order = [stem(c) for c in plan(configs)[0]]
    given = [stem(c) for c in configs]
    names = given + [n for n in order if n not in given]

    def table(rows, finished=None):
        listed = [rows.get(n) or {"method": n, "pending": True} for n in names]
        return write_results(listed, opt, list(argv), opt.out, started, finished)

    rows = schedule(configs, opt, table)
    logger.info(table(rows, time.time()))
    return [rows[n] for n in names]


def _exit_on_sigterm(signum, frame):
    """SIGTERM (e.g. a wall-clock limit) -> SystemExit, so the ``finally`` blocks stop the processes we started."""
    raise SystemExit(128 + signum)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    opt = build_parser().parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if main_thread else None
    try:
        if opt.worker:
            return exit_on_error(lambda: run_worker(resolve_options(opt)))
        return exit_on_error(run, opt, argv)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    main()
