import pytest

from cirbench.errors import ConfigError
from cirbench.method import Method
from cirbench.registry import expand_methods, get_method, list_methods, register_method
from cirbench.types import Dims


def test_builtin_methods_register_through_entry_points():
    assert "clip4cir" in list_methods()
    cls = get_method("clip4cir")
    assert issubclass(cls, Method) and cls.name == "clip4cir"
    assert cls.__module__ == "cirbench_methods.clip4cir"


def test_wildcards_and_expansion():
    assert list_methods("clip*") == ["clip4cir"]
    assert list_methods("zzz*") == []
    assert expand_methods(["*"]) == list_methods()
    assert expand_methods(["clip4cir", "clip*"]) == ["clip4cir"]  # no duplicates


def test_unknown_method_is_a_clear_error_with_suggestion():
    with pytest.raises(ConfigError, match=r"unknown method 'clip4cirr'.*Did you mean clip4cir"):
        get_method("clip4cirr")
    with pytest.raises(ConfigError, match="no registered method matches"):
        expand_methods(["nope*"])


def test_register_a_new_method_and_reject_a_clash():
    @register_method("test-dummy")
    class Dummy(Method):
        def compose(self, reference, text):
            return reference.embed + text.embed

    assert get_method("test-dummy") is Dummy
    assert "test-dummy" in list_methods("test-*")
    with pytest.raises(ValueError, match="registered twice"):
        register_method("test-dummy")(type("Other", (Method,), {}))


def test_hparam_overrides_are_typed_and_checked():
    cls = get_method("clip4cir")
    hp = cls.make_hparams({"lr": "5e-4", "projection_ratio": "2"})
    assert hp.lr == pytest.approx(5e-4) and hp.projection_ratio == 2 and isinstance(hp.projection_ratio, int)
    with pytest.raises(ConfigError, match="has no hyper-parameter 'lrr'.*lr"):
        cls.make_hparams({"lrr": 1})
    with pytest.raises(ConfigError, match="must be a number"):
        cls.make_hparams({"lr": "fast"})
    model = cls(Dims(embed=16), cls.make_hparams({"projection_ratio": 2}))
    assert model.combiner.text_proj[0].out_features == 32


def test_a_third_party_package_adds_a_method_through_the_entry_point_group(tmp_path, monkeypatch):
    from cirbench import registry

    pkg = tmp_path / "cirbench_plugin_demo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from cirbench.method import Method\n"
        "class PluginMethod(Method):\n"
        "    def compose(self, reference, text):\n"
        "        return reference.embed + text.embed\n"
    )
    dist = tmp_path / "cirbench_plugin_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: cirbench-plugin-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[cirbench.methods]\nplugin-demo = cirbench_plugin_demo:PluginMethod\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))
    assert "plugin-demo" in list_methods()
    cls = get_method("plugin-demo")
    assert cls.__name__ == "PluginMethod" and cls.name == "plugin-demo"


def test_the_readme_snippet_is_a_working_method(monkeypatch):
    """The "Adding a method" example of the README runs as written: it registers, builds and trains."""
    import re
    from pathlib import Path

    import torch

    from cirbench import registry
    from cirbench.types import Batch, Features

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Adding a method"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))
    exec(compile(code, "README.md", "exec"), {})
    cls = get_method("my-method")
    model = cls(Dims(embed=8), cls.make_hparams())
    torch.manual_seed(0)
    feats = Features(torch.randn(4, 8))
    assert model.compose(feats, feats).shape == (4, 8)
    batch = Batch(torch.arange(4), feats, Features(torch.randn(4, 8)), Features(torch.randn(4, 8)), torch.arange(4))
    loss = model.loss(batch, None)
    loss.backward()
    assert loss.item() > 0 and model.mix.weight.grad.abs().sum() > 0
