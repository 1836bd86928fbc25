"""Running one step: its key, its record, copying its small outputs, and committing them.

A step is keyed by the hash of its stage config (with the places the runner chose replaced by names),
the keys of the steps it reads from and the fingerprint of the data it reads. A finished step leaves
`<results_dir>/<step>/step.json` holding that key; a later run whose key matches skips the step.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from finadapt.errors import FinadaptError
from finadapt.reproduce.plan import Layout, StepSpec

log = logging.getLogger(__name__)

RECORD_FILE = "step.json"
# Config keys that say where or how fast a step runs, not what it computes.
_PLACE_KEYS = {"output_dir", "checkpoint", "ray", "threads_per_worker", "log_every_steps", "peak_flops",
               "batch_rows", "token_budget", "block_mb", "disk_shuffle", "failure", "compile"}
# Small outputs copied from a step's work dir into its results folder (the rest stays in the work dir).
SMALL_OUTPUTS = {"corpus": ("manifest.json", "report.md", "report.json"),
                 "synth": ("report.md", "report.json", "report.png", "config.yaml"),
                 "pretrain": ("summary.json", "report.md", "curves.png", "metrics.jsonl"),
                 "sft": ("summary.json", "report.md", "curves.png", "metrics.jsonl")}


class StepFailed(FinadaptError, RuntimeError):
    """A step raised: the message names the step; finished steps keep their results."""

    exit_code = 1
    label = "reproduce step failed"


@dataclass
class StepRecord:
    step: str
    kind: str
    key: str
    status: str = "done"
    started: str = ""
    finished: str = ""
    wall_seconds: float = 0.0
    tokens: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, folder: Path) -> "StepRecord | None":
        path = folder / RECORD_FILE
        if not path.exists():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as err:  # a torn or foreign file: the step runs again
            log.warning("%s is unreadable (%s): the step runs again", path, err)
            return None

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / (RECORD_FILE + ".tmp")
        tmp.write_text(json.dumps(self.__dict__, indent=2) + "\n")
        tmp.replace(folder / RECORD_FILE)  # a crash never leaves a half-written record


def _normalise(value: Any, places: dict[str, str]) -> Any:
    """Paths under the work dir, results dir, data dir or repo become names, so the key does not change
    with where the project is cloned."""
    if isinstance(value, dict):
        return {k: _normalise(v, places) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_normalise(v, places) for v in value]
    if isinstance(value, str):
        for root, name in places.items():
            if value == root or value.startswith(root + "/"):
                return name + value[len(root):]
    return value


def step_key(spec: StepSpec, cfg: BaseModel, upstream: dict[str, str], data: dict[str, str],
             places: dict[str, str], needs: tuple[str, ...]) -> str:
    body = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in _PLACE_KEYS}
    if hasattr(cfg, "ray"):
        body["ray.workers"] = cfg.ray.workers  # splits the batch: part of what a training step computes
    payload = {"step": spec.name, "kind": spec.kind, "config": _normalise(body, places),
               "upstream": {name: upstream[name] for name in needs}, "data": data}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def copy_small_outputs(spec: StepSpec, layout: Layout) -> list[str]:
    """The committed part of a step's work-dir output."""
    names = SMALL_OUTPUTS.get(spec.kind, ())
    source, target = layout.step_work(spec.name), layout.step_results(spec.name)
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in names:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
            copied.append(name)
    return copied


