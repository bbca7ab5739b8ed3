"""Communication volume: the bytes each collaborator sends to the ego, counted the same way for every method.

Units: **bytes** (1 B = 8 bit; 1 MB = 10^6 B; papers that plot "log2 of the volume" usually mean log2 of bytes,
some of bits: log2(bits) = log2(bytes) + 3). Who counts: every agent of the sample except the ego (the ego
sends nothing to itself); a frame with k collaborators contributes k values. The reported figure is the mean
over all (frame, collaborator) pairs of the test set, and its log2. See ``docs/communication.md``.

Message kinds (one function each, all return bytes as an int):

* dense feature map (intermediate fusion): C x H x W values at the map's dtype, or at ``message_bits`` bits
  (output key set by ``model.args.comm_degradation.bits``) + 8 bytes of bounds (:func:`dense_bytes`);
* masked / sparse map (Where2comm-style): kept cells x C values at the dtype + the cheaper of a 1-bit-per-cell
  mask or one cell index per kept cell (:func:`sparse_bytes`);
* codebook indices: cells x codes per cell x ceil(log2(codebook size)) bits, rounded up to bytes
  (:func:`codebook_bytes`; :func:`codebook_bits_per_cell` per cell); with a ``comm_mask`` only the kept
  cells' indices + their positions (:func:`masked_codebook_bytes`);
* late fusion: 7 box floats + 1 score = 8 float32 per box (:func:`boxes_bytes`);
* early fusion: 4 float32 (x, y, z, intensity) per point (:func:`points_bytes`).

What a method sends is read from its output dict (:func:`collaborator_bytes`), in this order:
``codebook_indices`` (N, K, H, W) integer codes with ``codebook_size`` (int); else the transmitted maps:
``comm_maps`` (a list of (N, C_l, H_l, W_l), one per scale, set by models whose message is not the fused
map's shape: CoAlign's multi-scale fusion sends every level, Pyramid Fusion its level-0 map), else
``message`` (N, C', H, W) (GenComm's message), else the fused feature map (B, C, H, W) = one map per agent.
``comm_mask`` (N, 1, H, W) (fusion ``aux`` of masked methods: 1 = cell sent) makes those maps sparse: at a
coarser level the kept cells are the mask max-pooled to its size (as Where2comm fuses them), and only the
level-0 mask's positions are paid for (the receiver max-pools it itself).
"""
import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F

POINT_FLOATS = 4  # x, y, z, intensity
BOX_FLOATS = 8  # x, y, z, h, w, l, yaw + score
FLOAT32_BYTES = 4


def dtype_bytes(dtype):
    """Bytes of one element of a torch dtype (float32 -> 4, float16/bfloat16 -> 2, bool/uint8 -> 1)."""
    return torch.empty((), dtype=dtype).element_size()


QUANT_BOUNDS_BYTES = 8  # a quantised message also carries its float32 min and max


def dense_bytes(channels, height, width, dtype=torch.float32, bits=None):
    """A dense (C, H, W) map: C * H * W * element size; quantised to ``bits`` bits per value
    (``comm_degradation.bits``): ceil(C * H * W * bits / 8) + 8 bytes of float32 bounds."""
    if bits is not None:
        return math.ceil(int(channels) * int(height) * int(width) * int(bits) / 8) + QUANT_BOUNDS_BYTES
    return int(channels) * int(height) * int(width) * dtype_bytes(dtype)


def index_bytes(cells):
    """Bytes of one cell index on a grid of ``cells`` cells: ceil(ceil(log2(cells)) / 8) (at least 1)."""
    return max(1, math.ceil(math.ceil(math.log2(max(int(cells), 2))) / 8))


def sparse_bytes(kept, channels, height, width, dtype=torch.float32):
    """A masked map: ``kept`` cells of C values + where they are.

    The position overhead is the cheaper of a bitmask (ceil(H * W / 8) bytes) and one index per kept cell
    (``kept * index_bytes(H * W)``); nothing is sent (0 bytes) when no cell is kept.
    """
    kept = int(kept)
    if kept == 0:
        return 0
    return kept * int(channels) * dtype_bytes(dtype) + position_bytes(kept, height, width)


