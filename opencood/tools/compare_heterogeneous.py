"""Run the heterogeneous-collaboration methods through their full recipes on the synthetic world and write the
comparison in the paper's layout (docs/heterogeneous.md).

``python opencood/tools/compare_heterogeneous.py [--preset tiny|demo|gpu] [--methods GenComm BackAlign ...]
[--epochs N] [--device auto|cpu|cuda] [--world DIR] [--log_root DIR] [--out docs/heterogeneous.md] [--resume]``

Methods (:data:`RECIPES`): GenComm, BackAlign, HEAL, STAMP, CodeFilling, MPDA. Each recipe names its stage-1
bases, its merges, its stage-2 trainings and how its static (two agent types) and dynamic (agents joining one by
one) inference run. Every step is the CLI a researcher types, in its own process:
 1. ``make_synthetic.py --preset P`` when the world is missing (``--world``);
 2. ``train.py`` for each stage-1 base (a homogeneous collaboration base per agent type). Bases are shared
    between methods whose stage-1 models are the same: BackAlign, STAMP, CodeFilling and MPDA all start from
    the ``heter_model_baseline`` bases (STAMP adds its protocol model m0); GenComm and HEAL have their own;
 3. ``heal_tools.py merge_and_save`` into each stage-2 folder, then ``train.py -y None --model_dir`` (stage 2
    continues from the merged ``net_epoch1.pth``, so it trains ``--epochs`` epochs on top of it);
 4. ``heal_tools.py merge_and_save`` of the stage-2 runs into the inference folder (per-type methods);
 5. ``inference.py -f intermediate`` for the static m1+m2 / m1+m3 runs (every method with the same composition:
    ego m1, every other agent the new type, :func:`static_sets`), ``inference.py -f no`` and
    ``-f intermediate`` for the ego's stage-1 base (ego only / homogeneous), and
    ``inference_heter_in_order.py --use_cav [1,2,3,4]`` for the dynamic joining (+m2, +m2+m3, +m2+m3+m4).
A method whose recipe YAML is not shipped, or whose step fails, gets cells saying so; the script goes on.

Cost columns, per new agent type (the stage-2 model that admits that type):
 - trainable parameters: ``requires_grad`` parameters of that stage-2 model, built from its config, and of the
   same model built from the reference's full-geometry YAML (:data:`REFERENCE_ROOTS`; comparable with the
   paper's #P; nothing is trained at that geometry);
 - GFLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over one forward (batch 1, eval, no grad, on the CPU) of
   the first test frame of that run's dataset holding an agent of the new type (with the static composition of
   :func:`static_sets` when the assignment json gives none), summed over the *trained* top-level modules (the
   ones the stage-2 training moves). FLOPs are counted as FlopCounterMode counts them: 2 per multiply-add (fvcore,
   which the paper's #F probably used, counts 1 per multiply-add: divide by 2 to compare). FlopCounterMode does
   not see torchvision's ``deform_conv2d``; on the CPU our deformable convolution runs as bilinear sampling of
   the 3x3 taps plus one ``einsum`` contraction (``opencood/ops/deform_conv.py``), and the counter sees that
   contraction, i.e. the deformable convolution counts as the dense 3x3 convolution of the same shape
   (2*C_in*9*C_out*H*W); the bilinear sampling (``grid_sample``) counts 0;
 - message: bytes each collaborator sends per frame (``utils/comm_volume.py``, written by ``inference.py``);
 - added latency: ms per frame (model + post-processing, batch 1) of the static m1+mX run minus that of the
   ego's stage-1 base with its homogeneous collaboration (``-f intermediate``, same frames), and minus ego only
   (``-f no``), on the machine the script ran on.
Run folders go to ``--log_root`` (default ``opencood/logs/heterogeneous``); ``--resume`` keeps them and
continues each training from its last checkpoint.
"""
import argparse
import dataclasses
import glob
import logging
import math
import os
import shlex
import shutil
import subprocess
import sys
import time

import torch
import yaml

from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.utils.atomic_io import atomic_open
from opencood.utils.log import setup_logging

logger = logging.getLogger("opencood.tools.compare_heterogeneous")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HYPES = os.path.join(REPO, "opencood", "hypes_yaml")
METHODS = ("GenComm", "BackAlign", "HEAL", "STAMP", "CodeFilling", "MPDA")
NEW_TYPES = ("m2", "m3", "m4")
# --preset -> config roots of the three stage-1 families (relative to hypes_yaml), world preset, default epochs.
# tiny and demo run the CPU-geometry configs (demo/gencomm and the baselines' tiny/ set, which inherit the same
# demo-geometry bases) on the tiny or demo world; gpu runs the GPU demo set and the full-geometry baselines.
PRESETS = {
    "tiny": {"roots": {"gencomm": "demo/gencomm", "baselines": "opv2v/GenComm_yamls/baselines/tiny",
                       "heal": "opv2v/MoreModality/HEAL/tiny"}, "world": "tiny", "epochs": 1},
    "demo": {"roots": {"gencomm": "demo/gencomm", "baselines": "opv2v/GenComm_yamls/baselines/tiny",
                       "heal": "opv2v/MoreModality/HEAL/tiny"}, "world": "demo", "epochs": 8},
    "gpu": {"roots": {"gencomm": "demo/gencomm_gpu", "baselines": "opv2v/GenComm_yamls/baselines",
                      "heal": "opv2v/MoreModality/HEAL"}, "world": "gpu", "epochs": 10},
}


