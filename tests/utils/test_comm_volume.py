"""Communication volume: hand-computed byte counts of every message kind and the per-frame accounting."""
import math

import torch

from opencood.utils import comm_volume as cv


def test_dense_map_bytes_at_its_dtype():
    assert cv.dense_bytes(64, 32, 128) == 64 * 32 * 128 * 4 == 1_048_576
    assert cv.dense_bytes(64, 32, 128, torch.float16) == 524_288
    assert cv.dense_bytes(2, 64, 128, torch.bfloat16) == 32_768


def test_sparse_map_takes_the_cheaper_position_encoding():
    # 64 x 128 grid = 8192 cells: bitmask 1024 B; one index = 13 bit -> 2 B
    assert cv.index_bytes(8192) == 2
    assert cv.index_bytes(256) == 1 and cv.index_bytes(257) == 2
    # 100 kept cells of 64 float32: 25600 B + min(1024, 200) = 25800
    assert cv.sparse_bytes(100, 64, 64, 128) == 25_800
    # 1000 kept cells: index list 2000 B > bitmask 1024 B
    assert cv.sparse_bytes(1000, 64, 64, 128) == 1000 * 256 + 1024
    assert cv.sparse_bytes(0, 64, 64, 128) == 0


def test_codebook_indices_at_their_bit_width():
    # 8192 cells x 3 codes x ceil(log2 16) = 4 bit = 98304 bit = 12288 B
    assert cv.codebook_bytes(8192, 3, 16) == 12_288
    # 5 cells x 1 code x 7 bit (size 100) = 35 bit -> 5 B (rounded up)
    assert cv.codebook_bytes(5, 1, 100) == 5


def test_boxes_and_points():
    assert cv.boxes_bytes(10) == 320
    assert cv.points_bytes(1000) == 16_000


def test_intermediate_counts_only_collaborators_and_prefers_the_message():
    record_len = torch.tensor([3, 1, 2])  # 2 + 0 + 1 collaborators
    fused = torch.zeros(3, 64, 8, 16)
    assert cv.intermediate_bytes({"fused_feature": fused}, record_len) == [64 * 128 * 4] * 3
    out = {"fused_feature": fused, "message": torch.zeros(6, 2, 8, 16, dtype=torch.float16)}
    assert cv.intermediate_bytes(out, record_len) == [2 * 128 * 2] * 3
    mask = torch.zeros(6, 1, 8, 16)
    mask[1, 0, :2, :5] = 1  # agent 1: 10 cells
    mask[5, 0, 0, 0] = 1  # agent 5: 1 cell; agents 0 and 3 are egos (ignored), agent 2 sends nothing
    out = {"fused_feature": fused, "comm_mask": mask}
    assert cv.intermediate_bytes(out, record_len) == [10 * 256 + 10, 0, 256 + 1]
    out = {"fused_feature": fused, "codebook_indices": torch.zeros(6, 2, 8, 16, dtype=torch.long),
           "codebook_size": 256}
    assert cv.intermediate_bytes(out, record_len) == [128 * 2] * 3


def test_early_and_ego_only():
    batch = {"ego": {"points_per_agent": [5000, 1200, 30]}}
    assert cv.collaborator_bytes("early", batch, {}) == [19_200, 480]
    assert cv.collaborator_bytes("single", batch, {}) == []


def test_meter_and_recording():
    meter = cv.VolumeMeter()
    meter.add([1024, 3072])
    meter.add([])
    s = meter.summary()
    assert s["comm_bytes_per_agent"] == 2048 and s["comm_log2_bytes"] == 11.0
    assert s["comm_collaborators_per_frame"] == 1.0
    assert cv.VolumeMeter().summary()["comm_log2_bytes"] is None
    net = torch.nn.Linear(2, 3)
    with cv.recording(net) as outs:
        net(torch.zeros(1, 2))
        net(torch.zeros(4, 2))
    net(torch.zeros(1, 2))
    assert [o.shape[0] for o in outs] == [1, 4]


def test_late_fusion_counts_each_collaborators_boxes():
    class Post:
        def post_process(self, data, out):
            (cav,) = data
            n = out[cav]
            return (None, None) if n == 0 else (torch.zeros(n, 8, 3), torch.zeros(n))

    batch = {"ego": {}, "7": {}, "9": {}}
    assert cv.collaborator_bytes("late", batch, {"ego": 5, "7": 3, "9": 0}, Post()) == [96, 0]
    assert math.log2(cv.boxes_bytes(4)) == 7



def test_multi_scale_maps_count_every_level_and_quantise_level_0():
    """CoAlign sends every fused level; Pyramid Fusion (comm_maps = [level 0]) only its level-0 map."""
    record_len = torch.tensor([2])
    levels = [torch.zeros(2, 64, 16, 32), torch.zeros(2, 128, 8, 16), torch.zeros(2, 256, 4, 8)]
    fused = torch.zeros(1, 256, 16, 32)  # decoded + shrunk: not what anyone sends
    out = {"fused_feature": fused, "comm_maps": levels}
    assert cv.intermediate_bytes(out, record_len) == [(64 * 512 + 128 * 128 + 256 * 32) * 4] == [229_376]
    assert cv.intermediate_bytes({"fused_feature": fused, "comm_maps": levels[:1]}, record_len) == [131_072]
    # 8-bit quantisation (comm_degradation acts on level 0): 32768 B + 8 B of bounds, the rest at float32
    out["message_bits"] = 8
    assert cv.intermediate_bytes(out, record_len) == [32_768 + 8 + (16_384 + 8_192) * 4]


def test_masked_multi_scale_pays_positions_once_and_pools_the_mask():
    record_len = torch.tensor([2])
    levels = [torch.zeros(2, 8, 4, 4), torch.zeros(2, 16, 2, 2)]
    mask = torch.zeros(2, 1, 4, 4)
    mask[1, 0, 0, 0] = 1
    mask[1, 0, 3, 3] = 1  # 2 cells at level 0 -> 2 of the 4 cells of the 2 x 2 level
    out = {"fused_feature": torch.zeros(1, 8, 4, 4), "comm_maps": levels, "comm_mask": mask}
    # level 0: 2 x 8 float32 + min(bitmask 2 B, 2 x 1 B index) = 66; level 1: 2 x 16 float32 = 128
    assert cv.intermediate_bytes(out, record_len) == [64 + 2 + 128]
    assert cv.kept_cells(mask[1], (1, 1)) == 1


def test_zoo_pyramid_and_coalign_models_report_what_they_send(make_tiny_config):
    """Built from the zoo YAMLs: Pyramid Fusion sends its 32-channel level 0 (not the decoded map), CoAlign its
    three levels; one forward on a tiny batch."""
    from tests.models.fuse_modules.zoo_helpers import tiny_batch
    from opencood.tools.train_utils import create_model
    expected = {"lidar_pyramid": 32 * 32 * 64 * 4,
                "lidar_coalign": (32 * 32 * 64 + 64 * 16 * 32 + 64 * 8 * 16) * 4}
    for name, volume in expected.items():
        hypes, _, batch = tiny_batch(make_tiny_config(f"opencood/hypes_yaml/demo/zoo/{name}.yaml"), n=1)
        model = create_model(hypes).eval()
        with torch.no_grad():
            out = model(batch["ego"])
        n_collab = int(batch["ego"]["record_len"].sum()) - 1
        assert n_collab >= 1
        assert cv.intermediate_bytes(out, batch["ego"]["record_len"]) == [volume] * n_collab, name
