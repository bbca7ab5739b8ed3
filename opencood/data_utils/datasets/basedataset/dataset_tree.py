"""Scan and validate an OPV2V-style split folder before anything is loaded (spec data_eval §1.1).

Layout::

    <root>/OPV2V/<split>/<scenario>/<cav_id>/<ts>.yaml, <ts>.pcd, <ts>_camera0..3.png
    <root>/OPV2V_Hetero/<split>/<scenario>/<cav_id>/<ts>_32.pcd, <ts>_16.pcd, <ts>_depth0..3.png
    <root>/OPV2V/additional/<split>/<scenario>/<cav_id>/<ts>_bev_visibility.png

Only ``os.listdir`` / ``os.path.isdir`` are used (one listing per agent folder), so checking the real
OPV2V train split takes well under a second. Every problem is collected and reported in ONE DataError.

Companion trees are derived from the dataset root component only (a documented fix: the reference
substituted ``OPV2V`` / ``train`` / ``test`` anywhere in the path, which broke roots such as
``/data/OPV2V_runs/test_dataset/OPV2V``).
"""
import os

from opencood.utils.errors import DataError

# Known bad frame of the real OPV2V train split (scenario, timestamp).
BLACKLIST = {("2021_08_20_21_10_24", "000265")}
# V2XSet scenario with only three cameras: dropped when cameras are loaded.
V2XSET_THREE_CAMERA_SCENARIO = "2021_09_09_13_20_58"
MAX_LISTED_PROBLEMS = 5
NUM_CAMERAS = 4


def hetero_root(dataset_root):
    """``.../OPV2V`` -> ``.../OPV2V_Hetero`` (only the last path component is rewritten).

    A root already named ``*Hetero*`` is returned unchanged; a root without ``OPV2V`` in its name
    (e.g. ``V2XSET``) gets ``_Hetero`` appended.
    """
    parent, name = os.path.split(os.path.normpath(dataset_root))
    if "Hetero" in name:
        return os.path.join(parent, name)
    if "OPV2V" in name:
        return os.path.join(parent, name.replace("OPV2V", "OPV2V_Hetero", 1))
    return os.path.join(parent, name + "_Hetero")


def split_paths(split_dir):
    """Paths of one split.

    Args:
        split_dir: e.g. ``dataset/OPV2V/train``.

    Returns:
        dict with ``split_dir``, ``split`` (folder name), ``hetero_dir`` (``.../OPV2V_Hetero/<split>``)
        and ``additional_dir`` (``.../OPV2V/additional/<split>``).
    """
    split_dir = os.path.normpath(split_dir)
    root, split = os.path.split(split_dir)
    return {"split_dir": split_dir, "split": split,
            "hetero_dir": os.path.join(hetero_root(root), split),
            "additional_dir": os.path.join(root, "additional", split)}


def _listdir(path):
    try:
        return set(os.listdir(path))
    except OSError:
        return None


def scan_split(split_dir, need, skip_scenarios=()):
    """List scenarios, agents and frames of a split and check the files the run will read.

    Args:
        split_dir: split folder (``root_dir`` / ``validate_dir``).
        need: dict of requirements: ``lidar`` (bool, ``<ts>.pcd``), ``channels`` (iterable of ints:
            ``<ts>_<c>.pcd`` in OPV2V_Hetero), ``camera`` (bool, ``<ts>_camera0..3.png``), ``depth`` (bool,
            ``<ts>_depth0..3.png`` in OPV2V_Hetero), ``extensions`` (list of names: ``<ts>_<name>`` in the
            agent folder or under ``additional/<split>``).
        skip_scenarios: scenario names to ignore.

    Returns:
        list of scenario dicts ``{'name', 'path', 'cavs': {cav_id: {'timestamps': [ts, ...] (sorted),
        'json': set of ts with a <ts>.json}}}`` with scenarios and cav ids string-sorted.

    Raises:
        DataError: ``"<split_dir>: N dataset problems: <first few>"`` listing folder/agent/timestamp/file.
    """
    paths = split_paths(split_dir)
    split_dir = paths["split_dir"]
    if not os.path.isdir(split_dir):
        raise DataError(f"{split_dir}: dataset split folder not found")
    problems = []
    skip = set(skip_scenarios)
    names = [n for n in sorted(os.listdir(split_dir))
             if os.path.isdir(os.path.join(split_dir, n)) and n not in skip]
    if not names:
        problems.append(f"{split_dir}: no scenario folders")
    scenarios = [scen for scen in (_scan_scenario(paths, name, need, problems) for name in names) if scen]
    raise_problems(split_dir, problems)
    return scenarios


def raise_problems(split_dir, problems):
    """Raise ``DataError("<split_dir>: N dataset problems: <first few>")`` when ``problems`` (strings) is not
    empty (every format's up-front tree check reports this way)."""
    if problems:
        shown = "; ".join(problems[:MAX_LISTED_PROBLEMS])
        more = f" (and {len(problems) - MAX_LISTED_PROBLEMS} more)" if len(problems) > MAX_LISTED_PROBLEMS else ""
        raise DataError(f"{split_dir}: {len(problems)} dataset problem{'s' if len(problems) > 1 else ''}: "
                        f"{shown}{more}")


def _scan_scenario(paths, name, need, problems):
    """One scenario's dict (see :func:`scan_split`), or None when it has no agent folder; problems appended."""
    scen_path = os.path.join(paths["split_dir"], name)
    cav_ids = sorted(c for c in os.listdir(scen_path) if os.path.isdir(os.path.join(scen_path, c)))
    if not cav_ids:
        problems.append(f"{scen_path}: scenario has no agent folders")
        return None
    cavs = {cav: _scan_agent(os.path.join(scen_path, cav), name, problems) for cav in cav_ids}
    all_stamps = sorted(set().union(*(c["timestamps"] for c in cavs.values())))
    for cav, info in cavs.items():
        problems.extend(_check_agent(paths, name, cav, info, all_stamps, need))
        del info["files"]
    return {"name": name, "path": scen_path, "cavs": cavs}


