"""GenComm stage-1 loss: detection (+ camera depth) loss plus the feature-generation MSE.

Stage 2 uses ``point_pillar_depth_loss`` (no generation term).

    total = detection terms (+ depth term for depth-supervised cameras)
            + generate_weight * mean((gt_feature - pred_feature)^2)

``gt_feature`` / ``pred_feature`` are the agents' own shrinker features and the generator's outputs
(all agents, ego included, by default). The reference logged its IoU term under ``Gen_loss``; here
``Gen_loss`` is the generation MSE.
"""
from collections import OrderedDict

import torch.nn.functional as F

from opencood.loss.point_pillar_depth_loss import PointPillarDepthLoss
from opencood.utils.config import Key
from opencood.utils.errors import DataError
from opencood.utils.registry import LOSSES


@LOSSES.register("point_pillar_gencomm_loss")
class PointPillarGenCommLoss(PointPillarDepthLoss):
    """``point_pillar_depth_loss`` (detection + camera depth) with the generation term ``gen_loss``.

    Args:
        args: YAML ``loss.args`` of the parent loss plus ``generate_weight`` (default 1.0).
    """

    CONFIG = PointPillarDepthLoss.CONFIG.extend({
        "generate_weight": Key(float, 1.0, "factor of gen_loss = MSE(gt_feature, pred_feature)"),
    }, name="GenComm stage-1 loss")
    TB_NAMES = OrderedDict(list(PointPillarDepthLoss.TB_NAMES.items()) + [("gen_loss", "Gen_loss")])

    def __init__(self, args):
        super().__init__(args)
        self.generate_weight = float(self.cfg.generate_weight)

    def loss_terms(self, output_dict, target_dict, suffix=""):
        """Parent terms plus ``gen_loss`` = generate_weight * MSE(gt_feature, pred_feature).

        The generation term belongs to the fused pass only (``suffix == ''``), like the depth term.
        """
        terms = super().loss_terms(output_dict, target_dict, suffix)
        if suffix != "":
            return terms
        for key in ("pred_feature", "gt_feature"):
            if key not in output_dict:
                raise DataError(f"model output: missing key '{key}' (point_pillar_gencomm_loss needs a "
                                f"GenComm stage-1 model)")
        pred, gt = output_dict["pred_feature"], output_dict["gt_feature"]  # (G, C, H, W) each
        if pred.numel() == 0:
            terms["gen_loss"] = pred.sum()
        else:
            terms["gen_loss"] = self.generate_weight * F.mse_loss(pred, gt)
        return terms
