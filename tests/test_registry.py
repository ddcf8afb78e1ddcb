"""The one registry helper (`inoculate.registry`): decorator, lookup, listing, metadata, plugins."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

from inoculate.registry import PluginError, Registry, import_plugin, load_plugins

GROUP = "inoculate.t_things"


def _fake_entry_points(
    monkeypatch: pytest.MonkeyPatch, eps: list[importlib.metadata.EntryPoint]
) -> list[str]:
    calls: list[str] = []

    def fake(*, group: str):
        calls.append(group)
        return [ep for ep in eps if ep.group == group]

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    return calls


def test_decorator_get_names_list_and_metadata() -> None:
    reg: Registry = Registry("measure")

    @reg.register("surprise", unit="nats/token", needs="train")
    def surprise() -> str:
        """Mean surprise of the training answers."""
        return "s"

    reg.add("trait", lambda: "t", description="trait rate", unit="rate", needs="eval")
    assert reg.get("surprise") is surprise
    assert reg.names() == ["surprise", "trait"]
    entries = {e.name: e for e in reg.list()}
    assert entries["surprise"].description == "Mean surprise of the training answers."
    assert entries["surprise"].meta == {"unit": "nats/token", "needs": "train"}
    assert entries["trait"].meta["needs"] == "eval"
    assert entries["surprise"].source.endswith("surprise")
    assert "surprise" in reg and "nope" not in reg
    with pytest.raises(ValueError, match=r"unknown measure 'nope' \(known: surprise, trait\)"):
        reg.get("nope")
    reg.remove("trait")
    assert reg.names() == ["surprise"]


def test_conflicts_error_or_replace() -> None:
    strict: Registry = Registry("scorer", error=KeyError, on_conflict="error")

    def a() -> None: ...

    def b() -> None: ...

    strict.add("x", a)
    strict.add("x", a)  # the same factory again (a reload) is a no-op
    with pytest.raises(KeyError, match="already registered"):
        strict.add("x", b)
    loose: Registry = Registry("setting")
    loose.add("x", a)
    loose.add("x", b)
    assert loose.get("x") is b


def test_lazy_builtin_modules_import_on_first_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg: Registry = Registry("backend", lazy={"lazy_one": "t_reg_lazy_mod"})
    (tmp_path / "t_reg_lazy_mod.py").write_text(
        "from tests_registry_target import REG\n@REG.register('lazy_one')\ndef f():\n    return 1\n"
    )
    target = type(sys)("tests_registry_target")
    target.REG = reg  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tests_registry_target", target)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "lazy_one" in reg and reg.loaded() == []
    assert reg.get("lazy_one")() == 1


def test_entry_points_load_once_lazily_and_a_broken_one_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "t_reg_ep_fn.py").write_text("def thing():\n    '''A thing from a plugin.'''\n    return 7\n")
    (tmp_path / "t_reg_ep_bad.py").write_text("raise RuntimeError('plugin is broken')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    calls = _fake_entry_points(
        monkeypatch,
        [
            importlib.metadata.EntryPoint(name="thing", value="t_reg_ep_fn:thing", group=GROUP),
            importlib.metadata.EntryPoint(name="bad", value="t_reg_ep_bad", group=GROUP),
        ],
    )
    reg: Registry = Registry("thing", GROUP)
    reg.add("builtin", lambda: 0)
    assert reg.get("builtin")() == 0
    assert calls == []  # a registered name does not touch entry points
    assert reg.get("thing")() == 7
    assert reg.list()[-1].description == "A thing from a plugin."
    assert calls == [GROUP]  # loaded once
    assert reg.failures() == {"bad": "RuntimeError: plugin is broken"}
    with pytest.raises(ValueError) as e:
        reg.get("bad")
    assert str(e.value) == (
        f"thing 'bad' comes from plugin 'bad' (entry point group {GROUP}), "
        "which failed to load: RuntimeError: plugin is broken"
    )
    with pytest.raises(
        ValueError, match=r"plugins that failed to load: bad \(RuntimeError: plugin is broken\)"
    ):
        reg.get("other")
    assert calls == [GROUP]


def test_load_plugins_modules_files_and_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "t_reg_plug_ok.py").write_text("LOADED = True\n")
    (tmp_path / "t_reg_plug_bad.py").write_text("import t_reg_no_such_dependency\n")
    (tmp_path / "t_reg_plug_err.py").write_text("1 / 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (mod,) = load_plugins(["t_reg_plug_ok"])
    assert mod.LOADED
    assert import_plugin(str(tmp_path / "t_reg_plug_ok.py")).LOADED
    with pytest.raises(PluginError, match="cannot import plugin module 't_reg_plug_nowhere'"):
        load_plugins(["t_reg_plug_ok", "t_reg_plug_nowhere"])
    with pytest.raises(PluginError, match="t_reg_plug_bad.*t_reg_no_such_dependency"):
        import_plugin("t_reg_plug_bad")
    with pytest.raises(
        PluginError, match="plugin module 't_reg_plug_err' failed to import: ZeroDivisionError"
    ):
        import_plugin("t_reg_plug_err")
    with pytest.raises(PluginError, match="failed to import: ZeroDivisionError"):
        import_plugin(str(tmp_path / "t_reg_plug_err.py"))
    with pytest.raises(PluginError, match="not found"):
        import_plugin(str(tmp_path / "absent.py"))


def test_registry_module_is_ground_floor() -> None:
    """It imports nothing from inoculate but `errors`, so every layer may build on it."""
    code = (
        "import sys, inoculate.registry; print(sorted(m for m in sys.modules if m.startswith('inoculate.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert set(eval(out)) <= {"inoculate.registry", "inoculate.errors"}
