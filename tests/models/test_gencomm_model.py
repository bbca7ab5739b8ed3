"""GenComm stage-1 / stage-2 models on a tiny two-type batch (8 x 16 feature grid, 16 channels)."""
import copy
import math

import pytest
import torch

from opencood.models.sub_modules.message_extractor import MessageExtractor
from opencood.utils.errors import CheckpointError, ConfigError
from opencood.utils.registry import LOSSES, MODELS


RANGE = [-12.8, -6.4, -3.0, 12.8, 6.4, 1.0]  # pillar grid 64 x 32 at 0.4 m -> features 16 x 8
VFE = {"use_norm": True, "with_distance": False, "use_absolute_xyz": True, "num_filters": [64]}
ENC = {"voxel_size": [0.4, 0.4, 4.0], "lidar_range": RANGE, "pillar_vfe": VFE,
       "point_pillar_scatter": {"num_features": 64, "grid_size": [64, 32, 1]}}
C = 16
ARGS = {
    "lidar_range": RANGE,
    "ego_modality": "m1",
    "m1": {"core_method": "point_pillar", "sensor_type": "lidar", "encoder_args": ENC,
           "backbone_args": {"layer_nums": [1, 1], "layer_strides": [2, 2], "num_filters": [16, 32],
                             "upsample_strides": [1, 2], "num_upsample_filter": [16, 16], "inplanes": 64},
           "shrink_header": {"kernal_size": [3], "stride": [2], "padding": [1], "dim": [C], "input_dim": 32}},
    "m2": {"core_method": "point_pillar", "sensor_type": "lidar", "encoder_args": ENC,
           "backbone_args": {"layer_nums": [1], "layer_strides": [2], "num_filters": [16],
                             "upsample_strides": [1], "num_upsample_filter": [16], "inplanes": 64},
           "shrink_header": {"kernal_size": [3], "stride": [2], "padding": [1], "dim": [C], "input_dim": 16}},
    "message_extractor": {"in_ch": C, "out_ch": 2},
    "enhancer": {"in_ch": C},
    "gencomm": {"model": {"embed_dim": C + 2, "in_channels": C, "out_ch": C, "ch": 8, "ch_mult": [1, 1],
                          "num_res_blocks": 2, "attn_resolutions": [16], "dropout": 0.0,
                          "resamp_with_conv": True},
                "diffusion": {"beta_schedule": "linear", "beta_start": 0.005, "beta_end": 0.05,
                              "num_diffusion_timesteps": 3}},
    "fusion_method": "att", "att": {"feat_dim": C},
    "in_head": C, "anchor_number": 2, "dir_args": {"dir_offset": 0.7853, "num_bins": 2, "anchor_yaw": [0, 90]},
}
LOSS_ARGS = {"pos_cls_weight": 2.0,
             "cls": {"type": "SigmoidFocalLoss", "alpha": 0.25, "gamma": 2.0, "weight": 2.0},
             "reg": {"type": "WeightedSmoothL1Loss", "sigma": 3.0, "codewise": True, "weight": 2.0},
             "dir": {"type": "WeightedSoftmaxClassificationLoss", "weight": 0.2,
                     "args": {"dir_offset": 0.7853, "num_bins": 2, "anchor_yaw": [0, 90]}}}


def random_voxels(n_agents, g, voxels=30, p=8, nx=64, x_min=RANGE[0]):
    coords, feats, nums = [], [], []
    for a in range(n_agents):
        cells = torch.randperm(nx * 32, generator=g)[:voxels]
        y, x = cells // nx, cells % nx
        coords.append(torch.stack([torch.full_like(y, a), torch.zeros_like(y), y, x], 1))
        pts = torch.rand(voxels, p, 4, generator=g)
        pts[..., 0] = x_min + (x.view(-1, 1) + pts[..., 0]) * 0.4
        pts[..., 1] = RANGE[1] + (y.view(-1, 1) + pts[..., 1]) * 0.4
        pts[..., 2] = pts[..., 2] * 4 - 3
        num = torch.randint(1, p + 1, (voxels,), generator=g)
        pts[torch.arange(p).view(1, -1) >= num.view(-1, 1)] = 0
        feats.append(pts)
        nums.append(num)
    return {"voxel_features": torch.cat(feats), "voxel_coords": torch.cat(coords).int(),
            "voxel_num_points": torch.cat(nums).int()}


