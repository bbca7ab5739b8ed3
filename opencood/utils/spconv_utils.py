"""Single import point for ``spconv`` (sparse 3D convolutions used by SECOND).

spconv 2.x asks ``torch.cuda.current_stream()`` for a stream handle even when it runs its CPU kernels
(e.g. in the backward pass), which fails on machines without CUDA. :func:`import_spconv` patches the
stream getter to return the null stream in that case, so SECOND trains and tests on CPU.
"""
import importlib

import torch

from opencood.utils.errors import ConfigError

_PATCHED_MODULES = ("spconv.pytorch.ops", "spconv.pytorch.hash")


def _null_stream():
    """Stream handle 0 (the default stream); what spconv's CPU kernels expect."""
    return 0


def import_spconv(source="model.args"):
    """Import and return ``spconv.pytorch``, CPU-patched when CUDA is unavailable.

    Args:
        source: config location that asked for spconv, used in the error message.

    Returns:
        module: ``spconv.pytorch`` (``SubMConv3d``, ``SparseConv3d``, ``SparseConvTensor``, ...).

    Raises:
        ConfigError: one line naming ``source`` when spconv is not installed.
    """
    try:
        spconv = importlib.import_module("spconv.pytorch")
    except ImportError as exc:
        raise ConfigError(
            f"{source}: the 'second' encoder needs spconv 2.x (pip install spconv, or spconv-cu12x on "
            f"GPU machines): {exc}") from None
    if not torch.cuda.is_available():
        for name in _PATCHED_MODULES:
            module = importlib.import_module(name)
            if hasattr(module, "get_current_stream"):
                module.get_current_stream = _null_stream
    return spconv


def spconv_has_cuda():
    """True when the installed spconv/cumm build has CUDA kernels (``spconv-cu12x``), False for ``spconv``."""
    import_spconv()
    from cumm import tensorview

    return not tensorview.is_cpu_only()
