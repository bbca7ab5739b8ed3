"""GenComm heterogeneous collaborative detector (stage 1 and stage 2).

Per agent k of type mX (on top of :class:`HeterModelBaseline`):

1. ``F_k`` = encoder_mX -> backbone_mX -> shrinker_mX (N, C, H, W), own frame.
2. ``M_k`` = message_extractor_mX(F_k) (N, 2, H, W) — the only thing a collaborator sends. Camera maps: the
   message is extracted on the camera grid, then F and M are centre-cropped / zero-padded to the LiDAR grid.
3. Optional eval-only degradation of the non-ego messages (``model.args.comm_degradation``; the reference's
   ``missing_message`` = a random 0/1 mask per cell maps onto it), in the baseline's encode loop.
4. Generation in the ego's semantic space: start = each sample's ego feature, conditioned on ``M_k``
   (``gencomm`` generator, T UNet calls, batched over agents), then the Channel ``enhancer``.
5. ``fusion_net`` in the ego frame (warping by ``pairwise_t_matrix``), ``cls/reg/dir`` heads.

Stage 1 trains everything of one agent type. Stage 2 freezes everything except the non-ego types'
``message_extractor_mX`` (parameters ``requires_grad=False`` and frozen modules kept in eval mode across
``model.train()`` calls, so BatchNorm statistics cannot drift).

Parameter names: ``encoder_mX.``, ``backbone_mX.``, ``shrinker_mX.``, ``message_extractor_mX.``,
``gencomm.model.`` (UNet), ``enhancer.``, ``fusion_net.``, ``cls_head.``, ``reg_head.``, ``dir_head.``.

The only hook it overrides is :meth:`HeterModelBaseline.type_outputs` (the message of each type, on the
type's own grid); the baseline's encode loop crops and re-stacks it with the features.

Extra ``model.args`` keys (besides the baseline's; see ``CONFIG``):
    gencomm | diffcomm: generator config (see :class:`GenCommGenerator`; either name, same content);
        ``gencomm.eval_seed`` (default None): seed of the eval-mode sampling noise; None = stochastic.
    message_extractor: {in_ch, out_ch} (default in_ch: the feature channels, out_ch: 2).
    enhancer: {in_ch} (a missing or non-mapping value means the feature channels, fixing reference YAMLs).
    ``message_extractor.in_ch``, ``enhancer.in_ch``, ``gencomm.model.in_channels`` / ``out_ch`` are checked
    against the channels the shrinkers output.
    generate_ego: True (reference) = the ego's own feature is also replaced by its generated, enhanced
        version; False = the real ego feature is fused (paper Algorithm 1) and only collaborators are
        generated.
    generation_start: ``ego_frame`` (reference) = every chain starts from the ego's feature as it is, in the
        ego frame, although the message and the generated feature are in the sender's frame;
        ``sender_frame`` = the ego's feature is first warped into the sender's frame (ego content then
        lines up with the sender's view instead of leaving displaced copies after fusion).
    missing_message: False; ``missing_message_ratio`` (stage 1: 0.4, stage 2: 0.1 as the reference):
        at eval only, each non-ego message cell is zeroed with that probability (robustness study) = shorthand
        for ``comm_degradation: {mask_ratio: missing_message_ratio, mask_unit: cell}`` (which wins when given).
"""
import torch

from opencood.models.frozen_base import FrozenBaseMixin
from opencood.models.fuse_modules.warp import agent_batch_index, warp_affine_simple
from opencood.models.heter_model_baseline import HeterModelBaseline
from opencood.models.sub_modules.cond_diffusion import GenCommGenerator
from opencood.models.sub_modules.diffusion_unet import DiffusionUNet
from opencood.models.sub_modules.enhancer import Enhancer
from opencood.models.sub_modules.degradation import MessageDegradation
from opencood.models.sub_modules.message_extractor import MessageExtractor
from opencood.utils.config import REQUIRED, Key
from opencood.utils.errors import ConfigError
from opencood.utils.registry import MODELS

GENERATION_STARTS = ("ego_frame", "sender_frame")
GENERATOR_KEYS = ("gencomm", "diffcomm")
_FEATURE_CHANNELS = "(checked; default: the feature channels the shrinkers output)"

# The generator / DME / enhancer sections inside the model: their channel keys default to the model's
# feature channels (the stand-alone classes default to 128).
GENERATOR_CONFIG = GenCommGenerator.CONFIG.extend({
    "model": Key(dict, REQUIRED, "the denoising UNet", schema=DiffusionUNet.CONFIG.extend({
        "in_channels": Key(int, None, f"feature channels C {_FEATURE_CHANNELS}"),
        "out_ch": Key(int, None, f"output channels {_FEATURE_CHANNELS}"),
    })),
})
DME_CONFIG = MessageExtractor.CONFIG.extend({"in_ch": Key(int, None, f"channels of F {_FEATURE_CHANNELS}")})
ENHANCER_CONFIG = Enhancer.CONFIG.extend({"in_ch": Key(int, None, f"feature channels C {_FEATURE_CHANNELS}")})


