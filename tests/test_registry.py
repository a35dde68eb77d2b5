"""The one registry mechanism behind encoders, aligners, metrics and data formats."""

from __future__ import annotations

import sys

import pytest

from xmodal.align.registry import ALIGNERS
from xmodal.data.loaders import FORMATS
from xmodal.encoders.registry import IMAGE, PAIR, TEXT, build_image_encoder, build_pair
from xmodal.registry import Registry, UnknownName
from xmodal.similarity.metrics import METRICS


def test_register_by_decorator_and_by_call_then_look_up_and_list():
    widgets: Registry[object] = Registry("widget", "xmodal.test_widgets")

    @widgets.register("b")
    def make_b():
        return "b"

    widgets.register("a", len)
    assert widgets["b"] is make_b and widgets["a"] is len
    assert widgets.names() == ["b", "a"] and list(widgets) == ["b", "a"] and len(widgets) == 2
    assert "a" in widgets and "c" not in widgets


def test_an_unknown_name_says_what_was_asked_for_and_lists_the_choices():
    widgets: Registry[object] = Registry("widget", "xmodal.test_widgets")
    widgets.register("a", 1)
    widgets.register("b", 2)
    with pytest.raises(UnknownName) as err:
        widgets["c"]
    assert str(err.value) == "unknown widget 'c'; choices: a, b"
    assert isinstance(err.value, KeyError) and isinstance(err.value, ValueError)


def test_a_name_cannot_be_taken_twice_but_can_be_replaced_explicitly():
    widgets: Registry[object] = Registry("widget", "xmodal.test_widgets")
    widgets.register("a", int)
    widgets.register("a", int)  # the same object again: a module imported twice
    with pytest.raises(
        ValueError,
        match=r"'a' is already registered \(builtins.int\), not registering builtins.float",
    ):
        widgets.register("a", float)
    widgets["a"] = str
    assert widgets["a"] is str
    del widgets["a"]
    assert "a" not in widgets


def test_prepare_checks_every_entry():
    def only_ints(name, obj):
        if not isinstance(obj, int):
            raise TypeError(f"{name} is not an int")
        return obj

    numbers: Registry[int] = Registry("number", "xmodal.test_numbers", prepare=only_ints)
    with pytest.raises(TypeError, match="x is not an int"):
        numbers.register("x", "1")


def test_builtins_are_imported_on_first_use_only(monkeypatch):
    monkeypatch.delitem(sys.modules, "json.tool", raising=False)
    lazy: Registry[object] = Registry("tool", "xmodal.test_tools", builtins="json.tool")
    assert "json.tool" not in sys.modules
    assert lazy.names() == [] and "json.tool" in sys.modules


def test_every_extension_point_is_a_registry_with_its_entry_point_group():
    groups = {r.group for r in (IMAGE, TEXT, PAIR, ALIGNERS, METRICS, FORMATS)}
    assert groups == {
        "xmodal.image_encoders",
        "xmodal.text_encoders",
        "xmodal.pair_encoders",
        "xmodal.aligners",
        "xmodal.metrics",
        "xmodal.loaders",
    }
    assert {"cosine", "euclidean", "manhattan", "chi_square"} <= set(METRICS)
    assert {"identity", "linear", "ridge"} <= set(ALIGNERS)


def test_encoder_errors_list_both_single_encoders_and_models():
    with pytest.raises(KeyError) as err:
        build_image_encoder("nope:x")
    message = str(err.value)
    assert message.startswith("unknown image encoder 'nope' in spec 'nope:x'; choices: ")
    assert "effnet-lite0" in message and "hf-clip" in message and "[" not in message
    with pytest.raises(KeyError, match="unknown vision-language model 'nope' in spec 'nope'"):
        build_pair(model="nope")