def make_batch(seed=0):
    """2 samples: [m1 ego, m2] and [m1 ego, m2, m2]; one agent 2 m ahead of the ego in sample 0."""
    g = torch.Generator().manual_seed(seed)
    t = torch.eye(4).repeat(2, 5, 5, 1, 1)
    t[0, 1, 0, 0, 3], t[0, 0, 1, 0, 3] = 2.0, -2.0
    h, w, a = 8, 16, 2
    pos = (torch.rand(2, h, w, a, generator=g) < 0.05).float()
    anchors = torch.zeros(h, w, a, 7)
    anchors[..., 3:6] = torch.tensor([1.56, 1.6, 3.9])
    anchors[..., 1, 6] = math.pi / 2
    labels = {"pos_equal_one": pos, "neg_equal_one": 1 - pos,
              "targets": torch.randn(2, h, w, 7 * a, generator=g) * 0.3, "anchor_box": anchors}
    return {"inputs_m1": random_voxels(2, g), "inputs_m2": random_voxels(3, g),
            "agent_modality_list": ["m1", "m2", "m1", "m2", "m2"], "record_len": torch.tensor([2, 3]),
            "pairwise_t_matrix": t, "label_dict": labels}


def build(name="heter_model_baseline_w_gencomm_stage1", **overrides):
    args = copy.deepcopy(ARGS)
    args.update(overrides)
    torch.manual_seed(0)
    return MODELS.get(name)(args)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_stage1_outputs_and_every_parameter_learns():
    model = build()
    assert MODELS.get("heter_model_baseline_w_gencomm") is type(model)
    batch = make_batch()
    out = model(batch)
    assert out["cls_preds"].shape == (2, 2, 8, 16)
    assert out["message"].shape == (5, 2, 8, 16)
    assert out["pred_feature"].shape == out["gt_feature"].shape == (5, C, 8, 16)
    loss = LOSSES.get("point_pillar_gencomm_loss")(dict(LOSS_ARGS, generate_weight=1.0))
    loss(out, batch["label_dict"]).backward()
    prefixes = {n.split(".")[0] for n, _ in model.named_parameters()}
    assert {"message_extractor_m1", "message_extractor_m2", "gencomm", "enhancer", "cls_head"} <= prefixes
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert no_grad == []


def test_diffcomm_key_and_bad_generator_sections():
    args = copy.deepcopy(ARGS)
    args["diffcomm"] = args.pop("gencomm")
    torch.manual_seed(0)
    model = MODELS.get("heter_model_baseline_w_gencomm_stage2")(args)
    assert model.gencomm.num_timesteps == 3
    args["gencomm"] = dict(args["diffcomm"], diffusion={"beta_start": 1e-3, "beta_end": 1e-2,
                                                        "num_diffusion_timesteps": 2})
    with pytest.raises(ConfigError, match="diffcomm"):
        MODELS.get("heter_model_baseline_w_gencomm_stage1")(args)
    del args["gencomm"], args["diffcomm"]
    with pytest.raises(ConfigError, match="gencomm"):
        MODELS.get("heter_model_baseline_w_gencomm_stage1")(args)


def test_generate_ego_false_fuses_real_ego_feature():
    model = build(generate_ego=False).eval()
    with torch.no_grad():
        out = model(make_batch())
    assert out["pred_feature"].shape == (3, C, 8, 16)  # the 3 collaborators only
    gen_calls = []
    model.gencomm.model.register_forward_hook(lambda m, i, o: gen_calls.append(i[0].shape[0]))
    with torch.no_grad():
        model(make_batch())
    assert gen_calls == [3, 3, 3]


def test_eval_seed_makes_inference_deterministic():
    args = copy.deepcopy(ARGS["gencomm"])
    model = build(gencomm=dict(args, eval_seed=11)).eval()
    batch = make_batch()
    with torch.no_grad():
        a, b = model(batch)["cls_preds"], model(batch)["cls_preds"]
    assert torch.equal(a, b)
    model.gencomm.eval_seed = None
    with torch.no_grad():
        assert not torch.equal(model(batch)["cls_preds"], model(batch)["cls_preds"])


