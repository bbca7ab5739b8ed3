"""The reference's STAMP config layout, translated into this framework's one (spec baselines §C2).

The reference's STAMP YAMLs (``GenComm_yamls/baselines/stage2/STAMP/*.yaml``, read by its ``yaml_utils_stamp``)
describe every agent type as a whole single-type model: ``yaml_parsers: {mX: parser}`` instead of
``yaml_parser``; no top-level ``preprocess`` / ``postprocess`` but one per type under
``heter.modality_setting.mX``; each ``model.args.mX`` carries its own ``lidar_range``, ``fusion_method`` + its
section, ``in_head``, ``anchor_number``, ``dir_args`` and ``aligner_args``; ``loss`` holds one loss per type
(``loss.mX``) and the alignment loss sits in ``loss_adapter``; ``fusion.stamp: true`` flags the method.

Here a model has ONE feature grid, ONE fusion and ONE set of heads (the ego type's, ``heter.ego_modality``),
so :func:`from_stamp_layout` (called by ``load_yaml`` before validation when :func:`is_stamp_layout`: stage-2
files with ``yaml_parsers``, inference files with a per-type ``loss`` / ``loss_adapter``):

* ``yaml_parser`` = the one parser all types name (different parsers: ConfigError);
* ``preprocess`` / ``postprocess`` = the ego type's (its ``postprocess.voxel_size`` copy dropped); the other
  types' ``postprocess`` sections are dropped (their heads are not built here);
* ``model.args`` gets the ego type's ``fusion_method`` (+ section), ``in_head``, ``anchor_number`` and
  ``dir_args`` when it has none; these per-type keys, ``lidar_range`` and ``aligner_args`` (only ``identity``
  is accepted) leave every type section;
* ``loss`` = ``loss_adapter`` (``adapter_loss``) with the ego type's detection keys added for the alignment
  stages, the ego type's loss otherwise; ``fusion.stamp`` is dropped, ``fusion.dataset: opv2v4stamp`` is
  ``opv2v``; adapter / reverter sections of the protocol type are dropped;
* ``model.args.stage`` defaults to ``infer`` for ``heter_model_baseline_w_stamp_infer`` and to
  ``train_adapter`` otherwise; ``heter.cav_preference`` defaults to the non-protocol types (the protocol type
  is never an agent's type here).

Every change is listed in one info line.
"""
import copy
import logging
import re

from opencood.utils.errors import ConfigError
from opencood.utils.heter_utils import MODALITY_TYPE, parse_ego_modality

logger = logging.getLogger("opencood.hypes_yaml.stamp_layout")

TYPE_MODEL_KEYS = ("fusion_method", "in_head", "anchor_number", "dir_args")  # hoisted from the ego type
TYPE_ONLY_KEYS = ("lidar_range", "aligner_args")  # dropped from every type section
ALIGN_STAGES = ("train_adapter", "train_adapter_w_output")
# the reference's STAMP base loaders: the same files; intermediateheteradapter adds the protocol inputs
BASE_DATASET_ALIASES = {"opv2v4stamp": "opv2v"}


def is_stamp_layout(param):
    """True for a config in the reference's STAMP layout: ``yaml_parsers`` (stage 2), ``loss_adapter``, or a
    STAMP model whose ``loss`` holds one loss per type (its inference YAMLs)."""
    if not isinstance(param, dict):
        return False
    model, loss = param.get("model"), param.get("loss")
    stamp_model = isinstance(model, dict) and str(model.get("core_method", "")).startswith(
        "heter_model_baseline_w_stamp")
    per_type_loss = isinstance(loss, dict) and "core_method" not in loss and any(
        re.fullmatch(MODALITY_TYPE, str(k)) for k in loss)
    return "yaml_parsers" in param or "loss_adapter" in param or (stamp_model and per_type_loss)


def _section(param, path, source, kind=dict):
    node = param
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"{source}: missing key '{path}' (STAMP layout)")
        node = node[part]
    if not isinstance(node, kind):
        raise ConfigError(f"{source}: key '{path}' should be a {kind.__name__} (STAMP layout)")
    return node


