"""Datasets: ``build_dataset(hypes, visualize, train)`` (HEAL's entry point).

``fusion.core_method`` picks the fusion dataset (registry ``DATASETS``: intermediate, early, late,
intermediateheter, intermediateheterinfer) and ``fusion.dataset`` the base loader (``BASE_DATASETS``: one
module per dataset in ``basedataset/``, e.g. opv2v, v2xset, v2xsim, v2v4real). Unknown names raise ConfigError
listing the known ones.
"""
from opencood.utils.config import schema_of
from opencood.utils.errors import ConfigError
from opencood.utils.registry import BASE_DATASETS, DATASETS


def data_config_keys():
    """The top-level config keys the data side declares, for the experiment schema.

    The union of every registered base loader's ``CONFIG`` (``root_dir``, ``validate_dir``, ``test_dir``,
    ``seed``, ``input_source``, ``add_data_extension``, ``data_cache_dir``, ``heter``, ``ego_diff_cav``) and
    every fusion dataset's ``TOP_LEVEL`` (``comm_range``, ``noise_setting``, ``data_augment``, ``use_cav``);
    the first declaration of a name wins. The ``fusion`` section itself is declared by each fusion dataset's
    ``CONFIG``, ``preprocess`` by the pre-processor's, and ``train_params.max_cav`` by the trainer's schema.

    Returns:
        dict name -> :class:`~opencood.utils.config.Key` (nested sections carry their Schema).
    """
    keys = {}
    for name in BASE_DATASETS.names():
        for key, decl in schema_of(BASE_DATASETS.get(name)).keys.items():
            keys.setdefault(key, decl)
    for name in DATASETS.names():
        for key, decl in DATASETS.get(name).TOP_LEVEL.keys.items():
            keys.setdefault(key, decl)
    return keys


def build_dataset(dataset_cfg, visualize=False, train=True):
    """Build the fusion dataset named by the config.

    Args:
        dataset_cfg: experiment config (``load_yaml`` output).
        visualize: keep all agents' points for pictures (every inference script sets it).
        train: training split/behaviour (``root_dir``) or evaluation (``validate_dir``).

    Returns:
        a torch Dataset with ``collate_batch_train`` / ``collate_batch_test``, ``reinitialize``,
        ``post_process``, ``generate_gt_bbx`` and ``post_processor``.
    """
    source = dataset_cfg.get("_source", "config")
    fusion = dataset_cfg.get("fusion")
    if not isinstance(fusion, dict) or "core_method" not in fusion:
        raise ConfigError(f"{source}: missing key 'fusion.core_method'")
    BASE_DATASETS.get(fusion.get("dataset", "opv2v"), source)
    dataset_cls = DATASETS.get(fusion["core_method"], source)
    return dataset_cls(dataset_cfg, visualize=visualize, train=train)
