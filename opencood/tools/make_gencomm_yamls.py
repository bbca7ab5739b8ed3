"""Write the GenComm YAML sets: full OPV2V-H geometry and the CPU demo, HEAL style (YAML anchors kept).

``python opencood/tools/make_gencomm_yamls.py [full|demo|all]`` rewrites
``opencood/hypes_yaml/opv2v/GenComm_yamls/gencomm/`` and/or ``opencood/hypes_yaml/demo/gencomm/``.
The shipped files are exactly this script's output (a test checks it), so change the parameters here
(``FULL``, ``DEMO``) rather than editing one YAML by hand and letting the set drift apart.
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FULL_DIR = os.path.join(REPO, "opencood", "hypes_yaml", "opv2v", "GenComm_yamls", "gencomm")
DEMO_DIR = os.path.join(REPO, "opencood", "hypes_yaml", "demo", "gencomm")

FULL = dict(
    data_root="dataset", rng=[-102.4, -51.2, -3, 102.4, 51.2, 1], cam_rng=[-51.2, -51.2, -3, 51.2, 51.2, 1],
    pillar_voxel=[0.4, 0.4, 4], second_voxel=[0.1, 0.1, 0.1], stride=4, max_vox=(32000, 70000),
    m1_backbone=dict(layer_nums=[3, 5, 8], layer_strides=[2, 2, 2], num_filters=[64, 128, 256],
                     upsample_strides=[1, 2, 4], num_upsample_filter=[128, 128, 128]), m1_in=384,
    m3_backbone=dict(layer_nums=[3], layer_strides=[1], num_filters=[128], upsample_strides=[1],
                     num_upsample_filter=[128], inplanes=128), m3_in=128,
    cam_backbone=dict(layer_nums=[3, 5, 8], layer_strides=[2, 2, 2], num_filters=[64, 128, 256],
                      upsample_strides=[1, 2, 4], num_upsample_filter=[128, 128, 128], inplanes=128), cam_in=384,
    feat=128, grid_step=0.4, ddiscr=[2, 50, 48], zbound=[-10, 10, 20.0],
    m2_aug=dict(resize_lim=[0.65, 0.7], final_dim=[384, 512]), m4_aug=dict(resize_lim=[0.56, 0.61], final_dim=[336, 448]),
    img_hw=(600, 800), workers_note="",
)


def flow(v):
    if isinstance(v, list):
        return "[" + ", ".join(flow(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def block(d, indent):
    pad = " " * indent
    return "\n".join(f"{pad}{k}: {flow(v)}" for k, v in d.items())


def heter_setting(m, g):
    if m in ("m1", "m3"):
        voxel = g["pillar_voxel"] if m == "m1" else g["second_voxel"]
        ppv = (g.get('pillar_points', 32) if m == "m1" else 5)
        core = "point_pillar" if m == "m1" else "second"
        return f"""    {m}:
      sensor_type: &sensor_type_{m} 'lidar'
      core_method: &core_method_{m} "{core}"
      preprocess:
        core_method: 'SpVoxelPreprocessor'
        args:
          voxel_size: &voxel_size_{m} {flow(voxel)}
          max_points_per_voxel: {ppv}
          max_voxel_train: {g['max_vox'][0]}
          max_voxel_test: {g['max_vox'][1]}
        cav_lidar_range: *cav_lidar"""
    aug = g["m2_aug"] if m == "m2" else g["m4_aug"]
    c = g["cam_rng"]
    H, W = g["img_hw"]
    return f"""    {m}:
      sensor_type: &sensor_type_{m} 'camera'
      core_method: &core_method_{m} "lift_splat_shoot"
      grid_conf: &grid_conf_{m}
        xbound: [{c[0]}, {c[3]}, {g['grid_step']}]
        ybound: [{c[1]}, {c[4]}, {g['grid_step']}]
        zbound: {flow(g['zbound'])}
        ddiscr: {flow(g['ddiscr'])}
        mode: 'LID'
      data_aug_conf: &data_aug_conf_{m}
        resize_lim: {flow(aug['resize_lim'])}
        final_dim: {flow(aug['final_dim'])}
        rot_lim: [0, 0]
        H: {H}
        W: {W}
        rand_flip: false
        bot_pct_lim: [0.0, 0.05]
        cams: ['camera0', 'camera1', 'camera2', 'camera3']
        Ncams: 4"""


def model_m(m, g):
    if m == "m1":
        enc = """      encoder_args:
        voxel_size: *voxel_size_m1
        lidar_range: *cav_lidar
        pillar_vfe:
          use_norm: true
          with_distance: false
          use_absolute_xyz: true
          num_filters: [64]
        point_pillar_scatter:
          num_features: 64"""
        bb, inp = g["m1_backbone"], g["m1_in"]
    elif m == "m3":
        enc = """      encoder_args:
        voxel_size: *voxel_size_m3
        lidar_range: *cav_lidar
        mean_vfe:
          num_point_features: 4
        spconv:
          num_features_in: 4
          num_features_out: 64
        map2bev:
          feature_num: 128"""
        bb, inp = g["m3_backbone"], g["m3_in"]
    else:
        cam = "EfficientNet" if m == "m2" else "Resnet101"
        enc = f"""      encoder_args:
        grid_conf: *grid_conf_{m}
        data_aug_conf: *data_aug_conf_{m}
        img_downsample: 8
        img_features: {g['feat']}
        use_depth_gt: false
        depth_supervision: true
        camera_encoder: {cam}
        pretrained: false
      camera_mask_args:
        cav_lidar_range: *cav_lidar
        grid_conf: *grid_conf_{m}"""
        bb, inp = g["cam_backbone"], g["cam_in"]
    return f"""    {m}:
      core_method: *core_method_{m}
      sensor_type: *sensor_type_{m}
{enc}
      backbone_args:
{block(bb, 8)}
      shrink_header:
        kernal_size: [3]
        stride: [{g.get('shrink_stride', {}).get(m, 2)}]
        padding: [1]
        dim: [{g['feat']}]
        input_dim: {inp}"""


def make(name, g, mods, ego, mapping, core, loss, bs, epochs, eval_freq, save_freq, lr, steps,
         camera_range=False, ego_diff_cav=False, lidar_ch=None, missing_message=False, comment="",
         roots=None):
    rng = g["cam_rng"] if camera_range else g["rng"]
    has_cam = any(m in ("m2", "m4") for m in mods)
    root = g["data_root"]
    src = "['lidar', 'camera', 'depth']" if has_cam else "['lidar']"
    ext = "\nadd_data_extension: ['bev_visibility.png']" if has_cam else ""
    cache = (f"\ndata_cache_dir: \"{g['data_cache_dir']}\"   # decoded clouds/YAMLs/images, shared by every run"
             if g.get("data_cache_dir") else "")
    edc = "\nego_diff_cav: true" if ego_diff_cav else ""
    lc = f"\n  lidar_channels_dict:\n{block(lidar_ch, 4)}" if lidar_ch else ""
    mm = "\n    missing_message: true" if missing_message else ""
    depth = "\n    depth:\n      weight: 1.0" if True else ""
    gen = "\n    generate_weight: 1.0" if loss == "point_pillar_gencomm_loss" else ""
    ge = ("\n    generate_ego: false   # fuse the ego's real feature (paper Alg. 1); learns far faster in a short run"
          if g.get("generate_ego") is False else "")
    gs = ("\n    generation_start: " + g["generation_start"] + "   # ego feature warped into the sender's frame first"
          if g.get("generation_start") else "")
    bnm = ("\n    bn_momentum: " + str(g["bn_momentum"]) + "   # short CPU runs: let BatchNorm statistics settle"
           if g.get("bn_momentum") else "")
    prior = ("\n    cls_prior_prob: " + str(g["cls_prior_prob"]) + "   # cls head starts at this score (short runs)"
             if g.get("cls_prior_prob") else "")
    text = f"""# {comment}
