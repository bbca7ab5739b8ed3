"""Shared pytest setup: headless plotting, one CPU thread per test process, GPU-test skipping,
and a tiny synthetic OPV2V/OPV2V-H world generated once per session."""
import os

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

# Small test tensors run fastest single-threaded, and the suite must not oversubscribe 2 cores.
torch.set_num_threads(1)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """Root of a tiny synthetic dataset (OPV2V, OPV2V_Hetero, additional, modality_assign)."""
    from opencood.data_utils.synthetic import generate
    root = tmp_path_factory.mktemp("tiny_world")
    generate(str(root), preset="tiny", seed=0, progress=False)
    return str(root)


def tiny_config(tiny_world, yaml_rel, tmp_path, **train_params):
    """Load a shipped YAML, point it at the tiny world, override train_params, save it; returns the path."""
    from opencood.hypes_yaml.yaml_utils import read_config, save_yaml
    h = read_config(os.path.join(REPO, yaml_rel))  # with its _base_ chain
    for key in ("root_dir", "validate_dir", "test_dir"):
        h[key] = h[key].replace("dataset", tiny_world, 1)
    if h.get("data_cache_dir"):  # one cache per test: entries of the shared tiny world never leak between tests
        h["data_cache_dir"] = os.path.join(str(tmp_path), "decode_cache")
    if isinstance(h.get("heter"), dict) and h["heter"].get("assignment_path"):
        h["heter"]["assignment_path"] = h["heter"]["assignment_path"].replace("dataset", tiny_world, 1)
    h["train_params"].update(train_params)
    path = os.path.join(str(tmp_path), "config_src.yaml")
    save_yaml(h, path)
    return path


@pytest.fixture
def make_tiny_config(tiny_world, tmp_path):
    """``make_tiny_config(yaml_rel, **train_params) -> path`` of a shipped YAML pointed at the tiny world."""
    return lambda yaml_rel, **tp: tiny_config(tiny_world, yaml_rel, tmp_path, **tp)
