"""STAMP (heter_model_baseline_w_stamp, adapter_loss, intermediateheteradapter): trainable set and count by
formula, the stage key, the collaborative path R_ego(A_m(F)), every adapter variant, the alignment loss falling on
real tiny-world batches with frozen tensors (BatchNorm buffers included) bit-identical, bad input."""
import copy

import pytest
import torch

from opencood.data_utils.datasets import build_dataset
from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.models.sub_modules.feature_info import FeatureInfo
from opencood.models.sub_modules.stamp_adapter import build_adapter
from opencood.tools import train_utils
from opencood.utils.errors import CheckpointError, ConfigError, DataError
from opencood.utils.registry import ADAPTERS, LOSSES

ROOT = "opencood/hypes_yaml/opv2v/GenComm_yamls/baselines"
TINY = f"{ROOT}/tiny"


def convnext_adapter_count(c, d, n, r=4):
    """Conv1x1 c->d, n ConvNeXt blocks (dwconv 49d+d, LayerNorm 2d, r d^2 + r d, r d^2 + d, gamma d), Conv1x1 d->c."""
    return (c * d + d) + n * (49 * d + d + 2 * d + 2 * r * d * d + r * d + d + d) + (d * c + c)


def _build(path, **model_args):
    h = load_yaml(path)
    h["model"]["args"].update(model_args)
    return train_utils.create_model(h), h


@pytest.mark.parametrize("rel,c,d,n", [(f"{ROOT}/stage2/STAMP/m0m3_att.yaml", 128, 64, 3),
                                       (f"{ROOT}/stage2/STAMP/m0m2_v2xvit.yaml", 128, 64, 3),
                                       (f"{TINY}/stage2/STAMP/m0m1_att.yaml", 64, 32, 1)])
def test_trainable_set_and_count_by_formula(rel, c, d, n):
    model, h = _build(rel)
    m = h["model"]["args"]["ego_modality"]
    assert model.trainable_modules == [f"adapter_{m}", f"reverter_{m}"]
    trainable = {k.split(".")[0] for k, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(model.trainable_modules)
    assert model.trainable_parameter_count() == 2 * convnext_adapter_count(c, d, n)  # full: 252,032
    assert {"encoder_m0.", f"encoder_{m}.", f"shrinker_{m}.", "reg_head.", "cls_head."} <= set(
        model.required_prefixes())


def test_infer_model_trains_nothing_and_needs_every_trained_module():
    model, _ = _build(f"{ROOT}/stage2/STAMP/m1m2m3m4_att_infer.yaml")
    assert model.trainable_parameter_count() == 0
    prefixes = set(model.required_prefixes())
    assert {f"{k}_{m}." for k in ("adapter", "reverter") for m in ("m1", "m2", "m3", "m4")} <= prefixes
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("adapter_m3.")}
    with pytest.raises(CheckpointError, match=r"merged.pth: no 'adapter_m3.\*' keys; STAMP freezes"):
        model.check_state_dict(state, "merged.pth")


@pytest.mark.parametrize("name,types", [("m1m2_att_infer", ("m1", "m2")), ("m1m3_att_infer", ("m1", "m3")),
                                        ("m1m2m3m4_att_infer", ("m1", "m2", "m3", "m4"))])
def test_tiny_infer_models_hold_every_trained_module_and_train_nothing(name, types):
    model, _ = _build(f"{TINY}/stage2/STAMP/{name}.yaml")
    children = dict(model.named_children())
    assert model.trainable_parameter_count() == 0 and model.ego == "m1"
    assert {f"{k}_{m}" for k in ("adapter", "reverter") for m in types} <= set(children)
    assert sum(p.numel() for n, c in children.items() if n.startswith(("adapter_", "reverter_"))
               for p in c.parameters()) == 2 * len(types) * convnext_adapter_count(64, 32, 1)


def test_unknown_stage_is_a_one_line_config_error(tmp_path):
    path = tmp_path / "bad.yaml"
    base = f"{TINY.split('hypes_yaml/')[1]}/stage2/STAMP/m0m1_att.yaml"
    path.write_text(f"_base_: {base}\nmodel:\n  args:\n    stage: train_adaptor\n")
    with pytest.raises(ConfigError, match="model.args.stage' = 'train_adaptor' is not one of .*did you mean "
                                          "'train_adapter'") as e:
        load_yaml(str(path))
    assert "\n" not in str(e.value)


def test_collaborator_type_without_adapter_is_a_config_error():
    h = load_yaml(f"{TINY}/stage2/STAMP/m1m3_att_infer.yaml")
    del h["model"]["args"]["m3"]["adapter"]
    with pytest.raises(ConfigError, match="model.args.m3: no 'adapter' section; STAMP stage 'infer' needs a "
                                          "trained adapter for agent type m3"):
        train_utils.create_model(h)


