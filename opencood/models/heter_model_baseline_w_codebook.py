"""CodeFilling baseline (CVPR'24) as GenComm uses it: collaborators send codebook indices (spec baselines §C3).

Stage 2 of a type set (m1m2, m1m2m3, m1m2m3m4, ...): every type's ``encoder_/backbone_/shrinker_mX``,
``fusion_net`` and the heads come from the merged stage-1 runs and stay frozen (eval mode, BatchNorm
statistics fixed); the only trainable module is the shared ``codebook``
(:class:`~opencood.models.sub_modules.codebook.ResidualCodebookQuantizer`). Per batch::

    F (N, C, H, W)  = frozen encoder -> backbone -> shrinker of each agent's type, own frame
    conf (N, 1, H, W) = max over anchors of sigmoid(cls_head(F))  (each sender scores its own map)
    mask (N, 1, H, W) = Communication(conf): (Gaussian-smoothed) conf > thre; the ego keeps every cell
    x̂, idx (N, levels*seg_num, H, W) = codebook(F)      idx is what a collaborator transmits
    received = F for the ego rows, x̂ * mask for the collaborators
    -> frozen fusion_net (ego frame) -> frozen heads

``thre: 0`` sends every cell (sigmoid > 0): full spatial bandwidth, as the reference's figures; a larger
``thre`` really drops cells (features and indices), and ``comm_volume`` counts only the kept cells'
indices plus their positions. Output extras: ``code_loss`` (MSE of the reconstruction, all agents),
``codebook_indices`` / ``codebook_size`` / ``codebook_bits_per_cell`` (message accounting), ``comm_mask``,
``comm_rate`` (share of collaborator cells sent).

The reference's "information filling" (temporal / ego-based filling and greedy selection) is not part of
its code and not built here.
"""
import torch

from opencood.models.comm_modules.where2comm import COMMUNICATION, Communication
from opencood.models.frozen_base import FrozenBaseMixin
from opencood.models.fuse_modules.warp import agent_batch_index
from opencood.models.heter_model_baseline import HeterModelBaseline
from opencood.models.point_pillar_where2comm import agent_confidence
from opencood.models.sub_modules.codebook import CODEBOOK, ResidualCodebookQuantizer
from opencood.utils.config import REQUIRED, Key
from opencood.utils.registry import MODELS


@MODELS.register("heter_model_baseline_w_codebook")
class HeterModelBaselineWCodebook(FrozenBaseMixin, HeterModelBaseline):
    """CodeFilling stage 2: only ``codebook`` learns (see module docstring).

    Args:
        args: YAML ``model.args`` of ``heter_model_baseline`` plus ``codebook`` (required), ``communication``
            and ``ego_modality``.
    """

    CONFIG = HeterModelBaseline.CONFIG.extend({
        "ego_modality": Key(str, None, "the run's ego type (informative; it must have a section in model.args)"),
        "codebook": Key(dict, REQUIRED, "the shared residual codebook quantizer", schema=CODEBOOK),
        "communication": Key(dict, {"thre": 0.0}, "confidence mask of what collaborators send (thre 0: every "
                                                  "cell)", schema=COMMUNICATION),
    }, name="heter_model_baseline_w_codebook")
    MISSING_MODULE_HINT = ("CodeFilling stage 2 freezes every type's encoder/backbone/shrinker, fusion and heads "
                           "and needs them from the stage-1 runs (merge_and_save them first)")
    trainable_modules = ("codebook",)

    def __init__(self, args):
        super().__init__(args)
        cfg = self.CONFIG.parse(args, "model.args", self.source)
        if cfg.ego_modality is not None:
            self.ego_types_of(cfg.ego_modality)
        self.codebook = ResidualCodebookQuantizer.from_config(cfg.codebook, self.feature.channels,
                                                              source=self.source)
        self.communication = Communication(cfg.communication, where="model.args.communication",
                                           source=self.source)
        self.freeze_all_but_trainable()

    def forward(self, data_dict):
        """Args:
            data_dict: batch['ego'] (``inputs_mX``, ``agent_modality_list``, ``record_len`` (B,),
                ``pairwise_t_matrix`` (B, L, L, 4, 4)).

        Returns:
            the baseline's output dict (``cls_preds``, ``reg_preds``, ``dir_preds``, ``fused_feature``,
            ``depth_items_mX``) plus ``code_loss`` (0-d), ``codebook_indices`` (N, levels*seg_num, H, W) long,
            ``codebook_size`` (int), ``codebook_bits_per_cell`` (int), ``comm_mask`` (N, 1, H, W),
            ``comm_rate`` (0-d).
        """
        features, _, aux = self.encode_agents(data_dict)  # (N, C, H, W), frozen
        record_len = data_dict["record_len"]
        _, local_idx = agent_batch_index(record_len.to(features.device), total=features.shape[0])
        is_ego = (local_idx == 0).view(-1, 1, 1, 1)  # (N, 1, 1, 1)
        confidence = agent_confidence(self.cls_head, features)  # (N, 1, H, W), the sender's own map
        masks, rate = self.communication(confidence, record_len)  # (N, 1, H, W), ego rows ones
        decoded, indices, code_loss = self.codebook(features)  # (N, C, H, W), (N, K, H, W)
        received = torch.where(is_ego, features, decoded.to(features.dtype) * masks)  # ego: its own feature
        out = self.fuse_and_detect(received, data_dict)
        out.update(aux)
        out.update({"code_loss": code_loss, "codebook_indices": indices, "codebook_size": self.codebook.dict_size,
                    "codebook_bits_per_cell": self.codebook.bits_per_cell, "comm_mask": masks, "comm_rate": rate})
        return out
