"""The whole GenComm 3-stage pipeline on the synthetic world, from the command line, on a CPU or one GPU.

``make demo`` runs this on the CPU (``--preset demo``, the ``hypes_yaml/demo/gencomm`` configs);
``make demo-gpu`` = ``demo.py --device cuda --preset gpu`` runs the same pipeline on a larger world with the
``hypes_yaml/demo/gencomm_gpu`` configs (0.8 m feature cells, 128 channels, the reference's backbones and
camera input sizes), sized for one H200. Each step is the same CLI a researcher would type:
 1. ``make_synthetic.py --preset demo|gpu``                     synthetic OPV2V / OPV2V-H world
 2. ``train.py`` stage 1 for m1 (LiDAR PointPillars), m2 (camera LSS-EfficientNet), m3 (LiDAR SECOND),
    m4 (camera LSS-ResNet101), each a homogeneous collaboration base
 3. ``heal_tools.py merge_and_save`` stage-1 mX + stage-1 m1 -> stage-2 folders; ``train.py`` stage 2
    (only the new agent's message extractor is trained)
 4. ``heal_tools.py merge_and_save`` all stage-2 runs -> the inference folder
 5. ``inference.py`` static m1+mX runs (intermediate and ego-only) and
    ``inference_heter_in_order.py --use_cav [1,2,3,4]`` dynamic joining
Prints one AP table (AP30/50/70, both AP variants), the trainable parameters of each stage-2 run, the
message size per agent and the wall time of each step, and writes a BEV picture. Run folders go to
``opencood/logs/demo/`` (``opencood/logs/demo_gpu/`` for the GPU preset).

``--dataset dairv2x|v2xreal`` runs GenComm stage 1 for m1 on another format's synthetic world instead (the
datasets have their own agent types, so the heterogeneous stages are the OPV2V-H demo's):
 1. ``make_synthetic.py --format dairv2x|v2xreal --preset demo``     that format's on-disk tree
 2. ``train.py`` the format's stage-1 m1 config (:data:`DATASET_DEMOS`, demo geometry)
 3. ``inference.py`` with ``-f intermediate`` (collaboration) and ``-f no`` (ego only, same GT)
and prints ego only vs collaboration (per class and mAP for V2X-Real's three classes). Run folders go to
``opencood/logs/demo_<dataset>/``.
"""
import argparse
import glob
import logging
import os
import shutil
import subprocess
import sys
import time

import yaml

from opencood.utils.log import setup_logging

logger = logging.getLogger("opencood.tools.demo")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO_YAMLS = os.path.join(REPO, "opencood", "hypes_yaml", "demo", "gencomm")
# --preset -> (config set, run folder, DataLoader workers, trainings side by side) when the options are not given
PRESET_DEFAULTS = {"gpu": (os.path.join(REPO, "opencood", "hypes_yaml", "demo", "gencomm_gpu"),
                           os.path.join("opencood", "logs", "demo_gpu"), 8, 4)}
FALLBACK_DEFAULTS = (DEMO_YAMLS, os.path.join("opencood", "logs", "demo"), 2, 1)
# --dataset -> its GenComm stage-1 m1 config (demo geometry: 0.8 m pillars, slim channels; DAIR 16 epochs, V2X-Real
# 8); the paths in it start with DATASET_ROOT, which the demo replaces by --root
DATASET_DEMOS = {"dairv2x": os.path.join(REPO, "opencood", "hypes_yaml", "dairv2x", "GenComm_yamls", "demo",
                                         "stage1", "m1_att.yaml"),
                 "v2xreal": os.path.join(REPO, "opencood", "hypes_yaml", "v2xreal", "GenComm_yamls", "tiny",
                                         "stage1", "m1_att.yaml")}
DATASET_ROOT = "dataset"
PATH_KEYS = ("data_dir", "root_dir", "validate_dir", "test_dir", "data_cache_dir")  # + heter.assignment_path
STEP_TIMES = []  # (step, seconds) of every CLI step, for the summary


