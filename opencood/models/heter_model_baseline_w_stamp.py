"""STAMP baseline (ICLR'25; spec baselines §C2): per-type adapters into a shared protocol space and reverters
out of it.

Every agent type mX keeps its own stage-1 chain ``encoder_/backbone_/shrinker_mX`` (frozen). A protocol
type (``protocol_modality``, m0: SECOND + BaseBEVBackbone, its stage-1 base) defines the protocol feature
space. Type m learns an adapter ``adapter_m`` = A_m (m -> protocol) and a reverter ``reverter_m`` = R_m
(protocol -> m), built by name (``sub_modules/stamp_adapter.py``). ``model.args.stage`` picks what runs::

    train_adapter            F_M = chain_m(x), F_P = chain_m0(x) on the SAME agent's sensor data
                             (dataset intermediateheteradapter adds ``inputs_m0`` for every agent);
                             outputs A_m(F_M), R_m(F_P), R_m(sg(A_m(F_M))) for ``adapter_loss``
                             (evaluation, e.g. train.py's final test: also detection of the ego type's
                             fusion/heads on R_m(A_m(F_M)), the features after the round trip through the
                             protocol space; not part of the loss)
    train_adapter_w_output   the same + detection of fusion_net/heads (the ego type m's, frozen) on R_m(F_P)
    collab_train             collaborative detection (below) in training: adapters/reverters learn through
                             the frozen fusion and heads
    infer                    nothing learns: ego type e keeps its features; a collaborator of type m sends
                             F_m, the ego turns it into R_e(A_m(F_m)); then the ego's fusion_net and heads

The fusion and heads are the ego type's (``ego_modality``; in the m0mX runs that is mX, merged last).
Everything outside the adapters/reverters of the training stages is frozen, kept in eval mode (BatchNorm
statistics fixed) and must come from the merged checkpoint (:class:`FrozenBaseMixin`).
"""
from opencood.models.frozen_base import FrozenBaseMixin
from opencood.models.heter_model_baseline import AGENT_TYPE, AGENT_TYPE_RE, COMMON_KEYS, HeterModelBaseline
from opencood.models.sub_modules.degradation import MessageDegradation
from opencood.models.sub_modules.stamp_adapter import ADAPTER, build_adapter
from opencood.utils.config import REQUIRED, Key, Schema
from opencood.utils.errors import ConfigError, DataError
from opencood.utils.heter_utils import parse_ego_modality
from opencood.utils.registry import MODELS

STAGES = ("train_adapter", "train_adapter_w_output", "collab_train", "infer")
ALIGN_STAGES = ("train_adapter", "train_adapter_w_output")

STAMP_TYPE = AGENT_TYPE.extend({
    "adapter": Key(dict, None, "STAMP: A_m, this type -> protocol space ({core_method, args})", schema=ADAPTER),
    "reverter": Key(dict, None, "STAMP: R_m, protocol space -> this type ({core_method, args})", schema=ADAPTER),
}, name="STAMP agent type")

STAMP_KEYS = {
    "stage": Key(str, REQUIRED, "what runs and learns: train_adapter | train_adapter_w_output | collab_train | infer",
                 choices=STAGES),
    "ego_modality": Key(str, REQUIRED, "the type whose fusion_net and heads the model holds (train: the type "
                                       "whose adapter is trained; infer: the ego)"),
    "protocol_modality": Key(str, "m0", "the protocol type (its chain defines the protocol feature space; its "
                                        "section is optional in the collaborative stages, which never run it)"),
    "missing_message": Key(bool, False, "eval only: the reference's STAMP degradation, = comm_degradation "
                                        "{mask_ratio: 0.2} (comm_degradation wins when given)"),
}
MISSING_MESSAGE = {"mask_ratio": 0.2}  # the reference's STAMP infer drops 20 % of the collaborators' feature values


