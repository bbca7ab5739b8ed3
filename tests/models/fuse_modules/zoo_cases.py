"""Shared checks of the zoo's fusion methods on the tiny synthetic world (a real dataset batch)."""
import glob
import os

import torch
import yaml

from opencood.data_utils.datasets import build_dataset
from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.tools import inference, train_utils, trainer

ZOO = "opencood/hypes_yaml/demo/zoo"


def tiny_batch(make_tiny_config, name, batch_size=2, **overrides):
    """(hypes, model, criterion, batch) of ``demo/zoo/<name>.yaml`` on the tiny world, batch of 2 samples."""
    hypes = load_yaml(make_tiny_config(f"{ZOO}/{name}.yaml", batch_size=batch_size), overrides=overrides or None)
    torch.manual_seed(0)
    model, criterion = train_utils.create_model(hypes), train_utils.create_loss(hypes)
    dataset = build_dataset(hypes, visualize=False, train=True)
    samples = [dataset[i] for i in range(batch_size)]
    batch = dataset.device_preprocess(train_utils.to_device(dataset.collate_batch_train(samples), "cpu"))
    return hypes, model, criterion, batch


def check_forward_backward(model, criterion, batch, channels=64, size=(32, 64)):
    """Finite outputs of the right shape and finite, non-zero gradients into fusion_net."""
    model.train()
    total, _ = model.training_step(batch, criterion)
    out = model(batch["ego"])
    b = batch["ego"]["record_len"].numel()
    assert out["fused_feature"].shape == (b, channels, *size)
    assert out["cls_preds"].shape == (b, 2, *size)
    assert torch.isfinite(out["fused_feature"]).all() and torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.fusion_net.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert int(batch["ego"]["record_len"].max()) > 1  # the batch really has collaborators


def loss_falls(hypes, model, criterion, batch, steps=6, factor=0.8):
    """A few Adam steps on one batch lower the loss by ``factor``."""
    ctx = trainer.make_train_context(hypes, model, criterion, torch.device("cpu"))
    model.train()
    first = float(trainer.train_step(ctx, batch)[0])
    for _ in range(steps - 1):
        last = float(trainer.train_step(ctx, batch)[0])
    assert last < factor * first, (first, last)


def train_and_infer(make_tiny_config, name, tmp_path):
    """One epoch through the training CLI, then inference with --fusion_method intermediate: AP file written."""
    cfg = make_tiny_config(f"{ZOO}/{name}.yaml", epoches=1, batch_size=2, eval_freq=1, save_freq=1)
    opt = trainer.build_parser().parse_args(["-y", cfg, "--log_root", str(tmp_path / "logs"), "--num_workers",
                                             "0", "--skip_test"])
    run_dir = trainer.run(opt)
    assert os.path.isfile(os.path.join(run_dir, "net_epoch1.pth"))
    inference.main(["--model_dir", run_dir, "--fusion_method", "intermediate", "--num_workers", "0",
                    "--max_frames", "2"])
    result = glob.glob(os.path.join(run_dir, "eval_global_sort_intermediate_*.yaml"))
    assert len(result) == 1
    assert 0.0 <= float(yaml.safe_load(open(result[0]))["ap_50"]) <= 1.0
    return run_dir
