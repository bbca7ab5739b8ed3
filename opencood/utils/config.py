"""Typed config declarations: every component says which YAML keys it reads, their types and defaults.

A component built from a YAML section declares a :class:`Schema` as the class attribute ``CONFIG``
(Detectron2's ``from_config`` idea, made declarative)::

    class PillarVFE(nn.Module):
        CONFIG = Schema({
            "use_norm": Key(bool, True, "BatchNorm after the linear layer"),
            "num_filters": Key(list, [64], "output channels of each PFN layer"),
        })

        def __init__(self, args, ...):
            cfg = self.CONFIG.parse(args, "model.args.m1.encoder_args.pillar_vfe")
            self.use_norm = cfg.use_norm          # default filled in, type checked

The same declaration serves two purposes:

* :meth:`Schema.validate` walks a whole experiment config at load time (``yaml_utils.load_yaml``): a key
  that no component declares is a one-line :class:`ConfigError` naming the file, the full key path and the
  closest known key (``"did you mean 'generate_ego'?"``); a value of the wrong type names the key and the
  expected type. Keys that the reference repositories' YAMLs carry without any effect here are accepted
  from the explicit allow-list in :mod:`opencood.hypes_yaml.legacy_keys` and reported in one info line.
* :meth:`Schema.parse` gives a component its values with the declared defaults filled in (one place for
  each default).

Sections whose content depends on a sibling value (``model.args`` on ``model.core_method``, an encoder's
``encoder_args`` on its ``core_method``, the fusion section named by ``fusion_method``) use
``Key(dict, schema=callable)``: the callable gets the parent mapping and the value and returns the Schema
(or None for "not declared": accepted as is).
"""
import copy
import difflib
import fnmatch
import re

from opencood.utils.errors import ConfigError

REQUIRED = object()  # sentinel: the key must be given
ANY = object()  # sentinel type: any value


def type_name(kind):
    if kind is ANY:
        return "any value"
    if isinstance(kind, tuple):
        return " or ".join(type_name(k) for k in kind)
    return {float: "a number", int: "an integer", bool: "true/false", str: "a string", list: "a list",
            dict: "a mapping", type(None): "null"}.get(kind, getattr(kind, "__name__", str(kind)))


def _is_instance(value, kind):
    """YAML-aware isinstance: ints are numbers, bools are not ints, ``None`` only where allowed."""
    if kind is ANY:
        return True
    if isinstance(kind, tuple):
        return any(_is_instance(value, k) for k in kind)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is list:
        return isinstance(value, (list, tuple))
    return isinstance(value, kind)


class LookupFailed(Exception):
    """Raised by a ``Key.schema`` callable when the sibling value names nothing known (message = the reason)."""


