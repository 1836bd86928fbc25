"""FLARE tasks (FPB, FiQA-SA, Headlines, FinNER) and user-defined classification tasks.

    from finadapt.tasks import TASK_NAMES, get_task, load_samples
    samples = load_samples("fpb", "test")           # materialized once under cache_dir()/splits/
    get_task("fpb").license                          # dataset license, for reports

User-defined tasks come from a YAML spec (see `custom.py`): `register_task(load_task_spec(path))`,
after which `get_task(name)` / `load_samples(name, split)` serve them too.
"""
from __future__ import annotations

import os
from pathlib import Path

from finadapt.errors import FinadaptError

from .base import SPLITS, Sample
from .definition import TaskDefinition
from .jsonl import DataFormatError, read_jsonl
from .materialize import BUILTIN_TASKS, materialize_all

TASK_NAMES: tuple[str, ...] = ("fpb", "fiqasa", "headlines", "ner")
_CUSTOM_TASKS: dict[str, TaskDefinition] = {}


class UnknownTaskError(FinadaptError, KeyError):
    """A task name that is neither built in nor registered; the message lists the known ones."""

    label = "unknown task"


def get_task(name: str) -> TaskDefinition:
    """The definition of a built-in or registered task."""
    if name in BUILTIN_TASKS:
        return BUILTIN_TASKS[name]
    if name in _CUSTOM_TASKS:
        return _CUSTOM_TASKS[name]
    known = ", ".join((*TASK_NAMES, *sorted(_CUSTOM_TASKS)))
    raise UnknownTaskError(f"unknown task {name!r}; known tasks: {known} (register a YAML task with register_task)")


def all_task_names() -> tuple[str, ...]:
    """Built-in task names followed by registered custom ones."""
    return (*TASK_NAMES, *sorted(_CUSTOM_TASKS))


def load_samples(task: str, split: str, data_dir: str | os.PathLike | None = None,
                 limit: int | None = None) -> list[Sample]:
    """Samples of `split` for `task` (built-in: from the materialized splits; custom: from its data)."""
    return get_task(task).load(split, Path(data_dir) if data_dir is not None else None, limit)


def register_task(spec) -> TaskDefinition:
    """Register a user-defined task (a CustomTaskSpec, or a path to its YAML file); returns its definition."""
    from .custom import CustomTaskSpec, load_task_spec, task_definition

    if not isinstance(spec, CustomTaskSpec):
        spec = load_task_spec(spec)
    if spec.name in BUILTIN_TASKS:
        from .custom import TaskSpecError

        raise TaskSpecError(f"custom task name {spec.name!r} clashes with a built-in task")
    definition = task_definition(spec)
    _CUSTOM_TASKS[spec.name] = definition
    return definition


def unregister_task(name: str) -> None:
    """Forget a registered custom task (no error if absent)."""
    _CUSTOM_TASKS.pop(name, None)


__all__ = [
    "SPLITS", "TASK_NAMES", "BUILTIN_TASKS", "DataFormatError", "Sample", "TaskDefinition", "UnknownTaskError",
    "all_task_names", "get_task", "load_samples", "materialize_all", "read_jsonl", "register_task",
    "unregister_task",
]
