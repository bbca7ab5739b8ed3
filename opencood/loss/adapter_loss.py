"""STAMP's alignment loss (``adapter_loss``, spec baselines §C2), optionally with the detection (+ depth) terms.

With F_M the type-m feature and F_P the protocol feature of the same agent (outputs of
``heter_model_baseline_w_stamp`` in its alignment stages, all (N, C, H, W))::

    align = alpha_P2M   * MSE(F_M, R_m(F_P))
          + alpha_M2P2M * MSE(F_M, R_m(sg(A_m(F_M))))
          + alpha_M2P   * MSE(F_P, A_m(F_M))

(reference weights 9, 1, 10). When the model also outputs detections (``train_adapter_w_output``,
``collab_train``; not the evaluation-only ones of ``train_adapter``, flagged ``detection_in_loss: False``) the
detection and depth terms of :class:`PointPillarDepthLoss` are added on
``batch['ego']['label_dict']``; the ``loss.args`` detection keys are then needed as for any detector.
"""
from collections import OrderedDict

import torch.nn.functional as F

from opencood.loss.point_pillar_depth_loss import PointPillarDepthLoss
from opencood.utils.config import Key
from opencood.utils.errors import DataError
from opencood.utils.registry import LOSSES

ALIGN_TERMS = (("p2m_loss", "alpha_P2M", "stamp_reverted", "stamp_feature"),
               ("m2p2m_loss", "alpha_M2P2M", "stamp_cycled", "stamp_feature"),
               ("m2p_loss", "alpha_M2P", "stamp_adapted", "stamp_protocol"))


@LOSSES.register("adapter_loss")
class AdapterLoss(PointPillarDepthLoss):
    """Alignment terms ``p2m_loss``, ``m2p2m_loss``, ``m2p_loss`` [+ detection and depth terms].

    Args:
        args: ``loss.args``: ``alpha_P2M``, ``alpha_M2P2M``, ``alpha_M2P`` and the detection loss keys.
    """

    CONFIG = PointPillarDepthLoss.CONFIG.extend({
        "alpha_P2M": Key(float, 9.0, "weight of MSE(F_M, R_m(F_P))", low=0.0),
        "alpha_M2P2M": Key(float, 1.0, "weight of MSE(F_M, R_m(sg(A_m(F_M))))", low=0.0),
        "alpha_M2P": Key(float, 10.0, "weight of MSE(F_P, A_m(F_M))", low=0.0),
    }, name="STAMP adapter loss")
    TB_NAMES = OrderedDict(list(PointPillarDepthLoss.TB_NAMES.items()) + [
        ("p2m_loss", "P2M_loss"), ("m2p2m_loss", "M2P2M_loss"), ("m2p_loss", "M2P_loss")])

    def alignment_terms(self, output_dict):
        """The three weighted MSE terms (scalar tensors)."""
        missing = [k for _, _, a, b in ALIGN_TERMS for k in (a, b) if k not in output_dict]
        if missing:
            raise DataError(f"adapter_loss: model output has no '{missing[0]}' (the STAMP model's alignment "
                            f"stages train_adapter / train_adapter_w_output produce it)")
        return OrderedDict((name, float(self.cfg[alpha]) * F.mse_loss(output_dict[pred], output_dict[target]))
                           for name, alpha, pred, target in ALIGN_TERMS)

    def loss_terms(self, output_dict, target_dict, suffix=""):
        terms = OrderedDict()
        if "stamp_feature" in output_dict:
            terms.update(self.alignment_terms(output_dict))
        if "cls_preds" in output_dict and output_dict.get("detection_in_loss", True):
            terms.update(super().loss_terms(output_dict, target_dict, suffix))
        if not terms:
            raise DataError("adapter_loss: model output has neither STAMP features nor detections")
        return terms
