"""HEAL's backward alignment (``heter_pyramid_single``, spec baselines §C1, stage 2).

A new agent type mN (``ego_modality``) is trained as a SINGLE-agent detector through the frozen shared part of
the collaboration base (``heter_pyramid_collab`` stage 1)::

    mN sensor -> encoder_mN -> backbone_mN -> aligner_mN --(trained)--> pyramid_backbone.forward_single
              -> shrink_conv -> cls/reg/dir heads (frozen: fix_modules)

with the detection (+ depth) loss and the per-level occupancy loss on the agent's own labels (dataset
``lateheter``: one agent per sample in its own frame), so no collaborative data of the new type is needed.
``fix_encoder`` also freezes ``encoder_mN``. Other agent types in ``model.args`` (the collaboration base's,
carried so that the base checkpoint loads key for key) are frozen as well. Frozen modules stay in eval mode
for the whole run (HEAL re-freezes them each epoch through ``model_train_init``) and must come from the merged
checkpoint. Stage 3 merges every aligned type with the base and runs ``heter_pyramid_collab``.
"""
from opencood.models.frozen_base import FrozenBaseMixin
from opencood.models.heter_pyramid_collab import HeterPyramidCollab
from opencood.utils.config import REQUIRED, Key
from opencood.utils.errors import ConfigError
from opencood.utils.heter_utils import parse_ego_modality
from opencood.utils.registry import MODELS

SHARED = ("pyramid_backbone", "shrink_conv", "cls_head", "reg_head", "dir_head")
TYPE_STAGES = ("encoder", "backbone", "aligner")


@MODELS.register("heter_pyramid_single")
class HeterPyramidSingle(FrozenBaseMixin, HeterPyramidCollab):
    """Backward alignment of ``ego_modality`` (see module docstring).

    Args:
        args: ``heter_pyramid_collab``'s ``model.args`` plus ``ego_modality`` (the aligned type),
            ``fix_modules`` and ``fix_encoder``.
    """

    CONFIG = HeterPyramidCollab.CONFIG.extend({
        "ego_modality": Key(str, REQUIRED, "the agent type aligned (trained) through the frozen shared part"),
        "fix_modules": Key(list, list(SHARED), "frozen shared modules (HEAL: pyramid_backbone, shrink_conv, heads)",
                           items=str),
        "fix_encoder": Key(bool, False, "also freeze the aligned type's encoder (train backbone + aligner)"),
    }, name="heter_pyramid_single")
    MISSING_MODULE_HINT = ("backward alignment freezes that module and needs it from the collaboration base "
                           "(merge_and_save the stage-1 heter_pyramid_collab run into this folder first)")

    def __init__(self, args):
        super().__init__(args)
        cfg = self.CONFIG.parse(args, "model.args", self.source)
        types = parse_ego_modality(cfg.ego_modality)
        if len(types) != 1 or types[0] not in self.modalities:
            raise ConfigError(f"{self.source}: model.args.ego_modality = '{cfg.ego_modality}': name one type "
                              f"with a section in model.args (known: {self.modalities})")
        self.new_type = types[0]
        names = dict(self.named_children())
        unknown = [n for n in cfg.fix_modules if n not in names]
        if unknown:
            raise ConfigError(f"{self.source}: model.args.fix_modules names '{unknown[0]}', not a module of the "
                              f"model ({', '.join(n for n in names if n in SHARED)})")
        stages = TYPE_STAGES[1:] if cfg.fix_encoder else TYPE_STAGES
        own = [self.module_attr(stage, self.new_type) for stage in stages]
        others = {self.module_attr(stage, m) for m in self.modalities for stage in TYPE_STAGES}
        self.trainable_modules = [n for n in names if n in own or (
            n not in others and n not in cfg.fix_modules and any(True for _ in names[n].parameters()))]
        self.freeze_all_but_trainable()

    def forward(self, data_dict):
        """Each agent alone: its type's chain -> ``pyramid_backbone.forward_single`` -> shrink -> heads.

        Args:
            data_dict: batch['ego'] of ``lateheter`` (B samples = B agents, ``inputs_mX``, ``agent_modality_list``).

        Returns:
            ``cls_preds`` (B, A, H', W'), ``reg_preds``, ``dir_preds``, ``fused_feature``, ``occ_single_list``
            [(B, 1, H_l, W_l)] (+ the encoders' depth items).
        """
        features, _, aux = self.encode_agents(data_dict)  # (B, 64, H, W), each in its own frame
        decoded, occ = self.pyramid_backbone.forward_single(features)  # (B, 384, H', W'), [(B, 1, H_l, W_l)]
        out = self.decode_and_detect(decoded)
        out["occ_single_list"] = occ
        out.update(aux)
        return out
