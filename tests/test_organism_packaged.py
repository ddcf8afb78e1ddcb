"""The base models the package ships (`organism.packaged`), rebuilt from scratch (`organism.rebuild`).

The fast tests check what is shipped (every file against its manifest, the key of a current preset, the
tokenizer and config `init_model` writes today), the install path (staged, checked, never a half-installed
or damaged model) and `compare_builds` on the tiny preset. The slow test rebuilds every shipped preset
from scratch and compares it with the shipped model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inoculate import organism
from inoculate.cli import app
from inoculate.organism import packaged
from inoculate.organism.rebuild import LOSS_TOLERANCE, build_presets, compare_builds

TINY = organism.preset("tiny")
SHIPPED_DIR = Path(packaged.__file__).resolve().parent.parent / "data" / "organism"


def _no_build(*args, **kwargs):
    raise AssertionError("stage 1 ran")


@pytest.fixture(autouse=True)
def _package_default(monkeypatch):
    monkeypatch.delenv(packaged.PACKAGE_ENV, raising=False)


# --- what the package ships -----------------------------------------------------------------------


def test_the_demo_and_every_phenomenon_preset_ship_a_base_model():
    keys = packaged.shipped_keys()
    for name in ("demo", "extended", "generalization", "social", "social_plain"):
        assert organism.preset(name).key() in keys, f"preset {name} ships no base model"


@pytest.mark.parametrize("key", packaged.shipped_keys())
def test_a_shipped_model_is_intact_and_belongs_to_a_current_preset(key):
    folder = SHIPPED_DIR / key
    manifest = packaged.read_manifest(folder)
    assert manifest.key == key and folder.name == key
    # A preset whose recipe changed has a new key: its old shipped model must go (and the new one be shipped).
    assert organism.preset(manifest.preset).key() == key, f"{key} is stale: preset {manifest.preset} changed"
    assert set(manifest.files) == set(packaged.SHIPPED_FILES)
    assert {p.name for p in folder.iterdir()} == {*packaged.SHIPPED_FILES, packaged.MANIFEST_FILE}
    assert packaged.problems(folder) == []
    meta = organism.read_meta(folder)
    assert meta["key"] == key and meta["steps"] == organism.preset(manifest.preset).max_steps
    assert manifest.built_with == meta["built_with"] and manifest.built_with["torch_threads"] == "1"


@pytest.mark.parametrize("key", packaged.shipped_keys())
def test_a_shipped_model_has_the_tokenizer_and_architecture_init_model_writes_today(key, tmp_path):
    config = organism.preset(packaged.read_manifest(SHIPPED_DIR / key).preset)
    init = organism.init_model(config, tmp_path / "init")
    for name in ("tokenizer.json", "chat_template.jinja", "generation_config.json"):
        assert (init / name).read_bytes() == (SHIPPED_DIR / key / name).read_bytes(), name
    # What differs is written by loading and training: where the tokenizer was loaded from, and the
    # Trainer's use_cache=False.
    loaded = {"is_local", "local_files_only", "use_cache"}
    for name in ("tokenizer_config.json", "config.json"):
        ours, theirs = (json.loads((d / name).read_text()) for d in (init, SHIPPED_DIR / key))
        assert {k: v for k, v in ours.items() if k not in loaded} == {
            k: v for k, v in theirs.items() if k not in loaded
        }, name


def test_the_shipped_files_are_package_data():
    text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert '"data/**/*"' in text  # setuptools package-data: the wheel carries data/organism/<key>/*


# --- installing a shipped model -------------------------------------------------------------------


def test_a_cache_miss_installs_the_shipped_model_without_training(tmp_path, monkeypatch):
    monkeypatch.setattr(organism.base, "_build", _no_build)
    said = []
    path = organism.build_base_model(organism.preset("demo"), tmp_path / "cache", log=said.append)
    key = organism.preset("demo").key()
    assert path == tmp_path / "cache" / key and organism.is_built(path)
    for name in packaged.SHIPPED_FILES:
        assert (path / name).read_bytes() == (SHIPPED_DIR / key / name).read_bytes()
    assert packaged.problems(path) == []
    assert any("installed the base model this package ships" in m for m in said)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no staging left
    assert organism.build_base_model(organism.preset("demo"), tmp_path / "cache") == path  # now cached


@pytest.fixture(scope="module")
def tiny_package(tmp_path_factory):
    """A package folder shipping the tiny preset's base model (built here in seconds), and that build."""
    root = tmp_path_factory.mktemp("tiny-package")
    built = organism.build_base_model(TINY, root / "build", use_shipped=False)
    packaged.write_shipped(built, root / "shipped", "tiny")
    return root / "shipped", built


