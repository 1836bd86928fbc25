"""Where data, caches and outputs live. Environment variables override the defaults."""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    """Read-only real datasets: `$FINADAPT_DATA_DIR`, default `../shared/data` from the project root."""
    env = os.environ.get("FINADAPT_DATA_DIR")
    return Path(env).expanduser().resolve() if env else (PROJECT_ROOT.parent / "shared" / "data").resolve()


def cache_dir() -> Path:
    """Converted models and materialized splits: `$FINADAPT_CACHE_DIR`, default `~/.cache/finadapt`."""
    env = os.environ.get("FINADAPT_CACHE_DIR")
    path = Path(env).expanduser() if env else Path.home() / ".cache" / "finadapt"
    path.mkdir(parents=True, exist_ok=True)
    return path