# The reference's full OPV2V-H geometry (128-channel features, 64x128 grids, the reference's backbones and image
# sizes): only its models are built (trainable parameters comparable with the paper's #P), nothing is trained.
REFERENCE_ROOTS = {"gencomm": "opv2v/GenComm_yamls/gencomm", "baselines": "opv2v/GenComm_yamls/baselines",
                   "heal": "opv2v/MoreModality/HEAL"}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One method's recipe. Config references are ``(family, path under that family's root)``; run references
    are ``'s1:<name>'`` (a stage-1 base of ``stage1``), ``'s2:<name>'`` (a stage-2 training of ``stage2``) or
    ``'final:<name>'`` (a merged inference folder of ``final``, not trained).

    Attributes:
        name: method name (a row of the tables).
        stage1: {base name: config ref} (``heter_model_baseline`` bases are shared between methods).
        stage2: {run name: (config ref, [run refs merged into it, the collaboration base last])}.
        final: {run name: (config ref, [stage-2 run refs merged, later wins])}.
        static: {'m1+m2' | 'm1+m3': run ref evaluated with ``-f intermediate``}.
        dynamic: run ref evaluated with ``inference_heter_in_order.py --use_cav [1,2,3,4]`` (None: none).
        per_type: {new agent type: run ref whose stage-2 model admits it} (parameters, FLOPs).
        ego: run ref of the ego's stage-1 base (ego-only and homogeneous rows, latency baseline).
        extra_cost: {label: run ref} further stage-2 trainings the method needs besides one per new type
            (STAMP's ego adapter m0m1), counted in the totals.
        note: one line on what the recipe does.
    """
    name: str
    stage1: dict
    stage2: dict
    final: dict
    static: dict
    dynamic: object
    per_type: dict
    ego: str
    extra_cost: dict = dataclasses.field(default_factory=dict)
    note: str = ""


def _baseline_s1(*types):
    return {m: ("baselines", f"stage1/{m}_att.yaml") for m in types}


def _retrain(method):
    """CodeFilling / MPDA: shared modules retrained for each type set over all frozen stage-1 bases (m1 last)."""
    return Recipe(
        name=method, stage1=_baseline_s1("m1", "m2", "m3", "m4"),
        stage2={"m1m2": (("baselines", f"stage2/{method}/m1m2_att.yaml"), ["s1:m2", "s1:m1"]),
                "m1m3": (("baselines", f"stage2/{method}/m1m3_att.yaml"), ["s1:m3", "s1:m1"]),
                "m1m2m3m4": (("baselines", f"stage2/{method}/m1m2m3m4_att.yaml"),
                             ["s1:m2", "s1:m3", "s1:m4", "s1:m1"])},
        final={}, static={"m1+m2": "s2:m1m2", "m1+m3": "s2:m1m3"}, dynamic="s2:m1m2m3m4",
        per_type={"m2": "s2:m1m2", "m3": "s2:m1m3", "m4": "s2:m1m2m3m4"}, ego="s1:m1",
        note="one shared module set retrained for each set of types (m1m2, m1m3, m1m2m3m4), every encoder frozen")


RECIPES = {
    "GenComm": Recipe(
        name="GenComm", stage1={m: ("gencomm", f"stage1/{m}_att.yaml") for m in ("m1", "m2", "m3", "m4")},
        stage2={f"m1{m}": (("gencomm", f"stage2/m1{m}_att.yaml"), [f"s1:{m}", "s1:m1"]) for m in NEW_TYPES},
        final={"m1m2m3m4": (("gencomm", "stage2/m1m2m3m4_att_infer.yaml"), [f"s2:m1{m}" for m in NEW_TYPES])},
        static={"m1+m2": "s2:m1m2", "m1+m3": "s2:m1m3"}, dynamic="final:m1m2m3m4",
        per_type={m: f"s2:m1{m}" for m in NEW_TYPES}, ego="s1:m1",
        note="stage 2 trains only the new type's message extractor (DME) against the frozen ego"),
    "BackAlign": Recipe(
        name="BackAlign", stage1=_baseline_s1("m1", "m2", "m3", "m4"),
        stage2={f"m1{m}": (("baselines", f"stage2/BackAlign/m1{m}_att.yaml"), [f"s1:{m}", "s1:m1"])
                for m in NEW_TYPES},
        final={"m1m2m3m4": (("baselines", "stage2/BackAlign/m1m2m3m4_att_infer.yaml"),
                            [f"s2:m1{m}" for m in NEW_TYPES])},
        static={"m1+m2": "s2:m1m2", "m1+m3": "s2:m1m3"}, dynamic="final:m1m2m3m4",
        per_type={m: f"s2:m1{m}" for m in NEW_TYPES}, ego="s1:m1",
        note="the new type's encoder, backbone and shrinker trained collaboratively through the frozen ego "
             "fusion and heads"),
    "HEAL": Recipe(
        name="HEAL", stage1={"m1": ("heal", "stage1/m1_pyramid.yaml")},
        stage2={f"{m}_single": (("heal", f"stage2/{m}_single_pyramid.yaml"), ["s1:m1"]) for m in NEW_TYPES},
        final={"m1m3": (("heal", "final_infer/m1m3.yaml"), ["s2:m3_single", "s1:m1"]),
               "m1m2": (("heal", "final_infer/m1m2.yaml"), ["s2:m2_single", "s1:m1"]),
               "m1m2m3m4": (("heal", "final_infer/m1m2m3m4.yaml"),
                            ["s2:m2_single", "s2:m3_single", "s2:m4_single", "s1:m1"])},
        static={"m1+m2": "final:m1m2", "m1+m3": "final:m1m3"}, dynamic="final:m1m2m3m4",
        per_type={m: f"s2:{m}_single" for m in NEW_TYPES}, ego="s1:m1",
        note="Pyramid-Fusion base; each new type backward-aligned alone (single-agent detector through the "
             "frozen pyramid backbone and heads)"),
    "STAMP": Recipe(
        name="STAMP", stage1=_baseline_s1("m0", "m1", "m2", "m3", "m4"),
        stage2={f"m0{m}": (("baselines", f"stage2/STAMP/m0{m}_att.yaml"), ["s1:m0", f"s1:{m}"])
                for m in ("m1",) + NEW_TYPES},
        final={"m1m2": (("baselines", "stage2/STAMP/m1m2_att_infer.yaml"), ["s2:m0m2", "s2:m0m1"]),
               "m1m3": (("baselines", "stage2/STAMP/m1m3_att_infer.yaml"), ["s2:m0m3", "s2:m0m1"]),
               "m1m2m3m4": (("baselines", "stage2/STAMP/m1m2m3m4_att_infer.yaml"),
                            ["s2:m0m2", "s2:m0m3", "s2:m0m4", "s2:m0m1"])},
        static={"m1+m2": "final:m1m2", "m1+m3": "final:m1m3"}, dynamic="final:m1m2m3m4",
        per_type={m: f"s2:m0{m}" for m in NEW_TYPES}, ego="s1:m1", extra_cost={"m1 (ego)": "s2:m0m1"},
        note="per type an adapter to the protocol model m0's space and a reverter back, trained on the frozen "
             "chains (the ego's own adapter/reverter too)"),
    "CodeFilling": _retrain("CodeFilling"),
    "MPDA": _retrain("MPDA"),
}


class StepError(Exception):
    """A recipe step that could not run (YAML not shipped, CLI step failed); its message goes into the cells."""


def config_path(preset, ref):
    """Absolute path of a recipe config ``(family, rel)`` under ``preset``'s roots (``'reference'``: the
    full-geometry YAMLs, :data:`REFERENCE_ROOTS`)."""
    family, rel = ref
    roots = REFERENCE_ROOTS if preset == "reference" else PRESETS[preset]["roots"]
    return os.path.join(HYPES, roots[family], rel)


def reference_params(recipe, ref):
    """Trainable parameters of the stage-2 model of run ``ref`` built from its full-geometry YAML."""
    from opencood.tools.train_utils import create_model
    kind, name = ref.split(":", 1)
    path = config_path("reference", (recipe.stage2 if kind == "s2" else recipe.final)[name][0])
    if not os.path.isfile(path):
        raise StepError(f"not shipped: {short(path)}")
    try:
        return create_model(load_yaml(path)).trainable_parameter_count()
    except Exception as err:  # the cell says why
        raise StepError(f"{short(path)}: {type(err).__name__}: {' '.join(str(err).split())[:160]}") from None


def recipe_configs(recipe, preset):
    """Every config path the recipe names under ``preset`` (stage 1, stage 2, final)."""
    refs = list(recipe.stage1.values()) + [c for c, _ in recipe.stage2.values()] + \
        [c for c, _ in recipe.final.values()]
    return [config_path(preset, r) for r in refs]


def short(path):
    return os.path.relpath(path, REPO) if os.path.isabs(path) else path


# --- the metric helpers (in-process, no training needed) -----------------------------------------------


def trained_modules(model):
    """Names of the top-level submodules of ``model`` holding a ``requires_grad`` parameter (what stage 2
    trains), in definition order."""
    return [name for name, child in model.named_children() if any(p.requires_grad for p in child.parameters())]


def module_flops(counts, root, name):
    """FLOPs of submodule ``root.name`` (and its children) from ``FlopCounterMode.get_flop_counts()``.

    FlopCounterMode lists a module only when its own ``forward`` ran; a container whose children are called
    directly (e.g. an ``nn.ModuleDict`` indexed in the parent's forward) is summed over its outermost
    listed descendants, so nothing is counted twice."""
    prefix = f"{root}.{name}"
    if prefix in counts:
        return sum(counts[prefix].values())
    keys = [k for k in counts if k.startswith(prefix + ".")]
    outer = [k for k in keys if not any(k != o and k.startswith(o + ".") for o in keys)]
    return sum(sum(counts[k].values()) for k in outer)


def frame_types(batch):
    """Agent types of a collated frame (``agent_modality_list`` of every agent entry), in order."""
    entries = [batch["ego"]] if "ego" in batch else list(batch.values())
    types = []
    for e in entries:
        types += list(e.get("agent_modality_list") or [])
    return types


def test_frame(hypes, want=None, max_frames=64):
    """A collated test frame of ``hypes`` at batch 1, on the CPU, device-preprocessed: the first one holding an
    agent of type ``want`` (the new type whose modules are counted) within ``max_frames``, else the first.

    Returns:
        (batch, agent types of the frame)."""
    from opencood.data_utils.datasets import build_dataset
    from opencood.tools.loaders import build_loader
    hypes = dict(hypes, validate_dir=hypes["test_dir"])
    dataset = build_dataset(hypes, visualize=False, train=False)
    loader = build_loader(dataset, "test", num_workers=0, device=torch.device("cpu"))
    first = None
    for i, batch in enumerate(loader):
        if batch is None:
            continue
        types = frame_types(batch)
        if first is None:
            first = (batch, types)
        if want is None or want in types or i + 1 >= max_frames:
            break
        batch = None
    if first is None:
        raise StepError(f"{hypes.get('_source', 'config')}: the test split has no frame")
    batch, types = first if batch is None or (want is not None and want not in frame_types(batch)) else \
        (batch, frame_types(batch))
    return dataset.device_preprocess(batch), types


def added_cost(hypes, want=None):
    """Trainable parameters and FLOPs of the trained modules of the model of ``hypes`` (a loaded config whose
    dataset paths exist), over one test frame holding an agent of type ``want`` (see :func:`test_frame`).

    Returns:
        {'params': int, 'modules': [names], 'flops': int (one forward, batch 1, eval, 2 FLOPs per
        multiply-add), 'agents': agent types of that frame}.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from opencood.tools import inference
    from opencood.tools.train_utils import create_model
    model = create_model(hypes)
    modules = trained_modules(model)
    params = model.trainable_parameter_count()
    batch, types = test_frame(hypes, want)
    mode = inference.dataset_fusion(hypes)
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:  # the model only (no post-processing)
        for content in (batch.values() if mode == "late" else [batch["ego"]]):
            model(content)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    flops = sum(module_flops(counts, root, m) for m in modules)
    return {"params": params, "modules": modules, "flops": int(flops), "agents": types}


def message_cell(result):
    """'65,536 (2^16.0)' from an eval YAML's comm fields (bytes per collaborator per frame)."""
    volume = result.get("comm_bytes_per_agent")
    if volume is None:
        return "n/a"
    if not volume:
        return "0"
    return f"{volume:,.0f} (2^{math.log2(volume):.1f})"


# --- running the recipes -------------------------------------------------------------------------------


class Runner:
    """Executes recipe steps once each (stage-1 bases shared between methods) and keeps their outcomes."""

    def __init__(self, opt):
        self.opt = opt
        self.root = os.path.abspath(opt.log_root)
        self.runs = {}  # run key -> run folder, or StepError
        self.evals = {}  # (run folder, mode) -> None or StepError
        self.env = dict(os.environ, OMP_NUM_THREADS=str(opt.threads), MKL_NUM_THREADS=str(opt.threads))
        if opt.device == "cpu":
            self.env["CUDA_VISIBLE_DEVICES"] = ""
        self.env["PYTHONPATH"] = REPO + (os.pathsep + self.env["PYTHONPATH"] if self.env.get("PYTHONPATH") else "")
        self.log = os.path.join(self.root, "steps.log")
        self.step_times = []

    # one CLI step
    def sh(self, args):
        shown = " ".join(short(a) for a in args)
        logger.info("$ " + shown)
        t0 = time.time()
        r = subprocess.run([sys.executable] + args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, env=self.env)
        with open(self.log, "a") as f:
            f.write(f"$ {shown}\n{r.stdout}\n")
        self.step_times.append((shown, time.time() - t0))
        if r.returncode != 0:
            lines = [ln.strip() for ln in r.stdout.splitlines() if ln.strip()]
            last = lines[-1] if lines else ""
            raise StepError(f"{os.path.basename(args[0])} failed ({r.returncode}): {last[:160]}")
        return r.stdout

    def world_config(self, src, out_dir, epochs):
        """``benchmark_zoo.world_config``: ``src`` pointed at the world, ``epochs`` epochs (validation and a
        checkpoint every epoch); a config with a decoded-file cache gets the one cache of this comparison."""
        from opencood.hypes_yaml.yaml_utils import read_config
        from opencood.tools.benchmark_zoo import world_config
        h = read_config(src)
        cache = os.path.join(self.root, "decode_cache") if h.get("data_cache_dir") else None
        if epochs is None:
            epochs = int(h["train_params"]["epoches"])
        return world_config(src, os.path.abspath(self.opt.world), out_dir, epochs, cache_dir=cache)

    def config(self, ref, out_dir, epochs):
        """The recipe config pointed at the world with ``epochs`` epochs, as ``out_dir/config.yaml`` (a fresh
        folder; kept as it is with ``--resume``)."""
        src = config_path(self.opt.preset, ref)
        if not os.path.isfile(src):
            raise StepError(f"not shipped: {short(src)}")
        if self.opt.resume and os.path.isfile(os.path.join(out_dir, "config.yaml")):
            return out_dir
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        tmp = os.path.join(self.root, "configs", os.path.relpath(out_dir, self.root))
        path = self.world_config(src, tmp, epochs)
        os.makedirs(out_dir)
        shutil.copy(path, os.path.join(out_dir, "config.yaml"))
        return out_dir

    def train(self, run_dir):
        self.sh(["opencood/tools/train.py", "-y", "None", "--model_dir", run_dir, "--skip_test",
                 "--num_workers", str(self.opt.num_workers)])

    def merge(self, sources, out_dir):
        if glob.glob(os.path.join(out_dir, "net_epoch*.pth")):  # resumed: merged (and maybe trained) already
            return
        self.sh(["opencood/tools/heal_tools.py", "merge_and_save"] + sources + [out_dir])

    def run(self, recipe, ref):
        """Run folder of a recipe's run reference, doing (once) the steps it needs; raises StepError."""
        kind, name = ref.split(":", 1)
        if kind == "s1":
            family, rel = recipe.stage1[name]
            key = ("s1", family, rel)  # shared between recipes naming the same base
            folder = os.path.join(self.root, "stage1", f"{family}_{os.path.splitext(os.path.basename(rel))[0]}")
        else:
            key = (kind, recipe.name, name)
            folder = os.path.join(self.root, recipe.name, f"{'stage2' if kind == 's2' else 'final'}_{name}")
        if key not in self.runs:
            try:
                self.runs[key] = self._make(recipe, kind, name, folder)
            except StepError as err:
                self.runs[key] = err
            except Exception as err:  # a bug in a step's preparation: the cells say so, the comparison goes on
                logger.exception(f"{recipe.name} {ref}")
                self.runs[key] = StepError(f"{type(err).__name__}: {' '.join(str(err).split())[:160]}")
        out = self.runs[key]
        if isinstance(out, StepError):
            raise out
        return out

    def _make(self, recipe, kind, name, folder):
        if kind == "s1":
            self.config(recipe.stage1[name], folder, self.opt.epochs)
            self.train(folder)
            return folder
        table = recipe.stage2 if kind == "s2" else recipe.final
        if name not in table:
            raise StepError(f"{recipe.name} recipe has no {kind} run {name}")
        ref, sources = table[name]
        # stage 2 continues from the merged net_epoch1.pth: epochs + 1 trains --epochs epochs on top of it; an
        # inference folder is not trained (its own epoch count kept)
        self.config(ref, folder, self.opt.epochs + 1 if kind == "s2" else None)
        dirs = []
        for src in sources:
            try:
                dirs.append(self.run(recipe, src))
            except StepError as err:
                raise StepError(f"needs {src}: {err}") from None
        self.merge(dirs, folder)
        if kind == "s2":
            self.train(folder)
        return folder

    def evaluate(self, run_dir, mode, sets=()):
        """Eval YAMLs of ``run_dir`` for ``mode`` ('intermediate', 'no' or 'in_order'), running inference once
        (``sets``: ``--set KEY=VALUE`` overrides of the evaluation)."""
        key = (run_dir, mode)
        if key not in self.evals:
            w = ["--num_workers", str(self.opt.num_workers)] + [a for kv in sets for a in ("--set", kv)]
            try:
                if mode == "in_order":
                    self.sh(["opencood/tools/inference_heter_in_order.py", "--model_dir", run_dir,
                             "--use_cav", "[1,2,3,4]"] + w)
                else:
                    self.sh(["opencood/tools/inference.py", "--model_dir", run_dir, "--fusion_method", mode] + w)
                self.evals[key] = None
            except StepError as err:
                self.evals[key] = err
        if isinstance(self.evals[key], StepError):
            raise self.evals[key]
        if mode == "in_order":
            return {n: read_eval(run_dir, f"*_use_cav{n}") for n in (1, 2, 3, 4)}
        return read_eval(run_dir, f"{mode}_*")

    def cost(self, recipe, ref, want=None):
        """added_cost of the stage-2 model of ``ref`` (its config pointed at the world) on a frame holding an
        agent of type ``want``, in this process."""
        kind, name = ref.split(":", 1)
        cfg_ref = (recipe.stage2 if kind == "s2" else recipe.final)[name][0]
        src = config_path(self.opt.preset, cfg_ref)
        if not os.path.isfile(src):
            raise StepError(f"not shipped: {short(src)}")
        path = self.world_config(src, os.path.join(self.root, "cost_configs", recipe.name), None)
        try:
            cost = added_cost(load_yaml(path), want)
            if want in NEW_TYPES and want not in cost["agents"]:  # the json gives no such agent: as evaluated
                cost = added_cost(load_yaml(path, overrides=list(static_sets(f"m1+{want}"))), want)
            return cost
        except StepError:
            raise
        except Exception as err:  # the cell says why; the comparison goes on
            raise StepError(f"cost of {short(src)}: {type(err).__name__}: {' '.join(str(err).split())[:160]}")


def read_eval(model_dir, pattern):
    """{'gs': global-sort eval YAML, 'ngs': frame-order eval YAML} of the newest files matching ``pattern``
    (in-order files, ``*_use_cavN``, are only matched by a pattern naming them)."""
    out = {}
    for key, prefix in (("gs", "eval_global_sort_"), ("ngs", "eval_")):
        files = [f for f in glob.glob(os.path.join(model_dir, prefix + pattern + ".yaml"))
                 if (key == "gs" or "global_sort" not in os.path.basename(f))
                 and ("use_cav" in pattern or "use_cav" not in os.path.basename(f))]
        if not files:
            raise StepError(f"no result file {prefix}{pattern}.yaml in {short(model_dir)}")
        with open(max(files, key=os.path.getmtime)) as f:
            out[key] = yaml.safe_load(f)
    return out


def static_sets(pair):
    """Evaluation overrides of a static pair 'm1+mX': the ego is m1 and every other agent of a test frame is mX
    (``ego_diff_cav`` with ``cav_preference {mX: 1}``), the same composition for every method. Without it the
    types come from the assignment json through each config's ``mapping_dict``, which differs between the
    methods' configs (GenComm's stage-2 configs set ``ego_diff_cav``, the baselines' do not) and, on a small
    world, can leave a test split without any agent of the new type."""
    new = pair.split("+")[1]
    return ("ego_diff_cav=true", f"heter.cav_preference={{{new}: 1.0}}")


def run_method(runner, recipe):
    """Every cell of one method: {'static': {pair: eval|err}, 'dynamic': {n: eval}|err, 'ego': ..., 'homo': ...,
    'cost': {type: cost|err}, 'extra': {label: cost|err}}."""
    row = {"name": recipe.name, "note": recipe.note}
    t0, steps0 = time.time(), len(runner.step_times)

    def attempt(fn):
        try:
            return fn()
        except StepError as err:
            logger.info(f"{recipe.name}: {err}")
            return err
        except Exception as err:  # reading a result went wrong: the cell says so, the comparison goes on
            logger.exception(f"{recipe.name}")
            return StepError(f"{type(err).__name__}: {' '.join(str(err).split())[:160]}")
    row["cost"] = {m: attempt(lambda r=ref, m=m: runner.cost(recipe, r, m)) for m, ref in recipe.per_type.items()}
    row["extra"] = {k: attempt(lambda r=ref, k=k: runner.cost(recipe, r, k.split()[0]))
                    for k, ref in recipe.extra_cost.items()}
    row["ref_params"] = {k: attempt(lambda r=ref: reference_params(recipe, r))
                         for k, ref in list(recipe.per_type.items()) + list(recipe.extra_cost.items())}
    row["ego"] = attempt(lambda: runner.evaluate(runner.run(recipe, recipe.ego), "no"))
    row["homo"] = attempt(lambda: runner.evaluate(runner.run(recipe, recipe.ego), "intermediate"))
    row["static"] = {pair: attempt(lambda r=ref, p=pair: runner.evaluate(runner.run(recipe, r), "intermediate",
                                                                        static_sets(p)))
                     for pair, ref in recipe.static.items()}
    row["dynamic"] = attempt(lambda: runner.evaluate(runner.run(recipe, recipe.dynamic), "in_order")) \
        if recipe.dynamic else StepError("no dynamic recipe")
    row["seconds"], row["steps"] = time.time() - t0, len(runner.step_times) - steps0
    return row


# --- the document ----------------------------------------------------------------------------------------

PAPER_T1 = {  # AttFuse block of the paper's Table 1 (OPV2V-H; AP50/AP70; comm log2), gencomm_method.md §10
    "MPDA": ((.7369, .5739), (.7668, .5698), 22), "BackAlign": ((.6852, .5240), (.7873, .5841), 22),
    "CodeFilling": ((.6661, .5097), (.7218, .5364), 15), "STAMP": ((.7258, .5605), (.7594, .5689), 22),
    "GenComm": ((.7525, .6005), (.8043, .6332), 16)}
PAPER_T2 = {  # Table 2 (ego L64P, +C_E, +L32S, +C_R; AP50/AP70; #P M, #F G)
    "MPDA": ((.7574, .5497), (.6513, .4786), (.6815, .5123), 5.75, 51.93),
    "BackAlign": ((.6975, .5288), (.7238, .5398), (.7252, .5408), 31.18, 211.38),
    "CodeFilling": ((.6891, .5234), (.637, .4658), (.5981, .4316), 0.81, 12.91),
    "STAMP": ((.7609, .5878), (.7819, .5995), (.7829, .6002), 1.64, 3.084),
    "GenComm": ((.7538, .5951), (.7873, .6174), (.7866, .6184), 0.31, 0.615)}


def _err(x):
    return isinstance(x, Exception)


def _cell_err(err):
    return " ".join(str(err).split()).replace("|", "/")


def _ap(res, variant, key):
    return f"{res[variant][key]:.3f}"


def static_table(rows):
    lines = ["| method | m1+m2 AP50 | m1+m2 AP70 | m1+m3 AP50 | m1+m3 AP70 | m1+m2 AP50 (frame order) "
             "| m1+m2 AP70 (frame order) | m1+m3 AP50 (frame order) | m1+m3 AP70 (frame order) "
             "| message / collaborator / frame, bytes (log2) |", "|---|" + "---|" * 9]
    for r in rows:
        cells, msg, errs = [], "n/a", []
        for variant in ("gs", "ngs"):
            for pair in ("m1+m2", "m1+m3"):
                res = r["static"].get(pair)
                if res is None or _err(res):
                    cells += ["n/a", "n/a"]
                    if variant == "gs":
                        errs.append(f"{pair}: {_cell_err(res) if res is not None else 'no recipe'}")
                else:
                    cells += [_ap(res, variant, "ap_50"), _ap(res, variant, "ap_70")]
                    msg = message_cell(res["gs"]) if msg == "n/a" else msg
        lines.append(f"| {r['name']} | " + " | ".join(cells) + f" | {msg} |")
        r["static_errors"] = errs
    return lines


def reference_table(rows):
    lines = ["| stage-1 ego base of | ego only (-f no) AP50 / AP70 | homogeneous m1 collaboration AP50 / AP70 "
             "| ms / frame ego only | ms / frame homogeneous |", "|---|---|---|---|---|"]
    for r in rows:
        cells = []
        for key in ("ego", "homo"):
            res = r[key]
            cells.append("n/a" if _err(res) else f"{res['gs']['ap_50']:.3f} / {res['gs']['ap_70']:.3f}")
        for key in ("ego", "homo"):
            res = r[key]
            cells.append("n/a" if _err(res) else f"{res['gs'].get('infer_ms_per_frame', float('nan')):.1f}")
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return lines


def _sum_cost(r, key):
    """Sum over the new types (and extra runs) of ``cost[key]``, or of the reference-geometry parameters
    (``key='ref_params'``); None when a term is missing."""
    if key == "ref_params":
        vals = list(r.get("ref_params", {}).values())
        return None if not vals or any(_err(v) for v in vals) else sum(vals)
    vals = [c for c in list(r["cost"].values()) + list(r["extra"].values())]
    if not vals or any(_err(c) for c in vals):
        return None
    return sum(c[key] for c in vals)


def dynamic_table(rows):
    lines = ["| method | m1 alone AP50 / AP70 | +m2 AP50 / AP70 | +m2+m3 AP50 / AP70 | +m2+m3+m4 AP50 / AP70 "
             "| #P trained for m2, m3, m4 (all stage-2 runs) | #P at the reference geometry "
             "| #F GFLOPs of the trained modules (sum) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d = r["dynamic"]
        if _err(d):
            aps = ["n/a"] * 4
        else:
            aps = [f"{d[n]['gs']['ap_50']:.3f} / {d[n]['gs']['ap_70']:.3f}" for n in (1, 2, 3, 4)]
        p, f, q = _sum_cost(r, "params"), _sum_cost(r, "flops"), _sum_cost(r, "ref_params")
        lines.append(f"| {r['name']} | " + " | ".join(aps) + f" | {'n/a' if p is None else f'{p:,}'} "
                     f"| {'n/a' if q is None else f'{q:,}'} | {'n/a' if f is None else f'{f / 1e9:.4f}'} |")
    return lines


def cost_table(rows):
    lines = ["| method | new type | stage-2 run | trainable params | at the reference geometry | trained modules "
             "| GFLOPs / frame (agents in frame) | added ms / frame vs homogeneous m1 | vs ego only |",
             "|---|" + "---|" * 8]
    for r in rows:
        recipe = RECIPES[r["name"]]
        items = [(m, recipe.per_type[m], r["cost"][m]) for m in recipe.per_type] + \
            [(k, recipe.extra_cost[k], r["extra"][k]) for k in recipe.extra_cost]
        for m, ref, c in items:
            pair = f"m1+{m}"
            res = r["static"].get(pair)
            lat = ["n/a", "n/a"] if pair in recipe.static else ["- (no static run)", "-"]
            if res is not None and not _err(res):
                ms = res["gs"].get("infer_ms_per_frame")
                for i, key in enumerate(("homo", "ego")):
                    if ms is not None and not _err(r[key]):
                        lat[i] = f"{ms - r[key]['gs']['infer_ms_per_frame']:+.1f}"
            q = r.get("ref_params", {}).get(m)
            q = "n/a" if q is None or _err(q) else f"{q:,}"
            if _err(c):
                lines.append(f"| {r['name']} | {m} | {ref} | n/a: {_cell_err(c)} | {q} | | | {lat[0]} | {lat[1]} |")
            else:
                lines.append(f"| {r['name']} | {m} | {ref} | {c['params']:,} | {q} | {', '.join(c['modules']) or '-'} "
                             f"| {c['flops'] / 1e9:.4f} ({', '.join(c['agents'])}) | {lat[0]} | {lat[1]} |")
    return lines


def _order(values):
    """Method names sorted by value, best (largest) first; methods without a value left out."""
    return [k for k, _ in sorted(((k, v) for k, v in values.items() if v is not None), key=lambda kv: -kv[1])]


def _chain(names, values):
    """'A > B = C' of ``names`` (sorted best first) with '=' between equal values."""
    out = names[:1]
    for a, b in zip(names, names[1:]):
        out += ["=" if values[a] == values[b] else ">", b]
    return " ".join(out)


def _agreement(ours, paper):
    """(agreeing pairs, pairs) of the pairwise orderings of the methods both dicts rank (ties disagree)."""
    names = [n for n in ours if ours[n] is not None and n in paper]
    agree = total = 0
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            total += 1
            sign = (ours[a] > ours[b]) - (ours[a] < ours[b]), (paper[a] > paper[b]) - (paper[a] < paper[b])
            agree += sign[0] == sign[1]  # a tie agrees only with a tie
    return agree, total


def discussion(rows):
    """Sentences comparing our orderings with the paper's Table 1/2 (AttFuse block) orderings."""
    by = {r["name"]: r for r in rows}

    def static_ap(name, pair, key):
        res = by[name]["static"].get(pair) if name in by else None
        return None if res is None or _err(res) else res["gs"][key]

    def dyn_ap(name, n):
        d = by[name]["dynamic"] if name in by else None
        return None if d is None or _err(d) else d[n]["gs"]["ap_50"]

    out = []
    comparisons = [("static m1+m3 AP50 (Table 1)", {m: static_ap(m, "m1+m3", "ap_50") for m in by},
                    {m: v[1][0] for m, v in PAPER_T1.items()}),
                   ("static m1+m2 AP50 (Table 1)", {m: static_ap(m, "m1+m2", "ap_50") for m in by},
                    {m: v[0][0] for m, v in PAPER_T1.items()}),
                   ("dynamic +m2+m3+m4 AP50 (Table 2)", {m: dyn_ap(m, 4) for m in by},
                    {m: v[2][0] for m, v in PAPER_T2.items()}),
                   ("trained parameters for three new types at the CPU geometry (Table 2 #P)",
                    {m: _sum_cost(by[m], "params") for m in by}, {m: v[3] for m, v in PAPER_T2.items()}),
                   ("trained parameters for three new types at the reference geometry (Table 2 #P)",
                    {m: _sum_cost(by[m], "ref_params") for m in by}, {m: v[3] for m, v in PAPER_T2.items()}),
                   ("GFLOPs of the trained modules (Table 2 #F; compared as is)",
                    {m: _sum_cost(by[m], "flops") for m in by}, {m: v[4] for m, v in PAPER_T2.items()})]
    for label, ours, paper in comparisons:
        ranked = [m for m in _order(ours) if m in paper]
        if len(ranked) < 2:
            out.append(f"- {label}: fewer than two of the paper's methods have a number here; no ordering to "
                       f"compare.")
            continue
        agree, total = _agreement(ours, paper)
        paper_ranked = [m for m in _order(paper) if m in ranked]
        if len({ours[m] for m in ranked}) == 1:
            out.append(f"- {label}: every method here scores the same ({ours[ranked[0]]:g}): no ordering to "
                       f"compare with the paper's {' > '.join(paper_ranked)}.")
            continue
        out.append(f"- {label}: ours {_chain(ranked, ours)}; the paper's, same methods, "
                   f"{_chain(paper_ranked, paper)}; {agree} of {total} pairwise orderings agree (a tie agrees "
                   f"only with a tie).")
    msgs = {}
    for r in rows:
        for res in r["static"].values():
            if res is not None and not _err(res) and res["gs"].get("comm_bytes_per_agent"):
                msgs[r["name"]] = res["gs"]["comm_bytes_per_agent"]
                break
    if len(msgs) >= 2:
        ranked = [m for m in _order(msgs) if m in PAPER_T1]
        agree, total = _agreement(msgs, {m: v[2] for m, v in PAPER_T1.items()})
        out.append(f"- message size (Table 1 comm. volume, larger first): ours {_chain(ranked, msgs)}; "
                   f"{agree} of {total} pairwise orderings agree with the paper's log2 column (a tie agrees "
                   f"only with a tie).")
    return out


def claims(rows):
    """The paper's headline cost claims, recomputed from our numbers where both sides have them."""
    by = {r["name"]: r for r in rows}
    out = []
    for other, paper_p, paper_f in (("STAMP", 0.31 / 1.64, 0.615 / 3.084), ("CodeFilling", 0.31 / 0.81, None)):
        if "GenComm" not in by or other not in by:
            continue
        parts = []
        for key, label in (("params", "#P at the CPU geometry"), ("ref_params", "#P at the reference geometry"),
                           ("flops", "#F at the CPU geometry")):
            g, o = _sum_cost(by["GenComm"], key), _sum_cost(by[other], key)
            if g is not None and o:
                paper = paper_f if key == "flops" else paper_p
                parts.append(f"{label} {100 * g / o:.0f} %" + (f" (paper {100 * paper:.0f} %)" if paper else ""))
        if parts:
            out.append(f"- GenComm relative to {other} (three new types): " + "; ".join(parts) + ".")
    sizes = {}
    for r in rows:
        for res in r["static"].values():
            if res is not None and not _err(res) and res["gs"].get("comm_bytes_per_agent"):
                sizes[r["name"]] = res["gs"]["comm_bytes_per_agent"]
                break
    dense = [sizes[m] for m in ("BackAlign", "STAMP", "MPDA") if m in sizes]
    if "GenComm" in sizes and dense:
        out.append(f"- GenComm's message is 1/{max(dense) / sizes['GenComm']:.0f} of the dense feature the "
                   f"feature-sharing baselines send (paper: 1/64 = 2^16 vs 2^22 B at 128 channels; the CPU "
                   f"geometry's features have 64 channels, so 1/32 is the expected ratio there)"
                   + (f"; CodeFilling's indices are {sizes['CodeFilling'] / sizes['GenComm']:.2f}x GenComm's "
                      f"message (paper 2^15 vs 2^16: 0.5x)" if "CodeFilling" in sizes else "") + ".")
    return out


def machine_text(device):
    from opencood.tools.benchmark_zoo import machine_line
    return machine_line(device)


def write_doc(rows, opt, argv, path, started, finished):
    from opencood.tools.benchmark_zoo import world_size
    fmt = "%Y-%m-%d %H:%M:%S UTC"
    size = world_size(opt.world)
    world = ", ".join(f"{split} {s} scenarios / {f} frames" for split, (s, f) in size.items())
    static = static_table(rows)
    lines = [
        "# Heterogeneous collaboration: GenComm against the baselines on the synthetic world",
        "",
        "Written by `opencood/tools/compare_heterogeneous.py` (do not edit by hand; rerun it). Layout of the "
        "GenComm paper's Table 1 (static: ego m1 + one new type) and Table 2 (dynamic: m2, m3, m4 join the ego "
        "one by one), plus the cost of each new agent type.",
        "",
        f"- command: `{' '.join(['python opencood/tools/compare_heterogeneous.py'] + ([shlex.join(argv)] if argv else []))}`",
        f"- when: started {time.strftime(fmt, time.gmtime(started))}, finished "
        f"{time.strftime(fmt, time.gmtime(finished))} ({(finished - started) / 60:.1f} min)",
        f"- machine: {machine_text(opt.device_used)}",
        f"- world: synthetic OPV2V-H, preset `{opt.world_preset}` ({world}) at `{short(opt.world)}`; configs of "
        f"preset `{opt.preset}` ({', '.join(f'{k}: hypes_yaml/{v}' for k, v in PRESETS[opt.preset]['roots'].items())})",
        f"- training: {opt.epochs} epoch(s) per stage-1 base and per stage-2 run (on top of the merged "
        f"checkpoint); agent types m1 LiDAR PointPillars (ego), m2 camera LSS-EfficientNet, m3 LiDAR SECOND, "
        f"m4 camera LSS-ResNet (STAMP's protocol m0: SECOND)",
        "- AP: global-sort variant unless the column says frame order (both written by `inference.py`); "
        "`n/a` cells say why in the notes below the tables",
        "",
        "## Methods and recipes",
        "",
    ]
    for r in rows:
        recipe = RECIPES[r["name"]]
        lines.append(f"- **{r['name']}**: {recipe.note}. Stage 1: "
                     f"{', '.join(f'{k} `{v[1]}`' for k, v in recipe.stage1.items())}; stage 2: "
                     f"{', '.join(f'{k} <- merge({chr(44).join(s)})' for k, (_, s) in recipe.stage2.items())}"
                     + (f"; inference folders: {', '.join(f'{k} <- merge({chr(44).join(s)})' for k, (_, s) in recipe.final.items())}"
                        if recipe.final else "")
                     + f"; static {', '.join(f'{p} on {v}' for p, v in recipe.static.items())}; dynamic on "
                       f"{recipe.dynamic}.")
    lines += ["", "## Static: ego m1 + one new agent type (paper Table 1 layout)", ""] + static + [""]
    notes = [f"- {r['name']}: {e}" for r in rows for e in r.get("static_errors", [])]
    if notes:
        lines += ["Cells marked n/a:", ""] + notes + [""]
    lines += ["Reference rows (the ego's stage-1 base of each method family):", ""] + reference_table(rows) + [""]
    lines += ["## Dynamic: agents joining one by one (paper Table 2 layout)", "",
              "`inference_heter_in_order.py --use_cav [1,2,3,4]`: the first N agents of each test frame get "
              "types m1, m2, m3, m4 in id order; the ground truth always holds every agent's objects.", ""]
    lines += dynamic_table(rows) + [""]
    dyn_notes = [f"- {r['name']}: {_cell_err(r['dynamic'])}" for r in rows if _err(r["dynamic"])]
    cost_notes = [f"- {r['name']} {k}: {_cell_err(c)}" for r in rows for k, c in
                  list(r["cost"].items()) + list(r["extra"].items()) if _err(c)]
    if dyn_notes or cost_notes:
        lines += ["Cells marked n/a:", ""] + dyn_notes + cost_notes + [""]
    lines += ["## Cost of each new agent type", "",
              "Trainable parameters of the stage-2 model admitting the type; GFLOPs of its trained modules in one "
              "forward of the first test frame of that run (batch 1, CPU, `FlopCounterMode`: 2 FLOPs per "
              "multiply-add; the deformable convolution of GenComm's DME counts as the dense 3x3 convolution of "
              "the same shape, its bilinear sampling as 0, see the script's docstring); added latency = ms per "
              "frame of the static m1+mX run minus that of the ego's stage-1 base (homogeneous collaboration, "
              "and ego only), on this machine; it includes the new type's own encoder, which replaces an m1 "
              "encoder in the homogeneous run (a camera encoder costs more than PointPillars). CodeFilling and MPDA retrain one shared module set per type set, "
              "so their rows are whole retrainings (the paper's #P adds the three). For MPDA the trained modules "
              "include the fusion and heads every frame runs anyway.", ""]
    lines += cost_table(rows) + [""]
    lines += ["## The paper's numbers (OPV2V-H, AttFuse block; from docs of the spec, gencomm_method.md §10)", "",
              "| method | m1+m2 (L64P-C_E) AP50 / AP70 | m1+m3 (L64P-L32S) AP50 / AP70 | comm log2 | +C_E | +C_E+L32S "
              "| +C_E+L32S+C_R | #P (M) | #F (G) |", "|---|---|---|---|---|---|---|---|---|"]
    for m in ("MPDA", "BackAlign", "CodeFilling", "STAMP", "GenComm"):
        t1, t2 = PAPER_T1[m], PAPER_T2[m]
        lines.append(f"| {m} | {t1[0][0]:.4f} / {t1[0][1]:.4f} | {t1[1][0]:.4f} / {t1[1][1]:.4f} | {t1[2]} | "
                     + " | ".join(f"{a:.4f} / {b:.4f}" for a, b in t2[:3]) + f" | {t2[3]} | {t2[4]} |")
    lines += ["", "Paper Table A.4, added latency (ms): MPDA 69.9, BackAlign 0, CodeFilling 13.39, STAMP 17.93, "
              "GenComm 20.7. HEAL proper is not in the paper's tables (BackAlign is its GenComm-style variant).", ""]
    lines += ["## Orderings against the paper", "",
              "The synthetic world is not OPV2V-H (a few scenarios of simple boxes and simulated sensors, "
              "demo-geometry models, a training budget of minutes), so absolute APs are not comparable; only "
              "the orderings are. Computed from the tables above:", ""]
    lines += discussion(rows) + [""]
    claimed = claims(rows)
    if claimed:
        lines += ["The paper's cost claims (Table 2, Section 4), recomputed:", ""] + claimed + [""]
    lines += CAVEATS
    lines += ["", "Wall time of each method's steps (a stage-1 base shared by several methods is trained, and "
              "counted, once: for the first method using it):", "", "| method | CLI steps | minutes |",
              "|---|---|---|"]
    lines += [f"| {r['name']} | {r.get('steps', 'n/a')} | {r['seconds'] / 60:.1f} |" if "seconds" in r
              else f"| {r['name']} | n/a | n/a |" for r in rows]
    with atomic_open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


CAVEATS = [
    "How to read this:",
    "",
    "- With the tiny preset (one epoch per stage on six training frames, three test frames) the detectors have "
    "not learned yet: APs at or near 0, so the AP columns show that every recipe runs end to end, not which "
    "method is more accurate; AP orderings that agree or disagree with the paper are no evidence either way. "
    "`--preset demo` (CPU, hours) or `--preset gpu` (one GPU) train long enough for the AP columns to mean "
    "something (docs/gpu_demo.md: GenComm's own pipeline at the GPU preset).",
    "- Parameter, FLOP and message orderings do not depend on training: they follow from the architectures at "
    "the configs' geometry. At the CPU geometry (64 channels, small grids, small camera images) the absolute "
    "counts are much smaller than the paper's, and the ratios between methods shift with the channel count "
    "(e.g. STAMP's ConvNeXt adapters and CodeFilling's codebook scale with C, GenComm's DME with C as well, "
    "BackAlign's trained encoders with the sensor backbone).",
    "- Latency is measured on the machine above while other jobs may have shared it; on a CPU it mostly "
    "reflects FLOPs and Python overhead, not the paper's RTX 3090 figures.",
]


# --- main -------------------------------------------------------------------------------------------------


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=tuple(PRESETS), default="tiny",
                   help="world and config set: tiny (CPU, minutes), demo (CPU, longer), gpu (one GPU)")
    p.add_argument("--methods", nargs="*", default=None, choices=METHODS, help="subset (default: all)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per stage-1 base and per stage-2 run")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where the CLI steps run")
    p.add_argument("--world", default=None, help="synthetic world root (generated when missing; default "
                                                 "<log_root>/world)")
    p.add_argument("--log_root", default=os.path.join("opencood", "logs", "heterogeneous"))
    p.add_argument("--out", default=os.path.join("docs", "heterogeneous.md"))
    p.add_argument("--num_workers", type=int, default=0, help="DataLoader workers of every step")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of every step (OMP_NUM_THREADS)")
    p.add_argument("--resume", action="store_true", help="keep the run folders; continue trainings")
    return p


def resolve(opt):
    preset = PRESETS[opt.preset]
    opt.methods = list(opt.methods or METHODS)
    opt.epochs = preset["epochs"] if opt.epochs is None else opt.epochs
    if opt.epochs < 1:
        raise SystemExit("--epochs: at least 1")
    opt.world = opt.world or os.path.join(opt.log_root, "world")
    opt.world_preset = preset["world"]
    if opt.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    opt.device_used = "cuda" if opt.device == "cuda" or (opt.device == "auto" and torch.cuda.is_available()) \
        else "cpu"
    return opt


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    opt = resolve(build_parser().parse_args(argv))
    started = time.time()
    root = os.path.abspath(opt.log_root)
    if not opt.resume and os.path.isdir(root):
        for sub in ["stage1", "configs", "cost_configs"] + list(METHODS):
            shutil.rmtree(os.path.join(root, sub), ignore_errors=True)
    os.makedirs(root, exist_ok=True)
    setup_logging(root, "compare.log")
    torch.set_num_threads(opt.threads)
    runner = Runner(opt)
    open(runner.log, "a" if opt.resume else "w").close()
    if not os.path.isdir(os.path.join(opt.world, "OPV2V", "train")):
        runner.sh(["opencood/tools/make_synthetic.py", "--root", opt.world, "--preset", opt.world_preset,
                   "--workers", str(os.cpu_count() or 1)])
        shutil.rmtree(os.path.join(root, "decode_cache"), ignore_errors=True)  # entries of an older world
    rows = []
    for name in opt.methods:
        logger.info(f"=== {name}")
        rows.append(run_method(runner, RECIPES[name]))
        write_doc(rows, opt, argv, opt.out, started, time.time())  # a run cut short still leaves the tables
    logger.info(f"wrote {opt.out} in {(time.time() - started) / 60:.1f} min")
    return rows


if __name__ == "__main__":
    main()
