"""Detection heads. :mod:`.anchor_head` is the one anchor-head definition (anchors, targets, coding, decoding,
conv heads); :mod:`.detection_loss` its loss terms; :mod:`.resolve` the cross-section config checks."""
from opencood.models.heads.anchor_head import (  # noqa: F401
    ANCHOR_ARGS, ANCHOR_CLASS, DIR_ARGS, HEAD_MODEL_KEYS, TARGET_ARGS, AnchorClass, AnchorHead, anchors_per_cell,
    build_detection_heads, conv_heads, delta_to_boxes3d)
from opencood.models.heads.resolve import resolve_head_config  # noqa: F401
