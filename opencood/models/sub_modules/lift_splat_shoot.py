"""Lift-Splat-Shoot camera encoders (spec baselines §A5, §A6): 4 images -> BEV feature map of one agent.

``encoder_args`` (YAML ``heter.modality_setting.mX`` / ``model.args.mX.encoder_args``):
``grid_conf{xbound, ybound, zbound: [min, max, step] metres, ddiscr: [d_min, d_max, D], mode: LID|UD|SID}``,
``data_aug_conf{final_dim: [H, W], ...}``, ``img_downsample`` (8), ``img_features`` (C, 128),
``camera_encoder`` (EfficientNet | Resnet101), ``use_depth_gt`` (false), ``depth_supervision`` (false),
``pretrained`` (false: never downloads weights unless asked).

After every forward the encoder keeps ``self.depth_items``: ``(depth_logits (N*Ncam, D, fH, fW),
gt_bins (N*Ncam, fH, fW) long or None)`` when ``depth_supervision`` is on (and depth is predicted, i.e.
not ``use_depth_gt``), else ``None``; the heterogeneous
model copies it into its output as ``depth_items_mX`` for ``point_pillar_depth_loss``.
"""
import torch.nn as nn

from opencood.models.sub_modules.encoder_inputs import modality_inputs
from opencood.models.sub_modules.lss_submodule import (CamEncode, create_frustum, depth_values_from_conf,
                                                       frustum_to_lidar, gen_dx_bx, splat_sum)
from opencood.utils.errors import ConfigError, DataError
from opencood.utils.registry import ENCODERS

_WHERE = "model.args.encoder_args"
CAMERA_KEYS = ("imgs", "intrins", "rots", "trans", "post_rots", "post_trans")


def _require(section, key, where):
    if not isinstance(section, dict) or key not in section:
        raise ConfigError(f"{where}: missing key '{key}'")
    return section[key]


@ENCODERS.register("lift_splat_shoot", "liftsplatshoot")
class LiftSplatShoot(nn.Module):
    """Lift (per-pixel depth distribution ⊗ context), splat (sum-pool into the LiDAR-frame BEV grid).

    Args:
        encoder_args: see the module docstring.

    Output of :meth:`forward`: (N, C·nz, ny, nx) BEV map in the agent's LiDAR frame (rows = y, columns = x),
    e.g. (N, 128, 256, 256) for ±51.2 m at 0.4 m and one z bin.
    """

    def __init__(self, encoder_args):
        super().__init__()
        grid_conf = _require(encoder_args, "grid_conf", _WHERE)
        data_aug_conf = _require(encoder_args, "data_aug_conf", _WHERE)
        for key in ("xbound", "ybound", "zbound", "ddiscr"):
            _require(grid_conf, key, f"{_WHERE}.grid_conf")
        final_dim = _require(data_aug_conf, "final_dim", f"{_WHERE}.data_aug_conf")
        self.downsample = int(_require(encoder_args, "img_downsample", _WHERE))
        self.camC = int(_require(encoder_args, "img_features", _WHERE))
        if final_dim[0] % self.downsample or final_dim[1] % self.downsample:
            raise ConfigError(f"{_WHERE}.data_aug_conf.final_dim: {list(final_dim)} is not a multiple of "
                              f"img_downsample {self.downsample}")
        self.grid_conf = grid_conf
        self.data_aug_conf = data_aug_conf
        dx, bx, nx = gen_dx_bx(grid_conf["xbound"], grid_conf["ybound"], grid_conf["zbound"])
        self.register_buffer("dx", dx)
        self.register_buffer("bx", bx)
        self.register_buffer("nx", nx)
        depth_values = depth_values_from_conf(grid_conf)
        self.register_buffer("frustum", create_frustum(final_dim, self.downsample, depth_values))
        self.D = depth_values.numel()
        self.depth_supervision = bool(encoder_args.get("depth_supervision", False))
        self.camencode = CamEncode(self.D, self.camC, self.downsample, grid_conf["ddiscr"],
                                   grid_conf.get("mode", "LID"),
                                   camera_encoder=encoder_args.get("camera_encoder", "EfficientNet"),
                                   use_depth_gt=encoder_args.get("use_depth_gt", False),
                                   depth_supervision=self.depth_supervision,
                                   pretrained=encoder_args.get("pretrained", False))
        self.depth_items = None

    def get_geometry(self, rots, trans, intrins, post_rots, post_trans):
        """(N, Ncam, D, fH, fW, 3) LiDAR-frame xyz (metres) of every frustum sample."""
        return frustum_to_lidar(self.frustum, rots, trans, intrins, post_rots, post_trans)

    def get_cam_feats(self, imgs):
        """Lift every image.

        Args:
            imgs: (N, Ncam, 3|4, H, W).

        Returns:
            feats (N, Ncam, D, fH, fW, C); depth_logits (N*Ncam, D, fH, fW) or None; gt_bins or None.
        """
        n, ncam = imgs.shape[:2]
        lifted, depth_logits, gt_bins = self.camencode(imgs.flatten(0, 1))  # (N*Ncam, C, D, fH, fW)
        lifted = lifted.view(n, ncam, *lifted.shape[1:]).permute(0, 1, 3, 4, 5, 2)  # (N, Ncam, D, fH, fW, C)
        return lifted, depth_logits, gt_bins

    def collapse_z(self, bev):
        """(N, nz, C, ny, nx) -> (N, C·nz, ny, nx), z-major channel order."""
        return bev.flatten(1, 2)

    def forward(self, data_dict, modality_name):
        """Args:
            data_dict: batch dict with ``inputs_<modality_name>`` = ``{'imgs' (N, Ncam, 3|4, H, W),
                'intrins', 'rots', 'post_rots' (N, Ncam, 3, 3), 'trans', 'post_trans' (N, Ncam, 3)}``.
            modality_name: e.g. ``'m2'``.

        Returns:
            (N, C·nz, ny, nx) BEV features; sets ``self.depth_items``.
        """
        key = f"inputs_{modality_name}"
        inputs = modality_inputs(data_dict, modality_name, CAMERA_KEYS)
        geometry = self.get_geometry(inputs["rots"], inputs["trans"], inputs["intrins"],
                                     inputs["post_rots"], inputs["post_trans"])  # (N, Ncam, D, fH, fW, 3)
        feats, depth_logits, gt_bins = self.get_cam_feats(inputs["imgs"])  # (N, Ncam, D, fH, fW, C)
        if feats.shape[2:5] != geometry.shape[2:5]:
            raise DataError(f"batch['{key}']['imgs']: image size {tuple(inputs['imgs'].shape[-2:])} does not "
                            f"match data_aug_conf.final_dim {list(self.data_aug_conf['final_dim'])}")
        supervised = self.depth_supervision and depth_logits is not None
        self.depth_items = (depth_logits, gt_bins) if supervised else None
        bev = splat_sum(feats, geometry, self.dx, self.bx, self.nx)  # (N, nz, C, ny, nx)
        return self.collapse_z(bev)


@ENCODERS.register("lift_splat_shoot_voxel", "liftsplatshootvoxel")
class LiftSplatShootVoxel(LiftSplatShoot):
    """Lift-Splat-Shoot whose z bins are merged by a max instead of stacked into channels: (N, C, ny, nx)."""

    def collapse_z(self, bev):
        return bev.max(dim=1).values  # (N, C, ny, nx)
