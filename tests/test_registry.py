from dataclasses import dataclass

import pytest

import vl_adapters as vla
from vl_adapters.core.registry import ADAPTERS, Registry, RegistryError


def test_duplicate_names_raise():
    registry = Registry("widget")
    registry.register("a", 1)
    with pytest.raises(RegistryError, match="already taken"):
        registry.register("a", 2)


def test_unknown_name_lists_known_and_closest():
    with pytest.raises(RegistryError) as error:
        vla.build_adapter("temporal_transformr", None)
    message = str(error.value)
    assert "unknown adapter 'temporal_transformr'" in message
    assert "Did you mean 'temporal_transformer'" in message
    assert "Known:" in message


def test_config_unknown_key_names_key_and_known(tiny_backbone):
    with pytest.raises(vla.ConfigError, match=r"unknown key\(s\) \['layerz'\].*known keys"):
        vla.wrap(tiny_backbone, [{"type": "temporal_transformer", "layerz": 2}])


def test_config_round_trips_through_json():
    cls = ADAPTERS.get("temporal_transformer").config_class
    config = cls(layers=2, heads=4)
    again = cls.from_json(config.to_json())
    assert again == config and again.to_dict()["type"] == "temporal_transformer"


def test_config_type_is_checked():
    cls = ADAPTERS.get("temporal_transformer").config_class
    with pytest.raises(vla.ConfigError, match="expected int, got 'two'"):
        cls.from_dict({"layers": "two"})


def _config():
    @dataclass
    class Empty(vla.AdapterConfig):
        pass

    return Empty


def test_plugin_author_errors_say_what_to_change():
    with pytest.raises(TypeError, match=r"forward\(self, video, text, ctx\)"):
        @vla.register_adapter("bad_signature")
        class BadSignature(vla.Adapter):
            config_class = _config()

            def forward(self, features):
                return features

    @dataclass
    class NotJson(vla.AdapterConfig):
        thing: object = object()

    with pytest.raises(TypeError, match="does not serialise to JSON"):
        @vla.register_adapter("bad_config")
        class BadConfig(vla.Adapter):
            config_class = NotJson

            def forward(self, video, text, ctx):
                return vla.AdapterOutput(video, text)

    with pytest.raises(RegistryError, match="already taken.*another name"):
        @vla.register_adapter("temporal_transformer")
        class Clash(vla.Adapter):
            config_class = _config()

            def forward(self, video, text, ctx):
                return vla.AdapterOutput(video, text)
    assert "bad_signature" not in vla.list_adapters()
