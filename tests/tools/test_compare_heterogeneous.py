"""compare_heterogeneous.py: the recipe table (every referenced run defined, every shipped YAML loads), the
metric helpers (trained modules, FLOPs per module, GenComm's DME FLOPs by formula with the deformable
convolution counted as a dense 3x3 convolution, message cells), the static evaluation composition (ego m1, every
other agent the new type), the document with failed cells, and a slow end-to-end run on the tiny world."""
import os

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.tools import compare_heterogeneous as ch


def _refs(recipe):
    """Every run reference a recipe uses, with where it is used."""
    out = [(recipe.ego, "ego"), (recipe.dynamic, "dynamic")]
    out += [(r, f"static {p}") for p, r in recipe.static.items()]
    out += [(r, f"per_type {m}") for m, r in recipe.per_type.items()]
    out += [(r, f"extra {k}") for k, r in recipe.extra_cost.items()]
    for table in (recipe.stage2, recipe.final):
        out += [(s, f"merge into {name}") for name, (_, sources) in table.items() for s in sources]
    return out


@pytest.mark.parametrize("name", ch.METHODS)
def test_recipe_references_are_defined(name):
    recipe = ch.RECIPES[name]
    defined = {"s1": recipe.stage1, "s2": recipe.stage2, "final": recipe.final}
    for ref, where in _refs(recipe):
        kind, run = ref.split(":", 1)
        assert run in defined[kind], f"{name}: {where} names {ref}, not in its {kind} table"
    assert set(recipe.static) <= {"m1+m2", "m1+m3"} and set(recipe.per_type) == set(ch.NEW_TYPES)
    assert all(ref.startswith("s2:") for ref in list(recipe.per_type.values()) + list(recipe.extra_cost.values()))


@pytest.mark.parametrize("preset", sorted(ch.PRESETS), ids=lambda p: f"preset_{p}")  # "gpu" alone skips w/o CUDA
def test_every_shipped_recipe_yaml_loads(preset):
    """Each YAML a recipe names that exists validates; at the CPU presets GenComm, BackAlign, CodeFilling and
    MPDA are shipped whole (a renamed file would silently turn their rows into n/a)."""
    missing = {}
    for name, recipe in ch.RECIPES.items():
        for path in ch.recipe_configs(recipe, preset):
            if os.path.isfile(path):
                load_yaml(path)
            else:
                missing.setdefault(name, []).append(ch.short(path))
    if preset != "gpu":
        assert not {m: v for m, v in missing.items() if m in ("GenComm", "BackAlign", "CodeFilling", "MPDA")}, \
            missing


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.frozen = nn.Linear(4, 5)
        self.frozen.requires_grad_(False)
        self.trained = nn.Conv2d(3, 4, 3, padding=1)
        self.per_type = nn.ModuleDict({"a": nn.Linear(5, 6), "b": nn.Linear(5, 7)})  # indexed, never called

    def forward(self, img, vec):
        y = self.frozen(vec)  # (1, 5)
        return self.trained(img), self.per_type["a"](y), self.per_type["b"](y)


def test_trained_modules_and_module_flops():
    model = _Toy()
    assert ch.trained_modules(model) == ["trained", "per_type"]
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 8, 8), torch.zeros(1, 4))
    counts = counter.get_flop_counts()
    assert ch.module_flops(counts, "_Toy", "frozen") == 2 * 4 * 5  # 2 FLOPs per multiply-add, bias not counted
    assert ch.module_flops(counts, "_Toy", "trained") == 2 * 8 * 8 * 4 * 3 * 9
    assert ch.module_flops(counts, "_Toy", "per_type") == 2 * 5 * 6 + 2 * 5 * 7  # children summed once