def step_env(device):
    """Environment of the CLI steps: ``cpu`` hides every GPU, so each step runs where the demo was asked to."""
    env = dict(os.environ)
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def sh(args, log=None, env=None):
    """Run one CLI step with this interpreter; stop the demo with its output on failure."""
    cmd = [sys.executable] + args
    shown = " ".join(os.path.relpath(a, REPO) if os.path.isabs(a) else a for a in args)
    logger.info("$ " + shown)
    t0 = time.time()
    r = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    if log:
        with open(log, "a") as f:
            f.write(r.stdout)
    if r.returncode != 0:
        logger.info(r.stdout[-4000:])
        raise SystemExit(f"demo step failed ({r.returncode}): {' '.join(args)}")
    STEP_TIMES.append((shown, time.time() - t0))
    logger.info(f"  done in {STEP_TIMES[-1][1]:.0f} s")
    return r.stdout


def sh_many(arg_lists, log=None, env=None, parallel=1):
    """Run independent CLI steps, up to ``parallel`` at a time (e.g. several trainings sharing one GPU); stop
    the demo with the output of the first failing step. Outputs go to ``log`` in the order the steps were given."""
    if parallel <= 1:
        return [sh(a, log, env) for a in arg_lists]
    outputs = []
    for i in range(0, len(arg_lists), parallel):
        group = arg_lists[i:i + parallel]
        t0, procs = time.time(), []
        for args in group:
            logger.info("$ " + " ".join(os.path.relpath(a, REPO) if os.path.isabs(a) else a for a in args) + " &")
            procs.append(subprocess.Popen([sys.executable] + args, cwd=REPO, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True, env=env))
        results = [(args, p.communicate()[0], p.returncode) for args, p in zip(group, procs)]
        for args, out, rc in results:
            if log:
                with open(log, "a") as f:
                    f.write(out)
            if rc != 0:
                logger.info(out[-4000:])
                raise SystemExit(f"demo step failed ({rc}): {' '.join(args)}")
            outputs.append(out)
        STEP_TIMES.append((f"{len(group)} steps side by side: " + ", ".join(
            os.path.basename(a[a.index("--model_dir") + 1]) if "--model_dir" in a else a[0] for a, _, _ in results),
            time.time() - t0))
        logger.info(f"  done in {STEP_TIMES[-1][1]:.0f} s")
    return outputs


def fresh_run_dir(root, name, config, resume=False):
    """A new run folder holding ``config``; with ``resume`` an existing one is kept as it is (``train.py``
    continues a run folder from its last checkpoint, and is a no-op once every epoch is done)."""
    d = os.path.join(root, name)
    if resume and os.path.isfile(os.path.join(d, "config.yaml")):
        return d
    if os.path.exists(d):
        shutil.rmtree(d)
    os.makedirs(d)
    shutil.copy(config, os.path.join(d, "config.yaml"))
    return d


def read_eval(model_dir, pattern):
    """{'gs': {ap30, ap_50, ap_70}, 'ngs': {...}} from the eval yamls matching ``pattern``."""
    out = {}
    for key, prefix in (("gs", "eval_global_sort_"), ("ngs", "eval_")):
        files = [f for f in glob.glob(os.path.join(model_dir, prefix + pattern + ".yaml"))
                 if key == "gs" or "global_sort" not in f]
        if not files:
            raise SystemExit(f"no result file {prefix}{pattern}.yaml in {model_dir}")
        with open(sorted(files)[-1]) as f:
            out[key] = yaml.safe_load(f)
    return out


def gain_share(value, ego_only, homogeneous):
    """How much of the homogeneous collaboration's gain over ego-only a run recovers, e.g. '57 %'."""
    gain = homogeneous - ego_only
    return f"{100 * (value - ego_only) / gain:.0f} %" if gain > 0 else "n/a"


def trainable_params(model_dir):
    from opencood.hypes_yaml.yaml_utils import load_yaml
    from opencood.tools.train_utils import create_model
    return create_model(load_yaml(os.path.join(model_dir, "config.yaml"))).trainable_parameter_count()