def _scan_agent(cav_path, scenario, problems):
    """``{'timestamps', 'json', 'files'}`` of one agent folder (blacklisted frames removed)."""
    files = _listdir(cav_path) or set()
    stamps = sorted(f[:-5] for f in files if f.endswith(".yaml") and "additional" not in f)
    stamps = [t for t in stamps if (scenario, t) not in BLACKLIST]
    if not stamps:
        problems.append(f"{cav_path}: agent folder has no <timestamp>.yaml")
    return {"timestamps": stamps, "json": {t for t in stamps if t + ".json" in files}, "files": files}


def _missing(folder, stamps, suffixes, files):
    """``<folder>/<ts><suffix> missing`` for every timestamp (outer loop) x suffix not in ``files``."""
    return [f"{folder}/{t}{sfx} missing" for t in stamps for sfx in suffixes if f"{t}{sfx}" not in files]


def _check_hetero(paths, scenario, cav, stamps, need):
    """Problems of the agent's OPV2V_Hetero folder (``_<c>.pcd`` clouds, depth images)."""
    channels = sorted(set(need.get("channels") or ()))
    if not channels and not need.get("depth"):
        return []
    het_path = os.path.join(paths["hetero_dir"], scenario, cav)
    het_files = _listdir(het_path)
    if het_files is None:
        return [f"{het_path}: OPV2V_Hetero agent folder missing (needed for "
                f"{'lidar_channels_dict' if channels else 'depth'})"]
    problems = _missing(het_path, stamps, [f"_{c}.pcd" for c in channels], het_files)
    if need.get("depth"):
        problems += _missing(het_path, stamps, [f"_depth{i}.png" for i in range(NUM_CAMERAS)], het_files)
    return problems


def _check_agent(paths, scenario, cav, info, all_stamps, need):
    """Problems of one agent folder: missing frames and missing companion files."""
    stamps = info["timestamps"]
    if not stamps:
        return []
    cav_path = os.path.join(paths["split_dir"], scenario, cav)
    files = info["files"]
    own = set(stamps)
    problems = [f"{cav_path}/{t}.yaml missing (other agents of the scenario have it)"
                for t in all_stamps if t not in own]
    if need.get("lidar"):
        problems += _missing(cav_path, stamps, [".pcd"], files)
    if need.get("camera"):
        problems += _missing(cav_path, stamps, [f"_camera{i}.png" for i in range(NUM_CAMERAS)], files)
    problems += _check_hetero(paths, scenario, cav, stamps, need)
    extensions = need.get("extensions") or []
    if extensions:
        add_path = os.path.join(paths["additional_dir"], scenario, cav)
        found = files | (_listdir(add_path) or set())
        for ext in extensions:  # per extension, then per frame (the message lists the first few)
            problems += _missing(add_path, stamps, [f"_{ext}"], found)
    return problems


def extension_path(paths, scenario, cav, timestamp, ext):
    """Path of ``<ts>_<ext>``: the agent folder first, else ``additional/<split>``."""
    local = os.path.join(paths["split_dir"], scenario, cav, f"{timestamp}_{ext}")
    if os.path.exists(local):
        return local
    return os.path.join(paths["additional_dir"], scenario, cav, f"{timestamp}_{ext}")


def check_split_contents(split_dir, read_agent, progress=None):
    """The full up-front check (``train.py --check_data full``): parse every agent YAML/JSON and every PCD
    header of a split (plus the size of ``.bin`` clouds), so a corrupt file is found before training, not
    when an epoch (or the final test) first reads it.

    Costs about one agent-YAML decode per frame and agent (~10 ms each for real OPV2V files); PCD data
    sections are not decoded (the header is checked against the file size).

    Args:
        split_dir: an OPV2V-format split folder.
        read_agent: the agent-file parser (``opv2v_basedataset.read_agent_params``), raising DataError.
        progress: optional ``callable(done, total)`` called per agent folder.

    Returns:
        number of files checked.

    Raises:
        DataError: one line, ``"<split_dir>: N dataset problems: <first few>"``.
    """
    from opencood.utils.pcd_utils import read_pcd_header
    scenarios = scan_split(split_dir, {})
    problems, checked = [], 0
    agents = [(scen, cav, info) for scen in scenarios for cav, info in scen["cavs"].items()]
    for k, (scen, cav, info) in enumerate(agents):
        folder = os.path.join(scen["path"], cav)
        files = _listdir(folder) or set()
        for ts in info["timestamps"]:
            params = os.path.join(folder, f"{ts}.json" if ts in info["json"] else f"{ts}.yaml")
            clouds = [(os.path.join(folder, f"{ts}{ext}"), ext) for ext in (".pcd", ".bin") if f"{ts}{ext}" in files]
            for path, check in [(params, read_agent)] + [(p, read_pcd_header if e == ".pcd" else _bin_cloud)
                                                         for p, e in clouds]:
                checked += 1
                try:
                    check(path)
                except DataError as e:
                    problems.append(" ".join(str(e).split()))
        if progress is not None:
            progress(k + 1, len(agents))
    raise_problems(split_dir, problems)
    return checked


def _bin_cloud(path):
    """A ``.bin`` cloud must hold whole (x, y, z, intensity) float32 points."""
    size = os.path.getsize(path)
    if size % 16:
        raise DataError(f"{path}: {size} bytes is not a whole number of float32 (x, y, z, intensity) points")
