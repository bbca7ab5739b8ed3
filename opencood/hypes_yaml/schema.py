"""The declared keys of an experiment YAML: the top level, and which component declares each section.

The top level is assembled here from the owners' declarations:

* ``model.args``      -> ``MODELS[model.core_method].CONFIG``
* ``loss.args``       -> ``LOSSES[loss.core_method].CONFIG``
* ``fusion``          -> ``DATASETS[fusion.core_method].CONFIG``
* ``preprocess``      -> ``PREPROCESSORS[preprocess.core_method].CONFIG``
* ``postprocess``     -> ``POSTPROCESSORS[postprocess.core_method].CONFIG``
* data-side top-level keys (``root_dir``, ``heter``, ``noise_setting``, ...) -> ``data_config_keys()`` of
  :mod:`opencood.data_utils.datasets`
* ``train_params``, ``optimizer``, ``lr_scheduler``, ``name``, ``yaml_parser`` -> declared below (trainer).

A section whose component declares no ``CONFIG`` is accepted as it is (tests require every registered
component to declare one). :func:`validate_config` is called by ``yaml_utils.load_yaml``.
"""
from opencood.utils.config import REQUIRED, Context, Key, Schema, ordered_range, registry_schema
from opencood.utils.registry import DATASETS, LOSSES, MODELS, POSTPROCESSORS, PREPROCESSORS

TRAIN_PARAMS = Schema({
    "batch_size": Key(int, REQUIRED, "samples per optimizer step (each sample = up to max_cav agents)", low=1),
    "epoches": Key(int, REQUIRED, "(sic, HEAL spelling) number of training epochs", low=0),
    "eval_freq": Key(int, 1, "validate every N epochs (and after the last)", low=1),
    "save_freq": Key(int, 1, "write net_epoch{N}.pth + train_state every N epochs (and after the last)", low=1),
    "max_cav": Key(int, 5, "at most this many agents per sample, ego first", low=1),
}, name="train_params")

OPTIMIZER = Schema({
    "core_method": Key(str, "Adam", "a torch.optim class name (Adam, AdamW, SGD, ...)"),
    "lr": Key(float, REQUIRED, "initial learning rate", low=0),
    "args": Key(dict, {}, "keyword arguments of the optimizer (eps, weight_decay, ...)", schema=Schema(open=True)),
}, name="optimizer")

LR_SCHEDULER = Schema({
    "core_method": Key(str, "multistep", "multistep | step | exponential (stepped once per epoch)",
                       choices=("multistep", "step", "exponential")),
    "gamma": Key(float, 0.1, "learning-rate factor at each step", low=0),
    "step_size": Key((int, list), None, "multistep: epochs [e1, e2, ...]; step: period in epochs"),
}, name="lr_scheduler")


def _component_section(registry, where):
    return Schema({
        "core_method": Key(str, REQUIRED, f"registered name ({registry.kind})"),
        "args": Key(dict, {}, "arguments of the component",
                    schema=registry_schema(registry, "core_method", f"{where}.core_method")),
    }, name=where)


def _data_keys():
    """Top-level keys the data side declares (datasets, heter, noise, ...)."""
    try:
        from opencood.data_utils.datasets import data_config_keys
    except ImportError:  # not declared yet: those keys are accepted as they are
        return {}, True
    return data_config_keys(), False


def _kd_flag_schema(parent, value=None):
    from opencood.models.point_pillar_disconet import KD_FLAG
    return KD_FLAG


def experiment_schema():
    """Schema of a whole experiment config (built on demand: it reads the registries)."""
    from opencood.hypes_yaml.yaml_utils import YAML_PARSERS
    keys = {
        "name": Key(str, "run", "run folder = <log_root>/<name>_<YYYY_MM_DD_HH_MM_SS>/"),
        "yaml_parser": Key(str, "load_general_params", "derivations applied at load (HEAL names, all aliases)",
                           choices=tuple(sorted(YAML_PARSERS))),
        "cav_lidar_range": Key(list, None, "[xmin, ymin, zmin, xmax, ymax, zmax] m, ego LiDAR frame", length=6,
                               items=float, check=ordered_range),
        "train_params": Key(dict, None, "training loop", schema=TRAIN_PARAMS),
        "optimizer": Key(dict, None, "optimizer", schema=OPTIMIZER),
        "lr_scheduler": Key(dict, None, "learning-rate schedule", schema=LR_SCHEDULER),
        "model": Key(dict, REQUIRED, "the model", schema=_component_section(MODELS, "model")),
        "loss": Key(dict, None, "the training loss", schema=_component_section(LOSSES, "loss")),
        "fusion": Key(dict, REQUIRED, "fusion dataset (core_method) and base dataset (dataset)",
                      schema=registry_schema(DATASETS, "core_method", "fusion.core_method", in_value=True)),
        "preprocess": Key(dict, REQUIRED, "voxeliser / shared grid",
                          schema=registry_schema(PREPROCESSORS, "core_method", "preprocess.core_method",
                                                 in_value=True)),
        "postprocess": Key(dict, None, "anchors, targets, decoding",
                           schema=registry_schema(POSTPROCESSORS, "core_method", "postprocess.core_method",
                                                  in_value=True)),
        "kd_flag": Key(dict, None, "DiscoNet's frozen early-fusion teacher (point_pillar_disconet.KD_FLAG); the "
                                   "intermediate dataset then adds teacher_processed_lidar", schema=_kd_flag_schema),
    }
    data_keys, open_top = _data_keys()
    keys.update(data_keys)
    return Schema(keys, open=open_top, name="experiment")


def validate_config(param, source="config"):
    """Check every key of a loaded experiment config against the declarations.

    Returns:
        the list of allow-listed legacy keys met (dotted paths), for the caller's info line.

    Raises:
        ConfigError: unknown key (with the closest known one), wrong type, missing required key (one line).
    """
    ctx = Context(source)
    experiment_schema().validate(param, "", ctx)
    return ctx.ignored

