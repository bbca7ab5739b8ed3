"""Seeded fuzzing of the YAML readers (experiment configs and agent YAMLs): every mutant loads or fails with
the project's one-line error (ConfigError / DataError), never another exception (RecursionError,
UnicodeDecodeError, ValueError from a bad timestamp, TypeError from an unhashable key, ...)."""
import os

import numpy as np

from opencood.data_utils.datasets.basedataset.opv2v_basedataset import read_agent_params
from opencood.hypes_yaml.yaml_utils import load_yaml, read_yaml_file
from opencood.utils.errors import OpencoodError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
N_MUTANTS = 300
_SNIPPETS = [b"[", b"]", b"{", b"}", b": ", b"- ", b"\n  ", b"&a ", b"*a", b"!!python/object:os.system ", b"\xff\xfe",
             b"2001-13-45", b"!!binary x", b"? [1, 2]\n: 3", b"~", b".nan", b"1e999", b"\t", b"'", b'"', b"%YAML 9\n",
             b"!!set {a}", b"<<: *a\n", b"[" * 300, b"{a: " * 200, b"!!timestamp 2021-99-99", b"!!int x", b"\x00"]

_AGENT_YAML = (b"lidar_pose: [1.0, 2.0, 1.9, 0.0, 90.0, 0.0]\nego_speed: 3.5\ntrue_ego_pos: [1, 2, 1.9, 0, 90, 0]\n"
               b"vehicles:\n  12:\n    angle: [0.0, 45.0, 0.0]\n    center: [0.0, 0.0, 0.7]\n    extent: [2.2, 1.0, 0.7]\n"
               b"    location: [10.0, 5.0, 0.0]\n    speed: 1.0\n  13: {angle: [0, 0, 0], center: [0, 0, 1], "
               b"extent: [1, 1, 1], location: [3, 4, 0], speed: 0}\n")


def _mutate(data, rng):
    buf = bytearray(data)
    kind = rng.integers(4)
    at = int(rng.integers(len(buf) + 1))
    if kind == 0:
        for _ in range(rng.integers(1, 6)):
            buf[rng.integers(len(buf))] = rng.integers(256)
        return bytes(buf)
    if kind == 1:
        return bytes(buf[:at])
    snippet = _SNIPPETS[rng.integers(len(_SNIPPETS))]
    if kind == 2:
        return bytes(buf[:at]) + snippet + bytes(buf[at:])
    end = min(len(buf), at + int(rng.integers(1, 40)))
    return bytes(buf[:at]) + snippet + bytes(buf[end:])


def _fuzz(tmp_path, seed_bytes, name, readers, seed, n=N_MUTANTS):
    rng = np.random.default_rng(seed)
    path = tmp_path / name
    outcomes = {"ok": 0, "error": 0}
    for _ in range(n):
        path.write_bytes(_mutate(seed_bytes, rng))
        for reader in readers:
            try:
                reader(str(path))
                outcomes["ok"] += 1
            except OpencoodError as e:
                assert "\n" not in str(e) and str(path) in str(e), str(e)
                outcomes["error"] += 1
    assert outcomes["ok"] > 0 and outcomes["error"] > len(readers) * n // 4, outcomes
    return outcomes


def test_agent_yaml_mutants(tmp_path):
    _fuzz(tmp_path, _AGENT_YAML, "000068.yaml", [read_agent_params], seed=7)


def test_experiment_yaml_mutants(tmp_path):
    with open(os.path.join(REPO, "opencood/hypes_yaml/opv2v/LiDAROnly/lidar_fcooper.yaml"), "rb") as f:
        text = f.read()
    _fuzz(tmp_path, text, "config.yaml", [read_yaml_file, load_yaml], seed=11, n=150)
