"""DiscoNet's loss: the anchor detection loss + ``kd.weight`` x KL(teacher || student) of the fused maps."""
from collections import OrderedDict

import torch
import torch.nn.functional as F

from opencood.loss.point_pillar_loss import PointPillarLoss
from opencood.utils.config import Key, Schema
from opencood.utils.registry import LOSSES


def kd_loss(student, teacher):
    """KL divergence of the per-cell channel distributions, mean over every element (torch ``reduction='mean'``,
    as the reference's ``KLDivLoss(size_average=True, reduce=True)``).

    Args:
        student: (B, C, H, W) fused map of the student.
        teacher: (B, C, H, W) fused map of the frozen teacher (same grid).

    Returns:
        0-d tensor: mean_{b, h, w, c} p_t (log p_t - log p_s), p = softmax over C.
    """
    s = student.permute(0, 2, 3, 1).flatten(0, 2)  # (B H W, C)
    t = teacher.permute(0, 2, 3, 1).flatten(0, 2)
    return F.kl_div(F.log_softmax(s, dim=1), F.softmax(t, dim=1), reduction="none").mean()


@LOSSES.register("point_pillar_disconet_loss")
class PointPillarDiscoNetLoss(PointPillarLoss):
    """Detection terms + ``kd_loss`` when the output carries ``teacher_feature`` (the model's training step adds
    it; validation outputs without a teacher log 0)."""

    CONFIG = PointPillarLoss.CONFIG.extend({
        "kd": Key(dict, {}, "distillation term", schema=Schema({
            "weight": Key(float, 10000.0, "factor of kd_loss"),
        }, name="kd")),
    }, name="point_pillar_disconet_loss")
    TB_NAMES = OrderedDict(list(PointPillarLoss.TB_NAMES.items()) + [("kd_loss", "KD_loss")])

    def loss_terms(self, output_dict, target_dict, suffix=""):
        terms = super().loss_terms(output_dict, target_dict, suffix)
        if suffix == "":
            teacher = output_dict.get("teacher_feature")
            terms["kd_loss"] = (kd_loss(output_dict["fused_feature"], teacher) * float(self.cfg.kd.weight)
                                if teacher is not None else torch.zeros((), device=output_dict["cls_preds"].device))
        return terms
