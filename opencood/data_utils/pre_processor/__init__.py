"""Point-cloud pre-processors (voxelisation), built by ``preprocess.core_method``."""
from opencood.utils.errors import ConfigError
from opencood.utils.registry import PREPROCESSORS


def build_preprocessor(preprocess_params, train, path="preprocess"):
    """Build the pre-processor named by ``preprocess_params['core_method']``.

    Args:
        preprocess_params: the YAML ``preprocess`` section.
        train: training mode (selects e.g. ``max_voxel_train`` over ``max_voxel_test``).
        path: dotted config path of the section, for messages (``heter.modality_setting.m1.preprocess``).

    Returns:
        the pre-processor instance (e.g. :class:`SpVoxelPreprocessor`).
    """
    if not isinstance(preprocess_params, dict) or "core_method" not in preprocess_params:
        raise ConfigError(f"config: missing key '{path}.core_method'")
    name = preprocess_params["core_method"]
    return PREPROCESSORS.get(name, source=f"{path}.core_method")(preprocess_params, train, path=path)
