"""Detection post-processors (anchors, targets, decoding, NMS), built by ``postprocess.core_method``."""
from opencood.utils.errors import ConfigError
from opencood.utils.registry import POSTPROCESSORS


def build_postprocessor(anchor_params, train):
    """Build the post-processor named by ``anchor_params['core_method']``.

    Args:
        anchor_params: the YAML ``postprocess`` section (with the parser-derived ``anchor_args``).
        train: training mode.

    Returns:
        the post-processor instance (e.g. :class:`VoxelPostprocessor`).
    """
    if not isinstance(anchor_params, dict) or "core_method" not in anchor_params:
        raise ConfigError("config: missing key 'postprocess.core_method'")
    name = anchor_params["core_method"]
    return POSTPROCESSORS.get(name, source="postprocess.core_method")(anchor_params, train)
