"""Typed config declarations (opencood.utils.config): validation, suggestions, defaults, allow-list."""
import pytest

from opencood.utils.config import REQUIRED, Context, Key, Schema
from opencood.utils.errors import ConfigError

INNER = Schema({"alpha": Key(float, 0.25, "focal alpha"), "gamma": Key(float, 2.0)})
SCHEMA = Schema({
    "generate_ego": Key(bool, True, "generate the ego's own feature too"),
    "generation_start": Key(str, "ego_frame", choices=("ego_frame", "sender_frame")),
    "lr": Key(float, REQUIRED),
    "voxel_size": Key(list, [0.4, 0.4, 4], length=3),
    "cls": Key(dict, {"alpha": 0.25, "gamma": 2.0}, schema=INNER),
}, patterns={r"m\d+": Key(dict, schema=Schema({"core_method": Key(str, REQUIRED)}))})


def test_unknown_key_suggests_the_closest_declared_one():
    with pytest.raises(ConfigError) as e:
        SCHEMA.parse({"lr": 1e-3, "generate_egoo": False}, "model.args", "stage1/m1_att.yaml")
    msg = str(e.value)
    assert msg.startswith("stage1/m1_att.yaml: unknown key 'model.args.generate_egoo'")
    assert "did you mean 'generate_ego'?" in msg and "\n" not in msg


def test_nested_unknown_key_has_full_path():
    with pytest.raises(ConfigError, match=r"unknown key 'loss.args.cls.gama'; did you mean 'gamma'\?"):
        SCHEMA.parse({"lr": 1.0, "cls": {"gama": 3}}, "loss.args")


def test_pattern_keys_validate_their_content():
    cfg = SCHEMA.parse({"lr": 1.0, "m1": {"core_method": "point_pillar"}})
    assert cfg.m1 == {"core_method": "point_pillar"}
    with pytest.raises(ConfigError, match=r"missing key 'm2.core_method'"):
        SCHEMA.parse({"lr": 1.0, "m2": {}})


def test_types_choices_lengths_and_required():
    with pytest.raises(ConfigError, match=r"key 'generate_ego' should be true/false, got 'yes'"):
        SCHEMA.parse({"lr": 1.0, "generate_ego": "yes"})
    with pytest.raises(ConfigError, match=r"did you mean 'sender_frame'"):
        SCHEMA.parse({"lr": 1.0, "generation_start": "sender_fram"})
    with pytest.raises(ConfigError, match=r"should have 3 entries"):
        SCHEMA.parse({"lr": 1.0, "voxel_size": [0.4, 0.4]})
    with pytest.raises(ConfigError, match=r"missing key 'lr'"):
        SCHEMA.parse({})
    with pytest.raises(ConfigError, match=r"key 'lr' should be a number"):
        SCHEMA.parse({"lr": True})  # YAML true is not a number


def test_defaults_filled_once_and_attribute_access():
    cfg = SCHEMA.parse({"lr": 2, "cls": {"gamma": 1.0}})
    assert cfg.generate_ego is True and cfg.generation_start == "ego_frame" and cfg.lr == 2
    assert cfg.cls.alpha == 0.25 and cfg.cls.gamma == 1.0  # nested defaults too
    cfg.voxel_size.append(9)
    assert SCHEMA.keys["voxel_size"].default == [0.4, 0.4, 4]  # defaults are copied, never shared
    with pytest.raises(AttributeError, match="no key 'nope'"):
        cfg.nope


def test_legacy_keys_are_accepted_and_reported():
    ctx = Context("x.yaml", legacy=["loss.args.cls.type", "*.camera_mask_args.cav_lidar_range"])
    s = Schema({"cls": Key(dict, schema=INNER), "m1": Key(dict, schema=Schema({"camera_mask_args": Key(
        dict, schema=Schema({"grid_conf": Key(dict)}))}))})
    s.validate({"cls": {"type": "SigmoidFocalLoss"}, "m1": {"camera_mask_args": {"cav_lidar_range": [1]}}},
               "loss.args", ctx)
    assert ctx.ignored == ["loss.args.cls.type", "loss.args.m1.camera_mask_args.cav_lidar_range"]


def test_schema_callable_picks_by_sibling_and_reports_unknown_names():
    from opencood.utils.config import registry_schema
    from opencood.utils.registry import Registry

    reg = Registry("thing.core_method")

    @reg.register("a")
    class A:
        CONFIG = Schema({"x": Key(int, 1)})

    s = Schema({"core_method": Key(str), "args": Key(dict, schema=registry_schema(reg, "core_method", "thing"))})
    s.parse({"core_method": "a", "args": {"x": 3}})
    with pytest.raises(ConfigError, match=r"unknown key 'args.y'"):
        s.parse({"core_method": "a", "args": {"y": 3}})
    with pytest.raises(ConfigError, match=r"unknown thing 'b'; known: a"):
        s.parse({"core_method": "b", "args": {}})


def test_open_schema_passes_anything():
    Schema(open=True).validate({"whatever": 1, "nested": {"x": 2}})
