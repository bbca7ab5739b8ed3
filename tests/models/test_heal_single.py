"""HEAL's backward alignment (heter_pyramid_single on lateheter): trainable set and counts at HEAL's geometry, the
single-agent alignment loss falling on tiny-world batches with every frozen tensor (BatchNorm buffers included)
bit-identical, the lateheter batch, final_infer = base + aligned chains, bad input."""
import copy

import pytest
import torch

from opencood.data_utils.datasets import build_dataset
from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.tools import train_utils
from opencood.utils.errors import CheckpointError, ConfigError

HEAL = "opencood/hypes_yaml/opv2v/MoreModality/HEAL"
TINY = f"{HEAL}/tiny"
CONVNEXT_ALIGNER = 3 * (8 * 64 * 64 + 58 * 64)  # 3 ConvNeXt blocks at dim 64: 109,440
COUNT = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731


def _model(path, **model_args):
    h = load_yaml(path)
    h["model"]["args"].update(model_args)
    return train_utils.create_model(h)


def test_trainable_set_and_count_heal_geometry():
    model = _model(f"{HEAL}/stage2/m3_single_pyramid.yaml")
    assert model.trainable_modules == ["encoder_m3", "backbone_m3", "aligner_m3"]
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} == set(model.trainable_modules)
    assert COUNT(model.aligner_m3) == CONVNEXT_ALIGNER
    assert model.trainable_parameter_count() == 699_456 + COUNT(model.backbone_m3) + CONVNEXT_ALIGNER == 1_076_032
    assert {"pyramid_backbone.", "shrink_conv.", "cls_head.", "reg_head.", "dir_head.", "encoder_m1.",
            "backbone_m1."} <= set(model.required_prefixes())
    fixed = _model(f"{HEAL}/stage2/m3_single_pyramid.yaml", fix_encoder=True)
    assert fixed.trainable_modules == ["backbone_m3", "aligner_m3"]
    assert fixed.trainable_parameter_count() == 1_076_032 - 699_456


def test_final_infer_is_the_base_plus_every_aligned_chain():
    base = COUNT(_model(f"{HEAL}/stage1/m1_pyramid.yaml"))
    aligned = sum(_model(f"{HEAL}/stage2/{m}_single_pyramid.yaml").trainable_parameter_count()
                  for m in ("m2", "m3", "m4"))
    assert COUNT(_model(f"{HEAL}/final_infer/m1m2m3m4.yaml")) == base + aligned


def test_single_agent_alignment_loss_falls_and_frozen_tensors_stay_bit_identical(make_tiny_config):
    h = load_yaml(make_tiny_config(f"{TINY}/stage2/m3_single_pyramid.yaml"))
    torch.manual_seed(0)
    model, criterion = train_utils.create_model(h), train_utils.create_loss(h)
    ds = build_dataset(h, train=True)
    batch = ds.collate_batch_train([ds[0], ds[1]])
    ego = batch["ego"]
    assert ego["agent_modality_list"] == ["m3", "m3"] and ego["record_len"].tolist() == [1, 1]
    assert ego["label_dict_single"] is ego["label_dict"] and "inputs_m3" in ego and "processed_lidar" not in ego
    model.train()
    model.model_train_init()
    assert not model.pyramid_backbone.training and not model.backbone_m1.training and model.backbone_m3.training
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    for _ in range(6):
        total, terms = model.training_step(batch, criterion)
        assert "pyramid_loss" in terms
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(float(total.detach()))
    assert losses[-1] < 0.8 * losses[0], losses
    after = model.state_dict()
    moved = {k.split(".")[0] for k in after if not torch.equal(after[k], before[k])}
    assert moved == {"encoder_m3", "backbone_m3", "aligner_m3"}, moved


def test_merged_checkpoint_without_the_frozen_pyramid_is_refused():
    model = _model(f"{TINY}/stage2/m3_single_pyramid.yaml")
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("pyramid_backbone.")}
    with pytest.raises(CheckpointError, match=r"m3/net_epoch1.pth: no 'pyramid_backbone.\*' keys; backward "
                                              r"alignment freezes that module"):
        model.check_state_dict(state, "m3/net_epoch1.pth")


@pytest.mark.parametrize("args,match", [({"fix_modules": ["pyramid_backbone", "shrink_head"]},
                                         "fix_modules names 'shrink_head', not a module"),
                                        ({"ego_modality": "m2"}, "ego_modality = 'm2': name one type")])
def test_bad_model_args_are_config_errors(args, match):
    with pytest.raises(ConfigError, match=match):
        _model(f"{TINY}/stage2/m3_single_pyramid.yaml", **args)


def test_lateheter_refuses_world_augmentation_with_a_camera_type(make_tiny_config):
    h = load_yaml(make_tiny_config(f"{TINY}/stage2/m3_single_pyramid.yaml"))
    cam = load_yaml("opencood/hypes_yaml/demo/gencomm/stage1/m2_att.yaml")
    h["heter"]["modality_setting"]["m2"] = copy.deepcopy(cam["heter"]["modality_setting"]["m2"])
    h["data_augment"] = [{"NAME": "random_world_flip", "ALONG_AXIS_LIST": ["x"]}]
    with pytest.raises(ConfigError, match="'data_augment' moves points and boxes but not the images of camera "
                                          "type m2"):
        build_dataset(h, train=True)
