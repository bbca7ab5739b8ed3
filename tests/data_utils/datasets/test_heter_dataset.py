"""Heterogeneous intermediate dataset: type assignment, per-type inputs, grouping collate, in-order joining."""
import copy
import json
import os
import pickle

import pytest

from opencood.data_utils.datasets import build_dataset
from opencood.utils.errors import ConfigError, DataError

from opv2v_tiny import lidar_setting, make_hypes, make_tree

IDENTITY = {f"m{i}": f"m{i}" for i in range(1, 5)}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("heter"))
    make_tree(root, hetero=True, cameras=True, bev=True, n_points=300)
    return root


def heter_hypes(root, ego_diff_cav=False, mapping=None, **kw):
    heter = {"assignment_path": os.path.join(root, "modality_assign", "opv2v_4modality.json"),
             "ego_modality": "m1", "mapping_dict": dict(mapping or IDENTITY),
             "lidar_channels_dict": {"m3": 32},
             "modality_setting": {"m1": lidar_setting([0.4, 0.4, 4], 8), "m3": lidar_setting([0.1, 0.1, 0.1], 5)}}
    extra = {"ego_diff_cav": ego_diff_cav}
    extra.update(kw.pop("extra", {}))
    return make_hypes(os.path.join(root, "OPV2V"), core_method="intermediateheter", heter=heter, extra=extra, **kw)


def test_eval_mapping_reorders_ego_and_drops_unknown_types(root):
    ds = build_dataset(heter_hypes(root), train=False)
    # json (sorted ids): -1 m1, 100 m2, 200 m3, 300 m4; 100 is not an ego type -> -1 (json order first) is ego
    assert ds.base.scenario_database[0]["order"] == ["-1", "100", "200", "300"]
    base = {a.agent_id: a for a in ds.base.retrieve_base_data(0)}
    assert [a.modality for a in base.values()] == ["m1", "m2", "m3", "m4"]
    assert len(base["200"].points) == 150  # m3 reads the 32-beam cloud (every 2nd point here)
    assert len(base["-1"].points) == 300 and base["-1"].is_infrastructure and base["-1"].is_ego
    assert base["100"].points is None  # m2 is not configured: nothing is read for it
    s = ds[0]["ego"]
    assert s["cav_id_list"] == ["-1", "200"] and s["agent_modality_list"] == ["m1", "m3"]
    assert len(s["inputs_m1"]) == 1 and len(s["inputs_m3"]) == 1


def test_train_draws_types_from_preference_and_ego_modality(root):
    ds = build_dataset(heter_hypes(root), train=True)
    types = []
    for _ in range(6):
        ds.reinitialize()
        for i in range(len(ds)):
            types.append([a.modality for a in ds.base.retrieve_base_data(i)])
    assert all(t[0] == "m1" for t in types)
    others = {m for t in types for m in t[1:]}
    assert others == {"m1", "m3"}
    again = build_dataset(heter_hypes(root), train=True)
    assert [a.modality for a in again.base.retrieve_base_data(0)] == \
        [a.modality for a in build_dataset(heter_hypes(root), train=True).base.retrieve_base_data(0)]


def test_ego_diff_cav_in_train_and_eval(root):
    for train in (True, False):
        ds = build_dataset(heter_hypes(root, ego_diff_cav=True), train=train)
        for i in range(len(ds)):
            types = [a.modality for a in ds.base.retrieve_base_data(i)]
            assert types[0] == "m1" and set(types[1:]) == {"m3"}
    ds = build_dataset(heter_hypes(root, ego_diff_cav=True), train=False)
    assert ds.base.scenario_database[0]["order"] == ["100", "200", "300", "-1"]  # json only orders, no reorder


def test_json_must_cover_every_agent(root, tmp_path):
    h = heter_hypes(root)
    with open(h["heter"]["assignment_path"]) as f:
        data = json.load(f)
    del data["2021_01_01_00_00_03"]["200"]
    bad = str(tmp_path / "partial.json")
    with open(bad, "w") as f:
        json.dump(data, f)
    h["heter"]["assignment_path"] = bad
    with pytest.raises(ConfigError, match=r"partial.json: no modality for agent '200' of scenario '2021_01_01_00_00_03'"):
        build_dataset(h, train=False)
    h = heter_hypes(root, mapping={"m1": "m1", "m2": "m1"})
    with pytest.raises(ConfigError, match=r"opv2v_4modality.json: agent '200' .* type 'm3'"):
        build_dataset(h, train=False)


def test_collate_groups_by_modality_and_keeps_order(root):
    mapping = {"m1": "m1", "m2": "m3", "m3": "m3", "m4": "m1"}
    ds = build_dataset(heter_hypes(root, comm_range=200, mapping=mapping), train=False)
    samples = [ds[0], ds[1]]
    batch = ds.collate_batch_train(samples)["ego"]
    mods = batch["agent_modality_list"]
    assert mods == samples[0]["ego"]["agent_modality_list"] + samples[1]["ego"]["agent_modality_list"]
    assert mods == ["m1", "m3", "m3", "m1"] * 2  # agents -1, 100, 200, 300
    assert batch["record_len"].tolist() == [4, 4]
    for m in ("m1", "m3"):
        coords = batch[f"inputs_{m}"]["voxel_coords"]
        assert set(coords[:, 0].tolist()) == set(range(mods.count(m)))
    # restoring agent order: the k-th mX agent of agent_modality_list is row k of inputs_mX
    per_agent = [v for s in samples for v in s["ego"]["inputs_m3"]]
    rows = batch["inputs_m3"]["voxel_coords"][:, 0]
    assert [int((rows == k).sum()) for k in range(4)] == [len(v["voxel_coords"]) for v in per_agent]
    assert batch["inputs_m3"]["voxel_features"].shape[1:] == (5, 4)
    assert batch["inputs_m1"]["voxel_features"].shape[1:] == (8, 4)