def from_stamp_layout(param, source="config"):
    """Translate a reference STAMP-layout config (see module docstring); returns a new dict.

    Raises:
        ConfigError: one line naming the file and key the translation cannot do.
    """
    out = copy.deepcopy(param)
    notes = []
    if "yaml_parsers" in out:
        parsers = out.pop("yaml_parsers")
        if not isinstance(parsers, dict) or not parsers or len(set(parsers.values())) != 1:
            raise ConfigError(f"{source}: key 'yaml_parsers' should name one parser for every type, got "
                              f"{parsers!r}")
        out.setdefault("yaml_parser", next(iter(parsers.values())))
        notes.append("yaml_parsers -> yaml_parser")
    heter = _section(out, "heter", source)
    egos = parse_ego_modality(heter.get("ego_modality", ""))
    if len(egos) != 1:
        raise ConfigError(f"{source}: key 'heter.ego_modality' should name one type in the STAMP layout, got "
                          f"{heter.get('ego_modality')!r}")
    ego = egos[0]
    settings = _section(out, "heter.modality_setting", source)
    if "preprocess" not in out:
        out["preprocess"] = copy.deepcopy(_section(out, f"heter.modality_setting.{ego}.preprocess", source))
        notes.append(f"preprocess <- heter.modality_setting.{ego}.preprocess")
    if "postprocess" not in out:
        out["postprocess"] = copy.deepcopy(_section(out, f"heter.modality_setting.{ego}.postprocess", source))
        out["postprocess"].pop("voxel_size", None)
        notes.append(f"postprocess <- heter.modality_setting.{ego}.postprocess")
    dropped = [m for m, s in settings.items() if isinstance(s, dict) and s.pop("postprocess", None) is not None]
    if dropped:
        notes.append(f"heter.modality_setting.{{{','.join(dropped)}}}.postprocess dropped")

    model = _section(out, "model", source)
    args = _section(out, "model.args", source)
    types = [k for k in args if re.fullmatch(MODALITY_TYPE, str(k)) and isinstance(args[k], dict)]
    ego_args = _section(out, f"model.args.{ego}", source)
    fusion = ego_args.get("fusion_method")
    for key in TYPE_MODEL_KEYS + ((fusion,) if fusion else ()):
        if key in ego_args and key not in args:
            args[key] = copy.deepcopy(ego_args[key])
            notes.append(f"model.args.{key} <- model.args.{ego}.{key}")
    for m in types:
        section = args[m]
        own_fusion = section.get("fusion_method")
        aligner = section.get("aligner_args")
        if aligner is not None and (not isinstance(aligner, dict) or aligner.get("core_method") != "identity"):
            raise ConfigError(f"{source}: model.args.{m}.aligner_args: only 'identity' is supported in the STAMP "
                              f"layout, got {aligner!r}")
        for key in TYPE_MODEL_KEYS + TYPE_ONLY_KEYS + ((own_fusion,) if own_fusion else ()):
            section.pop(key, None)
    notes.append(f"per-type heads/fusion keys of {','.join(types)} dropped (the ego {ego}'s are the model's)")
    protocol = heter.get("protocol_modality")
    if protocol in types:
        extra = [k for k in ("adapter", "reverter") if args[protocol].pop(k, None) is not None]
        if extra:
            notes.append(f"model.args.{protocol}.{{{','.join(extra)}}} dropped (the protocol type adapts nothing)")
    stage = args.setdefault("stage", "infer" if str(model.get("core_method", "")).endswith("_infer")
                            else "train_adapter")
    if protocol is not None:
        args.setdefault("protocol_modality", protocol)
        if "cav_preference" not in heter:
            heter["cav_preference"] = {m: 1.0 for m in settings if m != protocol}
            notes.append(f"heter.cav_preference = every type but the protocol {protocol}")
    args.setdefault("ego_modality", ego)

    loss = out.get("loss")
    adapter = out.pop("loss_adapter", None)
    if isinstance(loss, dict) and "core_method" not in loss:
        if ego not in loss or not isinstance(loss[ego], dict):
            raise ConfigError(f"{source}: missing key 'loss.{ego}' (the ego type's loss, STAMP layout)")
        own = copy.deepcopy(loss[ego])
        if stage in ALIGN_STAGES and isinstance(adapter, dict):
            own = {"core_method": adapter.get("core_method", "adapter_loss"),
                   "args": {**(own.get("args") or {}), **(adapter.get("args") or {})}}
            notes.append(f"loss <- loss_adapter + loss.{ego}.args")
        else:
            notes.append(f"loss <- loss.{ego}")
        out["loss"] = own
    fusion_section = out.get("fusion")
    if isinstance(fusion_section, dict) and fusion_section.pop("stamp", None) is not None:
        notes.append("fusion.stamp dropped")
    if isinstance(fusion_section, dict) and fusion_section.get("dataset") in BASE_DATASET_ALIASES:
        fusion_section["dataset"] = BASE_DATASET_ALIASES[fusion_section["dataset"]]
        notes.append(f"fusion.dataset -> {fusion_section['dataset']}")
    logger.info("%s: reference STAMP layout translated: %s", source, "; ".join(notes))
    return out