name: {name}
root_dir: "{root}/OPV2V/train"
validate_dir: "{root}/OPV2V/validate"
test_dir: "{root}/OPV2V/test"{cache}

yaml_parser: "load_general_params"
train_params:
  batch_size: &batch_size {bs}
  epoches: {epochs}
  eval_freq: {eval_freq}
  save_freq: {save_freq}
  max_cav: 5

comm_range: 70
input_source: {src}
label_type: 'lidar'
cav_lidar_range: &cav_lidar {flow(rng)}{ext}{edc}

heter:
  assignment_path: "{g.get('assign', root + '/modality_assign/opv2v_4modality.json')}"
  ego_modality: &ego_modality "{ego}"
  mapping_dict:
{block(mapping, 4)}{lc}
  modality_setting:
{chr(10).join(heter_setting(m, g) for m in mods)}

fusion:
  core_method: 'intermediateheter'
  dataset: 'opv2v'
  args:
    proj_first: false

preprocess:
  core_method: 'SpVoxelPreprocessor'
  args:
    voxel_size: {flow(g['pillar_voxel'])}   # defines the shared anchor/feature grid
    max_points_per_voxel: 1
    max_voxel_train: 1
    max_voxel_test: 1
  cav_lidar_range: *cav_lidar

postprocess:
  core_method: 'VoxelPostprocessor'
  gt_range: *cav_lidar
  anchor_args:
    cav_lidar_range: *cav_lidar
    l: 3.9
    w: 1.6
    h: 1.56
    r: &anchor_yaw [0, 90]
    feature_stride: {g['stride']}
    num: &anchor_num 2
  target_args:
    pos_threshold: 0.6
    neg_threshold: 0.45
    score_threshold: 0.2
  order: 'hwl'
  max_num: 150
  nms_thresh: 0.15
  dir_args: &dir_args
    dir_offset: 0.7853
    num_bins: 2
    anchor_yaw: *anchor_yaw