def test_gencomm_dme_flops_by_formula(make_tiny_config):
    """The m3 DME's FLOPs on a frame with an m3 agent: offset conv + the deformable conv as a dense 3x3 conv +
    the channel gate + the 1x1 head (FlopCounterMode's count; bilinear sampling counts 0)."""
    hypes = load_yaml(make_tiny_config("opencood/hypes_yaml/demo/gencomm/stage2/m1m3_att.yaml"))
    from opencood.tools.train_utils import create_model
    dme = create_model(hypes).message_extractor_m3
    cost = ch.added_cost(hypes, "m3")
    assert cost["modules"] == ["message_extractor_m3"] and "m3" in cost["agents"]
    assert cost["params"] == sum(p.numel() for p in dme.parameters())
    c, mid, out = dme.offset_conv.in_channels, dme.deform_conv.out_channels, dme.head[2].out_channels
    # the m3 agents' feature map: through the same frame, hooked
    shapes = []
    model = create_model(hypes).eval()
    model.message_extractor_m3.register_forward_hook(lambda m, i, o: shapes.append(tuple(i[0].shape)))
    batch, _ = ch.test_frame(hypes, "m3")
    with torch.no_grad():
        model(batch["ego"])
    n, ch_in, h, w = shapes[0]
    assert ch_in == c
    per_cell = c * 9 * 18 + c * 9 * mid + mid * mid + mid * out  # offset, deformable (dense), head 1x1 convs
    gate = mid * (mid // 2) + (mid // 2) * mid  # on the pooled (N, mid, 1, 1) map
    assert cost["flops"] == 2 * n * (h * w * per_cell + gate)


def test_message_cell():
    assert ch.message_cell({"comm_bytes_per_agent": 65536.0}) == "65,536 (2^16.0)"
    assert ch.message_cell({"comm_bytes_per_agent": 0.0}) == "0"
    assert ch.message_cell({}) == "n/a"


def test_static_sets_make_every_collaborator_the_new_type(make_tiny_config):
    """On the tiny world the assignment json and CodeFilling's mapping give the m1m3 test split no m3 agent;
    the comparison's static overrides give every non-ego agent type m3 (and leave the ego m1)."""
    from opencood.data_utils.datasets import build_dataset
    from opencood.tools.loaders import build_loader
    path = make_tiny_config("opencood/hypes_yaml/opv2v/GenComm_yamls/baselines/tiny/stage2/CodeFilling/m1m3_att.yaml")
    seen = {}
    for label, overrides in (("json", None), ("static", list(ch.static_sets("m1+m3")))):
        hypes = load_yaml(path, overrides=overrides)
        hypes["validate_dir"] = hypes["test_dir"]
        dataset = build_dataset(hypes, visualize=False, train=False)
        seen[label] = [ch.frame_types(b) for b in build_loader(dataset, "test", num_workers=0,
                                                                device=torch.device("cpu"))]
    assert seen["static"] and all(t[0] == "m1" and len(t) > 1 and set(t[1:]) == {"m3"} for t in seen["static"])
    assert not any("m3" in t for t in seen["json"])  # what the json alone would have evaluated


def _eval(ap50, ap70, volume=None, ms=10.0):
    gs = {"ap30": ap50, "ap_50": ap50, "ap_70": ap70, "infer_ms_per_frame": ms}
    if volume is not None:
        gs["comm_bytes_per_agent"] = volume
    return {"gs": gs, "ngs": dict(gs)}


def test_document_with_numbers_and_failed_cells(tmp_path):
    err = ch.StepError("not shipped: some/missing.yaml")
    cost = {"params": 1000, "modules": ["message_extractor_m2"], "flops": 2_000_000, "agents": ["m1", "m2"]}
    rows = [
        {"name": "GenComm", "note": "", "ego": _eval(.5, .3, ms=5), "homo": _eval(.7, .5, ms=8),
         "static": {"m1+m2": _eval(.65, .45, 16384.0, 12), "m1+m3": _eval(.68, .46, 16384.0, 13)},
         "dynamic": {n: _eval(.5 + .05 * n, .3) for n in (1, 2, 3, 4)},
         "cost": {m: cost for m in ch.NEW_TYPES}, "extra": {}, "ref_params": {m: 103028 for m in ch.NEW_TYPES}},
        {"name": "BackAlign", "note": "", "ego": _eval(.5, .3), "homo": _eval(.7, .5),
         "static": {"m1+m2": err, "m1+m3": _eval(.6, .4, 524288.0)}, "dynamic": err,
         "cost": {"m2": err, "m3": dict(cost, params=50000, flops=9_000_000_000), "m4": err}, "extra": {}},
        {"name": "CodeFilling", "note": "", "ego": err, "homo": err, "static": {"m1+m2": err, "m1+m3": err},
         "dynamic": err, "cost": {m: err for m in ch.NEW_TYPES}, "extra": {}},
    ]

    class Opt:
        preset, world_preset, epochs, device_used = "tiny", "tiny", 1, "cpu"
        world = str(tmp_path / "world")
    out = tmp_path / "doc.md"
    ch.write_doc(rows, Opt, ["--methods", "GenComm"], str(out), 0.0, 60.0)
    text = out.read_text()
    assert "| GenComm | 0.650 | 0.450 | 0.680 | 0.460 |" in text
    assert "| BackAlign | n/a | n/a | 0.600 | 0.400 |" in text and "524,288 (2^19.0)" in text
    assert "- BackAlign: m1+m2: not shipped: some/missing.yaml" in text
    assert "| GenComm | 0.550 / 0.300 | 0.600 / 0.300 | 0.650 / 0.300 | 0.700 / 0.300 | 3,000 | 309,084 | 0.0060 |" in text
    assert "| GenComm | m2 | s2:m1m2 | 1,000 | 103,028 | message_extractor_m2 | 0.0020 (m1, m2) | +4.0 | +7.0 |" in text
    # two methods with an m1+m3 AP: GenComm above BackAlign, as in the paper's Table 1 -> 1 of 1 agrees
    assert "static m1+m3 AP50 (Table 1): ours GenComm > BackAlign; the paper's, same methods, GenComm > " \
           "BackAlign; 1 of 1 pairwise orderings agree (a tie agrees only with a tie)" in text
    # no dynamic numbers but GenComm's -> no ordering; equal values shown as a tie
    assert "- dynamic +m2+m3+m4 AP50 (Table 2): fewer than two" in text
    assert ch._chain(["a", "b", "c"], {"a": 2, "b": 1, "c": 1}) == "a > b = c"
    assert "- GenComm's message is 1/32 of the dense feature" in text
    assert not list(tmp_path.glob("*.tmp*"))


def test_agreement_counts_pairs():
    assert ch._agreement({"a": 3, "b": 2, "c": 1}, {"a": 1, "b": 2, "c": 3}) == (0, 3)
    assert ch._agreement({"a": 3, "b": 2, "c": None}, {"a": 5, "b": 4, "c": 9}) == (1, 1)
    assert ch._agreement({"a": 1, "b": 1, "c": 0}, {"a": 22, "b": 22, "c": 22}) == (1, 3)  # tie = tie only


def test_reference_geometry_parameters():
    """Built from the full-geometry YAMLs: the reference's figures (GenComm's DME at 128 channels; BackAlign
    m1m3 and MPDA as the issue lists them)."""
    assert ch.reference_params(ch.RECIPES["GenComm"], "s2:m1m3") == 103_028
    assert ch.reference_params(ch.RECIPES["BackAlign"], "s2:m1m3") == 1_187_904
    assert ch.reference_params(ch.RECIPES["MPDA"], "s2:m1m2m3m4") == 1_917_093


@pytest.mark.slow
def test_end_to_end_on_the_tiny_world(tiny_world, tmp_path):
    """Every method through its recipe, one epoch per stage: the shipped recipes give numbers, no step fails."""
    out = tmp_path / "heterogeneous.md"
    rows = ch.main(["--world", tiny_world, "--log_root", str(tmp_path / "runs"), "--out", str(out),
                    "--epochs", "1", "--device", "cpu"])
    text = out.read_text()
    assert [r["name"] for r in rows] == list(ch.METHODS)
    for r in rows:
        errors = [e for e in [r["ego"], r["homo"], r["dynamic"]] + list(r["static"].values())
                  + list(r["cost"].values()) + list(r["extra"].values()) if isinstance(e, Exception)]
        assert all(str(e).startswith(("not shipped", "needs")) and "failed" not in str(e) for e in errors), errors
    for name in ("GenComm", "BackAlign", "CodeFilling", "MPDA"):
        r = next(r for r in rows if r["name"] == name)
        assert not isinstance(r["dynamic"], Exception) and sorted(r["dynamic"]) == [1, 2, 3, 4]
        assert all(not isinstance(v, Exception) for v in r["static"].values())
    assert "## Orderings against the paper" in text and "pairwise orderings agree (a tie agrees only with a tie)" in text
