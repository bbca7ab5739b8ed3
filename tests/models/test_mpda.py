"""MPDA stage 2 (heter_model_baseline_w_mpda, mpda_modules, point_pillar_mpda_loss): reference trainable counts
at full OPV2V-H geometry (att and V2X-ViT), tiny counts by formula, gradient reversal flipping the sign, the
domain loss counted once, ego rows untouched, frozen state bit-identical after training steps, 1..4 agents,
bad input."""
import pytest
import torch
import torch.nn.functional as F

from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.models.sub_modules.mpda_modules import CrossDomainTransformer, DomainClassifier, LearnableResizer
from opencood.tools.train_utils import create_loss
from opencood.utils.errors import CheckpointError, ConfigError, DataError
from opencood.utils.registry import LOSSES, MODELS
from tests.models.stage2_batches import LOSS_ARGS, batch_of, four_type_args, frozen_snapshot, random_labels

ROOT = "opencood/hypes_yaml/opv2v/GenComm_yamls/baselines"
REFERENCE = {"att": 1_917_093, "v2xvit": 4_405_662}
TRAINABLE = ["resizer", "cdt", "domain_classifier", "fusion_net", "cls_head", "reg_head", "dir_head"]
SMALL = {"resizer": {"input_channel": 16, "output_channel": 16,
                     "wg_att": {"input_dim": 16, "mlp_dim": 32, "window_size": 2, "dim_head": 8, "drop_out": 0.0},
                     "residual": {"input_dim": 16, "depth": 1}},
         "cdt": {"input_dim": 16, "window_size": 2, "heads": 2, "dim_head": 8},
         "domain_classifier": {"hidden_dim": 32}}


def _build(rel):
    h = load_yaml(f"{ROOT}/{rel}")
    assert create_loss(h).da  # the shipped loss section builds, domain term on
    return MODELS.get(h["model"]["core_method"])(h["model"]["args"])


def lin(i, o):
    return i * o + o


def wg_encoder_count(c, mlp, dim_head, w, depth=1):
    """depth x 2 x (LN + qkv (no bias) + out (no bias) + (2w-1)^2 x heads bias table, LN + FFN) + LN + Linear."""
    attn = 2 * c + 3 * c * c + c * c + (2 * w - 1) ** 2 * (c // dim_head)
    ffn = 2 * c + lin(c, mlp) + lin(mlp, c)
    return depth * 2 * (attn + ffn) + 2 * c + lin(c, c)


def resizer_count(c, mlp, dim_head, w, res):
    return lin(c, c) + 2 * wg_encoder_count(c, mlp, dim_head, w) + res * 2 * (9 * c * c + c + 2 * c)


def cdt_count(c, heads, dim_head, depth=1):
    inner = heads * dim_head
    cross = 3 * (2 * c + lin(c, inner)) + lin(inner, c)
    block = 2 * cross + 2 * 2 * c + 2 * (lin(c, 2 * c) + lin(2 * c, c)) + 2 * c
    return depth * block + 2 * c + lin(c, c)


def heads_count(c, anchors=2, bins=2):
    return lin(c, anchors) + lin(c, 7 * anchors) + lin(c, bins * anchors)


@pytest.mark.parametrize("combo,fusion", [(c, f) for c in ("m1m2", "m1m3", "m1m2m3") for f in ("att", "v2xvit")]
                         + [("m1m2m3m4", "att")])  # the reference ships no m1m2m3m4_v2xvit MPDA config
def test_full_geometry_trainable_set_and_reference_count(combo, fusion):
    model = _build(f"stage2/MPDA/{combo}_{fusion}.yaml")
    assert model.trainable_modules == TRAINABLE
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} == set(TRAINABLE) - {
        "fusion_net"} | ({"fusion_net"} if fusion == "v2xvit" else set())  # AttFuse has no parameters
    assert model.trainable_parameter_count() == REFERENCE[fusion]
    own = resizer_count(128, 256, 32, 2, 2) + cdt_count(128, 16, 32) + lin(128, 512) + lin(512, 1) + heads_count(128)
    assert own == REFERENCE["att"]
    types = [f"m{c}" for c in combo[1:].split("m")]
    assert set(model.required_prefixes()) == {f"{s}_{m}." for m in types for s in ("encoder", "backbone", "shrinker")
                                              if any(True for _ in getattr(model, f"{s}_{m}").parameters())}


def test_tiny_count_by_formula():
    model = _build("tiny/stage2/MPDA/m1m3_att.yaml")
    expected = resizer_count(64, 128, 16, 2, 1) + cdt_count(64, 4, 16) + lin(64, 128) + lin(128, 1) + heads_count(64)
    assert model.trainable_parameter_count() == expected == 301_477


def test_gradient_reversal_flips_and_scales_the_gradient():
    torch.manual_seed(0)
    clf = DomainClassifier(8, hidden_dim=16, gradient_scale=-9.1, init_std=0.1)
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    clf(x).sum().backward()
    reversed_grad = x.grad.clone()
    x.grad = None
    clf.conv2(F.relu(clf.conv1(x))).sum().backward()  # the same layers without the reversal
    assert reversed_grad.abs().sum() > 0
    assert torch.allclose(reversed_grad, -9.1 * x.grad, rtol=1e-5, atol=1e-7)
    assert torch.equal(clf(x), clf.conv2(F.relu(clf.conv1(x))))  # identity forward


