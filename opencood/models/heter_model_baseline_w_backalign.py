"""BackAlign baseline as GenComm uses it (HEAL's backward alignment, trained collaboratively).

The collaboration base is the ego type's stage-1 model (``heter_model_baseline``). Stage 2 keeps the ego
type's ``encoder_/backbone_/shrinker_mX``, ``fusion_net`` and the ``cls/reg/dir`` heads frozen and trains
the new agent type's encoder, backbone and shrinker so that its feature map fits the frozen fusion and
heads (mixed ego/new-type agents; ``mapping_dict`` m1:m1, m2:m1, m3:m3, m4:m3 for the m1m3 run), with
the detection (+ camera depth) loss::

    new type:  sensor -> encoder_mN -> backbone_mN -> shrinker_mN --(trained)--+
    ego type:  sensor -> encoder_m1 -> backbone_m1 -> shrinker_m1 --(frozen)---+-> fusion_net -> heads (frozen)

Frozen modules stay in eval mode for the whole run (BatchNorm statistics are not updated; the reference
froze them only in ``__init__`` and let ``train.py``'s per-epoch ``model.train()`` make them drift).
"""
from opencood.models.frozen_base import FrozenBaseMixin
from opencood.models.heter_model_baseline import HeterModelBaseline
from opencood.utils.config import REQUIRED, Key
from opencood.utils.errors import ConfigError
from opencood.utils.registry import MODELS

TYPE_STAGES = ("encoder", "backbone", "shrinker")


@MODELS.register("heter_model_baseline_w_backalign")
class HeterModelBaselineWBackAlign(FrozenBaseMixin, HeterModelBaseline):
    """Stage 2 of BackAlign: only the non-ego types' encoder, backbone and shrinker learn.

    Args:
        args: YAML ``model.args`` of ``heter_model_baseline`` plus the required ``ego_modality``
            (``"m1"`` or ``"m1&m2"``): the frozen collaboration base type(s).
    """

    CONFIG = HeterModelBaseline.CONFIG.extend({
        "ego_modality": Key(str, REQUIRED, "the collaboration base type(s), 'm1' or 'm1&m2': frozen with fusion "
                            "and heads"),
    }, name="heter_model_baseline_w_backalign")

    def __init__(self, args):
        super().__init__(args)
        cfg = self.CONFIG.parse(args, "model.args", self.source)
        self.ego_types = self.ego_types_of(cfg.ego_modality)
        new_types = [m for m in self.modalities if m not in self.ego_types]
        if not new_types:
            raise ConfigError(f"{self.source}: model.args: BackAlign needs a new agent type besides ego_modality "
                              f"{self.ego_types} (known: {self.modalities})")
        names = dict(self.named_children())
        self.trainable_modules = [self.module_attr(stage, m) for m in new_types for stage in TYPE_STAGES
                                  if self.module_attr(stage, m) in names]
        self.freeze_all_but_trainable()

    @property
    def has_unused_parameters(self):
        """Several new types may not all appear in one batch."""
        return len(self.trainable_modules) > len(TYPE_STAGES)
