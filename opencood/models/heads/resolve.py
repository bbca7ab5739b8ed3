"""Cross-section values of the anchor head, derived once and checked (the loader's resolve pass calls this).

The anchor head is configured in ``postprocess``; ``model.args`` and ``loss.args`` repeat two of its values
in HEAL's YAMLs. They keep working as written, but are derived from ``postprocess`` when absent and must
agree with it when given:

* ``postprocess.anchor_args.num`` and ``model.args.anchor_number`` (or ``anchor_num``) = anchors per cell A;
* ``loss.args.dir.args`` and ``model.args.dir_args`` (``dir_offset``, ``num_bins``) = ``postprocess.dir_args``.
"""
import copy

from opencood.models.heads.anchor_head import anchors_per_cell
from opencood.utils.errors import ConfigError

DIR_KEYS = ("dir_offset", "num_bins")


def _section(hypes, *path):
    node = hypes
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def _check_equal(source, key, value, ref_key, ref_value):
    if value is not None and float(value) != float(ref_value):
        raise ConfigError(f"{source}: key '{key}' = {value!r} differs from '{ref_key}' = {ref_value!r} "
                          f"(the anchor head is configured once, in postprocess)")


def resolve_anchor_number(hypes, source):
    """Fill / check ``postprocess.anchor_args.num`` and ``model.args.anchor_number`` (returns A or None)."""
    anchor_args = _section(hypes, "postprocess", "anchor_args")
    if anchor_args is None:
        return None
    a = anchors_per_cell(anchor_args, source)
    _check_equal(source, "postprocess.anchor_args.num", anchor_args.get("num"),
                 "postprocess.anchor_args (anchors per cell)", a)
    anchor_args["num"] = a
    model_args = _section(hypes, "model", "args")
    if model_args is not None:
        for key in ("anchor_number", "anchor_num"):
            _check_equal(source, f"model.args.{key}", model_args.get(key), "postprocess.anchor_args.num", a)
        if "anchor_num" not in model_args:
            model_args["anchor_number"] = a
    return a


def resolve_dir_args(hypes, source):
    """Fill ``loss.args.dir.args`` from ``postprocess.dir_args`` and check every copy agrees with it."""
    ref = _section(hypes, "postprocess", "dir_args")
    loss_dir = _section(hypes, "loss", "args", "dir")
    copies = {"loss.args.dir.args": _section(loss_dir or {}, "args"),
              "model.args.dir_args": _section(hypes, "model", "args", "dir_args")}
    if ref is None:
        given = [k for k, v in copies.items() if v is not None]
        if given:
            raise ConfigError(f"{source}: missing key 'postprocess.dir_args' ('{given[0]}' is checked against it)")
        return
    for key, node in copies.items():
        for name in DIR_KEYS:
            if node is not None and name in ref:
                _check_equal(source, f"{key}.{name}", node.get(name), f"postprocess.dir_args.{name}", ref[name])
    if loss_dir is not None and copies["loss.args.dir.args"] is None:
        loss_dir["args"] = copy.deepcopy(ref)


def resolve_head_config(hypes):
    """Derive and check the head's repeated values in a loaded experiment config (in place).

    Args:
        hypes: the whole config (``_source`` names the file for messages).

    Returns:
        ``hypes``.
    """
    source = hypes.get("_source", "config")
    resolve_anchor_number(hypes, source)
    resolve_dir_args(hypes, source)
    return hypes