def print_summary(s1, s2, final):
    """The AP table of every run (both AP variants, trainable parameters, share of the homogeneous gain) and
    the message size, from the eval files the demo's runs wrote."""
    rows = [("stage1 m1 ego only, GT of all agents (no)", read_eval(s1["m1"], "no_*"), ""),
            ("stage1 m1 ego only, ego's own GT (single)", read_eval(s1["m1"], "single*"), ""),
            ("stage1 m1 homogeneous collab (intermediate)", read_eval(s1["m1"], "intermediate*"), "")]
    for m in ("m2", "m3", "m4"):
        rows.append((f"stage2 m1+{m} (DME only)", read_eval(s2[m], "intermediate*"), f"{trainable_params(s2[m]):,}"))
    for n in (1, 2, 3, 4):
        rows.append((f"dynamic use_cav {n} ({'+'.join(['m1', 'm2', 'm3', 'm4'][:n])})",
                     read_eval(final, f"*_use_cav{n}"), ""))
    ego, homo = rows[0][1]["gs"], rows[2][1]["gs"]
    logger.info("\n| run | AP30 | AP50 | AP70 | AP30 (no gs) | AP50 (no gs) | AP70 (no gs) | trainable params "
          "| share of the homogeneous AP30 / AP50 gain |")
    logger.info("|---|---|---|---|---|---|---|---|---|")
    for name, r, params in rows:
        g, n = r["gs"], r["ngs"]
        share = " / ".join(gain_share(g[k], ego[k], homo[k]) for k in ("ap30", "ap_50")) if params else ""
        logger.info(f"| {name} | {g['ap30']:.3f} | {g['ap_50']:.3f} | {g['ap_70']:.3f} | "
              f"{n['ap30']:.3f} | {n['ap_50']:.3f} | {n['ap_70']:.3f} | {params} | {share} |")
    from opencood.hypes_yaml.yaml_utils import load_yaml
    h = load_yaml(os.path.join(final, "config.yaml"))
    a = h["postprocess"]["anchor_args"]
    hh, ww = a["H"] // a["feature_stride"], a["W"] // a["feature_stride"]
    c = h["model"]["args"]["message_extractor"]["out_ch"]
    feat_c = h["model"]["args"]["message_extractor"]["in_ch"]
    msg, feat = c * hh * ww * 4, feat_c * hh * ww * 4
    import math
    logger.info(f"\nmessage per agent: {c}x{hh}x{ww} float32 = {msg:,} bytes (log2 {math.log2(msg):.1f}); "
          f"a full {feat_c}-channel feature would be {feat:,} bytes (log2 {math.log2(feat):.1f}), "
          f"{feat // msg}x more. (At OPV2V-H geometry: 2x64x128 -> 65,536 bytes, log2 16.0.)")


def rooted_config(config, root, out_path):
    """Write ``config`` resolved (its ``_base_`` chain) to ``out_path`` with every dataset path that starts
    with :data:`DATASET_ROOT` moved under ``root`` (so ``--root`` is honoured; unchanged for the default)."""
    from opencood.hypes_yaml.yaml_utils import read_config, save_yaml
    hypes = read_config(config)

    def move(path):
        if isinstance(path, str) and (path == DATASET_ROOT or path.startswith(DATASET_ROOT + "/")):
            return os.path.join(root, path[len(DATASET_ROOT):].lstrip("/"))
        return path
    for key in PATH_KEYS:
        if key in hypes:
            hypes[key] = move(hypes[key])
    if isinstance(hypes.get("heter"), dict) and "assignment_path" in hypes["heter"]:
        hypes["heter"]["assignment_path"] = move(hypes["heter"]["assignment_path"])
    save_yaml(hypes, out_path)
    return out_path


def dataset_rows(run_dir):
    """[(label, class name or 'all' / 'mAP', {'gs': {ap30, ap_50, ap_70}, 'ngs': {...}})] of a dataset demo run:
    ego only (``-f no``) and collaboration (``-f intermediate``); a multi-class evaluation adds one row per class."""
    rows = []
    for label, pattern in (("m1 ego only (-f no)", "no_*"), ("m1 collaboration (-f intermediate)", "intermediate*")):
        r = read_eval(run_dir, pattern)
        classes = r["gs"].get("classes") or {}
        for name in classes:
            rows.append((label, name, {v: r[v]["classes"][name] for v in ("gs", "ngs")}))
        rows.append((label, "mAP" if classes else "all", r))
    return rows