def test_missing_message_only_at_eval_and_never_for_the_ego():
    model = build(missing_message=True, missing_message_ratio=0.5).eval()
    batch = make_batch()
    with torch.no_grad():
        eval_msg = model(batch)["message"]
        model.degradation.mask_ratio = 0.0  # missing_message = comm_degradation {mask_ratio, mask_unit: cell}
        full_msg = model(batch)["message"]
        model.degradation.mask_ratio = 0.5
        model.train()
        train_msg = model(batch)["message"]
    assert (train_msg != 0).any(dim=1).all()  # no dropout while training
    ego = torch.tensor([True, False, True, False, False])
    assert torch.equal(eval_msg[ego], full_msg[ego])
    zeroed = (eval_msg[~ego] == 0).all(dim=1) & (full_msg[~ego] != 0).any(dim=1)
    assert 0.3 < zeroed.float().mean() < 0.7
    kept = eval_msg[~ego] != 0
    assert torch.equal(eval_msg[~ego][kept], full_msg[~ego][kept])
    assert build(name="heter_model_baseline_w_gencomm_stage2", missing_message=True).degradation.mask_ratio == 0.1


def test_stage2_trainable_parameters_and_required_prefixes():
    model = build("heter_model_baseline_w_gencomm_stage2")
    assert model.trainable_parameter_count() == n_params(MessageExtractor(C, 2))
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} == {"message_extractor_m2"}
    prefixes = model.required_prefixes()
    for p in ("encoder_m1.", "backbone_m1.", "shrinker_m1.", "encoder_m2.", "shrinker_m2.",
              "message_extractor_m1.", "gencomm.", "enhancer.", "cls_head.", "reg_head.", "dir_head."):
        assert p in prefixes
    assert "message_extractor_m2." not in prefixes and "fusion_net." not in prefixes  # att has no params
    state = model.state_dict()
    model.check_state_dict(state)
    partial = {k: v for k, v in state.items() if not k.startswith("gencomm.")}
    with pytest.raises(CheckpointError, match="merged.pth: no 'gencomm.\\*' keys"):
        model.check_state_dict(partial, "merged.pth")


def test_stage2_needs_ego_modules():
    args = copy.deepcopy(ARGS)
    args["ego_modality"] = "m3"
    with pytest.raises(ConfigError, match="ego_modality"):
        MODELS.get("heter_model_baseline_w_gencomm_stage2")(args)
    del args["ego_modality"]
    with pytest.raises(ConfigError, match="ego_modality"):
        MODELS.get("heter_model_baseline_w_gencomm_stage2")(args)


