"""Measure speed and memory: data pipeline, training step, inference latency, AP evaluation.

``python opencood/tools/benchmark.py -y CONFIG.yaml [--parts data,train,infer,eval] [--workers 2] [--amp]``

- data:  DataLoader samples/s of the config's training dataset with N workers (what the model would see).
- train: seconds per optimizer step of the trainer's own ``train_step`` with the batch already on the device
         (fp32; with --amp also AMP, through the GradScaler for fp16),
         and seconds per iteration end to end through the DataLoader, i.e. the device-busy fraction.
- infer: latency per frame at batch 1 from loaded tensors to boxes after NMS.
- eval:  AP evaluation of 2,000 synthetic frames (both AP variants, IoU 0.3/0.5/0.7) on one core.
- eval_api: the same frames through the per-frame API users' scripts call (``calculate_tp_fp`` per frame and
         threshold, then ``eval_final_results`` writing both YAMLs); ``eval_api_ref`` adds the reference-style
         shapely baseline of ``utils/eval_benchmark.py`` (about a minute) and the speed-up over it.
- peak:  the machine's dense matrix-multiply rate (TF32 and bf16 on CUDA, fp32 on CPU), the roofline ceiling.
The train part also counts the FLOPs of one step (forward + backward, ``torch.utils.flop_counter``) and reports
the achieved TFLOP/s next to the step time. ``--data_root DIR`` points the config at any OPV2V-format folder
(``DIR/train``, ``DIR/validate``, ``DIR/test``), so different configs can be timed on the same data.
Peak memory: CUDA max allocated on GPU, process max RSS on CPU. Results print as a Markdown table row set
and, with --json FILE, are saved for docs/benchmarks.md. Nothing here is asserted by tests.
"""
import argparse
import json
import logging
import os
import platform
import resource
import statistics
import sys
import time

import torch

from opencood.hypes_yaml.yaml_utils import add_config_args, load_yaml
from opencood.tools.loaders import build_loader
from opencood.utils.log import setup_logging