def position_bytes(kept, height, width):
    """Where ``kept`` cells of an H x W map are: the cheaper of a bitmask (ceil(H * W / 8) bytes) and one
    index per kept cell."""
    return min(math.ceil(int(height) * int(width) / 8), int(kept) * index_bytes(int(height) * int(width)))


def codebook_bytes(cells, codes_per_cell, codebook_size):
    """Codebook indices: cells * codes per cell * ceil(log2(codebook size)) bits, rounded up to whole bytes."""
    return math.ceil(int(cells) * codebook_bits_per_cell(codes_per_cell, codebook_size) / 8)


def codebook_bits_per_cell(codes_per_cell, codebook_size):
    """Bits one cell's codebook message costs: codes per cell * ceil(log2(codebook size)) (CodeFilling's
    3 levels x 2 segments of 16 codewords: 24)."""
    return int(codes_per_cell) * max(1, math.ceil(math.log2(max(int(codebook_size), 2))))


def masked_codebook_bytes(kept, codes_per_cell, codebook_size, height, width):
    """Codebook indices of ``kept`` cells of an H x W map + their positions (the cheaper of a bitmask and one
    index per kept cell, as :func:`sparse_bytes`); 0 bytes when no cell is kept."""
    kept = int(kept)
    if kept == 0:
        return 0
    return codebook_bytes(kept, codes_per_cell, codebook_size) + position_bytes(kept, height, width)


def boxes_bytes(n_boxes):
    """Late fusion: 8 float32 (7 box parameters + score) per box."""
    return int(n_boxes) * BOX_FLOATS * FLOAT32_BYTES


def points_bytes(n_points):
    """Early fusion: 4 float32 (x, y, z, intensity) per point."""
    return int(n_points) * POINT_FLOATS * FLOAT32_BYTES


def _collaborator_rows(record_len):
    """Indices (into the N agents of a batch) of every non-ego agent: all but the first of each sample."""
    rows, start = [], 0
    for n in [int(v) for v in record_len]:
        rows.extend(range(start + 1, start + n))
        start += n
    return rows


def transmitted_maps(output):
    """The maps one agent hands to the others: ``comm_maps`` | [``message``] | [``fused_feature``].

    Returns:
        list of (N or B, C_l, H_l, W_l) tensors, level 0 first.
    """
    if output.get("comm_maps"):
        return list(output["comm_maps"])
    return [output["message"] if "message" in output else output["fused_feature"]]


def kept_cells(mask, size):
    """Cells of a (1, H, W) communication mask that are sent at a level of ``size`` = (H_l, W_l): the mask
    max-pooled to that size (Where2comm's rule), counted where > 0."""
    if tuple(mask.shape[-2:]) != tuple(size):
        mask = F.adaptive_max_pool2d(mask.float(), tuple(size))
    return int((mask > 0).sum().item())


def masked_maps_bytes(mask, maps, dtype):
    """Bytes of one agent's masked multi-level message.

    Args:
        mask: (1, H0, W0) the agent's level-0 communication mask (1 = cell sent).
        maps: [(C_l, H_l, W_l)] shapes of the levels it sends, level 0 first.
        dtype: element dtype of the values.

    Returns:
        level 0 as :func:`sparse_bytes` (values + the cheaper position encoding) + for every other level its
        kept cells x C_l values (positions follow from the level-0 mask).
    """
    c0, h0, w0 = maps[0]
    total = sparse_bytes(kept_cells(mask, (h0, w0)), c0, h0, w0, dtype)
    for c, h, w in maps[1:]:
        total += kept_cells(mask, (h, w)) * int(c) * dtype_bytes(dtype)
    return total


