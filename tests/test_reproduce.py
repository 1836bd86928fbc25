"""`finadapt reproduce` end to end on the tiny model: every step's outputs, commits per step, the skip
of finished steps, the resume after a failed step, re-creation of missing weights, and the test-split
ban on every step that is not an evaluation.

One module-scoped study (reproduce_demo.yaml shrunk to the tiny random model) runs first with a step
made to fail, then again to finish; the tests read what those runs left behind.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import ray

from finadapt.reproduce import steps as steps_module
from finadapt.reproduce.runner import run_reproduce
from finadapt.reproduce.steps import StepFailed
from finadapt.stages import build_config
from finadapt.tasks import split_guard

DEMO = Path(__file__).resolve().parents[1] / "pipelines" / "configs" / "reproduce_demo.yaml"
FAIL_AT = "eval-c-s0"
# Training and scoring in-process (ray.enabled: false) keep the module fast; the corpus and the teacher
# still run on Ray, and make demo runs every stage through Ray.
TINY_EVAL = {"limit": 4, "task_limits": {"headlines": 1, "ner": 2}, "bootstrap": 20, "ray.enabled": False,
             "generation": {"max_new_tokens_classification": 6, "max_new_tokens_headlines": 4,
                            "max_new_tokens_ner": 12}}
TINY_SFT = {"data.limit_per_task": 3, "max_steps": 2, "eval_every_steps": 2, "ray.enabled": False,
            "batch": {"batch_size": 2, "grad_accum": 1, "micro_batch_tokens": 1024},
            "validation": {"tasks": ["fpb", "ner"], "limit": 3, "task_limits": {}}}


def tiny_overrides(results: Path, work: Path) -> list[str]:
    """reproduce_demo.yaml with the tiny random model everywhere and a handful of rows per step."""
    inputs = [{"path": "data:corpora/reuters21578.jsonl.gz", "source": "reuters21578", "domain": "financial",
               "max_records": 120},
              {"path": "data:corpora/wikipedia_en.jsonl.gz", "source": "wikipedia_en", "domain": "general",
               "max_records": 60}]
    corpus = {"inputs": inputs, "pack.tokenizer": "tiny-random", "pack.seq_len": 64, "shard_rows": 400,
              "near_dedup.num_perm": 32}
    pretrain = {"max_steps": 2, "eval_every_steps": 2, "data.val_sequences": 4, "data.seq_len": 64, "ray.enabled": False,
                "batch": {"batch_size": 2, "grad_accum": 1, "micro_batch_size": 2}}
    return [f"results_dir={results}", f"work_dir={work}", "commit=true", "base_model=tiny-random",
            "seeds=[0, 1]", f"corpus.set={json.dumps(corpus)}",
            "synth.set=" + json.dumps({"teacher.spec": "tiny-random", "requests_per_task": 2,
                                       "sampling.max_tokens": 16}),
            f"pretrain.set={json.dumps(pretrain)}", f"sft.set={json.dumps({**TINY_SFT, 'data.synthetic_on_short': 'cap'})}",
            "final.recipe_from=null",
            f"final.set={json.dumps({**TINY_SFT, 'data.synthetic_on_short': 'cap', 'max_steps': 3})}",
            f"ablation_eval.set={json.dumps(TINY_EVAL)}", f"full_eval.set={json.dumps(TINY_EVAL)}"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


class Recorder:
    """Wraps the stage runner: which steps ran, and which test-split reads each step attempted."""

    def __init__(self, monkeypatch, fail_at: str | None = None, forbid_all: bool = False):
        self.ran: list[str] = []
        self.test_reads: dict[str, int] = {}
        real_run, real_check = steps_module.run_stage, split_guard.check
        current: list[str] = []

        def run_stage(spec, cfg):
            if forbid_all:
                raise AssertionError(f"step {spec.name} ran although it had finished")
            self.ran.append(spec.name)
            current[:] = [spec.name]
            if spec.name == fail_at:
                raise RuntimeError("injected failure")
            return real_run(spec, cfg)

        def check(task, split):
            if split == "test" and current:
                self.test_reads[current[0]] = self.test_reads.get(current[0], 0) + 1
            return real_check(task, split)

        monkeypatch.setattr(steps_module, "run_stage", run_stage)
        monkeypatch.setattr(split_guard, "check", check)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Run 1 fails at FAIL_AT; run 2 finishes; both recorded. Results live in a git repo of their own."""
    root = tmp_path_factory.mktemp("reproduce")
    repo = root / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "test")
    results, work = repo / "results" / "reproduce-tiny", root / "work"
    cfg = build_config("reproduce", DEMO, tiny_overrides(results, work))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    mp = pytest.MonkeyPatch()
    try:
        first = Recorder(mp, fail_at=FAIL_AT)
        with pytest.raises(StepFailed, match=f"step {FAIL_AT} .*injected failure") as failed:
            run_reproduce(cfg)
        after_failure = {p.parent.name: p.stat().st_mtime_ns for p in results.glob("*/step.json")}
        commits_after_failure = git(repo, "log", "--format=%s").splitlines()
        mp.undo()
        second = Recorder(mp)
        out = run_reproduce(cfg)
        mp.undo()
        yield {"cfg": cfg, "repo": repo, "results": results, "work": work, "first": first, "second": second,
               "failed": str(failed.value), "after_failure": after_failure, "out": out,
               "commits_after_failure": commits_after_failure}
    finally:
        mp.undo()
        ray.shutdown()


