"""Splits a process may not read: a sweep trial must never see a test split.

Why an environment variable: it is set once in the trial process (and, for a Ray instance the sweep
starts, in every worker through the job's runtime env) before any data is read, and every split read
passes through `TaskDefinition.load`, which calls `check`.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator

from finadapt.errors import FinadaptError

ENV_VAR = "FINADAPT_FORBIDDEN_SPLITS"


class ForbiddenSplitError(FinadaptError, PermissionError):
    """A read of a split this process is not allowed to see (a test split inside a sweep trial)."""

    label = "forbidden split"


def forbidden_splits() -> frozenset[str]:
    return frozenset(s.strip() for s in os.environ.get(ENV_VAR, "").split(",") if s.strip())


def check(task: str, split: str) -> None:
    """Raise if `split` is forbidden in this process."""
    if split in forbidden_splits():
        raise ForbiddenSplitError(f"task {task!r}: reading the {split!r} split is forbidden here "
                                  f"({ENV_VAR}={os.environ.get(ENV_VAR)}; sweep trials never read test splits)")


def forbid(splits: Iterable[str]) -> None:
    """Forbid `splits` in this process (and in processes it starts) from now on."""
    os.environ[ENV_VAR] = ",".join(sorted(forbidden_splits() | set(splits)))


@contextlib.contextmanager
def _restored() -> Iterator[None]:
    """Whatever a block does to the ban, the variable is as before afterwards."""
    before = os.environ.get(ENV_VAR)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = before


@contextlib.contextmanager
def forbidden(splits: Iterable[str]) -> Iterator[None]:
    """Forbid `splits` for a block (a reproduction's training, synthesis and corpus steps), then restore."""
    with _restored():
        forbid(splits)
        yield


@contextlib.contextmanager
def allowed(split: str) -> Iterator[None]:
    """Lift the ban on `split` for a block: the sweep driver's single, deliberate test scoring."""
    with _restored():
        rest = forbidden_splits() - {split}
        if rest:
            os.environ[ENV_VAR] = ",".join(sorted(rest))
        else:
            os.environ.pop(ENV_VAR, None)
        yield