def test_stage2_frozen_tensors_and_bn_stats_bit_identical():
    model = build("heter_model_baseline_w_gencomm_stage2")
    loss_name = "point_pillar_depth_loss" if "point_pillar_depth_loss" in LOSSES else "point_pillar_loss"
    loss = LOSSES.get(loss_name)(LOSS_ARGS)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = make_batch()
    for step in range(3):
        model.train()
        assert not model.encoder_m2.training and model.message_extractor_m2.training
        opt.zero_grad()
        loss(model(make_batch(step)), batch["label_dict"]).backward()
        opt.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("message_extractor_m2.") for k in changed)
    bn_buffers = [k for k in before if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert bn_buffers and not changed & set(bn_buffers)


def test_stage1_loss_falls():
    model = build()
    loss = LOSSES.get("point_pillar_gencomm_loss")(dict(LOSS_ARGS, generate_weight=1.0))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    batch = make_batch()
    values = []
    torch.manual_seed(0)
    for _ in range(8):
        opt.zero_grad()
        total = loss(model(batch), batch["label_dict"])
        total.backward()
        opt.step()
        values.append(float(total.detach()))
    assert values[-1] < 0.7 * values[0]
    assert loss.loss_dict["gen_loss"] > 0


def test_narrow_grid_message_extracted_before_zero_padding():
    """A type whose map covers half the LiDAR width (like a +-51.2 m camera grid on the 102.4 m LiDAR
    range) gets F and M padded with zeros after the DME, as the reference's stage 2."""
    args = copy.deepcopy(ARGS)
    half = [-6.4, -6.4, -3.0, 6.4, 6.4, 1.0]
    args["m2"]["encoder_args"] = dict(ENC, lidar_range=half,
                                      point_pillar_scatter={"num_features": 64, "grid_size": [32, 32, 1]})
    args["m2"]["sensor_type"] = "camera"  # cropped/padded like a camera map, by its grid's x/y extent
    args["m2"]["camera_mask_args"] = {"grid_conf": {"xbound": [-6.4, 6.4, 0.4], "ybound": [-6.4, 6.4, 0.4]}}
    torch.manual_seed(0)
    model = MODELS.get("heter_model_baseline_w_gencomm_stage1")(args).eval()
    assert model.crop_ratio["m2"] == (1.0, 2.0)
    batch = make_batch()
    batch["inputs_m2"] = random_voxels(3, torch.Generator().manual_seed(5), nx=32, x_min=-6.4)
    with torch.no_grad():
        feats, extras, _ = model.encode_agents(batch)
        msgs = extras["message"]
        out = model(batch)
    m2 = torch.tensor([False, True, False, True, True])
    assert msgs.shape == (5, 2, 8, 16) and out["cls_preds"].shape == (2, 2, 8, 16)
    assert msgs[m2][..., :4].abs().sum() == 0 and msgs[m2][..., 12:].abs().sum() == 0
    assert feats[m2][..., :4].abs().sum() == 0 and msgs[m2][..., 4:12].abs().sum() > 0
    assert model.has_unused_parameters


def test_sender_frame_start_moves_ego_map_into_each_senders_frame():
    model = build(generation_start="sender_frame")
    batch = make_batch()
    t = batch["pairwise_t_matrix"]
    t[0, 1, 0, 0, 3], t[0, 0, 1, 0, 3] = 1.6, -1.6  # agent 1 one feature cell (1.6 m) ahead of the ego
    feats = torch.zeros(5, C, 8, 16)
    feats[0, :, 4, 9] = 1.0  # ego map: one hot cell
    start = model.generation_start_features(feats, batch)
    assert torch.equal(start[0], feats[0])  # the ego's own chain starts from its map unchanged
    hot = start[1, 0].flatten().argmax().item()
    assert divmod(hot, 16) == (4, 8)  # the same point is one cell behind in the sender's frame
    assert torch.isclose(start[1, 0, 4, 8], torch.tensor(1.0), atol=1e-5)
    ref = build()  # reference start: the ego map as it is, for every agent of the sample
    assert torch.equal(ref.generation_start_features(feats, batch)[1], feats[0])
    with pytest.raises(ConfigError, match="generation_start"):
        build(generation_start="world")


# (sum, sum of squares) of each output of the pre-refactor stage-1 model, eval mode, eval_seed 3.
HEAD_EVAL_OUTPUTS = {"cls_preds": (-83.611616, 61.566361), "reg_preds": (189.133588, 488.585279),
                     "dir_preds": (-115.744432, 94.426165), "fused_feature": (-185.609621, 1234.158814),
                     "pred_feature": (-63.201785, 1463.964804), "message": (18.516816, 14.120579)}


def test_stage1_outputs_equal_the_pre_refactor_model():
    model = build(gencomm=dict(ARGS["gencomm"], eval_seed=3)).eval()
    with torch.no_grad():
        out = model(make_batch())
    for name, (total, squares) in HEAD_EVAL_OUTPUTS.items():
        t = out[name].double()
        assert float(t.sum()) == pytest.approx(total, rel=1e-5, abs=1e-4), name
        assert float((t * t).sum()) == pytest.approx(squares, rel=1e-5), name


def test_gencomm_adds_its_message_through_the_hook_only():
    from opencood.models.heter_model_baseline import HeterModelBaseline
    from opencood.models.heter_model_baseline_w_gencomm import (HeterModelBaselineWGenComm,
                                                                HeterModelBaselineWGenCommStage2)

    loop = {"encode_agents", "encode_type", "run_encoder", "stack_in_agent_order", "crop_to_lidar_grid"}
    for cls in (HeterModelBaselineWGenComm, HeterModelBaselineWGenCommStage2):
        assert not loop & set(vars(cls)), cls  # the encode loop is the baseline's
        assert issubclass(cls, HeterModelBaseline) and "type_outputs" in vars(HeterModelBaselineWGenComm)
    model = build().eval()
    calls = []
    hook = model.type_outputs
    model.type_outputs = lambda feature, m: calls.append((m, tuple(feature.shape))) or hook(feature, m)
    with torch.no_grad():
        out = model(make_batch())
    assert calls == [("m1", (2, C, 8, 16)), ("m2", (3, C, 8, 16))]  # once per type present, own grid
    assert out["message"].shape == (5, 2, 8, 16)


def test_misspelt_keys_fail_with_a_suggestion():
    with pytest.raises(ConfigError, match="unknown key 'model.args.generate_egoo'; did you mean 'generate_ego'"):
        build(generate_egoo=False)
    with pytest.raises(ConfigError, match="unknown key 'model.args.gencomm.diffusion.beta_strat'; did you mean"):
        build(gencomm=dict(ARGS["gencomm"], diffusion=dict(ARGS["gencomm"]["diffusion"], beta_strat=0.1)))
    with pytest.raises(ConfigError, match="'model.args.max' configures fusion_method 'max'"):
        build(max={})