def test_every_step_leaves_its_outputs_and_the_report(study):
    results, plan = study["results"], json.loads((study["results"] / "plan.json").read_text())
    expected = {"corpus": "manifest.json", "synth": "report.json", "pretrain": "summary.json",
                "sft-b-s0": "summary.json", "sft-b-s1": "summary.json", "sft-f-s1": "summary.json",
                "eval-a": "results.json", "eval-e-s0": "results.json", "eval-f-s0": "results.json"}
    assert plan["steps"][:4] == ["corpus", "synth", "eval-a", "pretrain"] and len(plan["steps"]) == 18
    assert json.loads((results / "pretrain" / "step.json").read_text())["tokens"]["tokens_trained"] == 2 * 2 * 64
    for step in plan["steps"]:
        record = json.loads((results / step / "step.json").read_text())
        assert record["status"] == "done" and len(record["key"]) == 64 and record["wall_seconds"] > 0
        assert (results / step / "config.yaml").exists()
    for step, name in expected.items():
        assert (results / step / name).exists(), (step, name)
    for step in ("pretrain", "sft-b-s0", "sft-e-s0"):  # finished: best model kept, resume checkpoints gone
        assert (study["work"] / step / "best").is_dir() and not (study["work"] / "train" / step).exists()
    scores = json.loads((results / "eval-f-s1" / "results.json").read_text())["scores"]
    assert {s["task"] for s in scores} == {"fpb", "fiqasa", "headlines", "ner"}
    model = json.loads((results / "eval-d-s0" / "results.json").read_text())["model"]["spec"]
    assert model == str(study["work"] / "sft-d-s0" / "best")  # each row scores its own model
    sft_d = json.loads((results / "sft-d-s0" / "summary.json").read_text())
    assert sft_d["model"] == str(study["work"] / "pretrain" / "best")  # (d) starts from stage 1
    assert plan["variants"]["f"]["recipe"]["variant"] in "bcde"
    report = json.loads((results / "report.json").read_text())
    assert set(report["variants"]) == set("abcdef")
    for name in ("report.md", "ablation.png"):
        assert (results / name).stat().st_size > 0


def test_each_finished_step_is_committed_as_it_finishes(study):
    before = study["commits_after_failure"]
    assert any(f": {step} (" in line for line in before for step in ("corpus", "sft-c-s0"))
    assert not any(FAIL_AT in line for line in before)  # the failed step left no commit
    log = git(study["repo"], "log", "--format=%s").splitlines()
    assert sum(": eval-" in line for line in log) == 8 and any(line.endswith(": report") for line in log)
    assert git(study["repo"], "status", "--porcelain", "--", str(study["results"])) == ""


def test_a_failed_step_resumes_without_rerunning_finished_steps(study):
    first, second = study["first"], study["second"]
    assert first.ran[-1] == FAIL_AT and "failed" not in study["failed"].split(FAIL_AT)[0]
    finished_before = set(study["after_failure"])
    assert FAIL_AT not in finished_before and {"corpus", "sft-c-s0"} <= finished_before
    assert second.ran[0] == FAIL_AT and not finished_before & set(second.ran)
    for step, mtime in study["after_failure"].items():  # their records were not rewritten
        assert (study["results"] / step / "step.json").stat().st_mtime_ns == mtime
    assert study["out"]["status"][FAIL_AT] == "ran" and study["out"]["status"]["corpus"] == "skipped"


