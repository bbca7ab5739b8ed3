"""CodeFilling stage-2 loss: detection (+ camera depth) loss plus the codebook's reconstruction MSE.

    total = detection terms (+ depth term of depth-supervised cameras) + codebook_weight * code_loss

``code_loss`` is the model's MSE between the reconstructed and the true per-cell features
(``heter_model_baseline_w_codebook``). With every encoder frozen the depth term is a constant: it is kept so
the logged totals compare with the reference's.
"""
from collections import OrderedDict

from opencood.loss.point_pillar_depth_loss import PointPillarDepthLoss
from opencood.utils.config import Key
from opencood.utils.errors import DataError
from opencood.utils.registry import LOSSES


@LOSSES.register("point_pillar_codebook_loss")
class PointPillarCodebookLoss(PointPillarDepthLoss):
    """``point_pillar_depth_loss`` + ``code_loss`` (tensorboard ``Codebook_loss``).

    Args:
        args: YAML ``loss.args`` of the parent loss plus ``codebook_weight`` (default 1.0, the reference's).
    """

    CONFIG = PointPillarDepthLoss.CONFIG.extend({
        "codebook_weight": Key(float, 1.0, "factor of code_loss (the codebook's reconstruction MSE)", low=0.0),
    }, name="CodeFilling loss")
    TB_NAMES = OrderedDict(list(PointPillarDepthLoss.TB_NAMES.items()) + [("code_loss", "Codebook_loss")])

    def __init__(self, args):
        super().__init__(args)
        self.codebook_weight = float(self.cfg.codebook_weight)

    def loss_terms(self, output_dict, target_dict, suffix=""):
        """Parent terms plus ``code_loss`` (fused pass only, like the depth term)."""
        terms = super().loss_terms(output_dict, target_dict, suffix)
        if suffix != "":
            return terms
        if "code_loss" not in output_dict:
            raise DataError("model output: missing key 'code_loss' (point_pillar_codebook_loss needs the "
                            "heter_model_baseline_w_codebook model)")
        terms["code_loss"] = self.codebook_weight * output_dict["code_loss"]
        return terms
