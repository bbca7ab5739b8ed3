"""Single-agent PointPillars (OpenCOOD ``point_pillar``) and the classic F-Cooper model (``point_pillar_fcooper``).

``point_pillar``: pillar_vfe -> scatter -> backbone -> [shrink_conv] -> cls/reg/dir heads, no fusion: the
detector of early fusion (one merged cloud per sample) and late fusion (each agent alone, boxes fused after
post-processing). ``point_pillar_fcooper``: the same layout with element-wise max fusion (F-Cooper) between
shrink_conv and the heads, OpenCOOD's module names (``fusion_net`` has no parameters).
"""
from opencood.models.heter_model_baseline import fusion_keys
from opencood.models.point_pillar_baseline import PointPillarBaseline
from opencood.utils.config import Key
from opencood.utils.registry import MODELS

NO_FUSION = Key(str, "max", "single-agent detector: no fusion (only the default 'max' is accepted; not used)",
                choices=("max",))


def without_fusion(schema, name):
    """``schema`` minus every fusion key, with ``fusion_method`` fixed to the unused default."""
    fusion = fusion_keys()
    keys = {k: v for k, v in schema.keys.items() if k not in fusion}
    out = schema.extend(name=name)
    out.keys = dict(keys, fusion_method=NO_FUSION)
    return out


class SingleAgentDetector:
    """Mixin for a :class:`HeterModelBaseline` subclass that detects on each sample's own map (no fusion_net)."""

    def __init__(self, args):
        super().__init__(args)
        del self.fusion_net  # nothing is fused: the heads see each sample's own map

    def forward(self, data_dict):
        """Args: data_dict = batch['ego'] with ``processed_lidar`` (one cloud per sample, ``record_len`` ones).

        Returns:
            ``cls_preds`` (B, A, H', W'), ``reg_preds`` (B, 7A, H', W'), ``dir_preds``, ``fused_feature``
            (B, C, H', W') = the sample's own map.
        """
        features, _, _ = self.encode_agents(data_dict)  # (B, C, H', W')
        out = self.detect(features)
        out["fused_feature"] = features
        return out


@MODELS.register("point_pillar")
class PointPillar(SingleAgentDetector, PointPillarBaseline):
    """One PointPillars detector per sample (early fusion) or per agent (late fusion).

    Args:
        args: YAML ``model.args``: ``voxel_size``, ``lidar_range`` (metres, the detector's own LiDAR frame),
            ``pillar_vfe``, ``point_pillar_scatter``, ``base_bev_backbone``, optional ``shrink_header``,
            ``anchor_number`` (or ``anchor_num``), optional ``dir_args``.
    """

    CONFIG = without_fusion(PointPillarBaseline.CONFIG, "point_pillar")


@MODELS.register("point_pillar_fcooper")
class PointPillarFCooper(PointPillarBaseline):
    """OpenCOOD's F-Cooper: PointPillars features of every agent max-fused in the ego frame.

    Args:
        args: ``point_pillar``'s keys; ``fusion_method`` may be omitted (only ``max``).
    """

    CONFIG = PointPillarBaseline.CONFIG.extend(
        {"fusion_method": Key(str, "max", "F-Cooper fuses by element-wise max", choices=("max",))},
        name="point_pillar_fcooper")
