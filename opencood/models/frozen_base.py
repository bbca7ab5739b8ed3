"""Freezing shared by the stage-2 models (GenComm stage 2, BackAlign): every top-level child not named in
``trainable_modules`` is frozen, stays in eval mode for the whole run (BatchNorm statistics fixed, where the
reference let the trainer's per-epoch ``model.train()`` make them drift) and must come from the merged
stage-1 checkpoint."""
from opencood.utils.errors import CheckpointError


class FrozenBaseMixin:
    """Freezing shared by the stage-2 baselines: ``self.trainable_modules`` names the top-level children
    that learn; every other child is frozen (``requires_grad`` off, always eval mode) and must come from
    the merged stage-1 checkpoint."""

    trainable_modules = ()
    # the end of the one-line error for a merged checkpoint that lacks a frozen module
    MISSING_MODULE_HINT = ("stage 2 freezes that module and needs it from the stage-1 runs "
                           "(merge_and_save them first)")

    def freeze_all_but_trainable(self):
        """Switch ``requires_grad`` off outside ``trainable_modules`` and put the frozen children in eval."""
        for name, param in self.named_parameters():
            param.requires_grad_(name.split(".", 1)[0] in self.trainable_modules)
        self.train(self.training)

    def train(self, mode=True):
        """Set train/eval mode; frozen modules always stay in eval mode (BatchNorm stats fixed)."""
        super().train(mode)
        for name, child in self.named_children():
            if name not in self.trainable_modules:
                child.eval()
        return self

    def model_train_init(self):
        """Called by the trainer after ``model.train()``: re-applies the frozen modules' eval mode."""
        self.train(True)

    def required_prefixes(self):
        """State-dict prefixes the merged checkpoint must provide: every frozen module with parameters."""
        return [f"{name}." for name, child in self.named_children()
                if name not in self.trainable_modules and any(True for _ in child.parameters())]

    def check_state_dict(self, state_dict, source="checkpoint"):
        """Refuse a checkpoint without a module this model freezes.

        Args:
            state_dict: the merged checkpoint's state_dict.
            source: file name used in the error message.

        Raises:
            CheckpointError: one line naming the file and the first missing prefix.
        """
        for prefix in self.required_prefixes():
            if not any(key.startswith(prefix) for key in state_dict):
                raise CheckpointError(f"{source}: no '{prefix}*' keys; {self.MISSING_MODULE_HINT}")
