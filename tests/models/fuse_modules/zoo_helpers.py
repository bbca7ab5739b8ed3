"""Helpers of the zoo method tests: a real collated batch of the tiny synthetic world, a few optimiser steps."""
import torch

from opencood.data_utils.datasets import build_dataset
from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.tools.train_utils import create_loss, create_model


def tiny_batch(config_path, n=2, idx=0):
    """(hypes, dataset, batch) of ``n`` training samples of a config pointed at the tiny world."""
    hypes = load_yaml(config_path)
    ds = build_dataset(hypes, visualize=False, train=True)
    samples = [ds[idx + i] for i in range(n)]
    return hypes, ds, ds.collate_batch_train(samples)


def fit_steps(hypes, batch, steps=8, lr=2e-3, seed=0):
    """Build model + loss, take ``steps`` Adam steps on one batch; returns (model, criterion, losses, output)."""
    torch.manual_seed(seed)
    model, criterion = create_model(hypes), create_loss(hypes)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses, out = [], None
    for _ in range(steps):
        out = model(batch["ego"])
        total, _ = criterion.loss_and_terms(out, batch["ego"])
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(float(total.detach()))
    return model, criterion, losses, out
