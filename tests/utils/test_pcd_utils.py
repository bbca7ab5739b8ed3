import os
import struct

import numpy as np
import pytest

from opencood.utils import pcd_utils
from opencood.utils.errors import DataError
from opencood.utils.pcd_utils import mask_ego_points, mask_points_by_range, pcd_to_np, shuffle_points, write_pcd

ENCODINGS = ("ascii", "binary", "binary_compressed")


def _points(n=500, seed=0):
    rng = np.random.default_rng(seed)
    xyz = rng.normal(0.0, 40.0, (n, 3))
    return np.concatenate([xyz, rng.random((n, 1))], axis=1).astype(np.float32)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_round_trip(tmp_path, encoding):
    pts = _points()
    pts[:4, 3] = [0.0, 1.0, 0.5, 0.999]
    path = tmp_path / "a.pcd"
    write_pcd(path, pts, encoding)
    back = pcd_to_np(path)
    assert back.dtype == np.float32 and back.shape == pts.shape
    np.testing.assert_array_equal(back[:, :3], pts[:, :3])
    assert np.abs(back[:, 3] - pts[:, 3]).max() <= 0.5 / 255 + 1e-7
    np.testing.assert_allclose(back[:4, 3], np.round(pts[:4, 3] * 255) / 255, atol=1e-7)
    assert not [f for f in os.listdir(tmp_path) if f != "a.pcd"]  # no temp file left behind


def test_header_is_open3d_style(tmp_path):
    path = tmp_path / "a.pcd"
    write_pcd(path, np.array([[1.5, -2.25, 0.125, 0.2]], np.float32))
    lines = path.read_text().splitlines()
    assert lines == ["# .PCD v0.7 - Point Cloud Data file format", "VERSION 0.7", "FIELDS x y z rgb",
                     "SIZE 4 4 4 4", "TYPE F F F U", "COUNT 1 1 1 1", "WIDTH 1", "HEIGHT 1",
                     "VIEWPOINT 0 0 0 1 0 0 0", "POINTS 1", "DATA ascii", f"1.5 -2.25 0.125 {51 << 16}"]


def test_empty_cloud(tmp_path):
    for enc in ENCODINGS:
        write_pcd(tmp_path / f"{enc}.pcd", np.zeros((0, 4), np.float32), enc)
        assert pcd_to_np(tmp_path / f"{enc}.pcd").shape == (0, 4)


def _float_bits(value):
    return struct.unpack("<f", struct.pack("<I", value))[0]


def test_old_open3d_float_rgb_and_int_rgb(tmp_path):
    # Old Open3D: TYPE F with the packed uint32 printed as a (denormal) float; newer files print ints.
    rows = [(1.0, 2.0, -1.5, 200 << 16), (3.25, -4.0, 0.5, 51 << 16), (0.0, 0.0, 0.0, 0)]
    text = ("# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS x y z rgb\nSIZE 4 4 4 4\n"
            "TYPE F F F F\nCOUNT 1 1 1 1\nWIDTH 3\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS 3\nDATA ascii\n")
    text += f"{rows[0][0]} {rows[0][1]} {rows[0][2]} {_float_bits(rows[0][3]):.10g}\n"
    text += f"{rows[1][0]} {rows[1][1]} {rows[1][2]} {rows[1][3]}\n"  # integer spelling under TYPE F
    text += "0 0 0 0\n"
    path = tmp_path / "old.pcd"
    path.write_text(text)
    assert "e-38" in text
    pts = pcd_to_np(path)
    np.testing.assert_allclose(pts[:, 3], [200 / 255, 51 / 255, 0.0], atol=1e-7)
    np.testing.assert_array_equal(pts[:, :3], [[1.0, 2.0, -1.5], [3.25, -4.0, 0.5], [0, 0, 0]])


