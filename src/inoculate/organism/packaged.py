"""The built-in presets' stage-1 base models, shipped with the package.

Stage 1 (pretraining the organism) takes about 75 s on one CPU core, most of a first `inoculate demo`.
The base models of the built-in presets therefore ship in the package, as `inoculate/data/organism/<key>/`
(about 1.5 MB each), and a cache miss installs the shipped copy instead of training. They are inputs,
not results: every cell of a run still trains and evaluates.

Each shipped folder holds the files a build writes (weights, config, tokenizer, `organism.json`) and
`packaged.json`: the key, the preset, every file's sha256, and what built it (torch, CPU kernel,
threads). An install copies the files into a staging folder, checks every sha256 and renames it into
place; a damaged copy is not installed (the model is built instead). `INOCULATE_ORGANISM_PACKAGE`
names another folder of shipped models, or `none` to always build.

`inoculate organism build` rebuilds them from scratch; `--check` compares the fresh build with the
shipped one (`organism.rebuild`).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from inoculate.fileio import sha256_file, write_json_atomic

PACKAGE_ENV = "INOCULATE_ORGANISM_PACKAGE"
MANIFEST_FILE = "packaged.json"
# What a build writes that the model needs; the Trainer's training_args.bin (a pickle) is left out.
SHIPPED_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "organism.json",
)


class PackagedManifest(BaseModel):
    """`packaged.json` of a shipped base model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    preset: str
    files: dict[str, str]
    built_with: dict[str, str]


def package_root() -> Path | None:
    """The folder of shipped base models: `$INOCULATE_ORGANISM_PACKAGE` (`none`: no shipped models), else
    the package's own `data/organism`."""
    env = os.environ.get(PACKAGE_ENV)
    if env is not None and env.strip().lower() in ("", "none", "0", "off"):
        return None
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "data" / "organism"


def read_manifest(folder: str | os.PathLike[str]) -> PackagedManifest:
    return PackagedManifest.model_validate_json((Path(folder) / MANIFEST_FILE).read_text(encoding="utf-8"))


def shipped(key: str) -> Path | None:
    """The shipped folder of the base model with this key, if the package has one."""
    root = package_root()
    if root is None:
        return None
    folder = root / key
    return folder if (folder / MANIFEST_FILE).is_file() else None


def shipped_keys() -> list[str]:
    root = package_root()
    if root is None or not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / MANIFEST_FILE).is_file())


def problems(folder: str | os.PathLike[str], manifest: PackagedManifest | None = None) -> list[str]:
    """What is wrong with a shipped (or installed) folder: a missing file or a sha256 that does not
    match its manifest; empty when it is intact."""
    folder = Path(folder)
    try:
        manifest = manifest or read_manifest(folder)
    except (OSError, ValueError) as e:
        return [f"{folder / MANIFEST_FILE}: {e}"]
    out = []
    for name, digest in manifest.files.items():
        path = folder / name
        if not path.is_file():
            out.append(f"{path}: missing")
        elif sha256_file(path) != digest:
            out.append(f"{path}: sha256 does not match {MANIFEST_FILE}")
    return out


def install(key: str, final: str | os.PathLike[str]) -> Path | None:
    """Copy the shipped base model with this key to `final` (staged, checked, renamed into place).

    None when the package has none for this key. A shipped copy that fails its check raises
    `DamagedPackage`; nothing is left at `final`."""
    source = shipped(key)
    if source is None:
        return None
    final = Path(final)
    manifest = read_manifest(source)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    staging.chmod(0o755)  # as a built model's folder, not mkdtemp's 0700
    try:
        for name in manifest.files:
            if not (source / name).is_file():
                raise DamagedPackage(f"{source / name}: missing")
            shutil.copyfile(source / name, staging / name)
        shutil.copyfile(source / MANIFEST_FILE, staging / MANIFEST_FILE)
        found = problems(staging, manifest)
        if found:
            raise DamagedPackage("; ".join(found).replace(str(staging), str(source)))
        try:
            os.rename(staging, final)
        except OSError:
            if not (final / "organism.json").is_file():  # not a concurrent install that finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


class DamagedPackage(RuntimeError):
    """A shipped base model whose files do not match their manifest."""


def build_environment() -> dict[str, str]:
    """What determines a build's float rounding: library versions, the CPU kernel torch dispatches to,
    and its intra-op threads (recorded in `organism.json` at build time)."""
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "machine": platform.machine(),
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "torch_threads": str(torch.get_num_threads()),
        "platform": sys.platform,
    }


def write_shipped(model_dir: str | os.PathLike[str], dest_root: str | os.PathLike[str], preset: str) -> Path:
    """Write the shipped copy of a built base model into `dest_root/<key>` (maintainers: the package's
    `src/inoculate/data/organism`), replacing an older copy of the same key."""
    model_dir = Path(model_dir)
    meta = json.loads((model_dir / "organism.json").read_text(encoding="utf-8"))
    key = meta["key"]
    dest = Path(dest_root) / key
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=dest.parent))
    staging.chmod(0o755)
    try:
        for name in SHIPPED_FILES:
            shutil.copyfile(model_dir / name, staging / name)
        manifest = PackagedManifest(
            key=key,
            preset=preset,
            files={name: sha256_file(staging / name) for name in SHIPPED_FILES},
            built_with={k: str(v) for k, v in (meta.get("built_with") or {}).items()},
        )
        write_json_atomic(staging / MANIFEST_FILE, manifest.model_dump(mode="json"))
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest
