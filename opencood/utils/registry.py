"""Explicit name -> builder registries for every ``core_method`` a YAML can name.

Each registry knows the package whose modules register into it; the first lookup imports every
module of that package, so adding a file with ``@MODELS.register("my_model")`` is all it takes.
Unknown names fail at start with the list of known names (no implicit class-name guessing).
"""
import importlib
import pkgutil

from opencood.utils.errors import ConfigError


class Registry:
    """Case-insensitive mapping from YAML names to classes or functions.

    Args:
        kind: what the name configures, used in error messages (e.g. ``"model.core_method"``).
        package: dotted package whose sub-modules register into this registry (imported lazily).
    """

    def __init__(self, kind, package=None):
        self.kind = kind
        self.package = package
        self._items = {}
        self._imported = package is None

    def register(self, *names):
        """Decorator: register the object under each of ``names`` (default: its ``__name__``)."""

        def deco(obj):
            for name in names or (obj.__name__,):
                key = name.lower()
                if key in self._items and self._items[key] is not obj:
                    raise ValueError(f"{self.kind}: '{name}' registered twice")
                self._items[key] = obj
            return obj

        return deco

    def _import_all(self):
        if self._imported:
            return
        self._imported = True
        pkg = importlib.import_module(self.package)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=self.package + "."):
            importlib.import_module(info.name)

    def names(self):
        self._import_all()
        return sorted(self._items)

    def __contains__(self, name):
        self._import_all()
        return str(name).lower() in self._items

    def get(self, name, source="config"):
        """Return the object registered as ``name``.

        Raises:
            ConfigError: ``"<source>: unknown <kind> '<name>'; known: ..."`` (one line).
        """
        self._import_all()
        key = str(name).lower()
        if key not in self._items:
            raise ConfigError(
                f"{source}: unknown {self.kind} '{name}'; known: {', '.join(self.names())}")
        return self._items[key]


MODELS = Registry("model.core_method", "opencood.models")
LOSSES = Registry("loss.core_method", "opencood.loss")
FUSION_MODULES = Registry("model.args.fusion_method", "opencood.models.fuse_modules")
ENCODERS = Registry("encoder core_method", "opencood.models.sub_modules")
ADAPTERS = Registry("model.args.mX.adapter.core_method", "opencood.models.sub_modules")  # STAMP adapters
DATASETS = Registry("fusion.core_method", "opencood.data_utils.datasets")
BASE_DATASETS = Registry("fusion.dataset", "opencood.data_utils.datasets")
PREPROCESSORS = Registry("preprocess.core_method", "opencood.data_utils.pre_processor")
POSTPROCESSORS = Registry("postprocess.core_method", "opencood.data_utils.post_processor")
