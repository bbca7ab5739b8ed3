"""Voxelization against a python dict implementation and spconv's PointToVoxel."""
import numpy as np
import pytest
import torch

from opencood.ops.voxelize import voxelize

VOXEL = [0.5, 0.5, 1.0]
RANGE = [-4.0, -3.0, -2.0, 4.0, 3.0, 2.0]


def _points(seed, n=3000):
    rng = np.random.default_rng(seed)
    xyz = rng.uniform([-5, -4, -3], [5, 4, 3], (n, 3))
    xyz[: n // 3] = np.round(xyz[: n // 3] * 2) / 2 + 0.01  # dense clusters -> full voxels
    return np.concatenate([xyz, rng.uniform(0, 1, (n, 1))], axis=1).astype(np.float32)


def _brute(points, voxel, rng_, max_pts, max_vox):
    voxel = np.asarray(voxel, np.float32)
    lo = np.asarray(rng_[:3], np.float32)
    grid = np.round((np.asarray(rng_[3:], np.float32) - lo) / voxel).astype(int)
    table = {}
    for p in points:
        c = np.floor((p[:3] - lo) / voxel).astype(int)
        if (c < 0).any() or (c >= grid).any():
            continue
        key = (c[2], c[1], c[0])
        if key not in table:
            if len(table) >= max_vox:
                continue
            table[key] = []
        if len(table[key]) < max_pts:
            table[key].append(p)
    return table


def _as_table(voxels, coords, num):
    return {tuple(int(v) for v in c): np.asarray(vx[:n]) for vx, c, n in zip(voxels, coords, num)}


@pytest.mark.parametrize("max_pts,max_vox", [(5, 100000), (3, 40)])
def test_voxelize_vs_dict(max_pts, max_vox):
    pts = _points(0)
    voxels, coords, num = voxelize(pts, VOXEL, RANGE, max_pts, max_vox)
    assert isinstance(voxels, np.ndarray)
    assert voxels.dtype == np.float32 and coords.dtype == np.int32 and num.dtype == np.int32
    table = _brute(pts, VOXEL, RANGE, max_pts, max_vox)
    # Same voxels in the same (first-occurrence) order, same points in the same slots.
    assert [tuple(int(v) for v in c) for c in coords] == list(table)
    for vx, c, n in zip(voxels, coords, num):
        ref = np.stack(table[tuple(int(v) for v in c)])
        assert n == len(ref)
        np.testing.assert_array_equal(vx[:n], ref)
        assert not vx[n:].any()
    assert num.max() == max_pts


def test_torch_input_and_empty():
    pts = _points(1, 500)
    v_np = voxelize(pts, VOXEL, RANGE, 4, 1000)
    v_t = voxelize(torch.from_numpy(pts), VOXEL, RANGE, 4, 1000)
    assert all(isinstance(x, torch.Tensor) for x in v_t)
    for a, b in zip(v_np, v_t):
        np.testing.assert_array_equal(a, b.numpy())
    outside = np.full((10, 4), 50.0, dtype=np.float32)
    voxels, coords, num = voxelize(outside, VOXEL, RANGE, 4, 1000)
    assert voxels.shape == (0, 4, 4) and coords.shape == (0, 3) and num.shape == (0,)


@pytest.mark.parametrize("max_vox", [100000, 150])
def test_voxelize_vs_spconv(max_vox):
    spconv_utils = pytest.importorskip("spconv.pytorch.utils")
    pts = _points(2)
    gen = spconv_utils.PointToVoxel(vsize_xyz=VOXEL, coors_range_xyz=RANGE, num_point_features=4,
                                    max_num_voxels=max_vox, max_num_points_per_voxel=5)
    ref_v, ref_c, ref_n = gen(torch.from_numpy(pts))
    voxels, coords, num = voxelize(torch.from_numpy(pts), VOXEL, RANGE, 5, max_vox)
    ours = _as_table(voxels.numpy(), coords.numpy(), num.numpy())
    ref = _as_table(ref_v.numpy(), ref_c.numpy(), ref_n.numpy())
    assert set(ours) == set(ref)
    for key, val in ours.items():
        np.testing.assert_array_equal(val[np.lexsort(val.T)], ref[key][np.lexsort(ref[key].T)])
    # spconv's CPU generator walks points in order too, so the outputs are identical, order included.
    torch.testing.assert_close(coords, ref_c.int())
    torch.testing.assert_close(voxels, ref_v)
    torch.testing.assert_close(num, ref_n.int())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_voxelize_cuda():
    pts = torch.from_numpy(_points(3))
    out_gpu = voxelize(pts.cuda(), VOXEL, RANGE, 5, 200)
    for a, b in zip(out_gpu, voxelize(pts, VOXEL, RANGE, 5, 200)):
        assert a.is_cuda
        torch.testing.assert_close(a.cpu(), b)
