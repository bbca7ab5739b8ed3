"""Load experiment YAMLs with HEAL's semantics and derive the values the models need.

``load_yaml(file, opt)``: if ``opt.model_dir`` is set, ``<model_dir>/config.yaml`` wins (resume);
otherwise ``file`` is read. Then the ``yaml_parser`` named in the file (default
``load_general_params``) fills derived values: the voxel grid size of every pre-processor,
anchor-grid ``W/H/D`` and voxel sizes ``vw/vh/vd``, ``lidar_range`` from ``cav_lidar_range``,
``gt_range`` default, and the feature stride.

Units: ranges ``[xmin, ymin, zmin, xmax, ymax, zmax]`` in metres, in the ego LiDAR frame.
"""
import copy
import logging
import os
import re

import numpy as np
import yaml

from opencood.utils.atomic_io import atomic_open
from opencood.utils.bev_grid import BEVGrid, grid_size
from opencood.utils.errors import ConfigError

# PyYAML reads "1e-10" as a string; accept every float spelling people write in configs.
_FLOAT_RE = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_RE, list("-+0123456789."))

SOURCE_KEY = "_source"  # path the config was read from; never written back to disk
logger = logging.getLogger("opencood")


def read_yaml_file(path):
    """Parse one YAML file; a missing or malformed file raises ConfigError naming it."""
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: config file not found")
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = yaml.load(f, Loader=_Loader)
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {e.start})") from None
    except RecursionError:
        raise ConfigError(f"{path}: YAML nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as e:  # a constructor refused a value (!!int x, 2001-13-45)
        raise ConfigError(f"{path}: malformed YAML value ({type(e).__name__}: {' '.join(str(e).split())[:120]})") \
            from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


HYPES_ROOT = os.path.dirname(os.path.abspath(__file__))  # opencood/hypes_yaml: the shipped configs
BASE_KEY = "_base_"  # a path or a list of paths of configs this one inherits from (relative to it)
DELETE_KEY = "_delete_"  # ``_delete_: true`` in a mapping: replace the inherited mapping instead of merging
IGNORED_KEY = "_ignored_keys"  # allow-listed legacy keys met at load (for the run's info line)


def merge_configs(base, override):
    """Deep-merge two config dicts: mappings merge key by key, any other value of ``override`` wins.

    A mapping of ``override`` holding ``_delete_: true`` replaces the inherited mapping as a whole.
    Neither input is modified.
    """
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict):
            value = copy.deepcopy(value)
            replace = bool(value.pop(DELETE_KEY, False))
            if not replace and isinstance(out.get(key), dict):
                out[key] = merge_configs(out[key], value)
                continue
        out[key] = copy.deepcopy(value)
    return out


