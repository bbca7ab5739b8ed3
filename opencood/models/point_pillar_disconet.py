"""DiscoNet (Li et al., NeurIPS 2021): PointPillars intermediate fusion with learned per-cell edge weights
(``fusion_method: disconet``), distilled from a frozen early-fusion teacher.

Training: an early-fusion PointPillars run is trained first (its checkpoint = ``kd_flag.teacher_path``); the
student's training step runs the frozen teacher on ``teacher_processed_lidar`` (every agent's points merged in
the ego frame, voxelised once: the intermediate dataset adds it when the config has ``kd_flag``) and the loss
(``point_pillar_disconet_loss``) adds ``kd.weight`` x KL(softmax_C teacher map || softmax_C student map).
"""
import os

import torch

from opencood.models.point_pillar_baseline import PointPillarBaseline
from opencood.utils.checkpoint import read_state_dict
from opencood.utils.config import REQUIRED, Key, Schema
from opencood.utils.errors import CheckpointError, ConfigError, DataError
from opencood.utils.registry import MODELS

TEACHERS = ("point_pillar_disconet_teacher",)

KD_FLAG = Schema({
    "teacher_model": Key(str, "point_pillar_disconet_teacher", "the teacher's model (early-fusion PointPillars)",
                         choices=TEACHERS),
    "teacher_model_config": Key(dict, None, "model.args of the teacher (default: the student's; its fusion "
                                            "section is not used: one merged cloud needs no fusion)"),
    "teacher_path": Key(str, REQUIRED, "checkpoint (.pth) of the trained early-fusion PointPillars run"),
}, name="kd_flag")


@MODELS.register("point_pillar_disconet_teacher")
class PointPillarDiscoNetTeacher(PointPillarBaseline):
    """Early-fusion PointPillars (pillar_vfe, scatter, backbone, shrink_conv, heads; the same state-dict names
    as ``point_pillar_baseline``) that reads one merged cloud per sample. The student's ``fusion_method`` is
    replaced by the parameter-free ``max`` (the identity for one agent), so the checkpoint of an early-fusion
    ``point_pillar_baseline`` run (``att`` or ``max``) loads strictly.

    Args:
        args: ``model.args`` of a PointPillars model (a DiscoNet student's are accepted).
    """

    def __init__(self, args):
        args = {k: v for k, v in args.items() if k not in ("kd_flag", args.get("fusion_method"))}
        super().__init__(dict(args, fusion_method="max"))

    def teacher_feature(self, data_dict):
        """(B, C, H, W) map of the merged clouds ``data_dict['teacher_processed_lidar']`` (one per sample)."""
        if "teacher_processed_lidar" not in data_dict:
            raise DataError("batch: missing key 'teacher_processed_lidar' (the intermediate dataset adds it when "
                            "the config has kd_flag)")
        b = data_dict["record_len"].numel()
        eye = torch.eye(4, device=data_dict["record_len"].device)
        batch = {"processed_lidar": data_dict["teacher_processed_lidar"],
                 "record_len": torch.ones(b, dtype=torch.long, device=eye.device),
                 "pairwise_t_matrix": eye.expand(b, 1, 1, 4, 4)}
        return self(batch)["fused_feature"]


@MODELS.register("point_pillar_disconet")
class PointPillarDiscoNet(PointPillarBaseline):
    """The DiscoNet student (``fusion_method: disconet``) with its frozen teacher.

    The teacher is kept outside the module tree: it is not in the student's state dict or optimizer, and the
    trainer's ``model.train()`` leaves it in eval mode.

    Args:
        args: ``model.args`` plus ``kd_flag`` (the top-level section, handed over by ``create_model``).

    Raises:
        ConfigError: no ``kd_flag`` (at build); ConfigError / CheckpointError when training starts
        (``model_train_init``) and the teacher file is missing or does not fit.
    """

    CONFIG = PointPillarBaseline.CONFIG.extend({
        "kd_flag": Key(dict, None, "the top-level kd_flag section (create_model passes it)", schema=KD_FLAG),
    }, name="point_pillar_disconet")
    HYPES_SECTIONS = ("kd_flag",)  # top-level sections create_model adds to model.args

    def __init__(self, args):
        super().__init__(args)
        self.source = args.get("_source", "config")
        if not args.get("kd_flag"):
            raise ConfigError(f"{self.source}: DiscoNet needs 'kd_flag.teacher_path' (checkpoint of an "
                              f"early-fusion PointPillars run, trained first)")
        self.kd = KD_FLAG.parse(args["kd_flag"], "kd_flag", self.source)
        self.teacher_args = dict(self.kd.teacher_model_config or args)
        self._teacher = ()  # loaded by model_train_init / the first training step (inference needs none)

    def model_train_init(self):
        """Start of every training epoch: load the frozen teacher (a missing file stops before any step)."""
        self.ensure_teacher()

    def ensure_teacher(self):
        """The frozen teacher, built from ``teacher_args`` and strictly loaded from ``kd_flag.teacher_path``."""
        if not self._teacher:
            path = self.kd.teacher_path
            if not os.path.isfile(path):
                raise ConfigError(f"{self.source}: kd_flag.teacher_path '{path}' is not a file (train the "
                                  f"early-fusion teacher first)")
            teacher = MODELS.get(self.kd.teacher_model)(self.teacher_args)
            missing, unexpected = teacher.load_state_dict(read_state_dict(path), strict=False)
            if missing or unexpected:
                raise CheckpointError(f"{path}: not an early-fusion PointPillars checkpoint of this architecture "
                                      f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
            self._teacher = (teacher.requires_grad_(False).eval(),)
        return self._teacher[0]

    def training_step(self, batch, criterion, forward=None):
        """Student forward, the frozen teacher's map on the merged cloud, detection + KD loss."""
        output = (forward or self)(batch["ego"])
        teacher = self.ensure_teacher()
        device = output["fused_feature"].device
        if next(teacher.parameters()).device != device:
            teacher.to(device)
        with torch.no_grad():
            output["teacher_feature"] = teacher.eval().teacher_feature(batch["ego"])
        return criterion.loss_and_terms(output, batch["ego"])
