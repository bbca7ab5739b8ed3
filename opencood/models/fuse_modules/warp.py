"""Resample BEV maps with normalised affine matrices (``F.affine_grid`` + ``grid_sample``)."""
import torch
import torch.nn.functional as F


def warp_affine_simple(src, M, dsize, mode="bilinear", padding_mode="zeros", align_corners=False):
    """Warp each map by its affine matrix.

    ``M[n]`` maps normalised output coordinates (x along W, y along H, both in [-1, 1]) to normalised input
    coordinates. To bring agent j's map into the ego frame use ``M = normalize(T_{j<-ego})``, i.e. entry
    ``[b, 0, j]`` of ``normalize_pairwise_tfm(pairwise_t_matrix)`` (``pairwise_t_matrix[b, i, j] = T_{j<-i}``).

    Args:
        src: (N, C, H, W) maps.
        M: (N, 2, 3) affine matrices.
        dsize: (H_out, W_out).

    Returns:
        (N, C, H_out, W_out) warped maps; cells sampled from outside ``src`` are zero.
    """
    n, c = src.shape[:2]
    grid = F.affine_grid(M.to(src.dtype), [n, c, int(dsize[0]), int(dsize[1])],
                         align_corners=align_corners)  # (N, H_out, W_out, 2)
    return F.grid_sample(src, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)


def agent_batch_index(record_len, total=None):
    """Sample index and index within the sample of every agent.

    Args:
        record_len: (B,) long, agents per sample (ego first in each sample).
        total: N = record_len.sum() when the caller knows it (saves a device-to-host sync on GPU).

    Returns:
        sample_idx (N,) long, local_idx (N,) long.
    """
    record_len = record_len.long()
    sample_idx = torch.repeat_interleave(torch.arange(record_len.numel(), device=record_len.device), record_len,
                                         output_size=total)
    starts = torch.cumsum(record_len, 0) - record_len  # (B,)
    local_idx = torch.arange(sample_idx.numel(), device=record_len.device) - starts[sample_idx]
    return sample_idx, local_idx


def warp_to_ego_padded(x, record_len, affine_matrix):
    """Warp every agent's map into its sample's ego frame and pad the agents to a dense tensor.

    Args:
        x: (N, C, H, W) agent maps, samples concatenated in ``record_len`` order, ego first.
        record_len: (B,) long.
        affine_matrix: (B, L, L, 2, 3) normalised pairwise affines (``[b, i, j]`` from T_{j<-i}).

    Returns:
        warped (B, L', C, H, W) with L' = max(record_len) on CPU, L on CUDA (absent agents zero), and
        mask (B, L') bool.
    """
    n, c, h, w = x.shape
    sample_idx, local_idx = agent_batch_index(record_len, total=n)
    m = affine_matrix[sample_idx, 0, local_idx]  # (N, 2, 3): T_{j<-ego} per agent j
    warped = warp_affine_simple(x, m, (h, w))  # (N, C, H, W) in the ego frame
    # On a GPU, pad to the matrix's L (max_cav) instead of reading max(record_len) back to the host (a sync);
    # the extra rows are masked, so the fused result is the same.
    n_max = int(record_len.max()) if not record_len.is_cuda else affine_matrix.shape[1]
    b = record_len.numel()
    padded = warped.new_zeros(b, n_max, c, h, w)  # warped dtype: grid_sample runs in fp32 under autocast
    padded[sample_idx, local_idx] = warped
    mask = torch.arange(n_max, device=x.device).view(1, -1) < record_len.view(-1, 1)  # (B, L')
    return padded, mask