def print_dataset_summary(dataset, run_dir):
    """The ego-only vs collaboration AP table of a ``--dataset`` demo run (both AP variants)."""
    rows = dataset_rows(run_dir)
    logger.info(f"\n| {dataset} run | class | AP30 | AP50 | AP70 | AP30 (no gs) | AP50 (no gs) | AP70 (no gs) |")
    logger.info("|---|---|---|---|---|---|---|---|")
    for label, name, r in rows:
        g, n = r["gs"], r["ngs"]
        logger.info(f"| {label} | {name} | {g['ap30']:.3f} | {g['ap_50']:.3f} | {g['ap_70']:.3f} | "
                    f"{n['ap30']:.3f} | {n['ap_50']:.3f} | {n['ap_70']:.3f} |")
    ego, collab = [r["gs"] for _, name, r in rows if name in ("all", "mAP")]
    logger.info("collaboration - ego only (global sort): " + " / ".join(
        f"{k} {collab[k] - ego[k]:+.3f}" for k in ("ap30", "ap_50", "ap_70")))
    return rows


def dataset_demo(opt, logs, log, env):
    """``--dataset``: GenComm stage 1 m1 on that format's synthetic world; ego only vs collaboration."""
    w = ["--num_workers", str(opt.workers)]
    if not opt.skip_data:
        sh(["opencood/tools/make_synthetic.py", "--root", opt.root, "--format", opt.dataset, "--preset", opt.preset,
            "--workers", str(os.cpu_count() or 1)], log, env)
    src = rooted_config(os.path.abspath(opt.configs), opt.root, os.path.join(logs, f"{opt.dataset}_m1_att.yaml"))
    run = fresh_run_dir(logs, "stage1_m1", src, opt.resume)
    sh(["opencood/tools/train.py", "-y", "None", "--model_dir", run, "--skip_test"] + w, log, env)
    sh(["opencood/tools/inference.py", "--model_dir", run, "--fusion_method", "intermediate", "--save_vis",
        "--save_vis_interval", "5"] + w, log, env)
    sh(["opencood/tools/inference.py", "--model_dir", run, "--fusion_method", "no"] + w, log, env)
    rows = print_dataset_summary(opt.dataset, run)
    print_step_times()
    pics = sorted(glob.glob(os.path.join(run, "vis_*", "*.png")))
    if pics:
        logger.info(f"BEV picture: {os.path.relpath(pics[0], REPO)}")
    return rows


def print_step_times():
    logger.info("\n| step | wall time (s) |\n|---|---|")
    for step, sec in STEP_TIMES:
        logger.info(f"| {step} | {sec:.0f} |")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="dataset", help="where the synthetic dataset is written")
    p.add_argument("--logs", default=None, help="run folders (default: opencood/logs/demo, or demo_gpu for gpu)")
    p.add_argument("--preset", default="demo", help="make_synthetic.py preset (demo: CPU; gpu: one H200)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where every step runs")
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader workers, shared by the runs of a stage (default 2; 8 for gpu)")
    p.add_argument("--parallel", type=int, default=None,
                   help="trainings of one stage run side by side (default 1; 4 for gpu: the four stage-1 bases, "
                        "then the three stage-2 runs, share the GPU)")
    p.add_argument("--configs", default=None,
                   help="YAML set to run (stage1/mX_att.yaml, stage2/m1mX_att.yaml, stage2/m1m2m3m4_att_infer.yaml);"
                        " default demo/gencomm, or demo/gencomm_gpu for --preset gpu")
    p.add_argument("--dataset", default="opv2v", choices=("opv2v",) + tuple(sorted(DATASET_DEMOS)),
                   help="opv2v: the 3-stage GenComm pipeline (default); dairv2x, v2xreal: GenComm stage 1 m1 on "
                        "that format's synthetic world, ego only vs collaboration (--configs: a stage-1 YAML)")
    p.add_argument("--skip-data", action="store_true", help="use the dataset already under --root")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted demo: keep the dataset and the run folders under --logs, continue "
                        "each training from its last checkpoint (done ones are skipped), redo the evaluations")
    opt = p.parse_args(argv)
    configs, logs, workers, parallel = PRESET_DEFAULTS.get(opt.preset, FALLBACK_DEFAULTS)
    if opt.dataset != "opv2v":
        configs, logs = DATASET_DEMOS[opt.dataset], os.path.join("opencood", "logs", f"demo_{opt.dataset}")
    opt.configs = opt.configs or configs
    opt.logs = opt.logs or logs
    opt.workers = workers if opt.workers is None else opt.workers
    opt.parallel = max(1, parallel if opt.parallel is None else opt.parallel)
    if opt.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            p.error("--device cuda: torch sees no CUDA device (install a CUDA build of torch, see README)")
    return opt


