"""Anchor-based detection loss of PointPillars-style heads (spec baselines §A9).

The terms are the anchor head's (:mod:`opencood.models.heads.detection_loss`), each summed over anchors and
divided by the normaliser (B samples by default): ``cls_loss`` (sigmoid focal), ``reg_loss`` (smooth-L1 with
the sin-difference on yaw) and ``dir_loss`` (softmax CE on yaw bins, when a ``dir`` section is configured
and the model outputs ``dir_preds``).
"""
from collections import OrderedDict

from opencood.loss.base_loss import Criterion
from opencood.models.heads.anchor_head import DIR_ARGS
from opencood.models.heads.detection_loss import (  # noqa: F401  (importable from here, as before)
    add_sin_difference, anchor_loss_terms, sigmoid_focal_loss, weighted_smooth_l1)
from opencood.utils.config import REQUIRED, Key, Schema
from opencood.utils.errors import DataError
from opencood.utils.registry import LOSSES

CLS_ARGS = Schema({
    "alpha": Key(float, 0.25, "focal-loss weight of positives (negatives: 1 - alpha)"),
    "gamma": Key(float, 2.0, "focal-loss focusing exponent"),
    "weight": Key(float, REQUIRED, "factor of cls_loss"),
}, name="classification loss")

REG_ARGS = Schema({
    "sigma": Key(float, 3.0, "smooth-L1 is quadratic below 1 / sigma^2"),
    "weight": Key(float, REQUIRED, "factor of reg_loss"),
}, name="regression loss")

DIR_LOSS_ARGS = Schema({
    "weight": Key(float, REQUIRED, "factor of dir_loss"),
    "args": Key(dict, REQUIRED, "direction bins (= postprocess.dir_args; derived from it when absent)",
                schema=DIR_ARGS),
}, name="direction loss")


@LOSSES.register("point_pillar_loss")
class PointPillarLoss(Criterion):
    """Focal classification + smooth-L1 regression + direction-bin loss.

    Args:
        args: YAML ``loss.args`` (see ``CONFIG``).

    Subclasses add terms by overriding :meth:`loss_terms` (call super, add entries), extend ``CONFIG``
    with their keys and ``TB_NAMES`` with their tensorboard scalar names.
    """

    CONFIG = Schema({
        "pos_cls_weight": Key(float, 1.0, "cls-loss weight of positive anchors (negatives: 1)"),
        "cls": Key(dict, REQUIRED, "classification term", schema=CLS_ARGS),
        "reg": Key(dict, REQUIRED, "regression term", schema=REG_ARGS),
        "dir": Key(dict, None, "direction term (none when absent)", schema=DIR_LOSS_ARGS),
    }, name="detection loss")
    TB_NAMES = OrderedDict([("reg_loss", "Regression_loss"), ("cls_loss", "Confidence_loss"),
                            ("dir_loss", "Dir_loss")])

    def __init__(self, args):
        super().__init__()
        self.cfg = self.CONFIG.parse(args, "loss.args", args.get("_source", "config"))

    def normalizer(self, output_dict, target_dict):
        """Divisor of every summed term: the number of samples B (``pos_equal_one.shape[0]``).

        Override to normalise differently (e.g. by the total number of agents).
        """
        return target_dict["pos_equal_one"].shape[0]

    def detection_terms(self, output_dict, target_dict, suffix=""):
        """cls / reg / dir terms (scalar tensors, already weighted and normalised).

        Args:
            output_dict: model output (``cls_preds{suffix}`` (B, A, H', W'), ``reg_preds{suffix}``
                (B, 7A, H', W'), optional ``dir_preds{suffix}`` (B, num_bins*A, H', W')).
            target_dict: ``batch['ego']['label_dict']`` (``label_dict_single`` with suffix ``_single``):
                pos_equal_one / neg_equal_one (B, H', W', A), targets (B, H', W', 7A), anchor_box (H', W', A, 7).
            suffix: key suffix of the predictions.
        """
        dir_preds = output_dict.get(f"dir_preds{suffix}") if self.cfg.dir is not None else None
        if dir_preds is not None and "anchor_box" not in target_dict:
            raise DataError("label_dict: missing key 'anchor_box' (needed by the direction loss)")
        norm = float(self.normalizer(output_dict, target_dict))
        return anchor_loss_terms(output_dict[f"cls_preds{suffix}"], output_dict[f"reg_preds{suffix}"],
                                 target_dict, self.cfg, norm, dir_preds)

    def loss_terms(self, output_dict, target_dict, suffix=""):
        """All terms of this loss as an ordered dict of scalar tensors (subclasses extend it)."""
        return self.detection_terms(output_dict, target_dict, suffix)
