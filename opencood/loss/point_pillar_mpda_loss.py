"""MPDA stage-2 loss: detection (+ camera depth) loss plus the domain-adaptation BCE, counted once.

    total = detection terms (+ depth term) + da_weight * da_loss
    da_loss = mean over every cell of every agent of BCE-with-logits(da_logits, 1 on ego rows, 0 on collaborators)

The model's domain classifier sits behind a gradient-reversal layer, so this one term trains the classifier
and, reversed, the resizer/CDT. (The reference added ``da_loss`` to the total twice.) ``da_loss`` is 0 when
the model gives no logits (eval mode) or ``da: false``. With every encoder frozen the depth term is a
constant.
"""
from collections import OrderedDict

import torch.nn.functional as F

from opencood.loss.point_pillar_depth_loss import PointPillarDepthLoss
from opencood.utils.config import Key
from opencood.utils.errors import DataError
from opencood.utils.registry import LOSSES


@LOSSES.register("point_pillar_mpda_loss")
class PointPillarMPDALoss(PointPillarDepthLoss):
    """``point_pillar_depth_loss`` + ``da_loss`` (tensorboard ``Da_loss``).

    Args:
        args: YAML ``loss.args`` of the parent loss plus ``da`` (default true) and ``da_weight`` (default 1.0).
    """

    CONFIG = PointPillarDepthLoss.CONFIG.extend({
        "da": Key(bool, True, "add the domain-adaptation term"),
        "da_weight": Key(float, 1.0, "factor of da_loss (counted once)", low=0.0),
    }, name="MPDA loss")
    TB_NAMES = OrderedDict(list(PointPillarDepthLoss.TB_NAMES.items()) + [("da_loss", "Da_loss")])

    def __init__(self, args):
        super().__init__(args)
        self.da, self.da_weight = bool(self.cfg.da), float(self.cfg.da_weight)

    def loss_terms(self, output_dict, target_dict, suffix=""):
        """Parent terms plus ``da_loss`` (fused pass only)."""
        terms = super().loss_terms(output_dict, target_dict, suffix)
        if suffix != "" or not self.da:
            return terms
        if "da_logits" not in output_dict:
            raise DataError("model output: missing key 'da_logits' (point_pillar_mpda_loss with da: true needs "
                            "the heter_model_baseline_w_mpda model)")
        logits = output_dict["da_logits"]  # (N, 1, H, W) or None (eval)
        if logits is None:
            terms["da_loss"] = next(iter(terms.values())).new_zeros(())
            return terms
        is_ego = output_dict["da_is_ego"].to(logits.dtype).view(-1, 1, 1, 1)  # (N, 1, 1, 1)
        target = is_ego.expand_as(logits)
        terms["da_loss"] = self.da_weight * F.binary_cross_entropy_with_logits(logits, target)
        return terms