def generator_config(cfg, source="config"):
    """``(key, section)`` of the generator: ``gencomm`` or its old name ``diffcomm``."""
    sections = {k: cfg[k] for k in GENERATOR_KEYS if cfg.get(k) is not None}
    if not sections:
        raise ConfigError(f"{source}: model.args: missing key 'gencomm' (or its alias 'diffcomm')")
    if len(sections) == 2 and sections["gencomm"] != sections["diffcomm"]:
        raise ConfigError(f"{source}: model.args: 'gencomm' and 'diffcomm' both given with different content")
    return next(iter(sections.items()))


@MODELS.register("heter_model_baseline_w_gencomm_stage1", "heter_model_baseline_w_gencomm")
class HeterModelBaselineWGenComm(HeterModelBaseline):
    """GenComm stage 1 (everything trainable).

    Args:
        args: YAML ``model.args`` (see the module docstring and ``CONFIG``).
    """

    TRANSMITTED = "message"
    CONFIG = HeterModelBaseline.CONFIG.extend({
        "gencomm": Key(dict, None, "message-conditioned diffusion generator", schema=GENERATOR_CONFIG),
        "diffcomm": Key(dict, None, "old name of gencomm (same content)", schema=GENERATOR_CONFIG),
        "message_extractor": Key(dict, {}, "DME of every agent type", schema=DME_CONFIG),
        "enhancer": Key((dict, str), None, "Channel Enhancer (a string, as some reference YAMLs give: defaults)",
                        schema=ENHANCER_CONFIG),
        "generate_ego": Key(bool, True, "true (reference): the ego's feature is regenerated too; false: the "
                                        "real ego feature is fused (paper Alg. 1)"),
        "generation_start": Key(str, "ego_frame", "ego_frame (reference): chains start from the un-warped ego "
                                                  "map; sender_frame: warped into each sender's frame",
                                choices=GENERATION_STARTS),
        "missing_message": Key(bool, False, "eval only: zero a share of every collaborator's message cells"),
        "missing_message_ratio": Key(float, 0.4, "share of message cells zeroed with missing_message"),
    }, name="heter_model_baseline_w_gencomm_stage1")

    def __init__(self, args):
        super().__init__(args)
        cfg = self.CONFIG.parse(args, "model.args", self.source)
        channels = self.feature.channels
        _, gen_cfg = generator_config(cfg, self.source)
        dme_cfg = dict(cfg.message_extractor, in_ch=channels)
        for m in self.modalities:
            setattr(self, f"message_extractor_{m}", MessageExtractor.from_config(dme_cfg))
        gen_cfg = dict(gen_cfg, model=dict(gen_cfg.model, in_channels=channels, out_ch=channels))
        self.gencomm = GenCommGenerator.from_config(gen_cfg, cond_channels=dme_cfg["out_ch"])
        self.enhancer = Enhancer.from_config({"in_ch": channels})
        self.generate_ego = cfg.generate_ego
        self.generation_start = cfg.generation_start
        if cfg.missing_message and cfg.comm_degradation is None:
            self.degradation = MessageDegradation.from_args(
                {"mask_ratio": cfg.missing_message_ratio, "mask_unit": "cell"}, self.source)

    @classmethod
    def channel_keys(cls, cfg):
        """The baseline's plus the DME's, the enhancer's and the generator's channel keys."""
        key, gen = generator_config(cfg, cfg.get("_source", "config"))
        enhancer = cfg.enhancer if isinstance(cfg.enhancer, dict) else {}
        return super().channel_keys(cfg) + [
            ("model.args.message_extractor.in_ch", cfg.message_extractor.in_ch),
            ("model.args.enhancer.in_ch", enhancer.get("in_ch")),
            (f"model.args.{key}.model.in_channels", gen.model.in_channels),
            (f"model.args.{key}.model.out_ch", gen.model.out_ch),
        ]

    @property
    def has_unused_parameters(self):
        """True when a batch may lack an agent type, leaving that type's trainable modules without
        gradient (DDP then needs ``find_unused_parameters``)."""
        return len(self.modalities) > 1

    def type_outputs(self, feature, m):
        """The message ``message_extractor_m(F)`` (n_m, M, h, w), extracted on the type's own grid."""
        return {"message": getattr(self, f"message_extractor_{m}")(feature)}

    @staticmethod
    def ego_mask(record_len, n, device):
        """(N,) bool, True at each sample's first agent (the ego)."""
        _, local_idx = agent_batch_index(record_len.to(device), total=n)
        return local_idx == 0

    def generation_start_features(self, features, data_dict):
        """Start point of every agent's generation chain: its sample's ego feature (N, C, H, W).

        ``ego_frame``: the ego map as it is (reference). ``sender_frame``: the ego map resampled onto agent
        k's grid with ``T_{ego<-k}`` (cells the ego map does not cover are zero); the ego's own row is
        unchanged.
        """
        record_len = data_dict["record_len"]
        x_start = self.gencomm.ego_start(features, record_len)  # (N, C, H, W), ego frame
        if self.generation_start == "ego_frame":
            return x_start
        sample_idx, local_idx = agent_batch_index(record_len.to(features.device), total=features.shape[0])
        theta = self.affine_matrix(data_dict)[sample_idx, local_idx, 0]  # (N, 2, 3): ego map -> agent k grid
        return warp_affine_simple(x_start, theta, features.shape[-2:]).to(features.dtype)

    def forward(self, data_dict):
        """Args:
            data_dict: batch['ego'] (``inputs_mX``, ``agent_modality_list``, ``record_len`` (B,),
                ``pairwise_t_matrix`` (B, L, L, 4, 4)).

        Returns:
            dict: ``cls_preds`` (B, A, H, W), ``reg_preds`` (B, 7A, H, W), ``dir_preds`` (B, 2A, H, W),
            ``fused_feature`` (B, C, H, W), ``message`` (N, M, H, W), ``pred_feature`` / ``gt_feature``
            (G, C, H, W) = generator output (before the enhancer) and the agents' own shrinker
            features (not detached) for the G generated agents (all N by default; the N - B
            collaborators with ``generate_ego: false``), plus ``depth_items_mX`` of camera encoders.
        """
        features, extras, aux = self.encode_agents(data_dict)  # (N, C, H, W), {message: (N, M, H, W)}
        messages = extras["message"]  # collaborators' rows degraded at eval (comm_degradation)
        record_len = data_dict["record_len"]
        is_ego = self.ego_mask(record_len, features.shape[0], features.device)  # (N,)

        x_start = self.generation_start_features(features, data_dict)  # (N, C, H, W)
        if self.generate_ego:  # every agent generated: no index (and no device-to-host sync) needed
            pred = self.gencomm(messages, x_start)  # (N, C, H, W)
            fused_input = self.enhancer(pred).to(features.dtype)  # under autocast its dtype may differ from F
            gt_feature = features
        else:
            gen_idx = torch.arange(features.shape[0], device=features.device)[~is_ego]
            fused_input = features
            pred = features.new_zeros((0,) + tuple(features.shape[1:]))
            if gen_idx.numel() > 0:
                pred = self.gencomm(messages[gen_idx], x_start[gen_idx])  # (G, C, H, W)
                enhanced = self.enhancer(pred)  # (G, C, H, W)
                fused_input = features.index_copy(0, gen_idx, enhanced.to(features.dtype))  # (N, C, H, W)
            gt_feature = features[gen_idx]

        out = self.fuse_and_detect(fused_input, data_dict)
        out.update(aux)
        out.update({"message": messages, "pred_feature": pred, "gt_feature": gt_feature})
        return out