model:
  core_method: {core}
  args:{bnm}{prior}
    lidar_range: *cav_lidar
    ego_modality: *ego_modality
{chr(10).join(model_m(m, g) for m in mods)}
    message_extractor:
      in_ch: {g['feat']}
      out_ch: 2
    gencomm:
      model:
        embed_dim: {g['feat'] + 2}
        in_channels: {g['feat']}
        out_ch: {g['feat']}
        ch: 8
        ch_mult: [1, 1]
        num_res_blocks: 2
        attn_resolutions: [16]
        dropout: 0.0
        resamp_with_conv: true
      diffusion:
        beta_schedule: linear
        beta_start: 0.005   # the values the reference code used (its YAML said 0.0005/0.02 but was ignored)
        beta_end: 0.05
        num_diffusion_timesteps: 3
    enhancer:
      in_ch: {g['feat']}{ge}{gs}
    fusion_method: att
    att:
      feat_dim: {g['feat']}
    in_head: {g['feat']}
    anchor_number: *anchor_num
    dir_args: *dir_args{mm}

loss:
  core_method: {loss}
  args:
    pos_cls_weight: 2.0
    cls:
      type: 'SigmoidFocalLoss'
      alpha: 0.25
      gamma: 2.0
      weight: 2.0
    reg:
      type: 'WeightedSmoothL1Loss'
      sigma: 3.0
      codewise: true
      weight: 2.0
    dir:
      type: 'WeightedSoftmaxClassificationLoss'
      weight: 0.2
      args: *dir_args{depth}{gen}

optimizer:
  core_method: Adam
  lr: {lr}
  args:
    eps: 1e-10
    weight_decay: 1e-4

lr_scheduler:
  core_method: multistep
  gamma: 0.1
  step_size: {flow(steps)}
