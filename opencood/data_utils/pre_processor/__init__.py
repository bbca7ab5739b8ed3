"""Point-cloud pre-processors (voxelisation), built by ``preprocess.core_method``."""
from opencood.utils.errors import ConfigError
from opencood.utils.registry import PREPROCESSORS


def build_preprocessor(preprocess_params, train):
    """Build the pre-processor named by ``preprocess_params['core_method']``.

    Args:
        preprocess_params: the YAML ``preprocess`` section.
        train: training mode (selects e.g. ``max_voxel_train`` over ``max_voxel_test``).

    Returns:
        the pre-processor instance (e.g. :class:`SpVoxelPreprocessor`).
    """
    if not isinstance(preprocess_params, dict) or "core_method" not in preprocess_params:
        raise ConfigError("config: missing key 'preprocess.core_method'")
    name = preprocess_params["core_method"]
    return PREPROCESSORS.get(name, source="preprocess.core_method")(preprocess_params, train)