def test_resizer_and_cdt_shapes_non_multiple_sizes():
    torch.manual_seed(0)
    r = LearnableResizer(SMALL["resizer"])
    cdt = CrossDomainTransformer(SMALL["cdt"])
    out = r(torch.randn(3, 16, 5, 7), (9, 11))  # sizes not multiples of the window
    assert out.shape == (3, 16, 9, 11)
    assert cdt(torch.randn(3, 16, 9, 11), out).shape == (3, 16, 9, 11)


def test_da_loss_counted_once_with_ego_target_one():
    loss_fn = LOSSES.get("point_pillar_mpda_loss")(dict(LOSS_ARGS))
    det_only = LOSSES.get("point_pillar_loss")(dict(LOSS_ARGS))
    g = torch.Generator().manual_seed(0)
    out = {"cls_preds": torch.randn(1, 2, 8, 16, generator=g), "reg_preds": torch.randn(1, 14, 8, 16, generator=g),
           "da_logits": torch.randn(3, 1, 8, 16, generator=g), "da_is_ego": torch.tensor([True, False, False])}
    labels = random_labels(1)
    total = loss_fn(out, labels)
    target = torch.zeros(3, 1, 8, 16)
    target[0] = 1
    da = F.binary_cross_entropy_with_logits(out["da_logits"], target)
    assert torch.allclose(loss_fn.loss_tensors["da_loss"], da)
    assert torch.allclose(total, det_only(out, labels) + da)  # once (the reference added it twice)
    out["da_logits"] = None  # eval mode: no classifier
    assert float(loss_fn(out, labels) - det_only(out, labels)) == 0.0
    with pytest.raises(DataError, match="missing key 'da_logits'"):
        loss_fn({k: v for k, v in out.items() if k != "da_logits"}, labels)


def test_stage2_steps_lower_the_loss_keep_ego_rows_and_frozen_state_bit_identical():
    torch.manual_seed(0)
    model = MODELS.get("heter_model_baseline_w_mpda")(four_type_args(**SMALL, ego_modality="m1"))
    loss_fn = LOSSES.get("point_pillar_mpda_loss")(dict(LOSS_ARGS))
    batch = batch_of([["m1", "m2", "m3"], ["m1", "m4"]], seed=3)
    labels = random_labels(2, seed=3)
    frozen = frozen_snapshot(model, set(TRAINABLE))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(6):
        model.train()
        model.model_train_init()
        assert not model.backbone_m1.training and not model.shrinker_m4.training and model.resizer.training
        out = model(batch)
        assert out["da_logits"].shape == (5, 1, 8, 16) and out["da_is_ego"].tolist() == [True, 0, 0, 1, 0]
        total = loss_fn(out, labels)
        losses.append(float(total.detach()))
        opt.zero_grad()
        total.backward()
        opt.step()
    assert losses[-1] < 0.95 * losses[0], losses
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in frozen.items())  # incl. every BatchNorm buffer
    model.eval()
    features, _, _ = model.encode_agents(batch)
    adapted, is_ego = model.adapt_collaborators(features, batch["record_len"])
    assert torch.equal(adapted[is_ego], features[is_ego]) and not torch.equal(adapted[~is_ego], features[~is_ego])
    assert model(batch)["da_logits"] is None


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_one_to_four_agents_join(n):
    torch.manual_seed(0)
    model = MODELS.get("heter_model_baseline_w_mpda")(four_type_args(**SMALL)).eval()
    with torch.no_grad():
        out = model(batch_of([["m1", "m2", "m3", "m4"][:n]], seed=n))
    assert out["cls_preds"].shape == (1, 2, 8, 16) and torch.isfinite(out["cls_preds"]).all()


def test_channel_keys_other_than_the_features_are_one_line_errors():
    bad = dict(SMALL, cdt=dict(SMALL["cdt"], input_dim=32))
    with pytest.raises(ConfigError, match=r"model\.args\.cdt\.input_dim = 32 but the agents' features have 16") as e:
        MODELS.get("heter_model_baseline_w_mpda")(four_type_args(**bad))
    assert "\n" not in str(e.value)


def test_merged_checkpoint_without_a_frozen_module_is_refused():
    model = MODELS.get("heter_model_baseline_w_mpda")(four_type_args(**SMALL))
    state = {k: v for k, v in model.state_dict().items() if k.split(".")[0] not in TRAINABLE}
    model.check_state_dict(state)  # resizer/CDT/classifier are new, fusion and heads may come from the base
    with pytest.raises(CheckpointError, match=r"merged.pth: no 'backbone_m3\.\*' keys; MPDA stage 2"):
        model.check_state_dict({k: v for k, v in state.items() if not k.startswith("backbone_m3.")}, "merged.pth")