def read_config(path, _stack=()):
    """Read a YAML and everything it inherits through ``_base_`` (later bases win, the file itself last).

    Raises:
        ConfigError: missing/malformed file, a ``_base_`` that is not a path or list of paths, an
        inheritance cycle (each names the file).
    """
    real = os.path.realpath(path)
    if real in _stack:
        raise ConfigError(f"{path}: _base_ inheritance cycle through this file")
    data = read_yaml_file(path)
    bases = data.pop(BASE_KEY, None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: key '{BASE_KEY}' must be a path or a list of paths, got {bases!r}")
    merged = {}
    for base in bases:
        merged = merge_configs(merged, read_config(_base_path(base, path), _stack + (real,)))
    return merge_configs(merged, data)


def _base_path(base, path):
    """Where a ``_base_`` entry of ``path`` lives: absolute, else next to ``path``, else under
    ``opencood/hypes_yaml/`` (so a shipped YAML copied into a run folder, HEAL style, still finds its bases)."""
    if os.path.isabs(base):
        return base
    beside = os.path.join(os.path.dirname(path), base)
    if os.path.exists(beside):
        return beside
    shipped = os.path.join(HYPES_ROOT, base)
    return shipped if os.path.exists(shipped) else beside


def parse_override(text, source="--set"):
    """``"a.b.c=value"`` -> (["a", "b", "c"], value parsed as YAML: numbers, lists, true/false, null)."""
    if "=" not in text:
        raise ConfigError(f"{source}: expected KEY.PATH=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".")]
    if not all(parts):
        raise ConfigError(f"{source}: bad key path {key!r} in {text!r}")
    try:
        value = yaml.load(raw, Loader=_Loader) if raw.strip() else ""
    except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError):
        raise ConfigError(f"{source}: value of '{key}' is not valid YAML: {raw!r}") from None
    return parts, value


def apply_overrides(param, assignments, source="--set"):
    """Apply ``--set`` assignments in order (missing mappings on the path are created).

    Raises:
        ConfigError: malformed assignment, or a path through a value that is not a mapping.
    """
    for text in assignments or ():
        parts, value = parse_override(text, source)
        node = param
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{source} {text}: '{'.'.join(parts[:i + 1])}' is not a mapping")
            node = child
        node[parts[-1]] = value
    return param


def add_config_args(parser):
    """``--set KEY.PATH=VALUE`` (repeatable) on a tool's argument parser; read by :func:`load_yaml`."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", dest="set",
                        help="override a config value (YAML-typed, repeatable), e.g. --set train_params.epoches=2")
    return parser


def load_yaml(file, opt=None, overrides=None):
    """Load a config the HEAL way, then inherit, override, validate and derive.

    Steps: the file (``<opt.model_dir>/config.yaml`` wins when ``opt.model_dir`` is set) with its
    ``_base_`` chain; the ``--set`` assignments (``opt.set``, then ``overrides``); validation of every key
    against the components' declarations (unknown key -> ConfigError with a suggestion; allow-listed legacy
    keys -> one info line); the file's ``yaml_parser`` derivations (grid, anchors, ranges).

    Args:
        file: path of the YAML (ignored when ``opt.model_dir`` is given).
        opt: argparse namespace or None (``model_dir``, ``set``).
        overrides: extra ``"key.path=value"`` strings applied after ``opt.set``.

    Returns:
        dict of parameters with derived values filled in.
    """
    if opt is not None and getattr(opt, "model_dir", None):
        file = os.path.join(opt.model_dir, "config.yaml")
    if file is None or str(file) == "None":
        raise ConfigError("no config: pass -y FILE or --model_dir DIR containing config.yaml")
    param = read_config(str(file))
    apply_overrides(param, list(getattr(opt, "set", None) or []) + list(overrides or []))
    from opencood.hypes_yaml.stamp_layout import from_stamp_layout, is_stamp_layout
    if is_stamp_layout(param):  # the reference's per-type STAMP layout (yaml_parsers, loss per type)
        param = from_stamp_layout(param, str(file))
    param[SOURCE_KEY] = str(file)
    parser_name = param.get("yaml_parser", "load_general_params")
    if parser_name not in YAML_PARSERS:
        raise ConfigError(f"{file}: unknown yaml_parser '{parser_name}'; known: {', '.join(sorted(YAML_PARSERS))}")
    from opencood.hypes_yaml.schema import validate_config
    ignored = validate_config(param, str(file))
    param[IGNORED_KEY] = ignored
    if ignored:
        logger.info("config %s: keys without effect here (ignored): %s", file, ", ".join(ignored))
    try:
        param = YAML_PARSERS[parser_name](param)
        check_model_chain(param)
    except (ValueError, TypeError, KeyError, IndexError, ZeroDivisionError, OverflowError) as e:
        # a value of a type or form no Key declared closely enough (e.g. a string in a channel list)
        raise ConfigError(f"{file}: a config value has the wrong type or form for the resolve pass "
                          f"({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None
    return param


def check_model_chain(param):
    """Channel/stride agreement of the model's module chain with the resolved grid, at load (ConfigError)."""
    from opencood.utils.registry import MODELS
    model = param.get("model")
    if isinstance(model, dict) and isinstance(model.get("args"), dict) and "core_method" in model:
        MODELS.get(model["core_method"], param.get(SOURCE_KEY, "config")).feature_chain(
            model["args"], param.get(SOURCE_KEY, "config"))


def save_yaml(data, path):
    """Write a config atomically (temp file + rename), without internal keys."""
    clean = {k: v for k, v in data.items() if not str(k).startswith("_")}
    clean = _to_builtin(clean)
    with atomic_open(path, "w") as f:
        yaml.safe_dump(clean, f, sort_keys=False, default_flow_style=None)


