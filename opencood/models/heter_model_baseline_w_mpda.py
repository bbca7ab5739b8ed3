"""MPDA baseline (ICRA'23) as GenComm uses it: collaborators' features adapted to the ego's domain
(spec baselines §C4).

Stage 2 of a type set: every type's ``encoder_/backbone_/shrinker_mX`` comes from the merged stage-1 runs and
stays frozen (eval mode, BatchNorm statistics fixed); ``resizer``, ``cdt``, ``domain_classifier``,
``fusion_net`` and the heads are trained. Per batch::

    F (N, C, H, W) = frozen encoder -> backbone -> shrinker of each agent's type, own frame
    for every collaborator k of sample b (any type, also the ego's):
        F_k <- cdt(ego = F_b0, resizer(F_k, size of F_b0))     in k's own frame, before warping
    da_logits (N, 1, H, W) = domain_classifier([ego; adapted collaborators])   training only
    -> fusion_net (ego frame) -> heads

The domain classifier sits behind a gradient-scaling layer (x -9.1 on the way back), so minimising its
BCE (``point_pillar_mpda_loss``: target 1 on ego cells, 0 on collaborator cells) trains the classifier while
pushing the resizer/CDT to make collaborator features indistinguishable from the ego's.
"""
import torch

from opencood.models.frozen_base import FrozenBaseMixin
from opencood.models.fuse_modules.warp import agent_batch_index
from opencood.models.heter_model_baseline import HeterModelBaseline
from opencood.models.sub_modules.mpda_modules import (CDT, DOMAIN_CLASSIFIER, RESIZER, CrossDomainTransformer,
                                                      DomainClassifier, LearnableResizer)
from opencood.utils.config import REQUIRED, Key
from opencood.utils.errors import ConfigError
from opencood.utils.registry import MODELS

SHARED_TRAINABLE = ("resizer", "cdt", "domain_classifier", "fusion_net", "cls_head", "reg_head", "dir_head")


@MODELS.register("heter_model_baseline_w_mpda")
class HeterModelBaselineWMPDA(FrozenBaseMixin, HeterModelBaseline):
    """MPDA stage 2 (see module docstring).

    Args:
        args: YAML ``model.args`` of ``heter_model_baseline`` plus ``resizer``, ``cdt`` (required),
            ``domain_classifier`` and ``ego_modality``.
    """

    CONFIG = HeterModelBaseline.CONFIG.extend({
        "ego_modality": Key(str, None, "the run's ego type (informative; it must have a section in model.args)"),
        "resizer": Key(dict, REQUIRED, "learnable resizer of collaborator features", schema=RESIZER),
        "cdt": Key(dict, REQUIRED, "cross-domain transformer (queries: collaborator, keys/values: ego)", schema=CDT),
        "domain_classifier": Key(dict, {}, "per-cell ego/collaborator classifier behind the gradient reversal",
                                 schema=DOMAIN_CLASSIFIER),
    }, name="heter_model_baseline_w_mpda")
    MISSING_MODULE_HINT = ("MPDA stage 2 freezes every type's encoder/backbone/shrinker and needs them from the "
                           "stage-1 runs (merge_and_save them first)")

    def __init__(self, args):
        super().__init__(args)
        cfg = self.CONFIG.parse(args, "model.args", self.source)
        if cfg.ego_modality is not None:
            self.ego_types_of(cfg.ego_modality)
        c = self.feature.channels
        checks = [("resizer.input_channel", cfg.resizer.input_channel),
                  ("resizer.output_channel", cfg.resizer.output_channel),
                  ("resizer.wg_att.input_dim", cfg.resizer.wg_att["input_dim"]),
                  ("resizer.residual.input_dim", cfg.resizer.residual["input_dim"]),
                  ("cdt.input_dim", cfg.cdt.input_dim)]
        for key, value in checks:
            if value != c:
                raise ConfigError(f"{self.source}: model.args.{key} = {value} but the agents' features have {c} "
                                  f"channels")
        self.resizer = LearnableResizer(cfg.resizer, source=self.source)
        self.cdt = CrossDomainTransformer(cfg.cdt, source=self.source)
        dc = cfg.domain_classifier
        self.domain_classifier = DomainClassifier(c, dc.hidden_dim, dc.gradient_scale, dc.init_std)
        names = dict(self.named_children())
        self.trainable_modules = [n for n in SHARED_TRAINABLE if n in names]
        self.freeze_all_but_trainable()

    @property
    def has_unused_parameters(self):
        """A batch of ego-only samples leaves the resizer and CDT without gradient."""
        return True

    def adapt_collaborators(self, features, record_len):
        """Every non-ego row through the resizer and the CDT against its sample's ego map.

        Args:
            features: (N, C, H, W) agent maps, ego first in each sample.
            record_len: (B,) agents per sample.

        Returns:
            (N, C, H, W): ego rows unchanged, collaborator rows adapted; and the (N,) bool ego mask.
        """
        sample_idx, local_idx = agent_batch_index(record_len.to(features.device), total=features.shape[0])
        is_ego = local_idx == 0
        rows = torch.nonzero(~is_ego).flatten()  # (K,)
        if rows.numel() == 0:
            return features, is_ego
        ego_rows = (torch.cumsum(record_len.to(features.device), 0) - record_len.to(features.device))[sample_idx]
        ego = features[ego_rows[rows]]  # (K, C, H, W): each collaborator's ego
        adapted = self.cdt(ego, self.resizer(features[rows], ego.shape[-2:]))  # (K, C, H, W)
        return features.index_copy(0, rows, adapted.to(features.dtype)), is_ego

    def forward(self, data_dict):
        """Args:
            data_dict: batch['ego'] (``inputs_mX``, ``agent_modality_list``, ``record_len`` (B,),
                ``pairwise_t_matrix`` (B, L, L, 4, 4)).

        Returns:
            the baseline's output dict plus ``da_logits`` (N, 1, H, W) (None in eval mode: the classifier
            only trains) and ``da_is_ego`` (N,) bool.
        """
        features, _, aux = self.encode_agents(data_dict)  # (N, C, H, W), frozen
        features, is_ego = self.adapt_collaborators(features, data_dict["record_len"])
        da_logits = self.domain_classifier(features) if self.training else None
        out = self.fuse_and_detect(features, data_dict)
        out.update(aux)
        out.update({"da_logits": da_logits, "da_is_ego": is_ego})
        return out