def test_write_shipped_writes_a_manifest_install_accepts(tiny_package, tmp_path, monkeypatch):
    shipped_root, built = tiny_package
    monkeypatch.setenv(packaged.PACKAGE_ENV, str(shipped_root))
    monkeypatch.setattr(organism.base, "_build", _no_build)
    assert packaged.shipped_keys() == [TINY.key()]
    path = organism.build_base_model(TINY, tmp_path)
    assert (path / "model.safetensors").read_bytes() == (built / "model.safetensors").read_bytes()
    assert not (path / "training_args.bin").exists()  # the Trainer's pickle is not shipped


def test_a_damaged_shipped_model_is_not_installed_and_stage_1_runs(tiny_package, tmp_path, monkeypatch):
    shipped_root, _ = tiny_package
    damaged = tmp_path / "pkg"
    shutil.copytree(shipped_root, damaged)
    weights = damaged / TINY.key() / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    monkeypatch.setenv(packaged.PACKAGE_ENV, str(damaged))
    said = []
    path = organism.build_base_model(TINY, tmp_path / "cache", log=said.append)
    assert any("damaged" in m and "sha256" in m for m in said), said
    assert not (path / packaged.MANIFEST_FILE).exists()  # built, not installed
    assert (path / "model.safetensors").read_bytes() != weights.read_bytes()


def test_the_environment_turns_shipped_models_off(tmp_path, monkeypatch):
    monkeypatch.setenv(packaged.PACKAGE_ENV, "none")
    assert packaged.package_root() is None and packaged.shipped(organism.preset("demo").key()) is None
    monkeypatch.setattr(organism.base, "_build", _no_build)
    with pytest.raises(AssertionError, match="stage 1 ran"):
        organism.build_base_model(organism.preset("demo"), tmp_path)


def test_force_builds_from_scratch_even_when_shipped(tmp_path, monkeypatch):
    monkeypatch.setattr(organism.base, "_build", _no_build)
    with pytest.raises(AssertionError, match="stage 1 ran"):
        organism.build_base_model(organism.preset("demo"), tmp_path, force=True)


# --- comparing a fresh build with the shipped one -------------------------------------------------


def _with_weights(src: Path, dest: Path, change) -> Path:
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dest)
    tensors = {k: change(v) for k, v in load_file(src / "model.safetensors").items()}
    save_file(tensors, dest / "model.safetensors", metadata={"format": "pt"})
    packaged.write_shipped(dest, dest.parent / "shipped", "tiny")
    return dest.parent / "shipped" / TINY.key()


def _other_rounding(shipped: Path) -> None:
    """Make the shipped manifest say it was built on another CPU kernel."""
    manifest = packaged.read_manifest(shipped)
    env = {**manifest.built_with, "cpu_capability": "SOMETHING_ELSE"}
    changed = manifest.model_copy(update={"built_with": env})
    (shipped / packaged.MANIFEST_FILE).write_text(changed.model_dump_json())


def test_a_second_build_is_identical(tiny_package, tmp_path):
    shipped_root, _ = tiny_package
    again = build_presets(["tiny"], tmp_path)[0]
    result = compare_builds(again, shipped_root / TINY.key())
    assert result.verdict == "identical" and result.weights_identical and result.same_environment


def test_other_weights_from_the_same_environment_are_different(tiny_package, tmp_path):
    _, built = tiny_package
    shipped = _with_weights(built, tmp_path / "m", lambda t: t + 1e-6)
    result = compare_builds(built, shipped)
    assert result.verdict == "different" and "recipe changed" in result.reason
    assert 0 < result.max_weight_diff < 1e-5