def run_stage(spec: StepSpec, cfg: BaseModel) -> tuple[dict[str, float], list[str]]:
    """Run the stage behind `spec`; returns (tokens it processed, notes)."""
    if spec.kind == "corpus":
        from finadapt.data.pipeline import run_corpus

        manifest = run_corpus(cfg)
        packing = manifest.get("packing", {})
        return {"packed_tokens": packing.get("tokens", 0), "documents": packing.get("documents", 0)}, []
    if spec.kind == "synth":
        from finadapt.synth import synthesize

        totals = synthesize(cfg)["totals"]
        return {"generated_tokens": totals.get("generated_tokens", 0), "accepted": totals.get("accepted", 0),
                "requests": totals.get("requests", 0)}, []
    if spec.kind in ("pretrain", "sft"):
        from finadapt.train.run import run_training

        summary = run_training(cfg)
        plan, data = summary["plan"], summary["data"]
        if spec.kind == "pretrain":  # packed windows: every position is a trained token
            window = cfg.data.seq_len or data.get("seq_len") or 0
            trained = plan["total_steps"] * cfg.batch.effective * window
            return {"optimizer_steps": plan["total_steps"], "train_rows": plan["train_rows"],
                    "tokens_trained": trained}, []
        per_epoch = data.get("tokens") or 0
        share = min(1.0, plan["total_steps"] / plan["steps_per_epoch"]) if plan.get("steps_per_epoch") else 1.0
        epochs = share if getattr(cfg, "max_steps", None) else float(cfg.epochs)
        return {"optimizer_steps": plan["total_steps"], "train_rows": plan["train_rows"],
                "tokens_per_epoch": per_epoch, "tokens_trained": round(per_epoch * epochs)}, []
    from finadapt.evaluate.api import evaluate

    _, results = evaluate(cfg)
    notes = [f"failed task {f['task']}: {f['error']}" for f in results.get("failed_tasks", [])]
    if notes:
        raise StepFailed(f"{spec.name}: " + "; ".join(notes))
    generated = sum(s.get("generated_tokens") or 0 for s in results.get("scores", []))
    return {"rows": results.get("rows", 0), "generated_tokens": generated}, []


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def execute(spec: StepSpec, cfg: BaseModel, key: str, layout: Layout, notes: list[str]) -> StepRecord:
    """Run the step and write its record (only after everything else it writes is in place)."""
    folder = layout.step_results(spec.name)
    (folder / RECORD_FILE).unlink(missing_ok=True)  # a rerun is unfinished until its new record lands
    started, t0 = now(), time.perf_counter()
    log.info("step %s (%s) starts; key %s", spec.name, spec.kind, key[:12])
    try:
        tokens, more_notes = run_stage(spec, cfg)
    except StepFailed:
        raise
    except Exception as err:  # noqa: BLE001 - every failure is named by its step, cause kept
        raise StepFailed(f"step {spec.name} ({spec.kind}) failed: {type(err).__name__}: "
                         f"{' '.join(str(err).split())[:500]}") from err
    outputs = copy_small_outputs(spec, layout) if spec.kind != "eval" else sorted(
        p.name for p in folder.iterdir() if p.is_file())
    (folder / "config.yaml").write_text(_config_yaml(cfg))
    record = StepRecord(step=spec.name, kind=spec.kind, key=key, started=started, finished=now(),
                        wall_seconds=round(time.perf_counter() - t0, 1), tokens=tokens,
                        notes=[*notes, *more_notes], outputs=sorted({*outputs, "config.yaml"}))
    record.save(folder)
    log.info("step %s done in %.1f s", spec.name, record.wall_seconds)
    return record


def _config_yaml(cfg: BaseModel) -> str:
    from finadapt.config import dump_config

    return dump_config(cfg)


def git_commit(paths: list[Path], message: str) -> bool:
    """Commit `paths` in the git work tree holding them; False (logged) when there is none or git fails:
    the results stay on disk and the next step's commit picks them up."""
    top = paths[0] if paths[0].is_dir() else paths[0].parent
    while not top.exists():
        top = top.parent
    probe = subprocess.run(["git", "-C", str(top), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if probe.returncode:
        log.warning("not committing %s: not inside a git work tree", paths[0])
        return False
    root = probe.stdout.strip()
    rel = [str(p.resolve().relative_to(root)) for p in paths if p.exists()]
    for attempt in range(3):
        add = subprocess.run(["git", "-C", root, "add", "--", *rel], capture_output=True, text=True)
        if add.returncode == 0:
            done = subprocess.run(["git", "-C", root, "commit", "-q", "-m", message, "--", *rel],
                                  capture_output=True, text=True)
            if done.returncode == 0 or "nothing to commit" in done.stdout + done.stderr:
                return True
            error = done.stderr or done.stdout
        else:
            error = add.stderr
        time.sleep(2 * (attempt + 1))  # another git command holds the index lock
    log.warning("git commit of %s failed: %s", rel, " ".join(error.split())[:300])
    return False
