"""create_model's model.args options: cls_prior_prob (head bias init) and bn_momentum."""
import copy
import math
import os

import pytest
import torch

from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.tools.train_utils import create_model
from opencood.utils.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
M1 = os.path.join(REPO, "opencood/hypes_yaml/demo/gencomm/stage1/m1_att.yaml")


def test_cls_prior_sets_every_anchor_score_and_bn_momentum():
    hypes = load_yaml(M1)
    assert hypes["model"]["args"]["cls_prior_prob"] == 0.01  # the demo configs use it
    model = create_model(hypes)
    scores = torch.sigmoid(model.cls_head.bias)
    assert torch.allclose(scores, torch.full_like(scores, 0.01))
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    plain = copy.deepcopy(hypes)
    del plain["model"]["args"]["cls_prior_prob"]
    torch.manual_seed(0)
    bias = create_model(plain).cls_head.bias
    assert bias.abs().max() < 1.0  # PyTorch's default init, as the reference
    assert -math.log(99.0) < float(bias.detach().min())


def test_cls_prior_out_of_range_is_a_config_error():
    hypes = load_yaml(M1)
    hypes["model"]["args"]["cls_prior_prob"] = 1.5
    with pytest.raises(ConfigError, match="cls_prior_prob"):
        create_model(hypes)


def test_lr_scheduler_step_size_must_list_epochs():
    """A milestone that is not an epoch number (e.g. a path pasted into the list) is a one-line config error
    before training, not a ValueError inside torch."""
    import pytest
    import torch

    from opencood.tools.train_utils import setup_lr_schedular
    from opencood.utils.errors import ConfigError

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = setup_lr_schedular({"lr_scheduler": {"core_method": "multistep", "gamma": 0.1, "step_size": [1, 3]}}, opt)
    assert sorted(sched.milestones) == [1, 3]
    for bad in ([10, 15, "bases/v2xvit.yaml"], [2.5], [True], [-1]):
        with pytest.raises(ConfigError, match="lr_scheduler.step_size"):
            setup_lr_schedular({"lr_scheduler": {"core_method": "multistep", "step_size": bad}}, opt)


def test_every_shipped_yaml_has_a_valid_lr_schedule():
    import glob

    import torch

    from opencood.hypes_yaml.yaml_utils import load_yaml
    from opencood.tools.train_utils import setup_lr_schedular

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    files = [f for f in glob.glob("opencood/hypes_yaml/**/*.yaml", recursive=True) if "/bases/" not in f]
    assert len(files) > 100
    for f in files:
        h = load_yaml(f)
        if "lr_scheduler" in h:
            setup_lr_schedular(h, opt)
