import math

import torch

from opencood.models.fuse_modules.att_fuse import AttFusion
from opencood.models.fuse_modules.fusion_input import FusionInput
from opencood.models.fuse_modules.max_fuse import MaxFusion
from opencood.models.fuse_modules.warp import warp_affine_simple
from opencood.utils.transformation_utils import normalize_pairwise_tfm

# 0.8 m cells on x in [-12.8, 12.8] (32 cols), y in [-6.4, 6.4] (16 rows)
RANGE_H, RANGE_W, CELL = 12.8, 25.6, 0.8


def _tfm(yaw_deg, tx, ty):
    t = torch.eye(4, dtype=torch.float64)
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    t[:2, :2] = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    t[0, 3], t[1, 3] = tx, ty
    return t


def _pairwise(tfms_to_world):
    """(1, L, L, 4, 4) with [i, j] = T_{j<-i} from agent-to-world matrices."""
    n = len(tfms_to_world)
    out = torch.zeros(1, n, n, 4, 4, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            out[0, i, j] = torch.linalg.solve(tfms_to_world[j], tfms_to_world[i])
    return out


def _fuse(module, x, record_len, affine):
    """Fusion modules take one FusionInput and return (fused, aux); aux is empty for att / max."""
    fused, aux = module(FusionInput(features=x, record_len=record_len, affine=affine))
    assert aux == {}
    return fused


def _cell(x, y):
    return int(round((y + RANGE_H / 2) / CELL - 0.5)), int(round((x + RANGE_W / 2) / CELL - 0.5))


def _hot_case():
    """Agent 1 (yaw 90 deg at (4, -1.6) in the ego frame) sees a hot cell at p = (2, -2) in its own frame."""
    t_ego_from_1 = _tfm(90, 4.0, -1.6)
    pairwise = _pairwise([torch.eye(4, dtype=torch.float64), t_ego_from_1])
    affine = normalize_pairwise_tfm(pairwise, RANGE_H, RANGE_W, 1).float()
    x = torch.zeros(2, 3, 16, 32)
    r, c = _cell(2.0, -2.0)
    x[1, :, r, c] = 1.0
    p_ego = t_ego_from_1 @ torch.tensor([2.0, -2.0, 0.0, 1.0], dtype=torch.float64)
    return x, affine, _cell(float(p_ego[0]), float(p_ego[1]))


def test_warp_direction_lands_at_T_ego_from_j_p():
    x, affine, (er, ec) = _hot_case()
    assert (er, ec) == (8, 23)
    warped = warp_affine_simple(x[1:], affine[:, 0, 1], (16, 32))
    assert torch.isclose(warped[0, 0, er, ec], torch.tensor(1.0), atol=1e-5)
    assert torch.isclose(warped.sum(), torch.tensor(3.0), atol=1e-4)  # exact cell-centre hit, nothing else


def test_fusions_put_collaborator_hot_cell_in_ego_frame():
    x, affine, (er, ec) = _hot_case()
    record_len = torch.tensor([2])
    fused_max = _fuse(MaxFusion(), x, record_len, affine)
    assert fused_max.shape == (1, 3, 16, 32)
    assert torch.isclose(fused_max[0, 0, er, ec], torch.tensor(1.0), atol=1e-5)
    fused_att = _fuse(AttFusion({"feat_dim": 3}), x, record_len, affine)
    flat = fused_att[0, 0].flatten().argmax().item()
    assert divmod(flat, 32) == (er, ec)


def test_att_single_agent_is_identity():
    x = torch.randn(1, 8, 16, 32)
    affine = normalize_pairwise_tfm(torch.eye(4).repeat(1, 5, 5, 1, 1), RANGE_H, RANGE_W, 1)
    out = _fuse(AttFusion({"feat_dim": 8}), x, torch.tensor([1]), affine)
    assert torch.allclose(out, x, atol=1e-5)


def _reference_att(x, record_len, affine):
    """Per-sample loop: warp, full self-attention across agents per cell, keep ego row."""
    outs, start = [], 0
    for b, n in enumerate(record_len.tolist()):
        feats = warp_affine_simple(x[start:start + n], affine[b, 0, :n], x.shape[-2:])  # (n, C, H, W)
        start += n
        c, h, w = feats.shape[1:]
        v = feats.reshape(n, c, -1).permute(2, 0, 1)  # (HW, n, C)
        attn = torch.softmax(v @ v.transpose(1, 2) / math.sqrt(c), dim=-1)  # (HW, n, n)
        ctx = (attn @ v).permute(1, 2, 0).reshape(n, c, h, w)
        outs.append(ctx[0])
    return torch.stack(outs)


def test_att_batched_matches_per_sample_reference():
    g = torch.Generator().manual_seed(0)
    record_len = torch.tensor([2, 3])
    x = torch.randn(5, 4, 16, 32, generator=g)
    pairwise = torch.eye(4, dtype=torch.float64).repeat(2, 5, 5, 1, 1)
    pairwise[0, :2, :2] = _pairwise([torch.eye(4, dtype=torch.float64), _tfm(30, 2.0, 1.0)])[0]
    pairwise[1, :3, :3] = _pairwise([_tfm(10, 1, 1), _tfm(-45, 3.0, -2.0), _tfm(180, -4.0, 0.5)])[0]
    affine = normalize_pairwise_tfm(pairwise, RANGE_H, RANGE_W, 1).float()
    out = _fuse(AttFusion(channels=4), x, record_len, affine)
    assert out.shape == (2, 4, 16, 32)
    assert torch.allclose(out, _reference_att(x, record_len, affine), atol=1e-5)


def test_max_ignores_absent_agents():
    x = -torch.ones(3, 2, 4, 8)
    affine = normalize_pairwise_tfm(torch.eye(4).repeat(2, 5, 5, 1, 1), 4.0, 8.0, 1)
    out = _fuse(MaxFusion(), x, torch.tensor([1, 2]), affine)
    assert torch.equal(out, -torch.ones(2, 2, 4, 8))  # padded slots must not contribute zeros