def main(argv=None):
    opt = parse_args(argv)
    cfg = os.path.abspath(opt.configs)
    env = step_env(opt.device)
    t_start = time.time()
    logs = os.path.join(REPO, opt.logs)
    os.makedirs(logs, exist_ok=True)
    log = os.path.join(logs, "demo.log")
    if opt.resume and os.path.isdir(opt.root):
        opt.skip_data = True
    open(log, "a" if opt.resume else "w").close()
    setup_logging(logs, "demo.log")  # the demo's own lines, between the steps' outputs appended by sh()
    w = ["--num_workers", str(opt.workers)]
    w_shared = ["--num_workers", str(max(1, opt.workers // opt.parallel))]  # workers of each run side by side
    if opt.dataset != "opv2v":
        dataset_demo(opt, logs, log, env)
        logger.info(f"demo finished in {(time.time() - t_start) / 60:.1f} min; full log: {os.path.relpath(log, REPO)}")
        return

    if not opt.skip_data:
        sh(["opencood/tools/make_synthetic.py", "--root", opt.root, "--preset", opt.preset,
            "--workers", str(os.cpu_count() or 1)], log, env)
        from opencood.hypes_yaml.yaml_utils import load_yaml
        cache = load_yaml(os.path.join(cfg, "stage1", "m1_att.yaml")).get("data_cache_dir")  # through _base_
        if cache and os.path.isdir(os.path.join(REPO, cache)):  # entries of the old files would never be read
            shutil.rmtree(os.path.join(REPO, cache))

    # ---- stage 1: one homogeneous collaboration base per agent type ---------------------------
    s1 = {m: fresh_run_dir(logs, f"stage1_{m}", os.path.join(cfg, "stage1", f"{m}_att.yaml"), opt.resume)
          for m in ("m1", "m2", "m3", "m4")}
    sh_many([["opencood/tools/train.py", "-y", "None", "--model_dir", d, "--skip_test"] + w_shared
             for d in s1.values()], log, env, opt.parallel)
    sh(["opencood/tools/inference.py", "--model_dir", s1["m1"], "--fusion_method", "intermediate", "--save_vis",
        "--save_vis_interval", "5"] + w, log, env)
    sh(["opencood/tools/inference.py", "--model_dir", s1["m1"], "--fusion_method", "no"] + w, log, env)
    sh(["opencood/tools/inference.py", "--model_dir", s1["m1"], "--fusion_method", "single"] + w, log, env)

    # ---- stage 2: train only the new agent's message extractor against the frozen ego -----------
    s2 = {}
    for m in ("m2", "m3", "m4"):
        s2[m] = fresh_run_dir(logs, f"stage2_m1{m}", os.path.join(cfg, "stage2", f"m1{m}_att.yaml"), opt.resume)
        if not glob.glob(os.path.join(s2[m], "net_epoch*.pth")):  # resumed: the merge is already there
            sh(["opencood/tools/heal_tools.py", "merge_and_save", s1[m], s1["m1"], s2[m]], log, env)
    sh_many([["opencood/tools/train.py", "-y", "None", "--model_dir", d, "--skip_test"] + w_shared
             for d in s2.values()], log, env, opt.parallel)
    sh_many([["opencood/tools/inference.py", "--model_dir", d, "--fusion_method", "intermediate"] + w_shared
             for d in s2.values()], log, env, opt.parallel)

    # ---- stage 3: merge everything, static and dynamic inference --------------------------------
    final = fresh_run_dir(logs, "final_m1m2m3m4", os.path.join(cfg, "stage2", "m1m2m3m4_att_infer.yaml"))
    sh(["opencood/tools/heal_tools.py", "merge_and_save", s2["m2"], s2["m3"], s2["m4"], final], log, env)
    sh(["opencood/tools/inference_heter_in_order.py", "--model_dir", final, "--use_cav", "[1,2,3,4]"] + w, log, env)

    print_summary(s1, s2, final)
    print_step_times()
    pics = sorted(glob.glob(os.path.join(s1["m1"], "vis_*", "*.png")))
    if pics:
        logger.info(f"BEV picture: {os.path.relpath(pics[0], REPO)}")
    logger.info(f"demo finished in {(time.time() - t_start) / 60:.1f} min; full log: {os.path.relpath(log, REPO)}")


if __name__ == "__main__":
    main()
