"""The losses' declared ``loss.args``: errors for undeclared/missing keys, defaults from the declaration."""
import pytest

from opencood.loss.base_loss import Criterion
from opencood.utils.errors import ConfigError
from opencood.utils.registry import LOSSES

DETECTION = {"pos_cls_weight": 2.0, "cls": {"type": "SigmoidFocalLoss", "alpha": 0.25, "gamma": 2.0, "weight": 1.0},
             "reg": {"type": "WeightedSmoothL1Loss", "sigma": 3.0, "codewise": True, "weight": 2.0},
             "dir": {"type": "WeightedSoftmaxClassificationLoss", "weight": 0.2,
                     "args": {"dir_offset": 0.7853, "num_bins": 2, "anchor_yaw": [0, 90]}}}


def test_every_loss_is_a_criterion_with_a_config():
    for name in ("point_pillar_loss", "point_pillar_depth_loss", "point_pillar_gencomm_loss"):
        cls = LOSSES.get(name)
        assert issubclass(cls, Criterion) and "logging" not in vars(cls) and "forward" not in vars(cls)
        assert set(cls.CONFIG.keys) >= {"pos_cls_weight", "cls", "reg", "dir"}


def test_undeclared_and_missing_keys_are_config_errors():
    with pytest.raises(ConfigError, match="unknown key 'loss.args.depth'"):
        LOSSES.get("point_pillar_loss")(dict(DETECTION, depth={"weight": 1.0}))
    with pytest.raises(ConfigError, match="missing key 'loss.args.reg'"):
        LOSSES.get("point_pillar_loss")({"cls": DETECTION["cls"]})
    with pytest.raises(ConfigError, match="missing key 'loss.args.dir.args'"):
        LOSSES.get("point_pillar_loss")(dict(DETECTION, dir={"weight": 0.2}))
    with pytest.raises(ConfigError, match="missing key 'loss.args.cls.weight'"):
        LOSSES.get("point_pillar_loss")(dict(DETECTION, cls={"alpha": 0.25}))
    with pytest.raises(ConfigError, match="did you mean 'generate_weight'"):
        LOSSES.get("point_pillar_gencomm_loss")(dict(DETECTION, generate_weigth=1.0))


def test_defaults_come_from_the_declaration():
    loss = LOSSES.get("point_pillar_gencomm_loss")({"cls": {"weight": 1.0}, "reg": {"weight": 2.0}})
    assert loss.cfg.cls.alpha == 0.25 and loss.cfg.cls.gamma == 2.0 and loss.cfg.reg.sigma == 3.0
    assert loss.cfg.pos_cls_weight == 1.0 and loss.cfg.dir is None
    assert (loss.depth_weight, loss.depth_alpha, loss.depth_gamma, loss.generate_weight) == (1.0, 0.25, 2.0, 1.0)
