"""Agent-type (modality) assignment for heterogeneous collaboration (spec data_eval §1.6, §3.3).

YAML ``heter:`` section::

    heter:
      assignment_path: opencood/modality_assign/opv2v_4modality.json   # {scenario: {cav_id: "m1".."m4"}}
      ego_modality: m1            # or "m1&m2": the types the ego may have
      mapping_dict: {m1: m1, m2: m1, m3: m2, m4: m2}   # json type -> experiment type (eval only)
      cav_preference: {m1: 0.5, m2: 0.5}               # optional, training draw (default uniform)
      lidar_channels_dict: {m3: 32}                     # optional, selects OPV2V_Hetero _32/_16 clouds
      modality_setting: {m1: {sensor_type: lidar, core_method: point_pillar, preprocess: {...}}, ...}
    ego_diff_cav: true            # optional (top level or inside heter): non-ego agents never get an ego type

Rules:
* Training: ego type ~ uniform over ``ego_modality``; every other agent ~ ``cav_preference`` (the json is
  ignored). Types are drawn per sample with the caller's generator, so they change every epoch.
* Evaluation: type = ``mapping_dict[json type]``; with ``ego_diff_cav`` the training rule is used (with the
  caller's deterministic per-sample generator) and non-ego agents exclude ego types.
* Agents whose type is not a key of ``modality_setting`` are dropped by the datasets.
"""
import json
import logging
import os
import re

import numpy as np

from opencood.utils.camera_utils import DATA_AUG_CONF, GRID_CONF
from opencood.utils.config import REQUIRED, Key, Schema, registry_schema
from opencood.utils.errors import ConfigError
from opencood.utils.registry import PREPROCESSORS

logger = logging.getLogger(__name__)

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def resolve_path(path):
    """Resolve a config path: as given (absolute or cwd-relative), else relative to the repository root."""
    if os.path.isabs(path) or os.path.exists(path):
        return path
    alt = os.path.join(_REPO_ROOT, path)
    return alt if os.path.exists(alt) else path


def load_modality_assignment(path):
    """Read a modality-assignment json ``{scenario: {cav_id_str: "mX"}}``.

    Raises:
        ConfigError: missing file, malformed json or wrong structure (names the file).
    """
    real = resolve_path(path)
    if not os.path.isfile(real):
        raise ConfigError(f"{path}: modality assignment json not found (key 'heter.assignment_path')")
    try:
        with open(real, "r") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: malformed json ({e})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ConfigError(f"{path}: expected {{scenario: {{cav_id: modality}}}}")
    return {str(s): {str(c): str(m) for c, m in cavs.items()} for s, cavs in data.items()}


def parse_ego_modality(value):
    """``"m1&m2"`` -> ``["m1", "m2"]`` (the one parser of ``ego_modality`` strings)."""
    return [m.strip() for m in str(value).split("&") if m.strip()]


MODALITY_TYPE = r"m\d+"  # agent type names: m1, m2, ...

# One agent type of ``heter.modality_setting``.
MODALITY_SETTING = Schema({
    "sensor_type": Key(str, "lidar", "what the type senses (lidar_camera: both, one agent)",
                       choices=("lidar", "camera", "lidar_camera")),
    "preprocess": Key(dict, None, "LiDAR types: the type's own voxeliser (cav_lidar_range derived)",
                      schema=registry_schema(PREPROCESSORS, "core_method",
                                             "heter.modality_setting.mX.preprocess.core_method", in_value=True)),
    "grid_conf": Key(dict, None, "camera types: the LSS BEV grid", schema=GRID_CONF),
    "data_aug_conf": Key(dict, None, "camera types: image augmentation", schema=DATA_AUG_CONF),
}, name="agent type")


