"""CodeFilling stage 2 (heter_model_baseline_w_codebook, codebook quantizer, point_pillar_codebook_loss):
reference trainable counts at full OPV2V-H geometry, tiny counts by formula, indices in range, falling
reconstruction error, frozen tensors and BatchNorm buffers untouched by training, the confidence mask
really applied and paid for, 1..4 agents, bad input."""
import math

import pytest
import torch

from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.models.sub_modules.codebook import ResidualCodebookQuantizer
from opencood.tools.train_utils import create_loss
from opencood.utils import comm_volume as cv
from opencood.utils.errors import CheckpointError, ConfigError
from opencood.utils.registry import LOSSES, MODELS
from tests.models.stage2_batches import LOSS_ARGS, batch_of, four_type_args, frozen_snapshot, random_labels

ROOT = "opencood/hypes_yaml/opv2v/GenComm_yamls/baselines"
COMBOS = ["m1m2_att", "m1m2_v2xvit", "m1m3_att", "m1m3_v2xvit", "m1m2m3_att", "m1m2m3_v2xvit", "m1m2m3m4_att"]
REFERENCE_COUNT = 270_368
CODEBOOK = {"seg_num": 2, "dict_size": 4, "r": 3}


def _build(rel):
    h = load_yaml(f"{ROOT}/{rel}")
    return MODELS.get(h["model"]["core_method"])(h["model"]["args"]), h


