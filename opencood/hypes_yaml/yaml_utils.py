"""Load experiment YAMLs with HEAL's semantics and derive the values the models need.

``load_yaml(file, opt)``: if ``opt.model_dir`` is set, ``<model_dir>/config.yaml`` wins (resume);
otherwise ``file`` is read. Then the ``yaml_parser`` named in the file (default
``load_general_params``) fills derived values: the voxel grid size of every pre-processor,
anchor-grid ``W/H/D`` and voxel sizes ``vw/vh/vd``, ``lidar_range`` from ``cav_lidar_range``,
``gt_range`` default, and the feature stride.

Units: ranges ``[xmin, ymin, zmin, xmax, ymax, zmax]`` in metres, in the ego LiDAR frame.
"""
import copy
import math
import os
import re

import numpy as np
import yaml

from opencood.utils.atomic_io import atomic_open
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


def read_yaml_file(path):
    """Parse one YAML file; a missing or malformed file raises ConfigError naming it."""
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: config file not found")
    try:
        with open(path, "r") as f:
            data = yaml.load(f, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


def load_yaml(file, opt=None):
    """Load a config the HEAL way.

    Args:
        file: path of the YAML (ignored when ``opt.model_dir`` is given).
        opt: argparse namespace or None; ``opt.model_dir`` selects ``model_dir/config.yaml``.

    Returns:
        dict of parameters, with derived values filled in by the file's ``yaml_parser``.
    """
    if opt is not None and getattr(opt, "model_dir", None):
        file = os.path.join(opt.model_dir, "config.yaml")
    if file is None or str(file) == "None":
        raise ConfigError("no config: pass -y FILE or --model_dir DIR containing config.yaml")
    param = read_yaml_file(file)
    param[SOURCE_KEY] = str(file)
    parser_name = param.get("yaml_parser", "load_general_params")
    if parser_name not in YAML_PARSERS:
        raise ConfigError(f"{file}: unknown yaml_parser '{parser_name}'; known: {', '.join(sorted(YAML_PARSERS))}")
    return YAML_PARSERS[parser_name](param)


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
    if not (isinstance(value, (list, tuple)) and len(value) == 6):
        raise ConfigError(f"{param.get(SOURCE_KEY, 'config')}: key '{key}' must be a list of 6 numbers "
                          f"[xmin, ymin, zmin, xmax, ymax, zmax], got {value!r}")
    return [float(v) for v in value]


def grid_size(lidar_range, voxel_size):
    """Voxel grid (nx, ny, nz) = round((max - min) / voxel), as spconv's voxeliser computes it."""
    r = np.asarray(lidar_range, dtype=np.float64)
    v = np.asarray(voxel_size, dtype=np.float64)
    return np.round((r[3:6] - r[0:3]) / v).astype(np.int64)


def _fill_encoder_grids(args, lidar_range, voxel_size):
    """Give every PointPillars/SECOND encoder section the grid it scatters onto."""
    g = grid_size(lidar_range, voxel_size).tolist()
    if "point_pillar_scatter" in args:
        args["point_pillar_scatter"]["grid_size"] = g
    for key in ("voxel_size",):
        args.setdefault(key, list(voxel_size))
    args.setdefault("lidar_range", list(lidar_range))
    args["grid_size"] = g


def load_general_params(param):
    """Derive grid/anchor values for single-modality and heterogeneous (``heter:``) configs."""
    src = param.get(SOURCE_KEY, "config")
    pre = require(param, "preprocess", dict)
    if "cav_lidar_range" in pre:
        cav_range = _range6(param, pre["cav_lidar_range"], "preprocess.cav_lidar_range")
    else:
        cav_range = _range6(param, require(param, "cav_lidar_range"), "cav_lidar_range")
        pre["cav_lidar_range"] = cav_range
    param.setdefault("cav_lidar_range", cav_range)
    voxel = require(param, "preprocess.args.voxel_size")
    if not (isinstance(voxel, (list, tuple)) and len(voxel) == 3 and all(v > 0 for v in voxel)):
        raise ConfigError(f"{src}: key 'preprocess.args.voxel_size' must be 3 positive numbers, got {voxel!r}")

    post = param.get("postprocess")
    if post is not None:
        anchor = require(param, "postprocess.anchor_args", dict)
        anchor["cav_lidar_range"] = cav_range
        anchor["vw"], anchor["vh"], anchor["vd"] = [float(v) for v in voxel]
        anchor["W"] = math.ceil((cav_range[3] - cav_range[0]) / anchor["vw"])
        anchor["H"] = math.ceil((cav_range[4] - cav_range[1]) / anchor["vh"])
        anchor["D"] = math.ceil((cav_range[5] - cav_range[2]) / anchor["vd"])
        anchor.setdefault("feature_stride", 2)
        anchor.setdefault("num", len(anchor.get("r", [0, 90])))
        post.setdefault("gt_range", cav_range)

    model_args = param.get("model", {}).get("args") if isinstance(param.get("model"), dict) else None
    if isinstance(model_args, dict):
        model_args.setdefault("lidar_range", cav_range)
        if "point_pillar_scatter" in model_args:
            _fill_encoder_grids(model_args, cav_range, voxel)
        if post is not None:
            model_args.setdefault("anchor_number", post["anchor_args"]["num"])

    heter = param.get("heter")
    if isinstance(heter, dict):
        settings = require(param, "heter.modality_setting", dict)
        for m, setting in settings.items():
            if not isinstance(setting, dict):
                raise ConfigError(f"{src}: key 'heter.modality_setting.{m}' must be a mapping")
            if setting.get("sensor_type", "lidar") == "lidar":
                mpre = setting.get("preprocess")
                if not isinstance(mpre, dict) or "args" not in mpre or "voxel_size" not in mpre["args"]:
                    raise ConfigError(f"{src}: missing key 'heter.modality_setting.{m}.preprocess.args.voxel_size'")
                mpre["cav_lidar_range"] = cav_range
                if isinstance(model_args, dict) and isinstance(model_args.get(m), dict):
                    enc = model_args[m].setdefault("encoder_args", {})
                    _fill_encoder_grids(enc, cav_range, mpre["args"]["voxel_size"])
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