class HeterAssigner:
    """Decides which agent type each agent of a sample gets, and the eval CAV order.

    Args:
        heter: the YAML ``heter`` dict.
        ego_diff_cav: force non-ego agents to non-ego types (GenComm stage 2), in train and eval.
        source: config file name for error messages.
    """

    CONFIG = Schema({
        "assignment_path": Key(str, None, "modality-assignment json {scenario: {agent_id: type}} (required for "
                                          "evaluation unless ego_diff_cav)"),
        "ego_modality": Key(str, None, "the type(s) the ego may have: 'm1' or 'm1&m2' (default: the first type "
                                       "of modality_setting)"),
        "mapping_dict": Key(dict, {}, "json type -> experiment type (evaluation)", each=Key(str, REQUIRED)),
        "cav_preference": Key(dict, None, "training: probability of each type for non-ego agents (default "
                                          "uniform)", each=Key(float, REQUIRED)),
        "lidar_channels_dict": Key(dict, {}, "type -> beams (32 | 16): read OPV2V_Hetero <ts>_<beams>.pcd",
                                   each=Key(int, REQUIRED)),
        "modality_setting": Key(dict, REQUIRED, "per agent type: sensor and pre-processing",
                                schema=Schema(patterns={MODALITY_TYPE: Key(dict, REQUIRED, schema=MODALITY_SETTING)},
                                              name="agent types")),
        "ego_diff_cav": Key(bool, False, "non-ego agents never get an ego type, also at eval (GenComm stage 2)"),
        "protocol_modality": Key(str, None, "STAMP: the protocol type; intermediateheteradapter adds every "
                                            "agent's input for it (never an agent's own type)"),
    }, name="heterogeneous agents")

    def __init__(self, heter, ego_diff_cav=False, source="config"):
        self.source = source
        cfg = self.CONFIG.parse(heter, "heter", source)
        settings = cfg.modality_setting
        if not settings:
            raise ConfigError(f"{source}: key 'heter.modality_setting' names no agent type")
        self.modality_setting = {m: MODALITY_SETTING.parse(v, f"heter.modality_setting.{m}", source)
                                 for m, v in settings.items()}  # defaults filled in
        self.modalities = list(settings)
        self.ego_modality = parse_ego_modality(cfg.ego_modality or self.modalities[0])
        for m in self.ego_modality:
            if m not in settings:
                raise ConfigError(f"{source}: 'heter.ego_modality' names '{m}', which is not a key of "
                                  f"'heter.modality_setting' ({', '.join(self.modalities)})")
        self.mapping_dict = {str(k): str(v) for k, v in cfg.mapping_dict.items()}
        self._check_mapping(settings)
        pref = cfg.cav_preference or {m: 1.0 for m in self.modalities}
        for m in pref:
            if m not in settings:
                raise ConfigError(f"{source}: 'heter.cav_preference' names '{m}', not a key of "
                                  f"'heter.modality_setting'")
        self.cav_preference = {str(k): float(v) for k, v in pref.items()}
        self.ego_diff_cav = bool(ego_diff_cav)
        self.lidar_channels_dict = {str(k): int(v) for k, v in cfg.lidar_channels_dict.items()}
        self.assignment_path = cfg.assignment_path
        self.protocol_modality = cfg.protocol_modality  # STAMP: every agent's LiDAR is read for it too
        self.assignment = (load_modality_assignment(self.assignment_path) if self.assignment_path else None)
        if self.ego_diff_cav:
            others = [m for m in self.cav_preference if m not in self.ego_modality]
            if not others:
                raise ConfigError(f"{source}: 'ego_diff_cav' is true but 'heter.cav_preference' / "
                                  f"'heter.modality_setting' has no non-ego type")


    def _check_mapping(self, settings):
        """``mapping_dict`` keys and values must be agent type names (``m1``, ``m2``, ...): a typo such as
        ``M1`` or ``lidar`` would silently give agents no type. A value without a ``modality_setting`` is legal
        (HEAL's stage configs map every json type; agents of such types carry no input) and logged once."""
        bad = [t for pair in self.mapping_dict.items() for t in pair if not re.fullmatch(MODALITY_TYPE, t)]
        if bad:
            raise ConfigError(f"{self.source}: 'heter.mapping_dict' names '{bad[0]}', not an agent type "
                              f"(m1, m2, ...; this config has {', '.join(self.modalities)})")
        absent = sorted({v for v in self.mapping_dict.values() if v not in settings})
        if absent:
            logger.info(f"{self.source}: heter.mapping_dict maps to {', '.join(absent)} without a "
                        f"heter.modality_setting: agents of those types take no input")
    def sensor_type(self, modality):
        """'lidar', 'camera' or 'lidar_camera' for a type of ``modality_setting``."""
        return self.modality_setting[modality].sensor_type

    def check_coverage(self, scenario_cavs, train):
        """Check that the json covers every agent of the split and maps to known types.

        Args:
            scenario_cavs: dict scenario name -> list of cav ids (strings) found on disk.
            train: training split (json optional) or evaluation (json required unless ego_diff_cav
                with no json, where the order falls back to sorted ids).

        Raises:
            ConfigError: one line naming the json file and the first scenario/agent at fault.
        """
        if self.assignment is None:
            if not train and not self.ego_diff_cav:
                raise ConfigError(f"{self.source}: key 'heter.assignment_path' is required for evaluation")
            return
        path = self.assignment_path
        if not train and not self.ego_diff_cav and not any(
                self.mapping_dict.get(t) in self.ego_modality
                for cavs in self.assignment.values() for t in cavs.values()):
            raise ConfigError(f"{path}: no json type maps (via 'heter.mapping_dict') to an ego type "
                              f"{self.ego_modality}")
        for scenario, cavs in scenario_cavs.items():
            entry = self.assignment.get(scenario)
            if entry is None:
                raise ConfigError(f"{path}: no entry for scenario '{scenario}'")
            for cav in cavs:
                if cav not in entry:
                    raise ConfigError(f"{path}: no modality for agent '{cav}' of scenario '{scenario}'")
                if not train and not self.ego_diff_cav and entry[cav] not in self.mapping_dict:
                    raise ConfigError(f"{path}: agent '{cav}' of scenario '{scenario}' has type "
                                      f"'{entry[cav]}', which 'heter.mapping_dict' does not map")

    def mapped_type(self, scenario, cav_id):
        """Experiment type of an agent in evaluation: ``mapping_dict[json type]``."""
        return self.mapping_dict[self.assignment[scenario][cav_id]]

    def reorder_cav_list(self, cav_list, scenario, train):
        """Eval only: make sure an agent whose mapped type is an ego type comes first.

        If the first (sorted) agent's mapped type is not in ``ego_modality``, the first agent in json
        order whose mapped type is, becomes ego; the others keep their order. (The reference compared
        the first agent's *json* type; we compare mapped types consistently.) Unchanged in training, with
        ``ego_diff_cav`` (types are drawn, any agent can be ego) or when no agent qualifies.
        """
        if train or self.ego_diff_cav or self.assignment is None or not cav_list:
            return list(cav_list)
        if self.mapped_type(scenario, cav_list[0]) in self.ego_modality:
            return list(cav_list)
        for cav in self.assignment[scenario]:
            if cav in cav_list and self.mapped_type(scenario, cav) in self.ego_modality:
                return [cav] + [c for c in cav_list if c != cav]
        return list(cav_list)

    def _draw(self, n_agents, rng):
        """Training rule: ego from ego_modality, the others from cav_preference."""
        ego = str(rng.choice(self.ego_modality))
        names = [m for m in self.cav_preference if not (self.ego_diff_cav and m in self.ego_modality)]
        probs = np.array([self.cav_preference[m] for m in names], dtype=np.float64)
        probs = probs / probs.sum()
        others = [names[i] for i in rng.choice(len(names), size=n_agents - 1, p=probs)] if n_agents > 1 else []
        return [ego] + others

    def assign(self, cav_list, scenario, train, rng):
        """Agent types of one sample.

        Args:
            cav_list: cav ids in sample order (ego first).
            scenario: scenario folder name (json key).
            train: training rule (random) vs evaluation rule (mapping).
            rng: np.random.Generator for the random draws.

        Returns:
            list of type names, one per agent, in ``cav_list`` order.
        """
        if train or self.ego_diff_cav:
            return self._draw(len(cav_list), rng)
        return [self.mapped_type(scenario, cav) for cav in cav_list]
