import pytest

from opencood.utils.errors import ConfigError
from opencood.utils.registry import Registry


def test_unknown_name_lists_known():
    reg = Registry("model.core_method")

    @reg.register("alpha", "Alpha_Alias")
    class Alpha:
        pass

    assert reg.get("ALPHA") is Alpha and reg.get("alpha_alias") is Alpha
    with pytest.raises(ConfigError) as e:
        reg.get("beta", source="cfg.yaml")
    assert "cfg.yaml: unknown model.core_method 'beta'; known: alpha, alpha_alias" == str(e.value)


def test_double_registration_rejected():
    reg = Registry("x")
    reg.register("a")(int)
    with pytest.raises(ValueError):
        reg.register("a")(float)