def quantizer_count(c, m, k, levels):
    """6 C->C linears per level (4 on the last), codebook m x k x C/m and m temperatures per level."""
    linears = 6 * (levels - 1) + 4
    return linears * (c * c + c) + levels * (m * k * (c // m) + m)


@pytest.mark.parametrize("combo", COMBOS)
def test_full_geometry_trainable_set_and_reference_count(combo):
    model, h = _build(f"stage2/CodeFilling/{combo}.yaml")
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} == {"codebook"}
    count = model.trainable_parameter_count()
    assert count == quantizer_count(128, 2, 16, 3) == 270_342
    # the reference also counts its Gaussian-smoothing Conv2d(1, 1, k) (k*k weights + 1 bias) as trainable
    k = h["model"]["args"]["communication"]["gaussian_smooth"]["k_size"]
    assert count + k * k + 1 == REFERENCE_COUNT
    types = sorted(m for m in h["model"]["args"] if m[:1] == "m" and m[1:].isdigit())
    assert [m for m in types] == [f"m{c}" for c in combo.split("_")[0][1:].split("m")]
    assert {f"{s}_{m}." for m in types for s in ("encoder", "shrinker")} | {"cls_head.", "reg_head."} <= set(
        model.required_prefixes())
    assert model.codebook.bits_per_cell == 24
    assert isinstance(create_loss(h), LOSSES.get("point_pillar_codebook_loss"))


def test_tiny_count_by_formula():
    model, _ = _build("tiny/stage2/CodeFilling/m1m3_att.yaml")
    assert model.trainable_parameter_count() == quantizer_count(64, 2, 16, 3) == 69_638


def test_quantizer_indices_in_range_and_reconstruction_error_falls():
    torch.manual_seed(0)
    q = ResidualCodebookQuantizer(16, seg_num=2, dict_size=8, levels=3)
    basis = torch.randn(4, 16)
    x = (torch.randn(2, 4, 6, 8).permute(0, 2, 3, 1) @ basis).permute(0, 3, 1, 2)  # (2, 16, 6, 8), rank 4
    q.eval()
    with torch.no_grad():
        rec0, idx, loss0 = q(x)
    assert idx.shape == (2, 6, 6, 8) and idx.dtype == torch.long and 0 <= idx.min() and idx.max() < 8
    opt = torch.optim.Adam(q.parameters(), lr=3e-3)
    q.train()
    for _ in range(150):
        _, _, loss = q(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    q.eval()
    with torch.no_grad():
        rec, idx, loss1 = q(x)
        # what the receiver rebuilds from the transmitted indices alone is the reconstruction
        flat = idx.permute(0, 2, 3, 1).reshape(-1, 6)
        rebuilt = q.decode(q.codewords_of(flat)).view(2, 6, 8, 16).permute(0, 3, 1, 2)
    assert float(loss1) < 0.5 * float(loss0), (float(loss0), float(loss1))
    assert torch.allclose(rebuilt, rec, atol=1e-6)
    assert q.level_modules[0].temperature.grad is not None  # the temperatures learn


def test_stage2_steps_lower_the_loss_and_leave_frozen_state_bit_identical():
    torch.manual_seed(0)
    model = MODELS.get("heter_model_baseline_w_codebook")(four_type_args(codebook=CODEBOOK,
                                                                          ego_modality="m1"))
    loss_fn = LOSSES.get("point_pillar_codebook_loss")(dict(LOSS_ARGS))
    batch = batch_of([["m1", "m2", "m3"], ["m1", "m4"]], seed=3)
    labels = random_labels(2, seed=3)
    frozen = frozen_snapshot(model, {"codebook"})
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(8):
        model.train()
        model.model_train_init()
        assert not model.backbone_m1.training and not model.encoder_m3.training and model.codebook.training
        out = model(batch)
        total = loss_fn(out, labels)
        losses.append(float(total.detach()))
        opt.zero_grad()
        total.backward()
        opt.step()
    assert losses[-1] < 0.95 * losses[0] and "code_loss" in loss_fn.loss_tensors, losses
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in frozen.items())  # incl. every BatchNorm buffer


def test_ego_keeps_its_feature_and_the_mask_really_drops_cells():
    torch.manual_seed(0)
    args = four_type_args(codebook=CODEBOOK, communication={"thre": 0.0})
    model = MODELS.get("heter_model_baseline_w_codebook")(args).eval()
    batch = batch_of([["m1", "m3", "m2"]], seed=1)
    seen = {}
    orig = model.fuse_and_detect
    model.fuse_and_detect = lambda feats, dd: seen.setdefault("x", feats) is not None and orig(feats, dd)
    with torch.no_grad():
        out = model(batch)
        features, _, _ = model.encode_agents(batch)
    assert torch.equal(seen["x"][0], features[0])  # the ego's own feature, not its reconstruction
    assert not torch.equal(seen["x"][1], features[1])  # collaborators arrive quantised
    assert bool((out["comm_mask"] == 1).all()) and float(out["comm_rate"]) == 1.0  # thre 0: every cell
    h, w = out["codebook_indices"].shape[-2:]
    sent = cv.intermediate_bytes(out, batch["record_len"])
    assert cv.codebook_bits_per_cell(6, 4) == 12 == out["codebook_bits_per_cell"]  # 3 levels x 2 segments x 2 bit
    assert sent == [math.ceil(h * w * 12 / 8) + math.ceil(h * w / 8)] * 2  # indices + a 1-bit-per-cell mask
    # a threshold above every confidence: collaborators send nothing and contribute zeros
    model.communication.thre = 1.0
    seen.clear()
    with torch.no_grad():
        out = model(batch)
    assert seen["x"][1:].abs().sum() == 0 and float(out["comm_rate"]) == 0.0
    assert cv.intermediate_bytes(out, batch["record_len"]) == [0, 0]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_one_to_four_agents_join(n):
    torch.manual_seed(0)
    model = MODELS.get("heter_model_baseline_w_codebook")(four_type_args(codebook=CODEBOOK)).eval()
    with torch.no_grad():
        out = model(batch_of([["m1", "m2", "m3", "m4"][:n]], seed=n))
    assert out["cls_preds"].shape == (1, 2, 8, 16) and out["codebook_indices"].shape == (n, 6, 8, 16)
    assert len(cv.intermediate_bytes(out, torch.tensor([n]))) == n - 1


def test_codebook_channel_other_than_the_features_is_one_line_error():
    with pytest.raises(ConfigError, match=r"model\.args\.codebook\.channel = 64 but the features reaching the "
                                          r"codebook have 16 channels") as e:
        MODELS.get("heter_model_baseline_w_codebook")(four_type_args(codebook=dict(CODEBOOK, channel=64)))
    assert "\n" not in str(e.value)
    h = load_yaml(f"{ROOT}/stage2/CodeFilling/m1m3_att.yaml")
    h["model"]["args"]["codebook"]["channel"] = 64
    with pytest.raises(ConfigError, match="codebook.channel = 64 but .* have 128 channels"):
        MODELS.get(h["model"]["core_method"])(h["model"]["args"])


def test_merged_checkpoint_without_a_frozen_module_is_refused():
    model = MODELS.get("heter_model_baseline_w_codebook")(four_type_args(codebook=CODEBOOK))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("codebook.")}
    model.check_state_dict(state)  # the codebook itself is new in stage 2
    with pytest.raises(CheckpointError, match=r"merged.pth: no 'encoder_m4\.\*' keys; CodeFilling stage 2"):
        model.check_state_dict({k: v for k, v in state.items() if not k.startswith("encoder_m4.")}, "merged.pth")


def test_loss_needs_the_codebook_model():
    from opencood.utils.errors import DataError
    loss_fn = LOSSES.get("point_pillar_codebook_loss")(dict(LOSS_ARGS))
    out = {"cls_preds": torch.zeros(1, 2, 8, 16), "reg_preds": torch.zeros(1, 14, 8, 16)}
    with pytest.raises(DataError, match="missing key 'code_loss'"):
        loss_fn(out, random_labels(1))