class Key:
    """One declared key.

    Args:
        kind: expected type (``float`` accepts ints; a tuple of types; ``ANY``).
        default: value when the key is absent (``REQUIRED``: absence is an error). ``None`` values given in
            the YAML are accepted for keys whose default is None.
        doc: one-line meaning (units, frame).
        choices: allowed values (compared case-sensitively), or None.
        schema: a :class:`Schema` for a mapping value, or ``callable(parent_mapping, value) -> Schema | None``
            (None: the mapping is not declared by anyone and is accepted as is).
        each: for a mapping of free keys (``{m1: ..., m2: ...}``), the Key every value must satisfy.
        length: required list length, or None.
        low, high: inclusive bounds of a number (of every entry of a list), or None.
        items: the type every entry of a list must have (e.g. ``float`` for a list of numbers), or None.
        check: ``callable(value) -> str | None``: a further condition (e.g. ``min < max`` of a range); the
            returned text says what is wrong.
    """

    def __init__(self, kind=ANY, default=None, doc="", choices=None, schema=None, each=None, length=None,
                 low=None, high=None, items=None, check=None):
        self.kind, self.default, self.doc = kind, default, doc
        self.choices, self.schema, self.each, self.length = choices, schema, each, length
        self.low, self.high, self.items, self.extra_check = low, high, items, check

    @property
    def required(self):
        return self.default is REQUIRED

    def schema_for(self, parent, value=None):
        """The Schema of this key's mapping value (a callable schema gets the parent mapping and the value)."""
        if callable(self.schema) and not isinstance(self.schema, Schema):
            return self.schema(parent, value)
        return self.schema

    def _check_values(self, value, path, ctx):
        """``items`` type, ``low``/``high`` bounds and the ``check`` callable."""
        entries = list(value) if isinstance(value, (list, tuple)) else [value]
        if self.items is not None and isinstance(value, (list, tuple)):
            bad = [v for v in entries if not _is_instance(v, self.items)]
            if bad:
                ctx.fail(f"key '{path}' should be a list of {type_name(self.items)}s, got {bad[0]!r} in {value!r}")
        numbers = [v for v in entries if _is_instance(v, float)]
        if self.low is not None and any(v < self.low for v in numbers):
            ctx.fail(f"key '{path}' should be >= {self.low}, got {value!r}")
        if self.high is not None and any(v > self.high for v in numbers):
            ctx.fail(f"key '{path}' should be <= {self.high}, got {value!r}")
        if self.extra_check is not None:
            problem = self.extra_check(value)
            if problem:
                ctx.fail(f"key '{path}' {problem}, got {value!r}")

    def check(self, value, path, parent, ctx):
        """Type/choice check of ``value`` at ``path``, then recurse into its schema."""
        if value is None and (self.default is None or self.kind is ANY):
            return
        if not _is_instance(value, self.kind):
            ctx.fail(f"key '{path}' should be {type_name(self.kind)}, got {value!r}")
        if self.length is not None and len(value) != self.length:
            ctx.fail(f"key '{path}' should have {self.length} entries, got {value!r}")
        self._check_values(value, path, ctx)
        if self.choices is not None and value not in self.choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in self.choices], n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            ctx.fail(f"key '{path}' = {value!r} is not one of {', '.join(map(str, self.choices))}{hint}")
        try:
            schema = self.schema_for(parent, value)
        except LookupFailed as e:
            ctx.fail(str(e))
        if schema is not None and isinstance(value, dict):
            schema.validate(value, path, ctx)
        if self.each is not None and isinstance(value, dict):
            for k, v in value.items():
                self.each.check(v, f"{path}.{k}", value, ctx)


class Schema:
    """The declared keys of one config mapping.

    Args:
        keys: ``{name: Key}``.
        patterns: ``{regex: Key}`` for families of keys (``r"m\\d+"`` agent types); full match.
        open: accept undeclared keys (a mapping passed through to a library, e.g. optimizer kwargs).
        name: what the section configures (used in messages).
    """

    def __init__(self, keys=None, patterns=None, open=False, name=""):
        self.keys = dict(keys or {})
        self.patterns = [(re.compile(p), k) for p, k in (patterns or {}).items()]
        self.open = open
        self.name = name

    def extend(self, keys=None, patterns=None, open=None, name=None):
        """A new Schema with more keys (a subclass's config adds to its parent's)."""
        out = Schema(self.keys, None, self.open if open is None else open, name or self.name)
        out.patterns = list(self.patterns) + [(re.compile(p), k) for p, k in (patterns or {}).items()]
        out.keys.update(keys or {})
        return out

    def key_for(self, name):
        if name in self.keys:
            return self.keys[name]
        for pattern, key in self.patterns:
            if pattern.fullmatch(str(name)):
                return key
        return None

    def validate(self, node, path="", ctx=None):
        """Check a mapping against the declaration (recursively). Raises ConfigError (one line)."""
        ctx = ctx or Context()
        prefix = f"{path}." if path else ""
        for name, value in node.items():
            if str(name).startswith("_"):  # internal keys (_source, _base_ leftovers): never user keys
                continue
            full = f"{prefix}{name}"
            key = self.key_for(name)
            if key is None:
                if ctx.legacy(full, value):
                    continue
                if self.open:
                    continue
                ctx.unknown(full, name, self.keys)
            key.check(value, full, node, ctx)
        for name, key in self.keys.items():
            if key.required and name not in node:
                ctx.fail(f"missing key '{prefix}{name}'")

    def parse(self, node, path="", source="config"):
        """Validate ``node`` and return a :class:`Cfg` with the declared defaults filled in.

        Nested mappings with a static schema become nested Cfgs; other values are returned as given.
        """
        node = node or {}
        if not isinstance(node, dict):
            raise ConfigError(f"{source}: key '{path}' should be a mapping, got {node!r}")
        ctx = Context(source)
        self.validate(node, path, ctx)
        return self._fill(node, path)

    def _fill(self, node, path):
        values = {}
        for name, key in self.keys.items():
            if name in node:
                value = node[name]
                if isinstance(value, dict) and isinstance(key.schema, Schema):
                    value = key.schema._fill(value, f"{path}.{name}")
            elif key.required:
                continue
            elif isinstance(key.schema, Schema) and isinstance(key.default, dict):
                value = key.schema._fill(dict(key.default), f"{path}.{name}")
            else:
                value = _copy_default(key.default)
            values[name] = value
        for name, value in node.items():
            if name not in values:
                values[name] = value
        return Cfg(values, path)


