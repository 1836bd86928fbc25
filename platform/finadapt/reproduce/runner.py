"""`finadapt reproduce`: run the planned steps in order, skipping every step whose committed record
matches its key, re-creating a missing work-dir input (model weights, shards, synthetic pool) when a
step still to run needs it, and committing each step's results as soon as it finishes.

The test splits are read by evaluation steps only: every other step runs with `test` forbidden
(`tasks.split_guard`, inherited by its Ray Train workers), so a training, synthesis or checkpoint
selection read of a test split fails instead of leaking.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finadapt import storage
from finadapt.reproduce.config import ReproduceConfig
from finadapt.reproduce.plan import Layout, StepConfigs, StepSpec, plan_steps, variants_summary
from finadapt.reproduce.steps import StepRecord, execute, git_commit, step_key
from finadapt.tasks import split_guard

log = logging.getLogger(__name__)
_clock = time.monotonic  # the sitting's clock for --max-minutes (a test advances its own)

PLAN_FILE = "plan.json"


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def corpus_fingerprint(cfg) -> dict[str, str]:
    """Content hashes of the corpus inputs (local files), so a changed corpus file re-runs stage 1."""
    out = {}
    for spec in cfg.inputs:
        for uri in storage.list_files(spec.path):
            out[f"{spec.source}:{Path(uri).name}"] = uri if storage.is_s3(uri) else _file_digest(uri)
    return out


@dataclass
class Reproduction:
    """One run of the plan: keys and records as they are settled."""

    cfg: ReproduceConfig
    layout: Layout
    steps: list[StepSpec]
    configs: StepConfigs
    keys: dict[str, str] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)   # step -> skipped | ran | re-created | pending
    ray_ready: bool = False

    @classmethod
    def of(cls, cfg: ReproduceConfig) -> "Reproduction":
        layout = Layout.of(cfg)
        steps = plan_steps(cfg)
        return cls(cfg, layout, steps, StepConfigs(cfg, layout, steps))

    # ---------------------------------------------------------------- keys
    def places(self) -> dict[str, str]:
        from finadapt.paths import PROJECT_ROOT, data_dir

        return {str(self.layout.work): "@work", str(self.layout.results): "@results",
                str(Path(data_dir()).resolve()): "@data", str(PROJECT_ROOT): "@repo"}

    def data_for(self, spec: StepSpec, stage_cfg) -> dict[str, str]:
        if spec.kind == "corpus":
            return corpus_fingerprint(stage_cfg)
        if spec.kind == "pretrain":
            return {}
        from finadapt.tasks.materialize import data_fingerprint

        return {"flare": data_fingerprint()}

    def needs_of(self, spec: StepSpec) -> tuple[str, ...]:
        """Upstream steps read; row (f) reads stage 1 / the pool only if its chosen recipe uses them."""
        if spec.variant != "f" or spec.kind != "sft":
            return spec.needs
        recipe = self.configs.final_recipe
        used = {"pretrain": recipe.get("stage1", True), "synth": recipe.get("synthetic", True)}
        return tuple(n for n in spec.needs if used.get(n, True))

    def key_of(self, spec: StepSpec):
        stage_cfg = self.configs.build(spec)
        key = step_key(spec, stage_cfg, self.keys, self.data_for(spec, stage_cfg), self.places(),
                       self.needs_of(spec))
        self.keys[spec.name] = key
        return stage_cfg, key

    def done(self, spec: StepSpec, key: str) -> bool:
        record = StepRecord.load(self.layout.step_results(spec.name))
        return record is not None and record.status == "done" and record.key == key

    # ---------------------------------------------------------------- running
    def connect(self) -> None:
        if not self.ray_ready:
            from finadapt.ray_connect import connect

            connect(self.cfg.ray)
            self.ray_ready = True

    def run_step(self, spec: StepSpec, stage_cfg, key: str, notes: list[str]) -> StepRecord:
        self.connect()
        guard = split_guard.allowed("test") if spec.kind == "eval" else split_guard.forbidden(["test"])
        with guard:
            record = execute(spec, stage_cfg, key, self.layout, notes)
        if spec.kind in ("pretrain", "sft") and not self.cfg.keep_checkpoints:
            # finished: only its exported best model is read later; the checkpoints exist to resume it
            shutil.rmtree(self.layout.work / "train" / spec.name, ignore_errors=True)
        if self.cfg.commit:
            git_commit([self.layout.results], f"reproduce {self.cfg.name}: {spec.name} "
                       f"({record.wall_seconds / 60:.1f} min){' [re-created]' if notes else ''}")
        return record

    def ensure_inputs(self, spec: StepSpec) -> None:
        """A step about to run needs its upstream work-dir outputs: re-create any that is missing."""
        for name in self.needs_of(spec):
            upstream = next(s for s in self.steps if s.name == name)
            artifact = self.layout.artifact(upstream)
            if artifact is not None and artifact.exists():
                continue
            self.ensure_inputs(upstream)
            log.warning("step %s needs %s, which is not in the work dir (its results are committed, its "
                        "weights/data are not): re-creating it by running step %s again", spec.name, artifact, name)
            stage_cfg = self.configs.build(upstream)
            self.run_step(upstream, stage_cfg, self.keys[name],
                          [f"re-created for {spec.name}: {artifact} was missing from the work dir"])
            self.status[name] = "re-created"

    def write_plan(self) -> None:
        from finadapt.config import dump_config

        ablation = self.configs.build(next(s for s in self.steps if s.kind == "eval" and s.variant in "bcde")) \
            if any(s.kind == "eval" and s.variant in "bcde" for s in self.steps) else None
        plan = {"name": self.cfg.name, "steps": [s.name for s in self.steps],
                "variants": variants_summary(self.cfg, self.steps),
                "test_subsets": None if ablation is None else {
                    "limit": ablation.limit, "task_limits": ablation.task_limits, "seed": ablation.seed},
                "keys": dict(self.keys), "status": dict(self.status), "config": json.loads(
                    json.dumps(self.cfg.model_dump(mode="json")))}
        if "f" in plan["variants"] and self.configs.final_recipe:
            plan["variants"]["f"]["recipe"] = self.configs.final_recipe
        self.layout.results.mkdir(parents=True, exist_ok=True)
        (self.layout.results / PLAN_FILE).write_text(json.dumps(plan, indent=2, default=str) + "\n")
        (self.layout.results / "reproduce.yaml").write_text(dump_config(self.cfg))

    def scores_a_model_trained_now(self, spec: StepSpec) -> bool:
        """An evaluation whose training step ran (or was re-created) in this sitting: its model lives
        only in this work dir, so the budget does not stop it."""
        return spec.kind == "eval" and any(self.status.get(n) in ("ran", "re-created") for n in spec.needs)

    def run(self, dry_run: bool = False, max_minutes: float | None = None) -> dict[str, Any]:
        """`max_minutes`: start no step after that long (a sitting's budget); the rest stay pending."""
        t0 = _clock()
        for spec in self.steps:
            stage_cfg, key = self.key_of(spec)
            if self.done(spec, key):
                self.status.setdefault(spec.name, "skipped")
                log.info("step %s: finished earlier with the same key %s; skipped", spec.name, key[:12])
                continue
            out_of_time = max_minutes is not None and _clock() - t0 > max_minutes * 60
            if out_of_time and self.scores_a_model_trained_now(spec):
                log.info("step %s starts after --max-minutes %s: it scores a model trained in this sitting, "
                         "which the next sitting would have to train again", spec.name, max_minutes)
                out_of_time = False
            if dry_run or out_of_time:
                self.status[spec.name] = "pending"
                if out_of_time:
                    log.warning("step %s not started: --max-minutes %s spent; run again to continue",
                                spec.name, max_minutes)
                continue
            self.write_plan()
            self.ensure_inputs(spec)
            self.run_step(spec, stage_cfg, key, [])
            self.status[spec.name] = "ran"
        if dry_run:
            return {"results_dir": str(self.layout.results), "status": dict(self.status), "report": None}
        self.write_plan()
        return self.finish()

    def finish(self) -> dict[str, Any]:
        from finadapt.reproduce.report import write_reproduce_report

        report = write_reproduce_report(str(self.layout.results))
        if self.cfg.commit:
            git_commit([self.layout.results], f"reproduce {self.cfg.name}: report")
        return {"results_dir": str(self.layout.results), "status": dict(self.status), "report": report}


def run_reproduce(cfg: ReproduceConfig, dry_run: bool = False, max_minutes: float | None = None) -> dict[str, Any]:
    """Run (or with `dry_run`, only list) the reproduction's steps; returns status per step and the report."""
    return Reproduction.of(cfg).run(dry_run, max_minutes)

