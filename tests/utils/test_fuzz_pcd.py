"""Seeded fuzzing of the PCD reader: every mutant of a valid file reads as (N, 4) float32 or fails with the
project's DataError, never another exception (MemoryError from a header asking for TiB, IndexError, ...),
and no read allocates much more than the file: each takes well under a second."""
import time

import numpy as np
import pytest

from opencood.utils.errors import DataError
from opencood.utils.pcd_utils import pcd_to_np, read_pcd_header, write_pcd

N_MUTANTS = 400
_TOKENS = [b"-1", b"0", b"1", b"3", b"2147483648", b"4294967295", b"1000000000000", b"x", b"4.5", b"F", b"U", b"I",
           b"9", b"", b"rgb", b"x y", b"ascii", b"binary", b"binary_compressed", b"nan"]


def _intensity_pcd(points):
    head = (b"# .PCD v0.7\nVERSION 0.7\nFIELDS x y z intensity\nSIZE 4 4 4 4\nTYPE F F F F\nCOUNT 1 1 1 1\n"
            b"WIDTH %d\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS %d\nDATA binary\n" % (len(points), len(points)))
    return head + points.astype("<f4").tobytes()


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    d = tmp_path_factory.mktemp("pcd_seeds")
    pts = np.random.default_rng(0).normal(scale=20, size=(40, 4)).astype(np.float32)
    pts[:, 3] = np.abs(pts[:, 3]) % 1
    out = []
    for enc in ("ascii", "binary", "binary_compressed"):
        write_pcd(str(d / f"{enc}.pcd"), pts, encoding=enc)
        pcd_to_np(str(d / f"{enc}.pcd"))  # compiles the numba parsers outside the timed reads
        out.append((d / f"{enc}.pcd").read_bytes())
    out.append(_intensity_pcd(pts))
    return out


def _mutate(data, rng):
    """One of: flip bytes, truncate, replace a header token, duplicate/drop a header token, insert bytes."""
    kind = rng.integers(5)
    buf = bytearray(data)
    end = data.find(b"DATA")
    end = data.find(b"\n", end) + 1
    if kind == 0:
        for _ in range(rng.integers(1, 9)):
            buf[rng.integers(len(buf))] = rng.integers(256)
        return bytes(buf)
    if kind == 1:
        return bytes(buf[:rng.integers(len(buf))])
    if kind == 4:
        at = rng.integers(len(buf))
        return bytes(buf[:at]) + rng.bytes(int(rng.integers(1, 64))) + bytes(buf[at:])
    lines = data[:end].split(b"\n")
    i = int(rng.integers(1, len(lines) - 1))
    toks = lines[i].split(b" ")
    j = int(rng.integers(1, len(toks))) if len(toks) > 1 else 0
    if kind == 2:
        toks[j] = _TOKENS[rng.integers(len(_TOKENS))]
    elif rng.integers(2):
        toks.insert(j, toks[j])
    else:
        del toks[j]
    lines[i] = b" ".join(toks)
    return b"\n".join(lines) + data[end:]


def test_mutants_read_or_raise_data_error(seeds, tmp_path):
    rng = np.random.default_rng(1234)
    path = tmp_path / "m.pcd"
    outcomes = {"ok": 0, "DataError": 0}
    for k in range(N_MUTANTS):
        data = _mutate(seeds[k % len(seeds)], rng)
        path.write_bytes(data)
        for reader in (pcd_to_np, read_pcd_header):
            t0 = time.perf_counter()
            try:
                out = reader(str(path))
            except DataError as e:
                assert "\n" not in str(e) and str(path) in str(e)
                outcomes["DataError"] += 1
            else:
                outcomes["ok"] += 1
                if reader is pcd_to_np:
                    assert out.dtype == np.float32 and out.ndim == 2 and out.shape[1] == 4
                    assert np.isfinite(out[:, :3]).all()
            assert time.perf_counter() - t0 < 1.0, f"mutant {k} took too long: {data[:200]!r}"
    # both outcomes occur: the mutator is neither too gentle nor always fatal
    assert outcomes["ok"] > N_MUTANTS // 10 and outcomes["DataError"] > N_MUTANTS // 2, outcomes


@pytest.mark.parametrize("header, message", [
    (b"FIELDS x y z rgb\nSIZE 4 4 4 4\nTYPE F F F U\nCOUNT 1 1 0 1\nPOINTS 2\nDATA ascii\n", "COUNT 0"),
    (b"FIELDS x y z rgb\nSIZE 4 4 4 4\nTYPE F F F U\nCOUNT 1 1 -3 1\nPOINTS 2\nDATA ascii\n", "COUNT -3"),
    (b"FIELDS x y x rgb\nSIZE 4 4 4 4\nTYPE F F F U\nCOUNT 1 1 1 1\nPOINTS 2\nDATA ascii\n", "field 'x' listed twice"),
    (b"FIELDS x y z rgb\nSIZE 4 4 4 3\nTYPE F F F U\nCOUNT 1 1 1 1\nPOINTS 2\nDATA ascii\n", "unsupported PCD field type U3"),
    (b"FIELDS x y z rgb\nSIZE 4 4 4 4\nTYPE F F F Q\nCOUNT 1 1 1 1\nPOINTS 2\nDATA ascii\n", "unsupported PCD field type Q4"),
    (b"FIELDS x y z rgb\nSIZE 4 4 4 4\nTYPE F F F U\nCOUNT 1 1 1 1\nPOINTS 8000000000000\nDATA ascii\n1 2 3 4\n",
     "truncated DATA section"),
    (b"FIELDS x y z rgb\nSIZE 4 4 4 4\nTYPE F F F U\nCOUNT 1 1 1 1\nPOINTS 8000000000000\nDATA binary\n" + b"\0" * 16,
     "truncated DATA section"),
    (b"FIELDS x y z rgb\nSIZE 4 4 4 4\nTYPE F F F U\nCOUNT 1 1 1 1\nPOINTS 200000000\nDATA binary_compressed\n"
     + np.array([16, 3200000000], "<u4").tobytes() + b"\0" * 16, "binary_compressed data says 3200000000 bytes"),
])
def test_header_lies_are_data_errors_before_allocating(tmp_path, header, message):
    path = tmp_path / "bad.pcd"
    path.write_bytes(header)
    for reader in (pcd_to_np, read_pcd_header):
        with pytest.raises(DataError, match=message):
            reader(str(path))


def test_non_finite_rows_are_dropped_and_empty_clouds_are_legal(tmp_path):
    pts = np.array([[1, 2, 3, 0.5], [np.nan, 0, 0, 0.1], [np.inf, 1, 1, 0.2], [4, 5, 6, 0.0]], np.float32)
    path = tmp_path / "a.pcd"
    path.write_bytes(_intensity_pcd(pts))
    np.testing.assert_array_equal(pcd_to_np(str(path)), pts[[0, 3]])
    path.write_bytes(_intensity_pcd(pts[:0]))
    assert pcd_to_np(str(path)).shape == (0, 4) and read_pcd_header(str(path)) == (0, "binary")