def test_in_order_use_cav(root):
    h = heter_hypes(root, comm_range=180)
    h["fusion"]["core_method"] = "intermediateheterinfer"
    full = build_dataset(h, train=False)[0]["ego"]
    h = copy.deepcopy(h)
    h["fusion"]["args"]["use_cav"] = 1
    one = build_dataset(h, train=False)[0]["ego"]
    assert one["cav_num"] == 1 and one["agent_modality_list"] == ["m1"] and one["inputs_m3"] == []
    assert sorted(one["object_ids"]) == sorted(full["object_ids"])
    assert one["pairwise_t_matrix"].shape == (5, 5, 4, 4)


def test_missing_hetero_files_are_listed(tmp_path):
    root = str(tmp_path)
    make_tree(root, hetero=True, n_points=20)
    os.remove(os.path.join(root, "OPV2V_Hetero", "validate", "2021_01_01_00_00_03", "200", "000002_32.pcd"))
    with pytest.raises(DataError, match=r"1 dataset problem: .*OPV2V_Hetero/validate/2021_01_01_00_00_03/200/"
                                        r"000002_32.pcd missing"):
        build_dataset(heter_hypes(root), train=False)


def test_camera_agents_get_camera_inputs(root):
    pytest.importorskip("opencood.utils.camera_utils")
    cam = {"sensor_type": "camera", "core_method": "lift_splat_shoot",
           "grid_conf": {"xbound": [-51.2, 51.2, 0.4], "ybound": [-51.2, 51.2, 0.4], "zbound": [-10, 10, 20.0],
                         "ddiscr": [2, 50, 48], "mode": "LID"},
           "data_aug_conf": {"resize_lim": [0.65, 0.7], "final_dim": [8, 16], "rot_lim": [0, 0], "H": 12, "W": 16,
                             "rand_flip": False, "bot_pct_lim": [0.0, 0.05],
                             "cams": ["camera0", "camera1", "camera2", "camera3"], "Ncams": 4}}
    h = heter_hypes(root, ego_diff_cav=True, extra={"input_source": ["lidar", "camera", "depth"],
                                                     "add_data_extension": ["bev_visibility.png"]})
    h["heter"]["modality_setting"] = {"m1": h["heter"]["modality_setting"]["m1"], "m2": cam}
    h["heter"]["lidar_channels_dict"] = {}
    ds = build_dataset(h, train=True)
    ds.base.scenario_database[0]["order"] = ["100", "200", "300"]
    s = ds[0]["ego"]
    assert s["agent_modality_list"] == ["m1", "m2"]
    imgs = s["inputs_m2"][0]["imgs"]
    assert imgs.shape[:2] == (4, 4) and imgs.shape[2:] == (8, 16)
    batch = ds.collate_batch_train([ds[0]])["ego"]
    assert tuple(batch["inputs_m2"]["imgs"].shape[:2]) == (1, 4)
    record = ds.base.retrieve_base_data(0)[1]
    assert [c.name for c in record.cameras] == ["camera0", "camera1", "camera2", "camera3"]
    assert record.cameras[0].depth is not None and record.extensions["bev_visibility.png"].shape == (256, 256)


def _draws(batch):
    """Collate that keeps only what the epoch's random draws decide: agent order and agent types."""
    return [(s["ego"]["sample_idx"], tuple(s["ego"]["cav_id_list"]), tuple(s["ego"]["agent_modality_list"]))
            for s in batch]


def test_persistent_workers_follow_reseed_and_reinitialize(root):
    from torch.utils.data import DataLoader

    def three_epochs(workers, context=None):
        ds = build_dataset(heter_hypes(root), train=True)
        loader = DataLoader(ds, batch_size=2, shuffle=False, num_workers=workers, collate_fn=_draws,
                            persistent_workers=workers > 0, multiprocessing_context=context)
        out = []
        for epoch in range(3):
            ds.reseed(100 + epoch)  # what the trainer does before every epoch
            ds.reinitialize()
            out.append(sorted(x for b in loader for x in b))
        return out

    ref = three_epochs(0)
    assert ref[0] != ref[1] or ref[1] != ref[2]  # the draws do change from epoch to epoch
    assert three_epochs(2) == ref  # workers kept alive across epochs draw the same
    assert three_epochs(1, "spawn") == ref  # spawned workers share the epoch state too


def test_dataset_copies_keep_their_draws(root):
    ds = build_dataset(heter_hypes(root), train=True)
    ds.reseed(7)
    ds.reinitialize()
    for other in (copy.deepcopy(ds), pickle.loads(pickle.dumps(ds))):
        assert [_draws([other[i]]) for i in range(len(ds))] == [_draws([ds[i]]) for i in range(len(ds))]
        other.reinitialize()  # a copy's epoch state is its own
        assert ds.base.epoch == 1 and other.base.epoch == 2
