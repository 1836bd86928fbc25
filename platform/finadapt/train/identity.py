"""Which run a checkpoint belongs to, so a re-used run name never continues or exports another run.

Every run directory (`<checkpoint.storage_path>/<checkpoint.name>`) holds `finadapt_run.json`: the
training-relevant config (flattened), its hash and the step plan; every checkpoint's
`finadapt_checkpoint.json` carries the same hash. Before any data or model is loaded the driver compares
the new config with that record: `checkpoint.resume: auto` resumes only on a match and otherwise fails
naming the differing keys; `fresh` discards the old checkpoints; `force` resumes anyway (and says so).
Without `checkpoint.name` the run is named `<stage>-<hash>`, so two different configs never share a run.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finadapt import storage
from finadapt.config import ConfigError

log = logging.getLogger(__name__)

RECORD_FILE = "finadapt_run.json"
META_FILE = "finadapt_checkpoint.json"  # same name as train.checkpoint.META_FILE (no torch import here)
# Settings that do not change what a run computes: where results go, logging, validation cadence,
# speed/memory knobs (micro-batching is token-weighted, tested equal), fault handling.
# Of `ray`, only the worker count (it splits the batch) and GPU use are hashed: `ray.workers` is the
# number of processes that train (1 with `ray.enabled: false`), so a run may resume with or without Ray.
_NOT_HASHED = {"output_dir", "log_every_steps", "eval_every_steps", "peak_flops", "compile",
               "gradient_checkpointing", "threads_per_worker", "checkpoint", "failure"}
_NOT_HASHED_SUB = {"ray": {"enabled", "address", "num_cpus", "num_gpus", "cpus_per_worker", "placement_strategy"},
                   "batch": {"micro_batch_size", "micro_batch_tokens"}, "model": {"device"}}
PLAN_KEYS = ("train_rows", "steps_per_epoch", "total_steps", "rows_per_worker_step")


class RunMismatchError(ConfigError):
    """The run name points at checkpoints trained with another config (a config error: exit code 2)."""


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def model_content(spec: str) -> str:
    """A hash of the starting weights + tokenizer files (a retrained `runs/x/best` is a new start)."""
    from finadapt.models import TINY_RANDOM, resolve_model_path

    if spec == TINY_RANDOM:
        return "tiny-random:seed0"
    path = Path(resolve_model_path(spec))
    if not path.is_dir():
        return f"hub:{spec}"
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def training_key(cfg, content: str | None = None) -> dict[str, Any]:
    """The flattened config entries that change the math of the run (see `_NOT_HASHED`)."""
    data = cfg.model_dump(mode="json")
    if "ray" in data and hasattr(cfg, "workers"):
        data["ray"]["workers"] = cfg.workers
    kept = {}
    for key, value in data.items():
        if key in _NOT_HASHED:
            continue
        if isinstance(value, dict) and key in _NOT_HASHED_SUB:
            value = {k: v for k, v in value.items() if k not in _NOT_HASHED_SUB[key]}
        kept[key] = value
    flat = _flatten(kept)
    flat["model.content"] = content if content is not None else model_content(cfg.model.spec)
    return dict(sorted(flat.items()))


def config_hash(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def default_name(stage: str, digest: str) -> str:
    return f"{stage}-{digest[:8]}"


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`key: <old> (existing run) -> <new> (this run)` for every differing key."""
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key, "<unset>") != new.get(key, "<unset>"):
            out.append(f"{key}: {json.dumps(old.get(key, '<unset>'))} -> {json.dumps(new.get(key, '<unset>'))}")
    return out


@dataclass
class RunInfo:
    """What the driver decided before training: the run dir, its identity, and where to resume from."""

    directory: str
    key: dict[str, Any]
    digest: str
    mode: str
    resume_from: str | None = None  # checkpoint dir URI of the latest checkpoint (None: new run)
    resume_step: int = 0
    record: dict | None = None
    forced_over: list[str] = field(default_factory=list)

    def as_worker_dict(self) -> dict:
        """What the training loop needs: the identity to stamp on checkpoints, the fallback resume point."""
        return {"config_hash": self.digest, "training_config": self.key, "resume_from": self.resume_from}

    def as_dict(self) -> dict:
        return {"run_dir": self.directory, "config_hash": self.digest, "resume": self.mode,
                "resumed_from": self.resume_from, "resumed_from_step": self.resume_step,
                "forced_over": self.forced_over}


