"""What the trainer, inference and checkpoint tools may ask of any model (declared here, with defaults).

Every registered model derives from :class:`CooperativeModel`; the tools call these hooks directly instead
of probing attributes with ``hasattr``. A model overrides only what it needs.
"""
import torch.nn as nn


class CooperativeModel(nn.Module):
    """Base class of every ``model.core_method``.

    ``forward(data_dict=batch['ego']) -> output_dict`` as documented in docs/architecture.md.
    """

    def required_prefixes(self):
        """State-dict prefixes a checkpoint must provide; ``()`` means the whole state dict (strict load).

        A model trained from a partial checkpoint (GenComm stage 2 from a merged stage-1 file) lists the
        prefixes of its frozen modules; the loader then accepts missing keys outside them.
        """
        return ()

    def check_state_dict(self, state_dict, source="checkpoint"):
        """Extra checks of a checkpoint before loading (raise CheckpointError); default none."""

    @property
    def has_unused_parameters(self):
        """True when a batch may leave trainable parameters without gradient (DDP find_unused_parameters)."""
        return False

    def model_train_init(self):
        """Called by the trainer after ``model.train()`` at the start of every epoch (re-freeze modules)."""

    def trainable_parameter_count(self):
        """Number of parameters with ``requires_grad``."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @classmethod
    def feature_chain(cls, args, source="config"):
        """Check the channel/stride chain of ``model.args`` without building modules (the loader calls it
        right after resolving, so a disagreement stops at load). Default: nothing to check (None)."""
        return None

    def training_step(self, batch, criterion, forward=None):
        """Forward + loss of one collated training batch: ``(total loss, {term: 0-d tensor})``.

        Override for methods that need more than ``criterion(model(batch))`` (a frozen teacher for
        knowledge distillation, adapter stages); the trainer, DDP trainer and benchmark all call this.

        Args:
            batch: collated batch on the model's device (``batch['ego']`` holds inputs and labels).
            criterion: the loss module (:class:`opencood.loss.base_loss.Criterion`).
            forward: the callable that runs this model's forward (the DDP wrapper under DDP, so gradients
                are synchronised); None = ``self``.
        """
        output = (forward or self)(batch["ego"])
        return criterion.loss_and_terms(output, batch["ego"])