logger = logging.getLogger("opencood.tools.benchmark")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_mb(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_data(dataset, workers, batch_size, n_batches):
    loader = build_loader(dataset, "train", batch_size, workers)
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    t0, n = time.perf_counter(), 0
    for _ in range(n_batches):
        try:
            b = next(it)
        except StopIteration:
            it = iter(loader)
            b = next(it)
        n += 0 if b is None else int(b["ego"]["record_len"].shape[0])
    dt = time.perf_counter() - t0
    return {"data_samples_per_s": n / dt, "data_workers": workers}


def sync_sites(step, batch):
    """Host-device synchronisations of one CUDA step: count and the code line that caused each.

    Uses ``torch.cuda.set_sync_debug_mode('warn')``; each site is the innermost frame inside opencood.
    """
    import traceback
    import warnings
    sites = []

    def show(message, category, filename, lineno, file=None, line=None):
        if "synchroniz" not in str(message):
            return
        frames = [f for f in traceback.extract_stack()[:-1] if "opencood" in f.filename and
                  not f.filename.endswith("benchmark.py")]
        f = frames[-1] if frames else None
        sites.append(f"{os.path.relpath(f.filename)}:{f.lineno} {f.line}" if f else "(outside opencood)")

    old_show = warnings.showwarning
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = show
            step(batch)
            torch.cuda.synchronize()
    finally:
        torch.cuda.set_sync_debug_mode("default")
        warnings.showwarning = old_show
    return sites


def _train_context(hypes, device, amp, channels_last, compile_opt):
    """Model, loss, optimizer, GradScaler and autocast exactly as the trainer sets them up."""
    from opencood.tools import train_utils, trainer
    model = train_utils.create_model(hypes).to(device).train()
    model.model_train_init()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_utils.compile_from_args(model, compile_opt)
    return trainer.make_train_context(hypes, model, train_utils.create_loss(hypes), device, amp)


def _step_seconds(step, batch, n, device):
    """Wall time of each of ``n`` calls ``step(batch)``, the device drained after each."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        step(batch)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def _profile_step(step, batch, device, path, title):
    """Append a torch.profiler table of one step (and, on CUDA, its host-device syncs) to ``path``."""
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        step(batch)
        _sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    with open(path, "a") as f:
        f.write(title + "\n")
        f.write(prof.key_averages().table(sort_by=key, row_limit=25) + "\n")
        if device.type == "cuda":
            sites = sync_sites(step, batch)
            f.write(f"host-device syncs in one step: {len(sites)}\n")
            for site in sorted(set(sites), key=sites.index):
                f.write(f"  {sites.count(site)} x {site}\n")


def _loader_iter_seconds(step, loader, dataset, device, n_steps):
    """Seconds per iteration end to end: loading, host-to-device copy, device pre-processing, step."""
    from opencood.tools import train_utils
    t0, k = time.perf_counter(), 0
    for b in loader:
        if b is None:
            continue
        step(dataset.device_preprocess(train_utils.to_device(b, device)))
        k += 1
        if k >= n_steps:
            break
    _sync(device)
    return (time.perf_counter() - t0) / max(k, 1)


def step_flops(step, batch):
    """FLOPs of one call ``step(batch)`` (matmuls and convolutions, forward and backward), by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter:
        step(batch)
    return counter.get_total_flops()


def bench_peak(device, n=4096, reps=10):
    """Dense matmul TFLOP/s of ``device``: {'peak_tflops_tf32', 'peak_tflops_bf16'} on CUDA, fp32 on CPU."""
    dtypes = {"tf32": torch.float32, "bf16": torch.bfloat16} if device.type == "cuda" else {"fp32": torch.float32}
    out, old = {}, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        for name, dtype in dtypes.items():
            a = torch.randn(n, n, device=device, dtype=dtype)
            b = torch.randn(n, n, device=device, dtype=dtype)
            a @ b
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(reps):
                a @ b
            _sync(device)
            out[f"peak_tflops_{name}"] = 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e12
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    return out


def bench_train(hypes, dataset, device, amp, n_steps, workers, batch_size, profile_path=None,
                channels_last=False, compile_opt=None):
    """Time the trainer's own :func:`opencood.tools.trainer.train_step` on one batch, then through the loader."""
    from opencood.tools import train_utils, trainer
    ctx = _train_context(hypes, device, amp, channels_last, compile_opt)
    loader = build_loader(dataset, "train", batch_size, workers, device)
    batch = next(dataset.device_preprocess(train_utils.to_device(b, device)) for b in loader if b is not None)

    def step(b):
        return trainer.train_step(ctx, b)

    warmup_s = sum(_step_seconds(step, batch, 3, device))  # includes compilation with --compile
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_s = statistics.median(_step_seconds(step, batch, n_steps, device))
    tag = "amp" if amp else "fp32"
    flops = step_flops(step, batch)
    if profile_path:
        _profile_step(step, batch, device, profile_path, f"## train step ({tag}) {hypes.get('name')}")
    iter_s = _loader_iter_seconds(step, loader, dataset, device, n_steps)
    return {f"warmup_3_steps_s_{tag}": warmup_s, f"train_step_s_{tag}": step_s, f"train_iter_s_{tag}": iter_s,
            f"device_busy_{tag}": min(1.0, step_s / iter_s), f"peak_mem_mb_{tag}": _peak_mb(device),
            f"train_step_tflop_{tag}": flops / 1e12, f"achieved_tflops_{tag}": flops / step_s / 1e12}


@torch.no_grad()
def bench_infer(hypes, device, n_frames):
    from opencood.data_utils.datasets import build_dataset
    from opencood.tools import inference_utils, train_utils
    dataset = build_dataset(hypes, visualize=False, train=False)
    model = train_utils.create_model(hypes).to(device).eval()
    loader = build_loader(dataset, "test", device=device)
    batches = []
    for b in loader:
        if b is not None:
            batches.append(train_utils.to_device(b, device))  # raw: device pre-processing is timed below
        if len(batches) >= max(1, min(n_frames, 8)):
            break
    for b in batches[:2]:
        inference_utils.inference_intermediate_fusion(dataset.device_preprocess(dict(b, ego=dict(b["ego"]))),
                                                      model, dataset)
    times = []
    for i in range(n_frames):
        b = batches[i % len(batches)]
        _sync(device)
        t0 = time.perf_counter()
        inference_utils.inference_intermediate_fusion(dataset.device_preprocess(dict(b, ego=dict(b["ego"]))),
                                                      model, dataset)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return {"infer_latency_ms": 1000 * statistics.median(times)}


def bench_eval():
    from opencood.utils.eval_utils import benchmark_eval
    torch.set_num_threads(1)
    benchmark_eval(n_frames=50)  # compile numba kernels outside the timing
    r = benchmark_eval(n_frames=2000)
    return {"eval_2000_frames_s": r["seconds"]}


def bench_eval_api(reference=False):
    """The HEAL-style per-frame API (3 x 2,000 ``calculate_tp_fp`` calls, then ``eval_final_results`` with both
    YAML files) on one core; with ``reference`` also the reference-style shapely baseline on the same frames."""
    from opencood.utils.eval_benchmark import benchmark_eval_api
    benchmark_eval_api(n_frames=50)  # compile numba kernels outside the timing
    r = benchmark_eval_api(n_frames=2000, reference=reference)
    keys = ["api_calls_s", "api_final_s", "api_total_s", "api_match_s", "api_ap_s", "api_write_s", "yaml_bytes"]
    if reference:
        keys += ["ref_match_s", "ref_final_s", "ref_total_s", "ap_max_abs_diff"]
    out = {f"eval_api_{k}": r[k] for k in keys}
    if reference:
        out["eval_api_speedup_vs_ref"] = r["ref_total_s"] / r["api_total_s"]
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-y", "--hypes_yaml", default=None, help="config to benchmark (data/train/infer parts)")
    p.add_argument("--parts", default="data,train,infer,eval",
                   help="comma list of data,train,infer,eval,eval_api,eval_api_ref,peak")
    p.add_argument("--data_root", default=None,
                   help="OPV2V-format folder to read instead of the config's (DIR/train, DIR/validate, DIR/test)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch_size", type=int, default=None, help="default: the config's batch size")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--amp", action="store_true", help="also time AMP training")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--voxelize_on_device", action="store_true",
                   help="set preprocess args.on_device for every voxeliser (workers only read points)")
    p.add_argument("--channels_last", action="store_true",
                   help="convert the model to channels_last (NHWC) memory format before timing training")
    from opencood.tools.train_utils import add_compile_args
    add_compile_args(p)
    p.add_argument("--json", default=None, help="append results as one JSON line to this file")
    p.add_argument("--profile", default=None, help="append a torch.profiler table of one training step here")
    add_config_args(p)  # --set key.path=value
    opt = p.parse_args(argv)
    setup_logging()
    parts = set(opt.parts.split(","))
    device = torch.device(opt.device)
    res = {"machine": platform.node(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
           "config": opt.hypes_yaml}
    if parts & {"data", "train", "infer"}:
        from opencood.data_utils.datasets import build_dataset
        hypes = load_yaml(opt.hypes_yaml, opt, overrides=data_root_overrides(opt.data_root))
        if opt.voxelize_on_device:
            set_on_device(hypes)
            res["voxelize_on_device"] = True
        bs = opt.batch_size or int(hypes["train_params"]["batch_size"])
        res["batch_size"] = bs
        train_set = build_dataset(hypes, visualize=False, train=True)
        if "data" in parts:
            _guard(res, "data", bench_data, train_set, opt.workers, bs, max(5, opt.steps))
        if "train" in parts:
            res["channels_last"] = opt.channels_last
            res["compile"] = opt.compile
            res["compile_modules"] = opt.compile_modules
            _guard(res, "train_fp32", bench_train, hypes, train_set, device, False, opt.steps, opt.workers, bs,
                   opt.profile, opt.channels_last, opt)
            if opt.amp:
                _guard(res, "train_amp", bench_train, hypes, train_set, device, True, opt.steps, opt.workers, bs,
                       opt.profile, opt.channels_last, opt)
        if "infer" in parts:
            _guard(res, "infer", bench_infer, hypes, device, opt.steps)
    if "eval" in parts:
        _guard(res, "eval", bench_eval)
    if parts & {"eval_api", "eval_api_ref"}:
        _guard(res, "eval_api", bench_eval_api, "eval_api_ref" in parts)
    if "peak" in parts:
        _guard(res, "peak", bench_peak, device)
    _log_table(res)
    if opt.json:
        with open(opt.json, "a") as f:
            f.write(json.dumps(res) + "\n")
    return res


def data_root_overrides(root):
    """``--set`` assignments that point a config's three splits at ``root``/{train,validate,test}."""
    if root is None:
        return []
    return [f"{key}={os.path.join(root, split)}" for key, split in
            (("root_dir", "train"), ("validate_dir", "validate"), ("test_dir", "test"))]


def set_on_device(hypes):
    """Switch every SpVoxelPreprocessor of a config to device-side voxelisation."""
    sections = [hypes.get("preprocess", {})] + [s.get("preprocess", {}) for s in
                                                (hypes.get("heter") or {}).get("modality_setting", {}).values()]
    for sec in sections:
        if isinstance(sec, dict) and "args" in sec:
            sec["args"]["on_device"] = True


def _guard(res, name, fn, *args):
    """Run one measurement; a failure is recorded in the results (and printed) instead of losing the rest."""
    try:
        part = fn(*args)
        res.update(part)
        logger.info(f"part {name}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                              for k, v in part.items()))  # shown at once: kept if a later part hangs
    except Exception as e:  # a benchmark reports what broke and goes on with the other parts
        res[f"{name}_error"] = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        logger.error(f"benchmark part '{name}' failed: {res[f'{name}_error']}")


def _log_table(res):
    logger.info("| metric | value |\n|---|---|")
    for k, v in res.items():
        logger.info(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |")


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