def test_float_noise_from_another_kernel_is_equivalent_but_a_broken_model_is_not(tiny_package, tmp_path):
    _, built = tiny_package
    close = _with_weights(built, tmp_path / "close", lambda t: t + 1e-6)
    _other_rounding(close)
    result = compare_builds(built, close)
    assert result.verdict == "equivalent", result.reason
    assert result.elicitation_max_diff == 0.0 and result.heldout_loss is not None
    assert "cpu_capability" in result.reason

    far = _with_weights(built, tmp_path / "far" / "x", lambda t: t * 0)  # a model that learned nothing
    _other_rounding(far)
    result = compare_builds(built, far)
    assert result.verdict == "different"
    assert abs(result.heldout_loss[0] - result.heldout_loss[1]) > 10 * LOSS_TOLERANCE


def test_config_or_tokenizer_changes_are_different(tiny_package, tmp_path):
    shipped_root, built = tiny_package
    other = tmp_path / "pkg" / TINY.key()
    shutil.copytree(shipped_root / TINY.key(), other)
    tok = other / "tokenizer_config.json"
    tok.write_text(tok.read_text().replace("}", ', "x": 1}', 1))
    result = compare_builds(built, other)
    assert result.verdict == "different" and result.differing_files == ["tokenizer_config.json"]


# --- the command line -----------------------------------------------------------------------------


def test_cli_organism_list_says_what_ships(tmp_path, monkeypatch):
    monkeypatch.setenv("INOCULATE_CACHE", str(tmp_path))
    res = CliRunner().invoke(app, ["organism", "list", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["preset"]: r for r in json.loads(res.stdout)}
    assert rows["demo"]["shipped"] and not rows["tiny"]["shipped"]
    assert rows["demo"]["key"] == organism.preset("demo").key() and rows["demo"]["cached"] is None
    assert rows["social"]["extensions"] == list(organism.preset("social").extensions)


def test_cli_organism_build_check(tiny_package, tmp_path, monkeypatch):
    shipped_root, built = tiny_package
    monkeypatch.setenv(packaged.PACKAGE_ENV, str(shipped_root))
    res = CliRunner().invoke(app, ["organism", "build", "tiny", "--out", str(tmp_path / "a"), "--check"])
    assert res.exit_code == 0, res.output
    assert "check: identical" in res.output and str(tmp_path / "a" / TINY.key()) in res.output

    _with_weights(built, tmp_path / "b" / "m", lambda t: t * 0)
    monkeypatch.setenv(packaged.PACKAGE_ENV, str(tmp_path / "b" / "shipped"))
    res = CliRunner().invoke(app, ["organism", "build", "tiny", "--out", str(tmp_path / "c"), "--check"])
    assert res.exit_code == 1
    assert "check: different" in res.output and "not the shipped base model" in res.stderr


def test_cli_organism_build_refuses_bad_arguments():
    res = CliRunner().invoke(app, ["organism", "build", "nosuch"])
    assert res.exit_code == 1 and "unknown preset(s) nosuch" in res.stderr
    res = CliRunner().invoke(app, ["organism", "build", "demo", "--all"])
    assert res.exit_code == 1 and "not both" in res.stderr


# --- the slow check: every shipped model, rebuilt from scratch --------------------------------------


@pytest.mark.slow
def test_every_shipped_model_is_rebuilt_from_scratch(tmp_path):
    """`inoculate organism build --all --check`: each shipped base model is what stage 1 builds today,
    byte for byte where torch, the CPU kernel and the threads are those it was built with (this
    workplace), else the same behaviour within tolerance."""
    keys = packaged.shipped_keys()
    names = [packaged.read_manifest(SHIPPED_DIR / k).preset for k in keys]
    built = build_presets(names, tmp_path, jobs=2)
    for name, path in zip(names, built, strict=True):
        result = compare_builds(path, SHIPPED_DIR / path.name)
        print(name, result.verdict, result.reason)
        if result.same_environment:
            assert result.verdict == "identical", (name, result.reason)
        else:
            assert result.verdict == "equivalent", (name, result.reason)
