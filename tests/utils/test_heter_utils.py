"""Agent-type assignment rules (opencood.utils.heter_utils)."""
import json

import numpy as np
import pytest

from opencood.utils.errors import ConfigError
from opencood.utils.heter_utils import HeterAssigner, parse_ego_modality

SETTING = {"m1": {"sensor_type": "lidar"}, "m2": {"sensor_type": "camera"}, "m3": {"sensor_type": "lidar"}}


@pytest.fixture
def json_path(tmp_path):
    path = tmp_path / "assign.json"
    path.write_text(json.dumps({"s1": {"1": "m2", "2": "m1", "3": "m3", "4": "m4"}, "s2": {"5": "m1", "6": "m2"}}))
    return str(path)


def make(json_path, **kw):
    heter = {"assignment_path": json_path, "ego_modality": kw.pop("ego", "m1"),
             "mapping_dict": kw.pop("mapping", {"m1": "m1", "m2": "m2", "m3": "m3", "m4": "m4"}),
             "modality_setting": SETTING}
    heter.update(kw.pop("heter", {}))
    return HeterAssigner(heter, **kw)


def test_parse_ego_modality():
    assert parse_ego_modality("m1&m2") == ["m1", "m2"] and parse_ego_modality("m1") == ["m1"]


def test_eval_mapping_and_reorder(json_path):
    a = make(json_path, mapping={"m1": "m1", "m2": "m1", "m3": "m2", "m4": "m2"})
    # sorted first agent "1" has json type m2 -> mapped m1, an ego type: order unchanged
    assert a.reorder_cav_list(["1", "2", "3", "4"], "s1", train=False) == ["1", "2", "3", "4"]
    assert a.assign(["1", "2", "3", "4"], "s1", False, None) == ["m1", "m1", "m2", "m2"]
    b = make(json_path)
    # identity: "1" is m2 -> the first json agent of an ego type ("2") becomes ego, the rest keep their order
    assert b.reorder_cav_list(["1", "2", "3", "4"], "s1", train=False) == ["2", "1", "3", "4"]
    assert b.reorder_cav_list(["1", "2", "3", "4"], "s1", train=True) == ["1", "2", "3", "4"]


def test_train_rule_uses_ego_modality_and_preference(json_path):
    a = make(json_path, ego="m1&m2", heter={"cav_preference": {"m2": 0.0, "m3": 1.0}})
    rng = np.random.default_rng(0)
    draws = [a.assign(["1", "2", "3"], "s1", True, rng) for _ in range(200)]
    assert {d[0] for d in draws} == {"m1", "m2"}
    assert {m for d in draws for m in d[1:]} == {"m3"}


def test_ego_diff_cav_excludes_ego_types_in_eval(json_path):
    a = make(json_path, ego_diff_cav=True)
    rng = np.random.default_rng(1)
    draws = [a.assign(["1", "2", "3"], "s1", False, rng) for _ in range(100)]
    assert all(d[0] == "m1" for d in draws)
    assert {m for d in draws for m in d[1:]} == {"m2", "m3"}
    assert a.reorder_cav_list(["1", "2"], "s1", train=False) == ["1", "2"]


def test_coverage_errors_name_json_and_agent(json_path):
    a = make(json_path)
    a.check_coverage({"s1": ["1", "2"], "s2": ["5"]}, train=False)
    with pytest.raises(ConfigError, match=r"assign.json: no entry for scenario 's9'"):
        a.check_coverage({"s9": ["1"]}, train=True)
    with pytest.raises(ConfigError, match=r"assign.json: no modality for agent '7' of scenario 's2'"):
        a.check_coverage({"s2": ["5", "7"]}, train=False)
    b = make(json_path, mapping={"m1": "m1", "m2": "m2"})
    with pytest.raises(ConfigError, match=r"agent '3' of scenario 's1' has type 'm3'"):
        b.check_coverage({"s1": ["1", "2", "3"]}, train=False)
    c = make(json_path, mapping={"m1": "m2", "m2": "m2", "m3": "m2", "m4": "m2"})
    with pytest.raises(ConfigError, match="no json type maps"):
        c.check_coverage({"s1": ["1"]}, train=False)


def test_config_errors(json_path, tmp_path):
    with pytest.raises(ConfigError, match="ego_modality.*'m4'"):
        make(json_path, ego="m4")
    with pytest.raises(ConfigError, match="modality assignment json not found"):
        make(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="bad.json: malformed json"):
        make(str(bad))
    with pytest.raises(ConfigError, match="no non-ego type"):
        HeterAssigner({"assignment_path": None, "ego_modality": "m1", "modality_setting": {"m1": {}}},
                      ego_diff_cav=True)
    none = HeterAssigner({"assignment_path": None, "ego_modality": "m1", "modality_setting": SETTING})
    with pytest.raises(ConfigError, match="assignment_path' is required for evaluation"):
        none.check_coverage({"s1": ["1"]}, train=False)
    none.check_coverage({"s1": ["1"]}, train=True)


@pytest.mark.parametrize("value", ["M1", "lidar", "m1 "])
def test_mapping_dict_must_name_agent_types(json_path, value):
    with pytest.raises(ConfigError, match=f"'heter.mapping_dict' names '{value}', not an agent type"):
        make(json_path, mapping={"m1": "m1", "m2": value})