@MODELS.register("heter_model_baseline_w_stamp", "heter_model_baseline_w_stamp_infer")
class HeterModelBaselineWStamp(FrozenBaseMixin, HeterModelBaseline):
    """STAMP stage 2 / inference (see module docstring).

    Args:
        args: YAML ``model.args`` of ``heter_model_baseline`` plus ``stage``, ``ego_modality``,
            ``protocol_modality`` and, per type, ``adapter`` / ``reverter`` sections.
    """

    CONFIG = Schema({**COMMON_KEYS, **STAMP_KEYS},
                    patterns={AGENT_TYPE_RE: Key(dict, None, "an agent type", schema=STAMP_TYPE)},
                    name="heter_model_baseline_w_stamp")
    MISSING_MODULE_HINT = ("STAMP freezes that module and needs it from the merged runs (stage-1 bases for "
                           "stage 2; the trained m0mX runs for inference: merge_and_save them first)")

    def __init__(self, args):
        super().__init__(args)
        cfg = self.CONFIG.parse(args, "model.args", self.source)
        self.stage = cfg.stage
        egos = parse_ego_modality(cfg.ego_modality)
        if len(egos) != 1:
            raise ConfigError(f"{self.source}: model.args.ego_modality = '{cfg.ego_modality}': STAMP needs one type")
        self.ego, self.protocol = egos[0], cfg.protocol_modality
        if cfg.missing_message and cfg.comm_degradation is None:
            self.degradation = MessageDegradation.from_args(MISSING_MESSAGE, self.source)
        needed = [("ego_modality", self.ego)] + ([("protocol_modality", self.protocol)]
                                                  if self.stage in ALIGN_STAGES else [])
        for key, m in needed:
            if m not in self.modalities:
                raise ConfigError(f"{self.source}: model.args.{key}: type '{m}' has no section in model.args "
                                  f"(known: {self.modalities})")
        if self.ego == self.protocol:
            raise ConfigError(f"{self.source}: model.args.ego_modality equals protocol_modality '{self.protocol}'")
        sections = self.agent_type_configs(cfg)
        for m in self.modalities:
            tcfg = self.parse_agent_type(m, sections[m], self.source)
            for kind in ("adapter", "reverter"):
                if tcfg[kind] is None:
                    continue
                if m == self.protocol:
                    raise ConfigError(f"{self.source}: model.args.{m}.{kind}: the protocol type has none")
                setattr(self, self.module_attr(kind, m),
                        build_adapter(tcfg[kind], self.feature, f"model.args.{m}.{kind}", self.source))
        self._check_adapters()
        names = dict(self.named_children())
        self.trainable_modules = [] if self.stage == "infer" else [
            n for n in names if n.startswith(("adapter_", "reverter_"))]
        self.freeze_all_but_trainable()

    @classmethod
    def parse_agent_type(cls, m, section, source="config"):
        return STAMP_TYPE.parse(section, f"model.args.{m}", source)

    def _check_adapters(self):
        """The modules the stage needs: training stages A_m and R_m of every non-protocol type; collaborative
        stages A_m of every collaborator type and the ego's R_e."""
        names = dict(self.named_children())
        others = [m for m in self.modalities if m != self.protocol]
        if self.stage in ALIGN_STAGES:
            need = [(m, kind) for m in others for kind in ("adapter", "reverter")]
        else:
            need = [(m, "adapter") for m in others if m != self.ego] + [(self.ego, "reverter")]
        for m, kind in need:
            if self.module_attr(kind, m) not in names:
                raise ConfigError(f"{self.source}: model.args.{m}: no '{kind}' section; STAMP stage '{self.stage}' "
                                  f"needs a trained {kind} for agent type {m}")

    @property
    def has_unused_parameters(self):
        """Types absent from a batch leave their adapters without gradient."""
        return bool(self.trainable_modules)

    # --- forward --------------------------------------------------------------------------------------

    def per_type(self, kind, features, modality_list, detach=False):
        """Run ``<kind>_<type>`` on each agent's row: (N, C, H, W) -> (N, C, H, W)."""
        rows = {m: [i for i, t in enumerate(modality_list) if t == m] for m in dict.fromkeys(modality_list)}
        outs = {}
        for m, idx in rows.items():
            x = features[idx]  # (n_m, C, H, W)
            outs[m] = getattr(self, self.module_attr(kind, m))(x.detach() if detach else x)
        return self.stack_in_agent_order(outs, modality_list)

    def protocol_features(self, data_dict, n_agents):
        """F_P: the protocol chain on every agent's ``inputs_<protocol>`` (same sensor data): (N, C, H, W)."""
        key = f"inputs_{self.protocol}"
        if key not in data_dict:
            raise DataError(f"batch: no '{key}'; STAMP stage '{self.stage}' needs every agent's data for the "
                            f"protocol type too (fusion.core_method intermediateheteradapter)")
        view = dict(data_dict, agent_modality_list=[self.protocol] * n_agents)  # all rows are the protocol's
        feature, _ = self.encode_type(view, self.protocol)  # (N, C, h, w)
        return self.crop_to_lidar_grid(feature, self.protocol)

    def to_ego_space(self, features, modality_list):
        """Collaborative stages: rows of other types become R_ego(A_m(F_m)); ego-type rows stay as they are."""
        if all(m == self.ego for m in modality_list):
            return features
        out = features.clone()
        idx = [i for i, m in enumerate(modality_list) if m != self.ego]
        others = [modality_list[i] for i in idx]
        protocol = self.per_type("adapter", features[idx], others)  # (n, C, H, W) protocol space
        out[idx] = getattr(self, self.module_attr("reverter", self.ego))(protocol)  # (n, C, H, W) ego space
        return out

    def forward(self, data_dict):
        """Args: data_dict = batch['ego']. Returns the stage's outputs (see module docstring): alignment
        stages ``stamp_feature`` (F_M), ``stamp_protocol`` (F_P), ``stamp_adapted`` (A_m(F_M)),
        ``stamp_reverted`` (R_m(F_P)), ``stamp_cycled`` (R_m(sg(A_m(F_M)))), all (N, C, H, W)
        [+ detection outputs]; collaborative stages the detection outputs."""
        features, _, aux = self.encode_agents(data_dict)  # (N, C, H, W), each agent in its own type's space
        types = self.agent_modalities(data_dict)
        if self.protocol in types:
            raise DataError(f"batch: agents of the protocol type {self.protocol} (STAMP's protocol is not an agent "
                            f"type; check heter.cav_preference / mapping_dict)")
        if self.stage in ALIGN_STAGES:
            protocol = self.protocol_features(data_dict, len(types))  # (N, C, H, W)
            adapted = self.per_type("adapter", features, types)
            out = {"stamp_feature": features, "stamp_protocol": protocol, "stamp_adapted": adapted,
                   "stamp_reverted": self.per_type("reverter", protocol, types),
                   "stamp_cycled": self.per_type("reverter", adapted, types, detach=True)}
            if self.stage == "train_adapter_w_output":
                out.update(self.fuse_and_detect(out["stamp_reverted"], data_dict))
            elif not self.training:  # evaluation of train_adapter: the type's features after the round trip
                out.update(self.fuse_and_detect(out["stamp_cycled"], data_dict))
                out["detection_in_loss"] = False
        else:
            out = self.fuse_and_detect(self.to_ego_space(features, types), data_dict)
        out.update(aux)
        return out

