"""DiscoNet: PixelWeightLayer fusion, the KD loss, the frozen teacher and its data, errors, end to end."""
import pytest
import torch
import yaml

from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.loss.point_pillar_disconet_loss import kd_loss
from opencood.models.fuse_modules.disco_fuse import DiscoFusion
from opencood.models.fuse_modules.fusion_input import FusionInput
from opencood.models.point_pillar_baseline import PointPillarBaseline
from opencood.tools import trainer
from opencood.tools.train_utils import create_model
from opencood.utils.errors import CheckpointError, ConfigError
from tests.models.fuse_modules.zoo_cases import ZOO, check_forward_backward, loss_falls, tiny_batch, train_and_infer

FULL = "opencood/hypes_yaml/opv2v/LiDAROnly/lidar_disco.yaml"


def _identity(b, l):
    affine = torch.zeros(b, l, l, 2, 3)
    affine[..., 0, 0] = affine[..., 1, 1] = 1.0
    return affine


def test_pixel_weight_layer_of_the_reference_yaml():
    """1x1 convs 512 -> 128 -> 32 -> 8 -> 1 with BN after the first three: 65,664 + 256 + 4,128 + 64 + 264 + 16 + 9."""
    model = create_model(load_yaml(FULL))
    assert sum(p.numel() for p in model.fusion_net.parameters()) == 70_401
    assert "fusion_net.pixel_weight_layer.conv1_4.weight" in model.state_dict()
    assert not any(k.startswith("teacher") for k in model.state_dict())  # the teacher is not the student's


def test_fusion_weights_are_a_softmax_over_present_agents():
    torch.manual_seed(0)
    net = DiscoFusion({"feat_dim": 4}).eval()
    x = torch.randn(3, 4, 4, 8)
    out, aux = net(FusionInput(features=x, record_len=torch.tensor([2, 1]), affine=_identity(2, 5)))
    assert aux == {} and out.shape == (2, 4, 4, 8)
    assert torch.allclose(out[1], x[2], atol=1e-6)  # one agent: weight 1
    logits = net.pixel_weight_layer(torch.cat([x[:2], x[:1].expand(2, -1, -1, -1)], dim=1))  # (2, 1, H, W)
    ref = (torch.softmax(logits, dim=0) * x[:2]).sum(0)
    assert torch.allclose(out[0], ref, atol=1e-6)


def test_kd_loss_is_zero_when_student_equals_teacher():
    torch.manual_seed(0)
    a = torch.randn(2, 8, 4, 4)
    assert float(kd_loss(a, a)) == pytest.approx(0.0, abs=1e-7)
    b = torch.randn(2, 8, 4, 4)
    p, q = torch.softmax(b, 1), torch.softmax(a, 1)
    assert float(kd_loss(a, b)) == pytest.approx(float((p * (p.log() - q.log())).mean()), rel=1e-5)
    assert float(kd_loss(a, b)) > 1e-3


def test_missing_kd_flag_is_a_one_line_error():
    hypes = load_yaml(f"{ZOO}/lidar_disco.yaml")
    hypes.pop("kd_flag")
    with pytest.raises(ConfigError, match="DiscoNet needs 'kd_flag.teacher_path'"):
        create_model(hypes)


@pytest.fixture
def disco_config(make_tiny_config, tmp_path):
    """The tiny DiscoNet config with a teacher checkpoint: an early-fusion point_pillar_baseline (att) of the same
    architecture, saved as a plain state dict."""
    path = make_tiny_config(f"{ZOO}/lidar_disco.yaml", batch_size=2)
    h = yaml.safe_load(open(path))
    args = {k: v for k, v in h["model"]["args"].items() if k != "disconet"}
    torch.manual_seed(1)
    early = PointPillarBaseline(dict(args, fusion_method="att", att={"feat_dim": 64}))
    torch.save(early.state_dict(), tmp_path / "teacher.pth")
    h["kd_flag"]["teacher_path"] = str(tmp_path / "teacher.pth")
    yaml.safe_dump(h, open(path, "w"))
    return path


def test_teacher_file_missing_or_wrong_stops_before_training(disco_config, tmp_path):
    h = yaml.safe_load(open(disco_config))
    h["kd_flag"]["teacher_path"] = str(tmp_path / "nope.pth")
    yaml.safe_dump(h, open(disco_config, "w"))
    opt = trainer.build_parser().parse_args(["-y", disco_config, "--log_root", str(tmp_path / "logs"),
                                             "--num_workers", "0", "--skip_test"])
    with pytest.raises(ConfigError, match="kd_flag.teacher_path '.*nope.pth' is not a file"):
        trainer.run(opt)
    model = create_model(load_yaml(disco_config))
    torch.save({"backbone.x": torch.zeros(1)}, tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match="not an early-fusion PointPillars checkpoint"):
        model.model_train_init()


def test_training_step_distils_from_the_frozen_teacher(disco_config, tmp_path):
    hypes = load_yaml(disco_config)
    _, model, criterion, batch = tiny_batch(lambda *a, **k: disco_config, "lidar_disco")
    assert batch["ego"]["teacher_processed_lidar"]["voxel_coords"][:, 0].max() == 1  # one cloud per sample
    check_forward_backward(model, criterion, batch)
    teacher = model.ensure_teacher()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    model.eval()  # no dropout or BatchNorm updates: the two forwards below must agree
    _, terms = model.training_step(batch, criterion)
    assert float(terms["kd_loss"]) > 0
    assert float(terms["kd_loss"]) == pytest.approx(float(
        kd_loss(model(batch["ego"])["fused_feature"], teacher.teacher_feature(batch["ego"]))) * 10000, rel=1e-3)
    # a student whose fused map equals the teacher's has a zero KD term; the detection terms are unchanged
    out = model(batch["ego"])
    plain = criterion.loss_terms(out, batch["ego"]["label_dict"])
    same = criterion.loss_terms(dict(out, teacher_feature=out["fused_feature"].clone()), batch["ego"]["label_dict"])
    assert float(same["kd_loss"]) == pytest.approx(0.0, abs=1e-5) and float(plain["kd_loss"]) == 0.0
    assert float(same["cls_loss"]) == float(plain["cls_loss"])
    assert hypes["kd_flag"]["teacher_path"].endswith("teacher.pth")
    loss_falls(hypes, model, criterion, batch, steps=3, factor=0.7)


@pytest.mark.slow
def test_zoo_disco_train_and_infer_cli(disco_config, tmp_path):
    train_and_infer(lambda *a, **k: disco_config, "lidar_disco", tmp_path)


def test_the_zoo_early_fusion_run_is_a_valid_teacher(tmp_path):
    """A checkpoint of demo/zoo/lidar_early.yaml (the Cooper run) loads strictly as lidar_disco's teacher."""
    early = create_model(load_yaml(f"{ZOO}/lidar_early.yaml"))
    torch.save(early.state_dict(), tmp_path / "early.pth")
    hypes = load_yaml(f"{ZOO}/lidar_disco.yaml")
    hypes["kd_flag"]["teacher_path"] = str(tmp_path / "early.pth")
    teacher = create_model(hypes).ensure_teacher()
    assert all(torch.equal(v, early.state_dict()[k]) for k, v in teacher.state_dict().items())
