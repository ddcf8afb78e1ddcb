"""Task settings: published (non-organism) fine-tuning setups usable from the experiment YAML
(`data.train: {setting: {name: gcd, split: train}}`); see `base` and docs/settings.md."""

from inoculate.settings.base import (
    ENTRY_POINT_GROUP,
    BuildContext,
    Options,
    SettingError,
    TaskSetting,
    get_task_setting,
    list_task_settings,
    task_setting,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "BuildContext",
    "Options",
    "SettingError",
    "TaskSetting",
    "get_task_setting",
    "list_task_settings",
    "task_setting",
]