def find_checkpoints(directory: str) -> list[tuple[str, dict]]:
    """(checkpoint dir URI, its finadapt_checkpoint.json) under a run dir, oldest step first."""
    if not storage.exists(directory):
        return []
    found = []
    for uri in storage.list_files(directory, META_FILE):
        try:
            meta = json.loads(storage.read_text(uri))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{uri}: unreadable checkpoint record ({err}); delete that checkpoint or "
                              "start over with --fresh (checkpoint.resume=fresh)") from None
        found.append((uri[: -len(META_FILE)].rstrip("/"), meta))
    return sorted(found, key=lambda cm: (cm[1].get("state", {}).get("step", 0), cm[0]))


def _read_record(directory: str) -> dict | None:
    uri = storage.join(directory, RECORD_FILE)
    if not storage.exists(uri):
        return None
    try:
        return json.loads(storage.read_text(uri))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{uri}: unreadable run record ({err}); start over with --fresh "
                          "(checkpoint.resume=fresh)") from None


def _delete_tree(uri: str) -> None:
    fs, path = storage.filesystem_for(uri)
    try:
        fs.delete_dir(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        raise storage.StorageError(f"{uri}: cannot delete the previous run ({err})") from err


def _mismatch(cfg, directory: str, lines: list[str], what: str) -> RunMismatchError:
    return RunMismatchError(
        f"checkpoint.name {cfg.checkpoint.name!r} at {directory} holds a run with a different {what}: "
        + "; ".join(lines) + " (existing run -> this run). Resuming would continue (and export) that run. "
        "Use --fresh (checkpoint.resume=fresh) to discard its checkpoints and start at step 0, another "
        "checkpoint.name (or none: the default name is derived from the config), or checkpoint.resume=force "
        "to resume it anyway")


def prepare_run(cfg, key: dict[str, Any]) -> RunInfo:
    """Decide new / resume / fresh for `cfg`'s run dir; raises RunMismatchError before any training."""
    digest = config_hash(key)
    directory = storage.join(cfg.checkpoint.storage_path, cfg.checkpoint.name)
    mode = cfg.checkpoint.resume
    record = _read_record(directory)
    checkpoints = find_checkpoints(directory)
    info = RunInfo(directory, key, digest, mode)
    if mode == "fresh":
        if record is not None or checkpoints or storage.exists(directory):
            log.warning("checkpoint.resume=fresh: discarding the previous run at %s (%d checkpoints)",
                        directory, len(checkpoints))
            _delete_tree(directory)
        return info
    if record is None and not checkpoints:
        return info
    reference = record if record is not None else checkpoints[-1][1]
    old_key = reference.get("training_config")
    lines = differences(old_key, key) if old_key is not None else [
        "its checkpoints carry no training config (written before finadapt recorded one)"]
    if lines:
        if mode != "force":
            raise _mismatch(cfg, directory, lines, "training config")
        log.warning("checkpoint.resume=force: resuming %s although its config differs: %s", directory,
                    "; ".join(lines))
        info.forced_over = [reference.get("config_hash", "unknown")]
    info.record = record
    if checkpoints:
        info.resume_from, meta = checkpoints[-1]
        info.resume_step = int(meta.get("state", {}).get("step", 0))
        log.info("resuming %s from its latest checkpoint (step %d)", directory, info.resume_step)
    return info


def check_plan(cfg, info: RunInfo, plan: dict) -> None:
    """Same config but other data (files changed under the same paths): the step plan tells."""
    old = (info.record or {}).get("plan")
    if not old or info.resume_from is None:
        return
    lines = differences({f"plan.{k}": old.get(k) for k in PLAN_KEYS}, {f"plan.{k}": plan.get(k) for k in PLAN_KEYS})
    if lines and info.mode != "force":
        raise _mismatch(cfg, info.directory, lines, "training data (same config, other rows)")
    if lines:
        log.warning("checkpoint.resume=force: the step plan differs: %s", "; ".join(lines))


def write_record(info: RunInfo, stage: str, plan: dict) -> None:
    previous = info.record or {}
    record = {"stage": stage, "config_hash": info.digest, "training_config": info.key, "plan": plan,
              "forced_over": list(previous.get("forced_over", [])) + info.forced_over}
    storage.write_text(storage.join(info.directory, RECORD_FILE), json.dumps(record, indent=2))