def test_only_evaluation_steps_read_test_splits(study):
    reads = {**study["first"].test_reads, **study["second"].test_reads}
    readers = {step for step, count in reads.items() if count}
    assert readers and all(step.startswith("eval-") or step in ("corpus", "synth") for step in readers)
    # corpus and synth read them only to decontaminate (allowed explicitly); training never does
    assert not any(step.startswith(("sft-", "pretrain")) for step in readers)


def test_a_rerun_skips_every_finished_step(study, monkeypatch):
    Recorder(monkeypatch, forbid_all=True)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    out = run_reproduce(study["cfg"])
    assert set(out["status"].values()) == {"skipped"}


def test_missing_weights_are_recreated_when_a_step_needs_them(study, monkeypatch):
    """A fresh clone has the committed results but no weights: a step to run re-creates its input."""
    import shutil

    results, work = study["results"], study["work"]
    shutil.rmtree(work / "sft-f-s0" / "best")
    (results / "eval-f-s0" / "step.json").unlink()
    recorder = Recorder(monkeypatch)
    out = run_reproduce(study["cfg"])
    assert recorder.ran == ["sft-f-s0", "eval-f-s0"]
    assert out["status"]["sft-f-s0"] == "re-created" and out["status"]["eval-f-s0"] == "ran"
    record = json.loads((results / "sft-f-s0" / "step.json").read_text())
    assert any("was missing from the work dir" in note for note in record["notes"])


def test_the_budget_never_cuts_a_fresh_model_from_its_evaluation(study, monkeypatch):
    """--max-minutes stops new training steps, but an evaluation of a model trained in this sitting
    still runs (the next sitting would have to train it again); an evaluation of a model trained
    earlier does not. Each step "takes" an hour on the runner's clock."""
    from finadapt.reproduce import runner as runner_module

    results = study["results"]
    for name in ("sft-f-s0", "eval-f-s0", "eval-f-s1"):
        (results / name / "step.json").unlink()
    clock = [0.0]
    monkeypatch.setattr(runner_module, "_clock", lambda: clock[0])
    recorder = Recorder(monkeypatch)
    real = steps_module.run_stage

    def one_hour_each(spec, cfg):
        clock[0] += 3600
        return real(spec, cfg)

    monkeypatch.setattr(steps_module, "run_stage", one_hour_each)
    out = run_reproduce(study["cfg"], max_minutes=30)
    assert recorder.ran == ["sft-f-s0", "eval-f-s0"]
    assert (out["status"]["sft-f-s0"], out["status"]["eval-f-s0"], out["status"]["eval-f-s1"]) == (
        "ran", "ran", "pending")
    out = run_reproduce(study["cfg"])  # leave the study complete for the tests after this one
    assert out["status"]["eval-f-s1"] == "ran"


def test_a_training_step_that_reads_a_test_split_fails(monkeypatch, tmp_path):
    """The ban is real: a stage-2 step made to read FPB's test split fails naming the split."""
    from finadapt.tasks import load_samples
    from finadapt.train import data as train_data

    real = train_data.training_samples

    def leaky(cfg, seed=0):
        load_samples("fpb", "test")
        return real(cfg, seed)

    monkeypatch.setattr(train_data, "training_samples", leaky)
    cfg = build_config("reproduce", DEMO, tiny_overrides(tmp_path / "r", tmp_path / "w") + [
        "variants=[b]", "seeds=[0]", "commit=false"])
    with pytest.raises(StepFailed, match="sft-b-s0.*test.*forbidden"):
        run_reproduce(cfg)


def test_building_step_configs_leaves_the_reproduction_config_unchanged():
    """The committed reproduce.yaml is the user's config: building (f)'s and the variants' stage configs
    (dotted overrides merged into nested `set:` sections) must not write the recipe into it."""
    from finadapt.config import load_config
    from finadapt.reproduce.config import ReproduceConfig
    from finadapt.reproduce.plan import Layout, StepConfigs, plan_steps

    cfg = load_config(ReproduceConfig, DEMO.with_name("reproduce_cpu.yaml"))
    before = cfg.model_dump()
    steps = plan_steps(cfg)
    configs = StepConfigs(cfg, Layout.of(cfg), steps)
    for spec in steps:
        if spec.kind == "sft" and spec.variant in "bcde":
            configs.build(spec)
    assert cfg.model_dump() == before
