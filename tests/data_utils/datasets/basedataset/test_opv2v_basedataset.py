"""Agent-YAML parsing: the fast path gives exactly what PyYAML's safe loader (+ our float rule) gives."""
import math

import pytest
import yaml

from opencood.data_utils.datasets.basedataset.opv2v_basedataset import (
    _AgentYamlLoader, load_yaml_text, read_agent_params)
from opencood.utils.errors import DataError

EDGE_CASES = """
floats: [1e-5, 1.0e-05, -0.0, .5, .inf, -.Inf, .NaN, 1_000.5, 1__0.5, 1_.5, 190:20:30.15, 1., +2.5]
ints: [0, 007, 0x1F, 1_000, -5, +5, 190:20:30, 12, 4708]
other: [yes, No, on, OFF, true, ~, null, '', "x", 2001-12-14, !!str 5, !!float 3, ²]
anchor: &a {x: 1, y: [1, 2]}
alias: *a
merged: {<<: *a, z: 3}
keys: {1: a, 2.5: b, null: c, true: d, "s": e}
binary: !!binary aGVsbG8=
vehicles:
  641: {angle: [0.0, 90.0, 0.0], center: [0.0, 0.0, 0.7], extent: [2.0, 1.0, 0.7], location: [1.0, 2.0, 0.0]}
"""


def _same(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    return a == b


def test_fast_loader_equals_pyyaml():
    expect = yaml.load(EDGE_CASES, Loader=_AgentYamlLoader)
    got = load_yaml_text(EDGE_CASES)
    assert _same(got, expect)
    assert got["floats"][0] == 1e-5 and got["ints"][1] == 7 and got["ints"][-1] == 4708
    assert load_yaml_text("") is None
    assert load_yaml_text("- 1\n- 2.5\n") == [1, 2.5]


@pytest.mark.parametrize("text", ["a: [1, 2", "a: 1\n---\nb: 2\n", "{[1, 2]: x}"])
def test_fast_loader_errors_like_pyyaml(text):
    with pytest.raises(yaml.YAMLError):
        yaml.load(text, Loader=_AgentYamlLoader)
    with pytest.raises(yaml.YAMLError):
        load_yaml_text(text)


def test_read_agent_params_reads_exponent_floats(tmp_path):
    path = tmp_path / "000068.yaml"
    path.write_text("lidar_pose: [1e1, 2.0, 1.9, 0, 9e1, 0]\nvehicles: {}\n")
    assert read_agent_params(str(path))["lidar_pose"] == [10.0, 2.0, 1.9, 0.0, 90.0, 0.0]
    path.write_text("lidar_pose: [1, 2\n")
    with pytest.raises(DataError, match="000068.yaml: cannot parse"):
        read_agent_params(str(path))
