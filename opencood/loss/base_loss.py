"""What the trainer may ask of any loss (``loss.core_method``), declared here with defaults."""
from collections import OrderedDict

import torch.nn as nn


class Criterion(nn.Module):
    """Base class of every registered loss.

    ``forward(output_dict, target_dict, suffix='') -> total`` stays HEAL's call (a scalar tensor), so user
    scripts that do ``loss = criterion(out, batch['ego']['label_dict'])`` keep working.
    :meth:`loss_and_terms` is what the trainer uses: it gets the whole ``batch['ego']`` and returns the
    total and its named terms, all as tensors (no host-device sync).

    Subclasses implement :meth:`loss_terms`; ``TB_NAMES`` maps term names to tensorboard scalar names.
    """

    TB_NAMES = OrderedDict()

    def __init__(self):
        super().__init__()
        self.loss_tensors = {}

    def loss_terms(self, output_dict, target_dict, suffix=""):
        """Ordered dict ``{term name: scalar tensor}`` (weighted and normalised)."""
        raise NotImplementedError

    def forward(self, output_dict, target_dict, suffix=""):
        terms = self.loss_terms(output_dict, target_dict, suffix)
        total = sum(terms.values())
        self.loss_tensors[f"total_loss{suffix}"] = total.detach()
        self.loss_tensors.update({f"{k}{suffix}": v.detach() for k, v in terms.items()})
        return total

    def loss_and_terms(self, output_dict, batch):
        """``(total, terms)`` of one batch.

        Args:
            output_dict: model output.
            batch: ``batch['ego']`` (labels in ``label_dict``).

        Returns:
            total scalar tensor and an ordered dict of detached 0-d tensors ``total_loss`` + every term.
        """
        self.loss_tensors = {}
        total = self(output_dict, batch["label_dict"])
        return total, OrderedDict(self.loss_tensors)

    @property
    def loss_dict(self):
        """The last values of every term as Python floats (reading them waits for the device)."""
        return {k: float(v) for k, v in self.loss_tensors.items()}