@MODELS.register("heter_model_baseline_w_gencomm_stage2")
class HeterModelBaselineWGenCommStage2(FrozenBaseMixin, HeterModelBaselineWGenComm):
    """GenComm stage 2: only the non-ego types' message extractors learn.

    ``ego_modality`` (``"m1"`` or ``"m1&m2"``) names the ego type(s); its modules, the generator, enhancer,
    fusion and heads come from the merged stage-1 checkpoint (see :meth:`required_prefixes`) and stay frozen.

    Args:
        args: YAML ``model.args``; ``ego_modality`` is required.
    """

    CONFIG = HeterModelBaselineWGenComm.CONFIG.extend({
        "ego_modality": Key(str, REQUIRED, "the ego agent type(s), 'm1' or 'm1&m2': frozen with the shared modules"),
        "missing_message_ratio": Key(float, 0.1, "share of message cells zeroed with missing_message"),
    }, name="heter_model_baseline_w_gencomm_stage2")
    MISSING_MODULE_HINT = ("stage 2 needs the ego's and every agent type's stage-1 modules "
                           "(merge_and_save the stage-1 runs first)")

    def __init__(self, args):
        super().__init__(args)
        cfg = self.CONFIG.parse(args, "model.args", self.source)
        self.ego_types = self.ego_types_of(cfg.ego_modality)
        self.trainable_modules = [f"message_extractor_{m}" for m in self.modalities
                                  if m not in self.ego_types]
        if not self.trainable_modules:
            raise ConfigError(f"{self.source}: model.args: stage 2 needs a non-ego agent type besides "
                              f"ego_modality {self.ego_types} (known: {self.modalities})")
        self.freeze_all_but_trainable()

    @property
    def has_unused_parameters(self):
        """Only the trainable DMEs count for DDP; several of them may not all appear in one batch."""
        return len(self.trainable_modules) > 1


