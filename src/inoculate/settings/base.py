"""The registry of task settings: published (non-organism) fine-tuning setups usable from the YAML.

A task setting turns `{setting: {name: NAME, split: SPLIT, ...options}}` (a `data.train` or `data.eval`
source, or a control condition's `train_data`) into chat rows. Each setting declares

- `options`: a pydantic model of the options it takes besides `name` and `split` (unknown ones are
  refused at their YAML line);
- `splits`: the splits it builds, with `train_split` / `eval_split` the defaults for `data.train` /
  `data.eval`;
- `build(split, options, ctx) -> list[ChatExample]`: the rows; training rows end with the assistant
  turn to learn, eval rows end with the user turn;
- `prompts`: its prompt library (name -> text, usable as `@name` in the YAML), the papers' inoculation
  prompts where published, each with its citation in `cite`;
- `traits` / `capability`: the scorer specs its metrics are measured by (for documentation and
  `inoculate settings`; the YAML names the metrics it wants).

Settings register with `@task_setting(NAME)` or through the entry-point group `inoculate.task_settings`
(a module that uses the decorator). The built-in ones are imported the first time their name is asked
for. (The organism's own settings are a separate registry: `inoculate.organism.settings`.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from inoculate.records import ChatExample
from inoculate.registry import Registry

ENTRY_POINT_GROUP = "inoculate.task_settings"


class SettingError(ValueError):
    """A setting's options that cannot be used (an unknown split, a missing pin): the YAML's fault,
    reported at the source's line. Bad rows of a data file are `InputErrors` at the file's line."""


class Options(BaseModel):
    """Base of a setting's options: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class BuildContext:
    """What a builder needs besides its options: the folder relative paths are read from (the YAML's)
    and the data cache folder (None: `inoculate.datasource.cache_dir()`)."""

    base_dir: Path = Path(".")
    cache: Path | None = None

    def path(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p


Builder = Callable[[str, Any, BuildContext], list[ChatExample]]


@dataclass(frozen=True)
class TaskSetting:
    name: str
    description: str
    cite: str
    options: type[Options]
    splits: tuple[str, ...]
    build: Builder
    train_split: str = "train"
    eval_split: str = "test"
    prompts: Mapping[str, str] = field(default_factory=dict)
    """`@name` -> text: the neutral instruction and the inoculation prompts"""
    prompt_cites: Mapping[str, str] = field(default_factory=dict)
    """prompt name -> where the text comes from ("ours" for our own wording)"""
    traits: Mapping[str, str] = field(default_factory=dict)
    capability: Mapping[str, str] = field(default_factory=dict)

    def default_split(self, which: str) -> str:
        return self.train_split if which == "train" else self.eval_split

    def parse_options(self, options: Mapping[str, Any]) -> Options:
        return self.options.model_validate(dict(options))

    def examples(
        self, split: str | None, options: Mapping[str, Any] | Options, ctx: BuildContext, which: str = "train"
    ) -> list[ChatExample]:
        """The rows of `split` (default: this setting's train or eval split, by `which`)."""
        split = split or self.default_split(which)
        if split not in self.splits:
            raise SettingError(
                f"setting {self.name!r} has no split {split!r} (splits: {', '.join(self.splits)})"
            )
        opts = options if isinstance(options, Options) else self.parse_options(options)
        rows = self.build(split, opts, ctx)
        if not rows:
            raise SettingError(
                f"setting {self.name!r}, split {split!r}: no rows (check the options' filters)"
            )
        return rows


_SETTINGS: Registry[Callable[[], TaskSetting]] = Registry(
    "task setting",
    ENTRY_POINT_GROUP,
    lazy={
        "gcd": "inoculate.settings.gcd",
        "cebab": "inoculate.settings.cebab",
        "cmv": "inoculate.settings.cmv",
        "mbpp": "inoculate.settings.mbpp",
        "humaneval": "inoculate.settings.mbpp",
    },
    unknown="unknown {kind} {name!r} (known: {known})",
)


def task_setting(name: str) -> Callable[[Callable[[], TaskSetting]], Callable[[], TaskSetting]]:
    """Register a task setting factory under `name`."""
    return _SETTINGS.register(name)


def get_task_setting(name: str) -> TaskSetting:
    return _SETTINGS.get(name)()


def list_task_settings() -> list[str]:
    """Every registered task setting, the built-in ones included."""
    return _SETTINGS.names()
