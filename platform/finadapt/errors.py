"""The project's own errors share one base class, so every command and entrypoint reports them the
same way: one line naming the place (file:line, config key, URI, model spec), an exit code, and the
traceback only on request or in a log file. Anything else is a bug and keeps its full traceback.

Exit codes: 2 = the configuration, an input or an output location is wrong (fix it and re-run);
1 = the run failed on its way (an engine died, results could not be written and were kept locally).
"""
from __future__ import annotations

import os
import re
import sys
import traceback
from pathlib import Path

LOG_NAME = "last-error.log"


class FinadaptError(Exception):
    """A user-facing error; the message names the place. Subclasses add a built-in base
    (ValueError, RuntimeError, FileNotFoundError) so existing `except` clauses keep working."""

    exit_code: int = 2
    label: str | None = None  # None: derived from the class name (DataFormatError -> "data format error")

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()

    @classmethod
    def kind(cls) -> str:
        if cls.label:
            return cls.label
        return re.sub(r"(?<!^)(?=[A-Z])", " ", cls.__name__).lower()


class InputError(FinadaptError, ValueError):
    """Bad input that has no more specific class (a value, a file's content)."""

    label = "input error"


class InputNotFoundError(FinadaptError, FileNotFoundError):
    """An input file or directory that does not exist; the message names it."""

    label = "input error"


def one_line(err: BaseException) -> str:
    """`<kind>: <message>` on one line (multi-line messages, e.g. YAML or pip output, are joined)."""
    text = "; ".join(part.strip() for part in str(err).splitlines() if part.strip()) or type(err).__name__
    kind = err.kind() if isinstance(err, FinadaptError) else type(err).__name__
    return f"{kind}: {text}"


def log_path() -> Path:
    from finadapt.paths import cache_dir

    return cache_dir() / "logs" / LOG_NAME


def write_log(err: BaseException, argv: list[str] | None = None) -> Path | None:
    """The full traceback to `<cache>/logs/last-error.log` (overwritten); None if that cannot be written."""
    try:
        path = log_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        path.write_text(f"argv: {argv if argv is not None else sys.argv}\n{text}")
        return path
    except OSError:
        return None


def traceback_from_env() -> bool:
    return os.environ.get("FINADAPT_TRACEBACK", "").strip().lower() in ("1", "true", "yes", "on")


def unwrap(err: BaseException) -> BaseException:
    """The finadapt error inside a `RayTaskError(...)`: Ray re-raises a task's exception as a subclass of
    both, whose message carries the remote traceback; the user needs the original one line."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, FinadaptError) else err


def report(err: FinadaptError, show_traceback: bool = False, argv: list[str] | None = None) -> int:
    """Print `err` to stderr as one line (plus the traceback if asked for); return its exit code."""
    path = write_log(err, argv)
    err = unwrap(err)
    if show_traceback or traceback_from_env():
        traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
    suffix = f" (traceback: {path})" if path else ""
    print(one_line(err) + suffix, file=sys.stderr, flush=True)
    return err.exit_code
