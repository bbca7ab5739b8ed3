"""No file the project reads can run code: for each file type, plant a payload that would create a marker
file when unpickled/constructed, read it through the project's reader, and check the marker never appears
(the read either fails with the project's one-line error or yields plain data)."""
import io
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

from opencood.utils.errors import OpencoodError


class Payload:
    """Unpickling this calls ``open(marker, 'w')``: the marker file is the proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _assert_no_marker(marker):
    assert not os.path.exists(marker), "a planted payload ran"


def _read_may_fail(fn, *args):
    """Run a reader; the project's own error is fine, any value is fine, code execution is not."""
    try:
        return fn(*args)
    except OpencoodError:
        return None


def test_payload_works_with_plain_pickle(tmp_path):
    """The detector itself: plain pickle does run it (so the tests below can fail)."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


def test_model_checkpoint(tmp_path):
    from opencood.utils.checkpoint import read_state_dict
    marker, path = tmp_path / "ran", tmp_path / "net_epoch1.pth"
    torch.save({"w": torch.zeros(1), "x": Payload(marker)}, path)
    _read_may_fail(read_state_dict, str(path))
    _assert_no_marker(marker)


def test_train_state(tmp_path):
    from opencood.utils.checkpoint import Checkpointer
    marker = tmp_path / "ran"
    torch.save({"epoch": 1, "optimizer": Payload(marker)}, tmp_path / "train_state_epoch1.pth")
    _read_may_fail(Checkpointer(str(tmp_path)).load_train_state, 1)
    _assert_no_marker(marker)


def _plant_cache_entries(cache, src, marker):
    """Entries of every kind for ``src``: a pickle under the npy/npz names, an npz with a pickled member."""
    for kind in ("npy", "obj"):
        entry = cache.entry_path(str(src), kind)
        os.makedirs(os.path.dirname(entry), exist_ok=True)
        if kind == "npy":
            with open(entry, "wb") as f:
                np.save(f, np.array([Payload(marker)], dtype=object), allow_pickle=True)
        else:
            buf = io.BytesIO()
            np.savez(buf, tree=np.array([Payload(marker)], dtype=object))
            with open(entry, "wb") as f:
                f.write(buf.getvalue())
    return [cache.entry_path(str(src), k) for k in ("npy", "obj")]


@pytest.mark.parametrize("kind", ["npy", "obj", "pkl"])
def test_decode_cache_entry(tmp_path, kind):
    from opencood.utils.decode_cache import DecodeCache
    marker, src = tmp_path / "ran", tmp_path / "a.yaml"
    src.write_text("a: 1\n")
    cache = DecodeCache(tmp_path / "cache")
    _plant_cache_entries(cache, src, marker)
    value = cache.get(str(src), lambda p: np.zeros(3) if kind == "npy" else {"a": 1}, kind)
    _assert_no_marker(marker)
    if kind == "npy":
        np.testing.assert_array_equal(value, np.zeros(3))
    else:
        assert value == {"a": 1}


def test_decode_cache_plain_pickle_entry(tmp_path):
    """An entry that is a plain pickle (the old format, or planted) is never unpickled."""
    from opencood.utils.decode_cache import DecodeCache
    marker, src = tmp_path / "ran", tmp_path / "a.yaml"
    src.write_text("a: 1\n")
    cache = DecodeCache(tmp_path / "cache")
    entry = cache.entry_path(str(src), "obj")
    os.makedirs(os.path.dirname(entry))
    with zipfile.ZipFile(entry, "w") as z:  # an npz whose member is a pickle, not an .npy
        z.writestr("tree.npy", pickle.dumps(Payload(marker)))
    assert cache.get(str(src), lambda p: {"a": 2}, "obj") == {"a": 2}
    _assert_no_marker(marker)


_YAML_PAYLOADS = [
    "a: !!python/object/apply:builtins.open ['{m}', 'w']\n",
    "a: !!python/object/new:builtins.open ['{m}', 'w']\n",
    "!!python/object/apply:os.system ['touch {m}']\n",
]


@pytest.mark.parametrize("payload", _YAML_PAYLOADS)
def test_experiment_yaml(tmp_path, payload):
    from opencood.hypes_yaml.yaml_utils import load_yaml
    marker, path = tmp_path / "ran", tmp_path / "config.yaml"
    path.write_text(payload.format(m=marker))
    with pytest.raises(OpencoodError):
        load_yaml(str(path))
    _assert_no_marker(marker)


@pytest.mark.parametrize("payload", _YAML_PAYLOADS)
def test_agent_yaml(tmp_path, payload):
    from opencood.data_utils.datasets.basedataset.opv2v_basedataset import read_agent_params
    marker, path = tmp_path / "ran", tmp_path / "000068.yaml"
    path.write_text("lidar_pose: [0, 0, 0, 0, 0, 0]\nvehicles: {}\n" + payload.format(m=marker).replace("a:", "b:"))
    _read_may_fail(read_agent_params, str(path))
    _assert_no_marker(marker)


def test_v2xsim_info_pickle(tmp_path):
    from opencood.data_utils.datasets.basedataset.v2xsim_basedataset import load_info_pickle
    marker, path = tmp_path / "ran", tmp_path / "v2xsim_infos_train.pkl"
    path.write_bytes(pickle.dumps([{"agent_num": 1, "x": Payload(marker)}]))
    with pytest.raises(OpencoodError):
        load_info_pickle(str(path))
    _assert_no_marker(marker)


def test_pcd_and_png_readers_do_not_unpickle(tmp_path):
    """The remaining readers parse bytes themselves: a pickle under their names is a DataError."""
    from opencood.data_utils.datasets.basedataset.opv2v_basedataset import _read_image
    from opencood.utils.pcd_utils import pcd_to_np
    marker = tmp_path / "ran"
    for name, reader in (("a.pcd", pcd_to_np), ("a.png", _read_image)):
        path = tmp_path / name
        path.write_bytes(pickle.dumps(Payload(marker)))
        with pytest.raises(OpencoodError):
            reader(str(path))
    _assert_no_marker(marker)