def _copy_default(value):
    return copy.deepcopy(value) if isinstance(value, (list, dict)) else value


class Cfg(dict):
    """A parsed config section: a dict that also allows attribute access (``cfg.use_norm``)."""

    def __init__(self, values, path=""):
        super().__init__(values)
        self.__dict__["_path"] = path

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config section '{self.__dict__['_path']}' has no key '{name}'") from None

    def __setattr__(self, name, value):
        self[name] = value

    def __reduce__(self):
        """Pickle / deepcopy support (spawned DataLoader workers copy datasets holding parsed sections)."""
        return (Cfg, (dict(self), self.__dict__.get("_path", "")))


class Context:
    """Where validation reports to: the source file, the legacy allow-list, the ignored keys it met."""

    def __init__(self, source="config", legacy=None, legacy_values=None):
        self.source = source
        self.legacy_patterns = legacy if legacy is not None else _default_legacy()
        self.legacy_values = legacy_values if legacy_values is not None else _default_legacy_values()
        self.ignored = []

    def fail(self, message):
        raise ConfigError(f"{self.source}: {message}")

    def legacy(self, path, value=None):
        """True (and recorded) when ``path`` is an allow-listed key that has no effect here.

        A key whose allowed values are listed (``LEGACY_VALUES``: a name of what is always used here, e.g.
        the loss term types) must name one of them: another value would be silently ignored.
        """
        for pattern in self.legacy_patterns:
            if fnmatch.fnmatchcase(path, pattern):
                allowed = self.legacy_values.get(pattern)
                if allowed is not None and value not in allowed:
                    self.fail(f"key '{path}' = {value!r} is not implemented; only {', '.join(map(str, allowed))} "
                              f"(what is always used here)")
                self.ignored.append(path)
                return True
        return False

    def unknown(self, path, name, known):
        close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        parent = path.rsplit(".", 1)[0] if "." in path else "the top level"
        self.fail(f"unknown key '{path}'{hint} (not a key of {parent})")


def _default_legacy():
    from opencood.hypes_yaml.legacy_keys import LEGACY_KEYS
    return list(LEGACY_KEYS)


def _default_legacy_values():
    from opencood.hypes_yaml import legacy_keys
    return dict(getattr(legacy_keys, "LEGACY_VALUES", {}))


def ordered_range(value):
    """``Key(check=ordered_range)``: a ``[xmin, ymin, zmin, xmax, ymax, zmax]`` list with min < max per axis."""
    if len(value) == 6 and all(_is_instance(v, float) for v in value) and \
            not all(value[i] < value[i + 3] for i in range(3)):
        return "should have min < max on x, y and z"
    return None


def schema_of(component):
    """The declared ``CONFIG`` Schema of a registered class (None when it declares none)."""
    schema = getattr(component, "CONFIG", None)
    return schema if isinstance(schema, Schema) else None


def registry_schema(registry, name_key, where, in_value=False):
    """``Key.schema`` callable: the ``CONFIG`` of the component that ``name_key`` names.

    An unknown name fails here already (at load, with the registry's list of known names).

    Args:
        registry: an :class:`opencood.utils.registry.Registry`.
        name_key: the key holding the name (``core_method``, ``fusion_method``).
        where: dotted path of that key, for the message.
        in_value: the name is a key of the value itself (``postprocess.core_method`` selects the schema of the
            whole ``postprocess`` section) instead of a sibling (``model.core_method`` -> ``model.args``).
    """
    def pick(parent, value=None):
        holder = value if in_value else parent
        name = holder.get(name_key) if isinstance(holder, dict) else None
        if name is None:
            return None
        if name not in registry:
            raise LookupFailed(f"unknown {where} '{name}'; known: {', '.join(registry.names())}")
        return schema_of(registry.get(name))
    return pick
