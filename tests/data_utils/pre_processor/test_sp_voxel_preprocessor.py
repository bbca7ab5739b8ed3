import numpy as np
import pytest
import torch

from opencood.data_utils.pre_processor import build_preprocessor
from opencood.data_utils.pre_processor.sp_voxel_preprocessor import SpVoxelPreprocessor
from opencood.utils.errors import ConfigError, DataError

RANGE = [-12.8, -6.4, -3.0, 12.8, 6.4, 1.0]


def make_params(voxel=(0.4, 0.4, 4.0), max_points=8, train_cap=300, test_cap=5000):
    return {"core_method": "SpVoxelPreprocessor", "cav_lidar_range": list(RANGE),
            "args": {"voxel_size": list(voxel), "max_points_per_voxel": max_points,
                     "max_voxel_train": train_cap, "max_voxel_test": test_cap}}


def random_points(seed, n=4000):
    """Uniform points over (and beyond) RANGE plus a dense clump that overflows voxels."""
    rng = np.random.default_rng(seed)
    spread = np.stack([rng.uniform(-14, 14, n), rng.uniform(-7, 7, n), rng.uniform(-3.5, 1.5, n),
                       rng.uniform(0, 1, n)], axis=1)
    clump = np.stack([rng.uniform(1.0, 1.3, 300), rng.uniform(2.0, 2.3, 300), rng.uniform(-1, 0, 300),
                      rng.uniform(0, 1, 300)], axis=1)
    pts = np.concatenate([spread, clump]).astype(np.float32)
    return pts[rng.permutation(len(pts))]


@pytest.mark.parametrize("backend", ["spconv", "torch"])
@pytest.mark.parametrize("voxel,max_points,train", [((0.4, 0.4, 4.0), 8, True), ((0.4, 0.4, 4.0), 8, False),
                                                    ((0.1, 0.1, 0.1), 5, False)])
def test_matches_spconv_point_to_voxel(voxel, max_points, train, backend):
    from spconv.pytorch.utils import PointToVoxel
    params = make_params(voxel, max_points)
    pre = SpVoxelPreprocessor(params, train=train, backend=backend)
    pts = random_points(0)
    out = pre.preprocess(pts)
    cap = params["args"]["max_voxel_train" if train else "max_voxel_test"]
    ref = PointToVoxel(vsize_xyz=list(voxel), coors_range_xyz=RANGE, num_point_features=4,
                       max_num_voxels=cap, max_num_points_per_voxel=max_points)
    voxels, coords, num = ref(torch.from_numpy(pts))
    assert out["voxel_features"].dtype == np.float32
    assert out["voxel_coords"].dtype == np.int32
    assert out["voxel_features"].shape == tuple(voxels.shape)
    np.testing.assert_array_equal(out["voxel_coords"], coords.numpy())
    np.testing.assert_array_equal(out["voxel_num_points"], num.numpy())
    np.testing.assert_array_equal(out["voxel_features"], voxels.numpy())
    if train:
        assert out["voxel_coords"].shape[0] == cap


def test_backend_choice_and_outputs_not_shared():
    assert SpVoxelPreprocessor(make_params(), True).backend == "spconv"
    second = make_params((0.1, 0.1, 0.1), 5)
    second["cav_lidar_range"] = [-102.4, -51.2, -3.0, 102.4, 51.2, 1.0]
    assert SpVoxelPreprocessor(second, True).backend == "torch"  # 2048 x 1024 x 40 grid
    with pytest.raises(ValueError, match="backend"):
        SpVoxelPreprocessor(make_params(), True, backend="cuda")
    pre = SpVoxelPreprocessor(make_params(), train=False, backend="spconv")
    first = pre.preprocess(random_points(0, 500))
    kept = {k: v.copy() for k, v in first.items()}
    pre.preprocess(random_points(1, 500))
    for key in first:
        np.testing.assert_array_equal(first[key], kept[key])


def test_grid_size_and_extra_columns():
    pre = SpVoxelPreprocessor(make_params(), train=True)
    assert pre.grid_size.tolist() == [64, 32, 1]
    pts = random_points(1, 500)
    extra = np.concatenate([pts, np.ones((len(pts), 1), np.float32)], axis=1)  # (P, 5): ring ignored
    a, b = pre.preprocess(pts), pre.preprocess(extra)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    tensor_out = pre.preprocess(torch.from_numpy(pts))
    assert isinstance(tensor_out["voxel_features"], torch.Tensor)
    np.testing.assert_array_equal(tensor_out["voxel_coords"].numpy(), a["voxel_coords"])


def test_collate_list_and_dict_of_lists():
    pre = SpVoxelPreprocessor(make_params(), train=False)
    outs = [pre.preprocess(random_points(s, 300)) for s in range(3)]
    sizes = [o["voxel_coords"].shape[0] for o in outs]
    batch = SpVoxelPreprocessor.collate_batch(outs)
    total = sum(sizes)
    assert batch["voxel_features"].shape == (total, 8, 4)
    assert batch["voxel_coords"].shape == (total, 4)
    assert batch["voxel_num_points"].shape == (total,)
    assert batch["voxel_coords"].dtype == torch.int32
    np.testing.assert_array_equal(batch["voxel_coords"][:, 0].numpy(), np.repeat(np.arange(3), sizes))
    np.testing.assert_array_equal(batch["voxel_coords"][sizes[0]:sizes[0] + sizes[1], 1:].numpy(),
                                  outs[1]["voxel_coords"])
    as_dict = {k: [o[k] for o in outs] for k in outs[0]}
    batch2 = SpVoxelPreprocessor.collate_batch(as_dict)
    for key in batch:
        assert torch.equal(batch[key], batch2[key])


def test_builder_and_errors():
    assert isinstance(build_preprocessor(make_params(), True), SpVoxelPreprocessor)
    params = make_params()
    del params["args"]["max_voxel_test"]
    with pytest.raises(ConfigError, match="preprocess.args.max_voxel_test"):
        SpVoxelPreprocessor(params, train=False)
    with pytest.raises(ConfigError, match="preprocess.core_method"):
        build_preprocessor({"args": {}}, True)
    with pytest.raises(DataError, match=r"\(P, >=4\)"):
        SpVoxelPreprocessor(make_params(), True).preprocess(np.zeros((10, 3), np.float32))


def test_reused_spconv_buffer_gives_fresh_results():
    """The voxel buffer is re-zeroed only where a call wrote: a big cloud then a small one must give what a
    fresh pre-processor gives (no stale points in the padding)."""
    reused = SpVoxelPreprocessor(make_params(max_points=8, test_cap=5000), train=False, backend="spconv")
    clouds = [random_points(10, n=6000), random_points(11, n=500), random_points(12, n=3000)]
    for pts in clouds:
        got = reused.preprocess(pts)
        fresh = SpVoxelPreprocessor(make_params(max_points=8, test_cap=5000), train=False, backend="spconv")
        expect = fresh.preprocess(pts)
        for key in expect:
            np.testing.assert_array_equal(got[key], expect[key])
        ref = SpVoxelPreprocessor(make_params(max_points=8, test_cap=5000), train=False, backend="torch")
        np.testing.assert_array_equal(got["voxel_features"], ref.preprocess(pts)["voxel_features"])
    assert not reused._spconv_generator.voxels.any()
