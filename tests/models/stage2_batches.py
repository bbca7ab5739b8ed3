"""Test helper for the stage-2 heterogeneous baselines (CodeFilling, MPDA): a small four-type LiDAR model
section (16-channel 8 x 16 maps) and random batches of 1..4 agents of types m1..m4, ego first."""
import copy

import torch

from tests.models.test_heter_model_baseline import ARGS, pairwise_identityish, random_voxels

TYPES = ("m1", "m2", "m3", "m4")


def four_type_args(**extra):
    """``model.args`` with m1..m4 (m1/m3 BaseBEVBackbone, m2/m4 identity backbone), AttFuse, C = 16."""
    args = copy.deepcopy(ARGS)
    args["m3"] = copy.deepcopy(args["m1"])
    args["m3"]["backbone_args"]["num_filters"] = [8, 16]
    args["m3"]["shrink_header"]["input_dim"] = 24
    args["m3"]["backbone_args"]["num_upsample_filter"] = [12, 12]
    args["m4"] = copy.deepcopy(args["m2"])
    args.update(copy.deepcopy(extra))
    return args


def batch_of(types_per_sample, seed=0):
    """Batch whose sample b holds agents of ``types_per_sample[b]`` (ego first), every type's voxels random."""
    g = torch.Generator().manual_seed(seed)
    order = [t for sample in types_per_sample for t in sample]
    batch = {f"inputs_{m}": random_voxels(order.count(m), g) for m in TYPES if m in order}
    batch.update({"agent_modality_list": order, "record_len": torch.tensor([len(s) for s in types_per_sample]),
                  "pairwise_t_matrix": pairwise_identityish(len(types_per_sample))})
    return batch


def random_labels(b, seed=0, h=8, w=16, anchors=2):
    """A label_dict for (B, 8, 16) maps with a few positive anchors."""
    g = torch.Generator().manual_seed(seed)
    pos = (torch.rand(b, h, w, anchors, generator=g) > 0.97).float()
    neg = 1.0 - pos
    return {"pos_equal_one": pos, "neg_equal_one": neg, "targets": torch.randn(b, h, w, 7 * anchors, generator=g),
            "anchor_box": torch.zeros(h, w, anchors, 7)}


LOSS_ARGS = {"pos_cls_weight": 2.0, "cls": {"alpha": 0.25, "gamma": 2.0, "weight": 2.0},
             "reg": {"sigma": 3.0, "weight": 2.0}}


def frozen_snapshot(model, trainable):
    """Clones of every state tensor (parameters and buffers) outside the ``trainable`` top-level modules."""
    return {k: v.clone() for k, v in model.state_dict().items() if k.split(".")[0] not in trainable}