"""
    return text


def all_same(m):
    return {k: m for k in ("m1", "m2", "m3", "m4")}


def write_set(outdir, g, small=False):
    S1 = "heter_model_baseline_w_gencomm_stage1"
    S2 = "heter_model_baseline_w_gencomm_stage2"
    files = {}
    for m in ("m1", "m2", "m3", "m4"):
        cam = m in ("m2", "m4")
        if small:
            bs, ep, ev, sv, lr, st = g["s1_cam"] if cam else g.get(f"s1_{m}", g["s1"])
        else:
            bs, ep, ev, sv, lr, st = (1, 30, 3, 3, 0.002, [15, 25]) if cam else (2, 20, 2, 2, 0.002, [10, 15])
        files[f"stage1/{m}_att.yaml"] = make(
            f"{g['prefix']}OPV2V_{m}_att_gencomm", g, [m], m, all_same(m), S1, "point_pillar_gencomm_loss",
            bs, ep, ev, sv, lr, st, camera_range=cam and not g.get("no_cam_range"),
            lidar_ch={"m3": 32} if m == "m3" else None,
            comment=f"GenComm stage 1: homogeneous collaboration base of agent type {m} (all modules trained).")
    pairs = {"m2": {"m1": "m1", "m2": "m1", "m3": "m2", "m4": "m2"},
             "m3": {"m1": "m1", "m2": "m1", "m3": "m3", "m4": "m3"},
             "m4": {"m1": "m1", "m2": "m1", "m3": "m4", "m4": "m4"}}
    for m, mapping in pairs.items():
        if small:
            bs, ep, ev, sv, lr, st = g["s2"]
        else:
            bs, ep, ev, sv, lr, st = {"m2": (1, 10, 1, 1, 0.0005, [5]), "m3": (2, 10, 2, 2, 0.0005, [5]),
                                      "m4": (2, 10, 1, 1, 0.0005, [5])}[m]
        files[f"stage2/m1{m}_att.yaml"] = make(
            f"{g['prefix']}OPV2V_m1{m}_att_gencomm", g, ["m1", m], "m1", mapping, S2, "point_pillar_depth_loss",
            bs, ep, ev, sv, lr, st, ego_diff_cav=True, lidar_ch={"m3": 32} if m == "m3" else None,
            comment=f"GenComm stage 2: ego m1 frozen; only message_extractor_{m} of the new agent type is trained.")
    files["stage2/m1m2m3m4_att_infer.yaml"] = make(
        f"{g['prefix']}OPV2V_m1m2m3m4_att_gencomm_infer", g, ["m1", "m2", "m3", "m4"], "m1",
        {k: k for k in ("m1", "m2", "m3", "m4")}, S2, "point_pillar_depth_loss", 1, 1, 1, 1, 0.0005, [5],
        lidar_ch={"m3": 32},
        comment="GenComm stage 3: merged model of the ego m1 and every stage-2 message extractor (inference only).")
    for rel, text in files.items():
        path = os.path.join(outdir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "w").write(text)
    return files


DEMO = dict(
    FULL, prefix="demo_", rng=[-51.2, -25.6, -3, 51.2, 25.6, 1], cam_rng=[-25.6, -25.6, -3, 25.6, 25.6, 1],
    max_vox=(8000, 16000), pillar_points=8, bn_momentum=0.1, generate_ego=False, generation_start="sender_frame",
    data_cache_dir="dataset/.decode_cache",
    pillar_voxel=[0.8, 0.8, 4], stride=2, grid_step=0.8, shrink_stride={"m1": 1, "m2": 1, "m3": 1, "m4": 1},
    second_voxel=[0.2, 0.2, 0.1],
    m1_backbone=dict(layer_nums=[1, 1, 1], layer_strides=[2, 2, 2], num_filters=[32, 64, 64],
                     upsample_strides=[1, 2, 4], num_upsample_filter=[32, 32, 32]), m1_in=96,
    m3_backbone=dict(layer_nums=[1], layer_strides=[1], num_filters=[64], upsample_strides=[1],
                     num_upsample_filter=[64], inplanes=128), m3_in=64,
    cam_backbone=dict(layer_nums=[1, 1, 1], layer_strides=[2, 2, 2], num_filters=[32, 64, 64],
                      upsample_strides=[1, 2, 4], num_upsample_filter=[32, 32, 32], inplanes=64), cam_in=96,
    feat=64, m2_aug=dict(resize_lim=[0.12, 0.125], final_dim=[64, 96]),
    m4_aug=dict(resize_lim=[0.12, 0.125], final_dim=[64, 96]),
    cls_prior_prob=0.01,
    # (batch, epochs, eval_freq, save_freq, lr, milestones); validating only at the start and the end of these
    # short runs saves ~1 min of demo time (their validation loss fell every epoch, so bestval = last anyway)
    s1=(2, 8, 8, 2, 0.002, [7]), s1_cam=(2, 2, 1, 1, 0.002, [10]), s1_m3=(2, 4, 4, 4, 0.002, [10]),
    s2=(2, 5, 5, 5, 0.005, [10]), no_cam_range=True,
)

def main(argv=None):
    which = (argv if argv is not None else sys.argv[1:]) or ["all"]
    if which[0] in ("full", "all"):
        write_set(FULL_DIR, dict(FULL, prefix=""))
        print(f"wrote {FULL_DIR}")
    if which[0] in ("demo", "all"):
        write_set(DEMO_DIR, DEMO, small=True)
        print(f"wrote {DEMO_DIR}")


if __name__ == "__main__":
    main()