def intermediate_bytes(output, record_len):
    """Per-collaborator bytes of an intermediate-fusion forward (see the module docstring for the keys).

    Args:
        output: the model's output dict for a batch (``fused_feature`` (B, C, H, W) and optional
            ``codebook_indices`` + ``codebook_size``, ``comm_maps`` [(N, C_l, H_l, W_l)], ``message``
            (N, C', H, W), ``comm_mask`` (N, 1, H, W), ``message_bits``).
        record_len: (B,) agents per sample, ego first.

    Returns:
        list of ints, one per non-ego agent in batch order.

    ``message_bits`` (quantised messages, ``comm_degradation.bits``) applies to the level-0 map, the tensor
    the degradation acts on; further levels count at their dtype.
    """
    rows = _collaborator_rows(record_len)
    if "codebook_indices" in output:
        codes = output["codebook_indices"]  # (N, K, H, W)
        k, h, w = codes.shape[1:]
        if "comm_mask" in output:  # only the kept cells' indices travel, plus where they are
            mask = output["comm_mask"]  # (N, 1, H, W)
            return [masked_codebook_bytes(kept_cells(mask[i], (h, w)), k, output["codebook_size"], h, w)
                    for i in rows]
        return [codebook_bytes(h * w, k, output["codebook_size"]) for _ in rows]
    maps = transmitted_maps(output)  # [(N|B, C_l, H_l, W_l)]
    shapes = [tuple(m.shape[1:]) for m in maps]
    dtype = maps[0].dtype
    if "comm_mask" in output:
        mask = output["comm_mask"]  # (N, 1, H, W)
        return [masked_maps_bytes(mask[i], shapes, dtype) for i in rows]
    bits = output.get("message_bits")
    per_agent = dense_bytes(*shapes[0], dtype, bits) + sum(dense_bytes(*s, m.dtype) for s, m in
                                                          zip(shapes[1:], maps[1:]))
    return [per_agent for _ in rows]


def late_bytes(batch, outputs, post_processor):
    """Per-collaborator bytes of late fusion: each non-ego agent's own detections (after its score threshold
    and NMS, inside the ego's GT range), 8 float32 each.

    Args:
        batch: the late-fusion test batch ``{'ego': ..., cav_id: ...}``.
        outputs: ``{cav_id: model output}`` of the same keys.
        post_processor: the dataset's post-processor (``post_process(batch, outputs)``).
    """
    sizes = []
    for cav_id in batch:
        if cav_id == "ego":
            continue
        boxes, _ = post_processor.post_process({cav_id: batch[cav_id]}, {cav_id: outputs[cav_id]})
        sizes.append(boxes_bytes(0 if boxes is None else boxes.shape[0]))
    return sizes


def early_bytes(batch):
    """Per-collaborator bytes of early fusion from ``batch['ego']['points_per_agent']`` (ego first): the
    points each collaborator contributes to the ego's cloud (inside the ego's range), 4 float32 each."""
    counts = [int(n) for n in batch["ego"]["points_per_agent"]]
    return [points_bytes(n) for n in counts[1:]]


def collaborator_bytes(fusion_method, batch, outputs, post_processor=None):
    """Bytes each collaborator sends to the ego for one test batch.

    Args:
        fusion_method: ``intermediate`` | ``early`` | ``late`` | ``single`` | ``no`` (inference's ``-f``).
        batch: the collated test batch.
        outputs: ``{key: model output}`` of every forward of the batch (``'ego'`` for intermediate/early).
        post_processor: needed for ``late``.

    Returns:
        list of ints, one per collaborator (empty for ego-only evaluation).
    """
    if fusion_method in ("single", "no"):
        return []
    if fusion_method == "late":
        return late_bytes(batch, outputs, post_processor)
    if fusion_method == "early":
        return early_bytes(batch)
    return intermediate_bytes(outputs["ego"], batch["ego"]["record_len"])


class VolumeMeter:
    """Accumulates per-collaborator bytes over a test run; ``summary()`` gives the numbers the eval YAML gets."""

    def __init__(self):
        self.total, self.count, self.frames = 0, 0, 0

    def add(self, sizes):
        self.total += sum(sizes)
        self.count += len(sizes)
        self.frames += 1

    def summary(self):
        """``{comm_bytes_per_agent: mean bytes per collaborator per frame (0 without collaborators),
        comm_log2_bytes: its log2 (None when 0), comm_collaborators_per_frame: mean count}``."""
        mean = self.total / self.count if self.count else 0.0
        return {"comm_bytes_per_agent": float(mean),
                "comm_log2_bytes": float(math.log2(mean)) if mean > 0 else None,
                "comm_collaborators_per_frame": self.count / self.frames if self.frames else 0.0}


@contextmanager
def recording(model):
    """Collect the output dict of every forward of ``model`` in call order: ``with recording(m) as outs:``."""
    outs = []
    handle = model.register_forward_hook(lambda module, args, out: outs.append(out))
    try:
        yield outs
    finally:
        handle.remove()
