import pytest

from cirbench.errors import ConfigError
from cirbench.grid import Grid
from cirbench.method import Method, Variant
from cirbench.registry import expand_methods, get_method, list_methods, register_method, resolve_name
from cirbench.runner import resolve_method
from cirbench.runs import RunSpec
from cirbench.types import Dims


def test_builtin_methods_register_through_entry_points():
    assert "clip4cir" in list_methods()
    cls = get_method("clip4cir")
    assert issubclass(cls, Method) and cls.name == "clip4cir"
    assert cls.__module__ == "cirbench_methods.clip4cir"


def test_wildcards_and_expansion():
    assert list_methods("clip*") == ["clip4cir"]
    assert list_methods("zzz*") == []
    # "*" expands to every method that trains and its named variants (ncl-cir:robust), each variant after its
    # method; training-free ones (zero-shot, for `cirbench eval`) are left to be named
    trains = [m for m in list_methods(variants=True) if not get_method(m.split(":")[0]).training_free]
    assert expand_methods(["*"]) == trains and "zero-shot" in list_methods() and "zero-shot" not in trains
    assert set(list_methods()) - {"zero-shot"} < set(expand_methods(["*"]))
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


@pytest.fixture
def variant_method(monkeypatch):
    """A throw-away method with two named variants, registered for one test."""
    from cirbench import registry

    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))

    @register_method("test-variants")
    class WithVariants(Method):
        variants = {"hot": Variant("a warmer softmax", {"temperature": 0.1}),
                    "slow": Variant("a smaller step", {"lr": 1e-5, "temperature": 0.05})}

        def compose(self, reference, text):
            return reference.embed + text.embed

    return WithVariants


def test_named_variants_expand_resolve_and_take_overrides(variant_method):
    assert list_methods("test-v*") == ["test-variants"]
    assert list_methods("test-v*", variants=True) == ["test-variants", "test-variants:hot", "test-variants:slow"]
    star = expand_methods(["*"])
    at = star.index("test-variants")
    assert star[at:at + 3] == ["test-variants", "test-variants:hot", "test-variants:slow"]
    assert expand_methods(["*:hot"]) == ["test-variants:hot"]
    assert expand_methods(["test-variants:slow"]) == ["test-variants:slow"]
    assert resolve_name("test-variants:hot") == (variant_method, "hot", variant_method.variants["hot"])
    # the variant's overrides replace the defaults; the cell's own hparams win over them
    cls, hp = resolve_method(RunSpec(method="test-variants:slow", dataset="shapes-cirr"))
    assert cls is variant_method and (hp.lr, hp.temperature) == (1e-5, 0.05)
    _, hp = resolve_method(RunSpec(method="test-variants:slow", dataset="shapes-cirr", hparams={"temperature": 0.2}))
    assert (hp.lr, hp.temperature) == (1e-5, 0.2)
    _, hp = resolve_method(RunSpec(method="test-variants", dataset="shapes-cirr"))
    assert (hp.lr, hp.temperature) == (1e-3, 0.01)  # the bare name is the method's own defaults


def test_a_variant_is_a_grid_method_and_a_set_target(variant_method):
    grid = Grid(methods=["test-variants", "test-variants:hot"], datasets=["shapes-cirr"], noise_rates=[0.0],
                hparams={"test-variants": {"lr": "2e-3"}, "test-variants:hot": {"temperature": "0.3"}})
    cells = {c.method: c for c in grid.cells()}
    # --set test-variants.x reaches every variant, --set test-variants:hot.x that variant only (and wins)
    assert cells["test-variants"].hparams == {"lr": "2e-3"}
    assert cells["test-variants:hot"].hparams == {"lr": "2e-3", "temperature": "0.3"}
    _, hp = resolve_method(cells["test-variants:hot"])
    assert (hp.lr, hp.temperature) == (2e-3, 0.3)
    with pytest.raises(ConfigError, match="not in this grid's methods"):
        Grid(methods=["test-variants"], datasets=["shapes-cirr"], hparams={"test-variants:hot": {"lr": 1}}).validate()


def test_unknown_variants_are_clear_errors_and_bad_variants_do_not_register(variant_method):
    with pytest.raises(ConfigError, match=r"no variant 'cold'.*test-variants:hot, test-variants:slow"):
        expand_methods(["test-variants:cold"])
    with pytest.raises(ConfigError, match=r"no variant 'cold'"):
        resolve_method(RunSpec(method="test-variants:cold", dataset="shapes-cirr"))
    with pytest.raises(ConfigError, match=r"'clip4cir' has no variant 'x'.*takes no ':argument'"):
        expand_methods(["clip4cir:x"])
    bad = type("Bad", (Method,), {"variants": {"typo": Variant("", {"temprature": 1.0})}})
    with pytest.raises(ValueError, match="unknown hyper-parameter.*temprature"):
        register_method("test-bad-variant")(bad)
    with pytest.raises(ValueError, match="plain word"):
        register_method("test-bad-name")(type("Bad2", (Method,), {"variants": {"a:b": Variant("", {})}}))
    assert "test-bad-variant" not in list_methods()


def test_arg_hparam_ablations_stay_out_of_the_wildcard_and_keep_working():
    star = expand_methods(["*"])
    assert "dqe-cir" in star and not any(m.startswith(("dqe-cir:", "spn:")) for m in star)
    assert expand_methods(["dqe-cir:no-attr", "spn:clip4cir"]) == ["dqe-cir:no-attr", "spn:clip4cir"]
    _, hp = resolve_method(RunSpec(method="dqe-cir:no-midzone", dataset="shapes-cirr"))
    assert hp.ablation == "no-midzone"
    _, hp = resolve_method(RunSpec(method="spn:ncl-cir", dataset="shapes-cirr"))
    assert hp.base == "ncl-cir"
