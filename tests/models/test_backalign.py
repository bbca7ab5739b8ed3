"""BackAlign stage 2 (heter_model_baseline_w_backalign): trainable set and counts of the reference YAMLs at full
OPV2V-H geometry, frozen modules in eval mode (BatchNorm buffers untouched by training steps), bad input."""
import pytest
import torch

from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.utils.errors import CheckpointError, ConfigError
from opencood.utils.registry import MODELS

ROOT = "opencood/hypes_yaml/opv2v/GenComm_yamls/baselines"
# Reference trainable counts; m1m2 omits efficientnet_pytorch's unused conv_head/bn1/_fc (1,693,160 of 21,840,148).
EXPECTED = {"m1m3": 1_187_904, "m1m4": 8_739_568, "m1m2": 21_840_148 - 1_693_160}


def _build(rel):
    h = load_yaml(f"{ROOT}/{rel}")
    return MODELS.get(h["model"]["core_method"])(h["model"]["args"])


@pytest.mark.parametrize("fusion", ["att", "v2xvit"])
@pytest.mark.parametrize("combo", sorted(EXPECTED))
def test_trainable_set_and_count_full_geometry(combo, fusion):
    model = _build(f"stage2/BackAlign/{combo}_{fusion}.yaml")
    new = combo[2:]
    assert model.trainable_modules == [f"encoder_{new}", f"backbone_{new}", f"shrinker_{new}"]
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(model.trainable_modules)
    assert model.trainable_parameter_count() == EXPECTED[combo]
    assert {"encoder_m1.", "shrinker_m1.", "cls_head.", "reg_head.", "dir_head."} <= set(model.required_prefixes())


def test_m3_shallow_backbone_and_shrinker_counts():
    model = _build("stage2/BackAlign/m1m3_att.yaml")
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    assert (count(model.backbone_m3), count(model.shrinker_m3), count(model.encoder_m3)) == (193_280, 295_168,
                                                                                              699_456)


def test_frozen_batchnorm_buffers_do_not_drift_in_training_steps():
    model = _build("stage2/BackAlign/m1m3_att.yaml")
    model.train()
    model.model_train_init()
    assert not model.backbone_m1.training and not model.fusion_net.training and model.backbone_m3.training
    frozen = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("backbone_m1.")}
    moved = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("backbone_m3.")}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):  # the BEV stages on random maps: frozen m1 backbone and trained m3 backbone
        x1, x3 = torch.rand(1, 64, 16, 32), torch.rand(2, 128, 16, 32)
        loss = model.backbone_m1(x1).mean() + model.backbone_m3(x3).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in frozen.items())
    assert any(not torch.equal(state[k], v) for k, v in moved.items() if "running_mean" in k)


def test_checkpoint_without_a_frozen_module_is_refused():
    model = _build("stage2/BackAlign/m1m3_att.yaml")
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("cls_head.")}
    model.check_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("encoder_m3.")})
    with pytest.raises(CheckpointError, match="merged.pth: no 'cls_head.\\*' keys"):
        model.check_state_dict(state, "merged.pth")


def test_ego_type_without_section_is_a_config_error():
    h = load_yaml(f"{ROOT}/stage2/BackAlign/m1m3_att.yaml")
    h["model"]["args"]["ego_modality"] = "m2"
    with pytest.raises(ConfigError, match="ego_modality: ego type 'm2' has no section"):
        MODELS.get(h["model"]["core_method"])(h["model"]["args"])


@pytest.mark.parametrize("rel,count", [("stage1/m3_att.yaml", 699_456 + 193_280 + 295_168 + 2_580),
                                       ("stage1/m1_att.yaml", 7_170_836), ("stage1/m0_att.yaml", 7_906_388)])
def test_stage1_bases_build_every_module_trainable(rel, count):
    """m3 = SECOND + Shallow backbone + shrinker + heads (cls 258, reg 1,806, dir 516); m0 = SECOND + Deep."""
    model = _build(rel)
    assert model.trainable_parameter_count() == sum(p.numel() for p in model.parameters()) == count


def test_final_infer_model_is_the_m1_base_plus_each_new_types_trained_modules():
    """The merged stage-3 model holds exactly the m1 base and the three BackAlign-trained type chains."""
    model = _build("stage2/BackAlign/m1m2m3m4_att_infer.yaml")
    assert sum(p.numel() for p in model.parameters()) == 7_170_836 + sum(EXPECTED.values())
