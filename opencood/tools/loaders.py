"""Every DataLoader of the project, built in one place.

Kinds:
- ``train``: shuffled, ``drop_last``, the dataset's ``collate_batch_train``. The order of epoch e depends
  only on (seed, e): a :class:`EpochRandomSampler` (its own generator, reseeded by ``set_epoch``) or, in a
  distributed run, a ``DistributedSampler`` (``set_epoch`` too). Drawing from the global RNG instead would
  tie the order to whatever else used it (persistent workers draw their base seed only once), so a resumed
  run would differ. The benchmark times this loader: it is what the model sees in training.
- ``val``: in order, every sample, the validation dataset's own ``collate_batch_train``.
- ``test``: batch size 1, in order, the dataset's ``collate_batch_test`` (inference).

All kinds: ``worker_init_fn=dataloader_worker_init`` (one thread per worker), ``pin_memory`` on CUDA;
``train`` and ``val`` keep their workers between epochs (``persistent_workers``).
"""
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from opencood.tools.train_utils import dataloader_worker_init

KINDS = ("train", "val", "test")


def epoch_seed(seed, epoch):
    """Seed of epoch ``epoch`` of a run started with ``seed`` (shuffle order, dataset draws)."""
    return seed * 100003 + epoch


class EpochRandomSampler(RandomSampler):
    """RandomSampler whose permutation of epoch e comes from a generator seeded with ``epoch_seed(seed, e)``.

    Args:
        dataset: the dataset.
        seed: run seed.
    """

    def __init__(self, dataset, seed=0):
        super().__init__(dataset, generator=torch.Generator())
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch):
        """Same interface as ``DistributedSampler.set_epoch``: call before iterating epoch ``epoch``."""
        self.generator.manual_seed(epoch_seed(self.seed, epoch))


def build_loader(dataset, kind, batch_size=1, num_workers=0, device=None, seed=0, rank=None, world=1):
    """One DataLoader of kind ``train``, ``val`` or ``test`` (see the module docstring).

    Args:
        dataset: a fusion dataset (``collate_batch_train`` / ``collate_batch_test``).
        kind: one of :data:`KINDS`.
        batch_size: samples per batch (``test`` always uses 1).
        num_workers: DataLoader worker processes (0: load in the main process).
        device: where the batches go; pinned host memory when it is a CUDA device.
        seed: run seed (``train``: shuffle order per epoch).
        rank, world: this process's rank and the number of processes of a distributed run (``train`` then
            uses a DistributedSampler); rank None: not distributed.

    Returns:
        the DataLoader; ``loader.sampler.set_epoch(e)`` before each training epoch.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown loader kind '{kind}'; known: {', '.join(KINDS)}")
    kw = dict(num_workers=num_workers, worker_init_fn=dataloader_worker_init,
              pin_memory=device is not None and torch.device(device).type == "cuda")
    if kind == "test":
        return DataLoader(dataset, batch_size=1, shuffle=False, collate_fn=dataset.collate_batch_test, **kw)
    kw.update(persistent_workers=num_workers > 0, prefetch_factor=2 if num_workers > 0 else None)
    if kind == "val":
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=False,
                          collate_fn=dataset.collate_batch_train, **kw)
    sampler = EpochRandomSampler(dataset, seed) if rank is None else \
        DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True,
                      collate_fn=dataset.collate_batch_train, **kw)


def build_loaders(train_set, val_set, batch_size, num_workers=0, device=None, seed=0, rank=None, world=1):
    """The training and validation loaders of a run: ``(train_loader, val_loader)``.

    Each loader collates with its own dataset (the validation set's ``collate_batch_train``); arguments as
    :func:`build_loader`.
    """
    train = build_loader(train_set, "train", batch_size, num_workers, device, seed, rank, world)
    val = build_loader(val_set, "val", batch_size, num_workers, device)
    return train, val
