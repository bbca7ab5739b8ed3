"""Type and range checks of config values name the file and the key path (one-line ConfigError)."""
import os

import pytest

from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.utils.config import Key, Schema, ordered_range
from opencood.utils.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CFG = os.path.join(REPO, "opencood/hypes_yaml/opv2v/LiDAROnly/lidar_fcooper.yaml")


def test_key_bounds_items_and_check():
    schema = Schema({"n": Key(int, 1, low=1, high=8), "r": Key(list, None, items=float, check=ordered_range),
                     "xs": Key(list, None, items=int, low=0)})
    assert schema.parse({"n": 8, "r": [0, 0, 0, 1, 1, 1], "xs": [0, 3]}, "s", "a.yaml").n == 8
    for node, message in [({"n": 0}, "key 's.n' should be >= 1, got 0"), ({"n": 9}, "key 's.n' should be <= 8"),
                          ({"r": [0, 0, "a", 1, 1, 1]}, "key 's.r' should be a list of a numbers, got 'a'"),
                          ({"r": [5, 0, 0, 1, 1, 1]}, "key 's.r' should have min < max on x, y and z"),
                          ({"xs": [1, 2.5]}, "key 's.xs' should be a list of an integers"),
                          ({"xs": [1, -2]}, "key 's.xs' should be >= 0")]:
        with pytest.raises(ConfigError, match="^a.yaml: " + message.replace("(", r"\(").replace("[", r"\[")):
            schema.parse(node, "s", "a.yaml")


@pytest.mark.parametrize("override, message", [
    ("train_params.batch_size=0", "key 'train_params.batch_size' should be >= 1"),
    ("train_params.epoches=-1", "key 'train_params.epoches' should be >= 0"),
    ("train_params.max_cav=0", "key 'train_params.max_cav' should be >= 1"),
    ("train_params.batch_size=abc", "key 'train_params.batch_size' should be an integer"),
    ("optimizer.lr=-0.1", "key 'optimizer.lr' should be >= 0"),
    ("cav_lidar_range=[140.8, -38.4, -3, -140.8, 38.4, 1]", "key 'cav_lidar_range' should have min < max"),
    ("cav_lidar_range=[a, -38.4, -3, 140.8, 38.4, 1]", "key 'cav_lidar_range' should be a list of a numbers"),
    ("loss.args.cls.type=FocalLoss2", "key 'loss.args.cls.type' = 'FocalLoss2' is not implemented; only "
                                      "SigmoidFocalLoss"),
    ("loss.args.reg.type=L1", "key 'loss.args.reg.type' = 'L1' is not implemented"),
])
def test_bad_values_of_a_shipped_config(override, message):
    with pytest.raises(ConfigError) as e:
        load_yaml(CFG, overrides=[override])
    assert str(e.value).startswith(f"{CFG}: ") and message in str(e.value) and "\n" not in str(e.value)


def test_the_shipped_config_itself_loads():
    assert load_yaml(CFG)["train_params"]["batch_size"] >= 1
