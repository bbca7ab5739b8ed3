"""DecodeCache: same values as decoding, hits skip the decoder, edits and broken entries re-decode."""
import os
import sys
import time

import numpy as np

from opencood.utils.decode_cache import DecodeCache
from opencood.utils.pcd_utils import pcd_to_np, write_pcd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "data_utils", "datasets"))


class Counting:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, path):
        self.calls += 1
        return self.fn(path)


def test_hit_returns_same_points_without_decoding(tmp_path):
    pcd = tmp_path / "a.pcd"
    pts = np.random.default_rng(0).normal(size=(500, 4)).astype(np.float32)
    write_pcd(str(pcd), pts)
    cache, dec = DecodeCache(tmp_path / "cache"), Counting(pcd_to_np)
    first = cache.get(str(pcd), dec, "npy")
    second = cache.get(str(pcd), dec, "npy")
    assert dec.calls == 1
    np.testing.assert_array_equal(first, pcd_to_np(str(pcd)))
    np.testing.assert_array_equal(second, first)
    assert second.dtype == np.float32
    assert not [f for _, _, fs in os.walk(tmp_path / "cache") for f in fs if f.startswith(".tmp_")]


def test_edited_source_is_decoded_again(tmp_path):
    src = tmp_path / "p.yaml"
    src.write_text("a: 1\n")
    cache = DecodeCache(tmp_path / "cache")
    dec = Counting(lambda p: open(p).read())
    assert cache.get(str(src), dec, "pkl") == "a: 1\n"
    time.sleep(0.01)
    src.write_text("a: 22\n")
    os.utime(src, ns=(time.time_ns() + 10 ** 9,) * 2)
    assert cache.get(str(src), dec, "pkl") == "a: 22\n"
    assert dec.calls == 2


def test_broken_entry_is_rewritten(tmp_path):
    src = tmp_path / "p.txt"
    src.write_text("x")
    cache = DecodeCache(tmp_path / "cache")
    dec = Counting(lambda p: {"v": open(p).read()})
    cache.get(str(src), dec, "pkl")
    entry = cache.entry_path(str(src), "pkl")
    open(entry, "wb").write(b"\x80garbage")
    assert cache.get(str(src), dec, "pkl") == {"v": "x"}
    assert dec.calls == 2
    assert cache.get(str(src), dec, "pkl") == {"v": "x"} and dec.calls == 2


def test_missing_source_keeps_the_decoders_one_line_error(tmp_path):
    import pytest
    from opencood.utils.errors import DataError
    cache = DecodeCache(tmp_path / "cache")
    with pytest.raises(DataError, match="gone.pcd"):
        cache.get(str(tmp_path / "gone.pcd"), pcd_to_np, "npy")
    assert not (tmp_path / "cache").exists()


def test_dataset_with_cache_gives_identical_samples(tmp_path):
    from opencood.data_utils.datasets import build_dataset
    from opv2v_tiny import make_hypes, make_tree
    base = make_tree(str(tmp_path / "data"), cameras=True, hetero=True)
    src = {"input_source": ["lidar", "camera", "depth"]}
    plain = build_dataset(make_hypes(base, extra=src), train=False)
    cached = build_dataset(make_hypes(base, extra=dict(src, data_cache_dir=str(tmp_path / "cache"))), train=False)
    for _ in range(2):  # first pass fills the cache, second reads it
        for i in range(len(plain)):
            a, b = plain.base.retrieve_base_data(i), cached.base.retrieve_base_data(i)
            assert [r.agent_id for r in a] == [r.agent_id for r in b]
            for ra, rb in zip(a, b):
                np.testing.assert_array_equal(ra.points, rb.points)
                np.testing.assert_array_equal(ra.lidar_pose, rb.lidar_pose)
                np.testing.assert_array_equal(ra.objects, rb.objects)
                assert ra.object_ids == rb.object_ids and ra._loader_data == rb._loader_data
                for ca, cb in zip(ra.cameras, rb.cameras):
                    np.testing.assert_array_equal(ca.T_lidar_cam, cb.T_lidar_cam)
                    for ia, ib in ((ca.image, cb.image), (ca.depth, cb.depth)):
                        assert (ia.mode, ia.size) == (ib.mode, ib.size)
                        np.testing.assert_array_equal(np.asarray(ia), np.asarray(ib))
    n_entries = sum(len(fs) for _, _, fs in os.walk(tmp_path / "cache"))
    assert n_entries == (2 + 4 + 4) * 4 * 2  # (pcd + yaml + 4 cameras + 4 depths) x 4 agents x 2 frames