def _to_builtin(x):
    if isinstance(x, dict):
        return {k: _to_builtin(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_builtin(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def require(param, dotted, kind=None):
    """Fetch ``a.b.c`` from a config dict or raise ConfigError naming the file and the key."""
    node = param
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            src = param.get(SOURCE_KEY, "config")
            raise ConfigError(f"{src}: missing key '{dotted}'")
        node = node[part]
    if kind is not None and not isinstance(node, kind):
        src = param.get(SOURCE_KEY, "config")
        raise ConfigError(f"{src}: key '{dotted}' should be {getattr(kind, '__name__', kind)}, got {node!r}")
    return node


def _range6(param, value, key):
    if not (isinstance(value, (list, tuple)) and len(value) == 6
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise ConfigError(f"{param.get(SOURCE_KEY, 'config')}: key '{key}' must be a list of 6 numbers "
                          f"[xmin, ymin, zmin, xmax, ymax, zmax], got {value!r}")
    return [float(v) for v in value]


def _fill_encoder_grids(args, lidar_range, voxel_size):
    """Give a PointPillars/SECOND encoder section the grid it scatters onto (derived keys)."""
    g = list(grid_size(lidar_range, voxel_size).tolist())
    if isinstance(args.get("point_pillar_scatter"), dict):
        args["point_pillar_scatter"]["grid_size"] = g
    args.setdefault("voxel_size", list(voxel_size))
    args.setdefault("lidar_range", list(lidar_range))
    args["grid_size"] = g


def _resolve_ranges(param, src):
    """``preprocess.cav_lidar_range`` and top-level ``cav_lidar_range``: each fills the other."""
    pre = require(param, "preprocess", dict)
    if "cav_lidar_range" in pre:
        cav_range = _range6(param, pre["cav_lidar_range"], "preprocess.cav_lidar_range")
    else:
        cav_range = _range6(param, require(param, "cav_lidar_range"), "cav_lidar_range")
        pre["cav_lidar_range"] = cav_range
    if cav_range[0] >= cav_range[3] or cav_range[1] >= cav_range[4] or cav_range[2] >= cav_range[5]:
        raise ConfigError(f"{src}: key 'preprocess.cav_lidar_range' must have min < max on x, y and z, "
                          f"got {cav_range}")
    param.setdefault("cav_lidar_range", cav_range)
    voxel = require(param, "preprocess.args.voxel_size")
    if not (isinstance(voxel, (list, tuple)) and len(voxel) == 3
            and all(isinstance(v, (int, float)) and v > 0 for v in voxel)):
        raise ConfigError(f"{src}: key 'preprocess.args.voxel_size' must be 3 positive numbers, got {voxel!r}")
    return cav_range, voxel


def _resolve_anchors(param, grid):
    """Derived ``postprocess.anchor_args`` (W, H, D, vw, vh, vd, cav_lidar_range) and ``gt_range``."""
    post = param["postprocess"]
    anchor = require(param, "postprocess.anchor_args", dict)
    anchor.update(grid.anchor_args())
    anchor.setdefault("feature_stride", grid.feature_stride)
    post.setdefault("gt_range", list(grid.lidar_range))


def _resolve_heter(param, src, cav_range, model_args):
    """Per LiDAR agent type: its voxeliser's range and its encoder's grid (from its own voxel size)."""
    settings = require(param, "heter.modality_setting", dict)
    for m, setting in settings.items():
        if not isinstance(setting, dict):
            raise ConfigError(f"{src}: key 'heter.modality_setting.{m}' must be a mapping")
        if setting.get("sensor_type", "lidar") != "lidar":
            continue
        mpre = setting.get("preprocess")
        if not isinstance(mpre, dict) or not isinstance(mpre.get("args"), dict) or "voxel_size" not in mpre["args"]:
            raise ConfigError(f"{src}: missing key 'heter.modality_setting.{m}.preprocess.args.voxel_size'")
        mpre["cav_lidar_range"] = cav_range
        if isinstance(model_args, dict) and isinstance(model_args.get(m), dict):
            enc = model_args[m].setdefault("encoder_args", {})
            _fill_encoder_grids(enc, cav_range, mpre["args"]["voxel_size"])


def load_general_params(param):
    """The resolve pass: derive the grid/anchor values of single-type and heterogeneous (``heter:``) configs.

    One :class:`~opencood.utils.bev_grid.BEVGrid` is computed from ``cav_lidar_range``,
    ``preprocess.args.voxel_size`` and ``postprocess.anchor_args.feature_stride``; every derived key
    (anchor ``W/H/D/vw/vh/vd``, ``gt_range``, encoder ``grid_size``, ``model.args.lidar_range``) is written
    from it, and the anchor head's repeated values (``anchor_args.num`` / ``model.args.anchor_number``,
    ``loss.args.dir.args`` / ``model.args.dir_args``) are derived from ``postprocess`` or checked against it.
    """
    src = param.get(SOURCE_KEY, "config")
    cav_range, voxel = _resolve_ranges(param, src)
    post = param.get("postprocess")
    stride = (post.get("anchor_args") or {}).get("feature_stride", 2) if isinstance(post, dict) else 2
    grid = BEVGrid(cav_range, voxel, stride)
    if post is not None:
        _resolve_anchors(param, grid)

    model_args = param.get("model", {}).get("args") if isinstance(param.get("model"), dict) else None
    if isinstance(model_args, dict):
        model_args.setdefault("lidar_range", cav_range)
        if post is not None:  # the model checks its output cell size against the anchor grid
            model_args["feature_stride"] = grid.feature_stride
            model_args["anchor_voxel_size"] = list(grid.voxel_size)
        if "point_pillar_scatter" in model_args:
            _fill_encoder_grids(model_args, cav_range, voxel)
    if post is not None:
        from opencood.models.heads.resolve import resolve_head_config
        resolve_head_config(param)  # anchors per cell and dir_args: derived from postprocess, copies checked

    if isinstance(param.get("heter"), dict):
        _resolve_heter(param, src, cav_range, model_args)
    return param


# HEAL names several parsers; all of them reduce to the same derivations here.
YAML_PARSERS = {
    "load_general_params": load_general_params,
    "load_point_pillar_params": load_general_params,
    "load_voxel_params": load_general_params,
    "load_second_params": load_general_params,
    "load_lift_splat_shoot_params": load_general_params,
}


def deep_copy(param):
    return copy.deepcopy(param)
