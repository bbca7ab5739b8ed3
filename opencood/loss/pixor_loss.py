"""PIXOR loss (OpenCOOD ``pixor_loss``; spec baselines §A4).

total = alpha * mean BCE over every output cell + beta * smooth-L1 (beta 1) summed over the 6 normalised
regression targets of the positive cells / #positive cells. Labels from ``BevPostprocessor``: ``pos_equal_one``
(B, H', W', 1), ``targets`` (B, H', W', 6).
"""
from collections import OrderedDict

import torch.nn.functional as F

from opencood.loss.base_loss import Criterion
from opencood.utils.config import Key, Schema
from opencood.utils.registry import LOSSES


@LOSSES.register("pixor_loss")
class PixorLoss(Criterion):
    """Per-pixel classification + regression of the pixels inside boxes.

    Args:
        args: YAML ``loss.args`` (see ``CONFIG``).
    """

    CONFIG = Schema({
        "alpha": Key(float, 1.0, "weight of the classification term"),
        "beta": Key(float, 1.0, "weight of the regression term"),
    }, name="pixor_loss")
    TB_NAMES = OrderedDict([("reg_loss", "Regression_loss"), ("cls_loss", "Confidence_loss")])

    def __init__(self, args):
        super().__init__()
        self.cfg = self.CONFIG.parse(args, "loss.args", (args or {}).get("_source", "config"))

    def loss_terms(self, output_dict, target_dict, suffix=""):
        logits = output_dict[f"cls_preds{suffix}"].permute(0, 2, 3, 1)  # (B, H', W', 1)
        reg = output_dict[f"reg_preds{suffix}"].permute(0, 2, 3, 1)  # (B, H', W', 6)
        pos = target_dict["pos_equal_one"].type_as(logits)  # (B, H', W', 1)
        targets = target_dict["targets"].type_as(reg)  # (B, H', W', 6)
        cls_loss = F.binary_cross_entropy_with_logits(logits, pos)
        reg_loss = F.smooth_l1_loss(reg * pos, targets * pos, reduction="sum") / pos.sum().clamp(min=1)
        return OrderedDict([("cls_loss", self.cfg.alpha * cls_loss), ("reg_loss", self.cfg.beta * reg_loss)])
