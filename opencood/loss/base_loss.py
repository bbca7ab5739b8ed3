"""What the trainer may ask of any loss (``loss.core_method``), declared here with defaults."""
from collections import OrderedDict

import torch.nn as nn


class Criterion(nn.Module):
    """Base class of every registered loss.

    ``forward(output_dict, target_dict, suffix='') -> total`` stays HEAL's call (a scalar tensor), so user
    scripts that do ``loss = criterion(out, batch['ego']['label_dict'])`` keep working.
    :meth:`loss_and_terms` is what the trainer uses: it gets the whole ``batch['ego']`` and returns the
    total and its named terms, all as tensors (no host-device sync).

    Subclasses implement :meth:`loss_terms`; ``TB_NAMES`` maps term names to tensorboard scalar names
    (subclasses extend it); :meth:`logging` prints and writes them.
    """

    TB_NAMES = OrderedDict()

    def __init__(self):
        super().__init__()
        self.loss_tensors = {}

    def loss_terms(self, output_dict, target_dict, suffix=""):
        """Ordered dict ``{term name: scalar tensor}`` (weighted and normalised)."""
        raise NotImplementedError

    def forward(self, output_dict, target_dict, suffix=""):
        """Total loss (scalar tensor); ``self.loss_tensors`` gets detached ``total_loss{suffix}`` and every term.

        Nothing here waits for the device, so a GPU step stays asynchronous until the caller reads a value.
        """
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

    def logging(self, epoch, batch_id, batch_len, writer=None, suffix=""):
        """Print one line with the last losses and write tensorboardX scalars (step = epoch*batch_len+batch_id)."""
        values = self.loss_dict
        parts = [f"[epoch {epoch}][{batch_id + 1}/{batch_len}]{suffix}",
                 f"Loss: {values.get(f'total_loss{suffix}', 0.0):.4f}"]
        for key, name in self.TB_NAMES.items():
            value = values.get(f"{key}{suffix}")
            if value is None:
                continue
            parts.append(f"{key.replace('_loss', '')}: {value:.4f}")
            if writer is not None:
                writer.add_scalar(f"{name}{suffix}", value, epoch * batch_len + batch_id)
        print(" || ".join(parts))
