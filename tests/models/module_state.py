"""Test helper: what a module keeps as attributes, to check that ``forward`` stores nothing on it."""


def attribute_snapshot(module):
    """``{(submodule name, attribute): id(value)}`` + the names of every parameter, buffer and child."""
    snap = {}
    for name, m in module.named_modules():
        for key, value in vars(m).items():
            snap[(name, key)] = id(value)
        for kind in ("_parameters", "_buffers", "_modules"):
            snap[(name, kind, "names")] = tuple(getattr(m, kind))
    return snap