def test_collaborative_path_is_reverter_of_ego_after_adapter_of_sender():
    model, _ = _build(f"{TINY}/stage2/STAMP/m1m3_att_infer.yaml")
    model.eval()
    g = torch.Generator().manual_seed(0)
    for name in ("adapter_m3", "reverter_m1"):  # layer scale 1e-6 would make the blocks near-identity
        for p in getattr(model, name).parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.1
    feats = torch.randn(3, 64, 32, 64, generator=g)
    out = model.to_ego_space(feats, ["m1", "m3", "m1"])
    with torch.no_grad():
        expect = model.reverter_m1(model.adapter_m3(feats[1:2]))
    assert torch.equal(out[0], feats[0]) and torch.equal(out[2], feats[2])
    assert torch.allclose(out[1:2], expect, atol=1e-6) and not torch.allclose(out[1], feats[1])


@pytest.mark.parametrize("name", ["adapterconvnext", "adapterconv", "adapterfc", "adapteratt", "adapterdsa",
                                  "identity"])
def test_every_adapter_keeps_the_map_shape_and_learns(name):
    feature = FeatureInfo(16, (1.6, 1.6), (6, 10))
    sub = {"num_of_blocks": 2, "dim": 8, "num_heads": 2, "window_size": 4, "num_points": 3}
    adapter = build_adapter({"core_method": name, "args": {"submodule_args": sub}}, feature, "m.adapter")
    x = torch.randn(2, 16, 6, 10, requires_grad=True)  # 6 x 10: not a multiple of the window
    y = adapter(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    if name != "identity":
        assert all(p.grad is not None for p in adapter.parameters() if p.requires_grad)


def test_deformable_attention_starts_as_the_cells_own_value():
    """Zero offsets and weights: every head samples its own cell (bilinear at the cell centre) P times."""
    block = ADAPTERS.get("adapterdsa")(8, 8, {"num_of_blocks": 1, "dim": 8, "num_heads": 2, "num_points": 3}).body[0]
    x = torch.randn(1, 8, 5, 7)
    y = block.norm1(x)
    assert torch.allclose(block.attend(y), block.proj(block.value(y)), atol=1e-5)


def test_adapter_shape_and_channel_keys_are_checked():
    feature = FeatureInfo(128, (1.6, 1.6), (64, 128))
    with pytest.raises(ConfigError, match="m1.adapter.args.in_channels = 64 but the shared feature has 128"):
        build_adapter({"args": {"in_channels": 64}}, feature, "model.args.m1.adapter")
    with pytest.raises(ConfigError, match="in_feature_shape \\[128, 128\\] != out_feature_shape \\[128, 256\\]"):
        build_adapter({"args": {"in_feature_shape": [128, 128], "out_feature_shape": [128, 256]}}, feature,
                      "model.args.m2.adapter")
    with pytest.raises(ConfigError, match="unknown model.args.mX.adapter.core_method 'adapterxyz'"):
        build_adapter({"core_method": "adapterxyz"}, feature, "model.args.m1.adapter")
    build_adapter({"args": {"in_feature_shape": [128, 256], "out_feature_shape": [128, 256]}}, feature, "ref")


def test_alignment_loss_falls_and_frozen_tensors_stay_bit_identical(make_tiny_config):
    """Five Adam steps of train_adapter on real tiny-world batches: the three-term loss falls; every tensor
    outside adapter_m3 / reverter_m3 (BatchNorm running statistics included) is unchanged."""
    h = load_yaml(make_tiny_config(f"{TINY}/stage2/STAMP/m0m3_att.yaml"))
    torch.manual_seed(0)
    model = train_utils.create_model(h)
    criterion = train_utils.create_loss(h)
    ds = build_dataset(h, train=True)
    batch = ds.collate_batch_train([ds[0], ds[1]])
    ego = batch["ego"]
    n = int(ego["record_len"].sum())
    assert ego["agent_modality_list"] == ["m3"] * n
    assert int(ego["inputs_m0"]["voxel_coords"][:, 0].max()) + 1 == n  # one protocol row per agent
    model.train()
    model.model_train_init()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    losses = []
    for _ in range(6):
        total, terms = model.training_step(batch, criterion)
        assert set(terms) >= {"p2m_loss", "m2p2m_loss", "m2p_loss"}
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(float(total.detach()))
    assert losses[-1] < 0.7 * losses[0], losses
    after = model.state_dict()
    moved = {k.split(".")[0] for k in after if not torch.equal(after[k], before[k])}
    assert moved == {"adapter_m3", "reverter_m3"}, moved


def test_w_output_stage_adds_detection_terms(make_tiny_config):
    h = load_yaml(make_tiny_config(f"{TINY}/stage2/STAMP/m0m1_att.yaml"))
    h["model"]["args"]["stage"] = "train_adapter_w_output"
    model, criterion = train_utils.create_model(h), train_utils.create_loss(h)
    ds = build_dataset(h, train=True)
    _, terms = model.training_step(ds.collate_batch_train([ds[0]]), criterion)
    assert {"p2m_loss", "m2p2m_loss", "m2p_loss", "cls_loss", "reg_loss"} <= set(terms)


def test_adapter_dataset_refuses_the_protocol_as_an_agent_type(make_tiny_config):
    h = load_yaml(make_tiny_config(f"{TINY}/stage2/STAMP/m0m1_att.yaml"))
    h2 = copy.deepcopy(h)
    del h2["heter"]["cav_preference"]  # default: uniform over every type, m0 included
    with pytest.raises(ConfigError, match="heter.protocol_modality 'm0' is an agent type through "
                                          "'heter.cav_preference'"):
        build_dataset(h2, train=True)
    del h["heter"]["protocol_modality"]
    with pytest.raises(ConfigError, match="missing key 'heter.protocol_modality'"):
        build_dataset(h, train=True)


def test_alignment_stage_without_protocol_inputs_is_a_data_error(make_tiny_config):
    h = load_yaml(make_tiny_config(f"{TINY}/stage2/STAMP/m0m1_att.yaml"))
    model = train_utils.create_model(h)
    ds = build_dataset(h, train=True)
    ego = ds.collate_batch_train([ds[0]])["ego"]
    del ego["inputs_m0"]
    with pytest.raises(DataError, match="no 'inputs_m0'; STAMP stage 'train_adapter' needs"):
        model(ego)


def test_adapter_loss_terms_by_hand():
    loss = LOSSES.get("adapter_loss")(load_yaml(f"{ROOT}/stage2/STAMP/m0m1_att.yaml")["loss"]["args"])
    f = {k: torch.full((1, 2, 2, 2), v) for k, v in (("stamp_feature", 1.0), ("stamp_protocol", 2.0),
                                                    ("stamp_reverted", 1.5), ("stamp_cycled", 0.0),
                                                    ("stamp_adapted", 2.0))}
    terms = loss.loss_terms(f, {})
    assert [round(float(v), 6) for v in terms.values()] == [9 * 0.25, 1 * 1.0, 0.0]


def test_camera_agents_also_feed_their_lidar_cloud_to_the_protocol(make_tiny_config):
    """m0m2: camera agents read no cloud for themselves, but the adapter dataset reads it for the protocol m0."""
    h = load_yaml(make_tiny_config(f"{TINY}/stage2/STAMP/m0m2_att.yaml"))
    ds = build_dataset(h, train=True)
    ego = ds.collate_batch_train([ds[0]])["ego"]
    n = int(ego["record_len"].sum())
    assert ego["agent_modality_list"] == ["m2"] * n and ego["inputs_m2"]["imgs"].shape[0] == n
    assert int(ego["inputs_m0"]["voxel_coords"][:, 0].max()) + 1 == n


def test_train_adapter_evaluation_detects_round_trip_features_outside_the_loss(make_tiny_config):
    h = load_yaml(make_tiny_config(f"{TINY}/stage2/STAMP/m0m1_att.yaml"))
    model, criterion = train_utils.create_model(h), train_utils.create_loss(h)
    ds = build_dataset(h, train=False)
    batch = ds.collate_batch_train([ds[0]])
    model.eval()
    with torch.no_grad():
        out = model(batch["ego"])
        _, terms = model.training_step(batch, criterion)
    assert out["cls_preds"].shape[0] == 1 and out["detection_in_loss"] is False
    assert set(terms) == {"total_loss", "p2m_loss", "m2p2m_loss", "m2p_loss"}


def test_collab_train_learns_only_adapters_through_the_frozen_fusion(make_tiny_config):
    """collab_train on mixed m1/m3 samples (intermediateheter): detection loss only; gradients reach the m3
    adapter and the ego's reverter (the collaborators' path), nothing frozen moves."""
    h = load_yaml(make_tiny_config(f"{TINY}/stage2/STAMP/m1m3_att_infer.yaml"))
    h["model"]["args"]["stage"] = "collab_train"
    torch.manual_seed(0)
    model, criterion = train_utils.create_model(h), train_utils.create_loss(h)
    assert model.trainable_modules == ["adapter_m1", "reverter_m1", "adapter_m3", "reverter_m3"]
    ds = build_dataset(h, train=True)
    samples = [ds[i] for i in range(len(ds))]
    sample = next(s for s in samples if s is not None and {"m1", "m3"} <= set(s["ego"]["agent_modality_list"]))
    batch = ds.collate_batch_train([sample])
    model.train()
    model.model_train_init()
    total, terms = model.training_step(batch, criterion)
    assert "cls_loss" in terms and "p2m_loss" not in terms
    total.backward()
    with_grad = {n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == {"adapter_m3", "reverter_m1"}, with_grad
