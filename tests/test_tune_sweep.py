"""Sweeps end to end on the tiny model and a local Ray: best.yaml round trip, ASHA stopping a diverging
trial, test splits unreadable inside trials, resume without re-running finished trials."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from tune_fixtures import base_config, space_file, sweep_file, synthetic_pool

from finadapt.config import load_config, validate
from finadapt.train.config import SftConfig
from finadapt.tune.config import load_sweep
from finadapt.tune.runner import RECORDS_FILE, live_placement_groups
from finadapt.tune.space import apply_params
from finadapt.tune.sweep import run_sweep
from finadapt.tune.trial import FAIL_INDEX_ENV, READ_SPLIT_ENV

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def ray_local():
    import ray

    ray.init(num_cpus=3, address="local", include_dashboard=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def _by_lr(records):
    return {r.params["optim.lr"]: r for r in records}


def test_asha_stops_the_diverging_trial_and_best_yaml_round_trips(tmp_path):
    space = space_file(tmp_path, {"optim.lr": {"grid": [1.0e-3, 50.0]}})  # the sane lr runs first
    sweep = load_sweep(sweep_file(tmp_path, space, base_config(tmp_path),
                                  final_test={"enabled": True, "limit": 4}))
    before = set(live_placement_groups())
    out = run_sweep(sweep)
    # a trial stopped by ASHA must not keep its Train placement group (ray-project/ray#54305)
    assert not set(live_placement_groups()) - before
    good, bad = _by_lr(out["records"])[1.0e-3], _by_lr(out["records"])[50.0]

    assert (good.status, good.steps_run, good.planned_steps) == ("completed", 4, 4)
    assert bad.status == "stopped_early" and bad.steps_run < bad.planned_steps == 4
    assert bad.history[-1]["diverged"] is True and bad.final_scores["objective"] == sweep.cfg.objective.diverged_score
    assert good.final_scores["objective"] > bad.final_scores["objective"]
    assert good.model_dir and Path(good.model_dir, "config.json").exists()

    assert out["best_trial_id"] == good.trial_id
    loaded = load_config(SftConfig, out["best_yaml"])
    assert loaded.optim.lr == good.params["optim.lr"]
    expected = validate(SftConfig, apply_params(sweep.base, good.params), "expected").model_dump()
    got = loaded.model_dump()
    trial_names = {f"trial-{r.trial_id}" for r in out["records"]}
    assert got["checkpoint"].pop("name") not in trial_names | {None}
    expected["checkpoint"].pop("name")
    assert Path(got.pop("output_dir")).parent.name == "best-run" and expected.pop("output_dir")
    assert got == expected

    # the one test scoring of the sweep, in the driver, on the best trial's model
    results = json.loads(Path(out["root"], "best-test", "results.json").read_text())
    assert results["split"] == "test" and results["model"]["spec"] == good.model_dir
    assert Path(out["report_dir"], "trials.csv").exists()
    saved = [json.loads(line) for line in Path(out["root"], RECORDS_FILE).read_text().splitlines()]
    assert {r["trial_id"] for r in saved} == {good.trial_id, bad.trial_id}


def test_a_trial_cannot_read_a_test_split(tmp_path):
    from finadapt.tasks import load_samples

    space = space_file(tmp_path, {"optim.lr": {"grid": [1.0e-3]}})
    sweep = load_sweep(sweep_file(tmp_path, space, base_config(tmp_path),
                                  trial_env={READ_SPLIT_ENV: "fpb:test"}))
    (record,) = run_sweep(sweep)["records"]
    assert record.status == "error" and "reading the 'test' split is forbidden" in record.error
    assert load_samples("fpb", "test")  # the driver itself may (the best model's one scoring)


def _mtimes(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_resume_finishes_an_interrupted_sweep_without_rerunning_finished_trials(tmp_path):
    pool = synthetic_pool(tmp_path, n=16)
    base = base_config(tmp_path, data={"tasks": ["fpb"], "limit_per_task": 16, "max_length": 192,
                                       "synthetic_jsonl": [str(pool)]})
    space = space_file(tmp_path, {"data.synthetic_ratio": {"grid": [0, 1]}})
    first = load_sweep(sweep_file(tmp_path, space, base, scheduler={"kind": "none"},
                                  trial_env={FAIL_INDEX_ENV: "1"}))  # trial 0 finishes, trial 1 dies
    records = {r.params["data.synthetic_ratio"]: r for r in run_sweep(first)["records"]}
    done, failed = records[0], records[1]
    assert done.status == "completed" and failed.status == "error"
    root = Path(first.root)
    train_run = root / "trials" / f"trial-{done.trial_id}"  # its checkpoints: rewritten if it trained again
    (tune_dir,) = [p for p in root.iterdir() if p.is_dir() and done.trial_id in p.name]
    before = _mtimes(train_run), (tune_dir / "result.json").read_text()
    assert any(name.startswith("checkpoint_") for name in before[0])

    resumed = load_sweep(sweep_file(tmp_path, space, base, scheduler={"kind": "none"}))
    again = {r.params["data.synthetic_ratio"]: r for r in run_sweep(resumed, resume=True)["records"]}
    assert {r.trial_id for r in again.values()} == {done.trial_id, failed.trial_id}
    assert again[1].status == "completed" and again[1].steps_run == 8  # ratio 1 doubled the data and the plan
    assert again[0].history == done.history  # same reports, same timestamps: not re-run
    assert (_mtimes(train_run), (tune_dir / "result.json").read_text()) == before