def test_intensity_field_binary_and_nan_rows(tmp_path):
    # DAIR-style: x y z intensity (float) in DATA binary, with a NaN row to be dropped.
    data = np.array([[1, 2, 3, 17], [np.nan, 0, 0, 5], [4, 5, 6, 255]], np.float32)
    head = ("VERSION 0.7\nFIELDS x y z intensity\nSIZE 4 4 4 4\nTYPE F F F F\nCOUNT 1 1 1 1\nWIDTH 3\n"
            "HEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS 3\nDATA binary\n").encode()
    path = tmp_path / "dair.pcd"
    path.write_bytes(head + data.tobytes())
    np.testing.assert_array_equal(pcd_to_np(path), data[[0, 2]])


def test_lzf_codec_round_trip():
    rng = np.random.default_rng(1)
    samples = [b"", b"a", bytes(1000), b"abc" * 500, rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(),
               rng.integers(0, 3, 20000, dtype=np.uint8).tobytes()]
    for raw in samples:
        assert pcd_utils.lzf_decompress(pcd_utils.lzf_compress(raw), len(raw)) == raw
    assert len(pcd_utils.lzf_compress(bytes(10000))) < 200


def _good_file(tmp_path, encoding="ascii", n=50):
    path = tmp_path / f"good_{encoding}.pcd"
    write_pcd(path, _points(n), encoding)
    return path


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_truncated_file(tmp_path, encoding):
    path = _good_file(tmp_path, encoding)
    raw = path.read_bytes()
    cut = tmp_path / "cut.pcd"
    cut.write_bytes(raw[:len(raw) - 300])
    with pytest.raises(DataError, match="cut.pcd") as err:
        pcd_to_np(cut)
    assert "\n" not in str(err.value)


def test_malformed_inputs(tmp_path):
    raw = _good_file(tmp_path).read_bytes()
    cases = {
        "missing.pcd": None,
        "no_data_line.pcd": raw.split(b"DATA")[0],
        "bad_points.pcd": raw.replace(b"POINTS 50", b"POINTS 60").replace(b"WIDTH 50", b"WIDTH 60"),
        "width_mismatch.pcd": raw.replace(b"WIDTH 50", b"WIDTH 49"),
        "garbage.pcd": raw.replace(b"DATA ascii\n", b"DATA ascii\nhello ", 1),
        "extra_values.pcd": raw + b"1 2 3 4\n",
        "unknown_kind.pcd": raw.replace(b"DATA ascii", b"DATA fancy"),
        "no_xyz.pcd": raw.replace(b"FIELDS x y z rgb", b"FIELDS a y z rgb"),
        "binary_junk.pcd": os.urandom(2000),
    }
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(DataError, match=name):
            pcd_to_np(path)


def test_corrupt_compressed_stream(tmp_path):
    path = _good_file(tmp_path, "binary_compressed", n=2000)
    raw = bytearray(path.read_bytes())
    start = raw.index(b"DATA binary_compressed\n") + len(b"DATA binary_compressed\n")
    raw[start + 4:start + 8] = struct.pack("<I", 12345)  # wrong uncompressed size
    bad = tmp_path / "bad_sizes.pcd"
    bad.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="bad_sizes.pcd"):
        pcd_to_np(bad)


def test_ascii_read_is_fast(tmp_path):
    import time
    path = tmp_path / "big.pcd"
    write_pcd(path, _points(100_000))
    pcd_to_np(path)  # compile / cache the parser
    t0 = time.perf_counter()
    pts = pcd_to_np(path)
    assert pts.shape == (100_000, 4)
    assert time.perf_counter() - t0 < 0.5  # ~0.03 s on one idle core; loose for shared CI machines


def test_point_masks():
    pts = np.array([[0, 0, 0, 1], [2.9, 1.0, 5, 1], [3.0, 0, 0, 1], [-1.96, 0, 0, 1], [10, 10, 10, 1]],
                   np.float32)
    np.testing.assert_array_equal(mask_ego_points(pts), pts[[2, 3, 4]])
    inside = mask_points_by_range(pts, [-1.96, -1, -1, 10, 1.0, 10])
    np.testing.assert_array_equal(inside, pts[[0, 2]])  # open interval on every side
    np.random.seed(0)
    shuffled = shuffle_points(pts)
    assert sorted(map(tuple, shuffled)) == sorted(map(tuple, pts))
