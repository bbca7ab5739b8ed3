"""Where2comm models: the collaborative detector whose agents first score their own maps with the shared
detection head, so the fusion (``fusion_method: where2comm``) can send only confident cells.

``point_pillar_where2comm`` is the classic PointPillars layout (OpenCOOD names: ``pillar_vfe.``,
``backbone.``, ``shrink_conv.``, ``fusion_net.``, heads); ``heter_model_where2comm`` the per-type ``mX``
layout of :class:`HeterModelBaseline`. Both only add the per-agent confidence
(max over anchors of sigmoid(``cls_head``(agent feature)), (N, 1, H, W)) to the :class:`FusionInput`.
"""
import torch

from opencood.models.heter_model_baseline import HeterModelBaseline
from opencood.models.point_pillar_baseline import PointPillarBaseline
from opencood.utils.registry import MODELS


def agent_confidence(cls_head, features):
    """(N, 1, H, W): max over anchors of sigmoid(cls_head(features)), each agent on its own map."""
    return torch.sigmoid(cls_head(features)).amax(dim=1, keepdim=True)


class ConfidenceMixin:
    """Fills ``FusionInput.confidence`` from the model's ``cls_head``."""

    def fusion_input(self, features, data_dict):
        inp = super().fusion_input(features, data_dict)
        inp.confidence = agent_confidence(self.cls_head, features)
        return inp


@MODELS.register("point_pillar_where2comm")
class PointPillarWhere2comm(ConfidenceMixin, PointPillarBaseline):
    """PointPillars + Where2comm (classic ``model.args``; see :class:`PointPillarBaseline`)."""


@MODELS.register("heter_model_where2comm")
class HeterModelWhere2comm(ConfidenceMixin, HeterModelBaseline):
    """Per-type encoders + Where2comm (``model.args`` of :class:`HeterModelBaseline`)."""
