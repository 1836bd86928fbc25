"""Sweep outputs from hand-built trial records (no Ray): table rows and ranks, stopped-early marking,
effect numbers checked against an independent computation, the computed "no clear effect" verdict,
plots, NaN handling, the records' JSONL round trip (local and S3) and its line-numbered errors."""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict
from importlib import resources
from pathlib import Path

import pytest

from finadapt.errors import InputError
from finadapt.tune.records import TrialRecord, load_records, save_records
from finadapt.tune.report import NO_EFFECT, write_sweep_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_trial(trial_id: str, ratio: float | None, lr: float | None, score: float, status: str = "completed",
               fpb: float | None = None, fiqasa: float | None = None, steps: int = 30, planned: int = 30,
               error: str | None = None) -> TrialRecord:
    """A trial whose last evaluation (at `steps`) scored `score`; two evaluations before it, a loss-only
    report after it (so 'last evaluation' is not simply 'last report')."""
    fpb = score if fpb is None else fpb
    fiqasa = score - 0.1 if fiqasa is None else fiqasa
    history = [{"step": s, "loss": 2.0 - s / 100} for s in range(5, steps + 1, 5)]
    for frac in (1 / 3, 2 / 3, 1.0):
        step = max(1, round(steps * frac))
        history.append({"step": step, "val_score": score * frac, "val_fpb": fpb * frac, "val_fiqasa": fiqasa * frac})
    history.sort(key=lambda h: (h["step"], "val_score" in h))
    history.append({"step": steps, "loss": 0.5})
    params = {"optim.warmup_steps": 3}
    if ratio is not None:
        params["data.synthetic_ratio"] = ratio
    if lr is not None:
        params["optim.lr"] = lr
    return TrialRecord(trial_id=trial_id, params=params, history=history, status=status, steps_run=steps,
                       planned_steps=planned, wall_seconds=12.5, final_scores={}, run_dir=f"/runs/{trial_id}",
                       model_dir=None if status == "error" else f"/runs/{trial_id}/best", error=error)


def errored_trial(trial_id: str = "t_err") -> TrialRecord:
    """Diverged before its first evaluation: NaN loss, no validation scores at all."""
    return TrialRecord(trial_id=trial_id, params={"data.synthetic_ratio": 0.5, "optim.lr": 5e-3,
                                                  "optim.warmup_steps": 3},
                       history=[{"step": 5, "loss": math.nan}], status="error", steps_run=5, planned_steps=30,
                       wall_seconds=3.0, final_scores={"val_score": math.nan}, run_dir="/runs/t_err", model_dir=None,
                       error="loss is NaN at step 5 | diverged")


# Strong effects: the objective rises with the ratio (group means 0.3/0.5/0.7, tiny spread within) and
# with the learning rate (monotone); t_stop was stopped early by ASHA.
STRONG = [
    make_trial("t1", 0.0, 1e-5, 0.30), make_trial("t2", 0.0, 2e-5, 0.31), make_trial("t3", 0.0, 3e-5, 0.29),
    make_trial("t4", 1.0, 5e-5, 0.50), make_trial("t5", 1.0, 8e-5, 0.51), make_trial("t6", 1.0, 1e-4, 0.49),
    make_trial("t7", 2.0, 2e-4, 0.70), make_trial("t8", 2.0, 3e-4, 0.71), make_trial("t9", 2.0, 4e-4, 0.69),
]
STOPPED = make_trial("t_stop", 0.0, 6e-6, 0.12, status="stopped_early", steps=10, planned=30)
# Noise only: each ratio group holds the same spread of scores; learning rates unrelated to the score.
NOISE = [
    make_trial("n1", 0.0, 1e-4, 0.40), make_trial("n2", 0.0, 1e-5, 0.60), make_trial("n3", 0.0, 3e-4, 0.50),
    make_trial("n4", 1.0, 3e-5, 0.41), make_trial("n5", 1.0, 2e-4, 0.59), make_trial("n6", 1.0, 5e-5, 0.52),
    make_trial("n7", 2.0, 4e-4, 0.39), make_trial("n8", 2.0, 2e-5, 0.61), make_trial("n9", 2.0, 8e-5, 0.49),
]


def read_csv(out: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO((out / "trials.csv").read_text())))


def section(text: str, heading: str) -> str:
    """The Markdown section under `## heading` (up to the next `## `)."""
    start = text.index(f"## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def test_trials_table_rows_ranks_stopped_early_and_nan(tmp_path):
    nan_task = make_trial("t_nan", 1.0, 7e-5, 0.45, fiqasa=math.nan)
    records = [*STRONG, STOPPED, errored_trial(), nan_task]
    out = tmp_path / "report"
    result = write_sweep_report(records, str(out))

    rows = read_csv(out)
    assert len(rows) == len(records)
    scored = {r.trial_id: r.history[-2]["val_score"] for r in records if r.status != "error"}
    expected_order = sorted(scored, key=lambda t: -scored[t])
    assert [r["trial_id"] for r in rows[:len(scored)]] == expected_order
    assert [r["rank"] for r in rows[:len(scored)]] == [str(i) for i in range(1, len(scored) + 1)]
    for row in rows[:len(scored)]:
        assert float(row["val_score"]) == pytest.approx(scored[row["trial_id"]])
        assert float(row["val_fpb"]) == pytest.approx(scored[row["trial_id"]])
    # the errored trial is listed last, unranked, its scores NaN (never 0), its error kept
    err = rows[-1]
    assert (err["trial_id"], err["rank"], err["status"]) == ("t_err", "", "error")
    assert err["val_score"] == err["val_fpb"] == err["val_fiqasa"] == "NaN"
    assert "diverged" in err["error"]
    assert next(r for r in rows if r["trial_id"] == "t_nan")["val_fiqasa"] == "NaN"
    # stopped early: only the ASHA-stopped trial, with its steps run / planned
    assert {r["trial_id"] for r in rows if r["stopped_early"] == "yes"} == {"t_stop"}
    stop = next(r for r in rows if r["trial_id"] == "t_stop")
    assert (stop["steps_run"], stop["planned_steps"], stop["status"]) == ("10", "30", "stopped_early")
    # best = highest objective, marked in both tables
    assert [r["trial_id"] for r in rows if r["best"] == "yes"] == [expected_order[0]] == [result["best_trial_id"]]
    md = (out / "trials.md").read_text()
    md_rows = {line.split(" | ")[1].strip("* ").split("*")[0]: line for line in md.splitlines()
               if line.startswith("| ") and not line.startswith("| rank")}
    assert f"**{expected_order[0]}** (best)" in md
    assert md_rows["t_stop"].count("| yes |") == 1 and "10 / 30" in md_rows["t_stop"]
    assert " - | - | - |" in md_rows["t_err"] and "0.0000" not in md_rows["t_err"]
    assert "loss is NaN at step 5 \\| diverged" in md
    # every param appears as a column, not only ratio and lr
    assert "optim.warmup_steps" in rows[0] and "`optim.warmup_steps`" in md
    # sweep.json is standard JSON: NaN written as null
    data = json.loads((out / "sweep.json").read_text())
    assert next(t for t in data["trials"] if t["trial_id"] == "t_err")["objective"] is None


def test_scores_are_final_scores_then_last_evaluation(tmp_path):
    trial = make_trial("a", 1.0, 1e-4, 0.6)
    trial.final_scores = {"val_score": 0.9}  # final_scores win; val_fpb comes from the last evaluation
    write_sweep_report([trial, make_trial("b", 2.0, 2e-4, 0.7)], str(tmp_path))
    rows = {r["trial_id"]: r for r in read_csv(tmp_path)}
    assert float(rows["a"]["val_score"]) == pytest.approx(0.9) and rows["a"]["rank"] == "1"
    assert float(rows["a"]["val_fpb"]) == pytest.approx(0.6)  # step-30 evaluation, not the 10/20 ones


def test_custom_objective_key_and_non_task_keys(tmp_path):
    """An objective not named val_* (e.g. `objective`) is read from the history; val_seconds is no task."""
    records = []
    for i, score in enumerate((0.2, 0.8, 0.5)):
        history = [{"step": 10, "objective": score / 2, "val_fpb": score / 2, "val_seconds": 3.0},
                   {"step": 20, "objective": score, "val_fpb": score, "val_seconds": 3.1},
                   {"step": 25, "loss": 0.4}]
        records.append(TrialRecord(f"c{i}", {"optim.lr": 10 ** -(i + 3)}, history, "completed", 25, 25, 9.0, {},
                                   f"/runs/c{i}", None))
    result = write_sweep_report(records, str(tmp_path), objective="objective")
    rows = read_csv(tmp_path)
    assert [r["trial_id"] for r in rows] == ["c1", "c2", "c0"]
    assert [float(r["objective"]) for r in rows] == [0.8, 0.5, 0.2]
    assert result["tasks"] == ["fpb"] and "val_seconds" not in rows[0]


def _spearman_no_ties(xs: list[float], ys: list[float]) -> float:
    """Textbook 1 - 6 sum d^2 / (n (n^2 - 1)), valid without ties: independent of the report's code."""
    rank = lambda v: {x: i for i, x in enumerate(sorted(v))}  # noqa: E731
    rx, ry = rank(xs), rank(ys)
    n = len(xs)
    return 1 - 6 * sum((rx[x] - ry[y]) ** 2 for x, y in zip(xs, ys)) / (n * (n * n - 1))


def test_effect_numbers_match_an_independent_computation(tmp_path):
    records = [*NOISE, errored_trial()]
    result = write_sweep_report(records, str(tmp_path))
    summary = result["summary"]
    scores = {r.trial_id: r.history[-2]["val_score"] for r in NOISE}

    spread = summary["objective_spread"]
    vals = list(scores.values())
    mean = sum(vals) / len(vals)
    assert spread["n"] == 9
    assert (spread["min"], spread["max"]) == (pytest.approx(min(vals)), pytest.approx(max(vals)))
    assert spread["mean"] == pytest.approx(mean)
    assert spread["stdev"] == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)))

    groups: dict[float, list[float]] = {}
    for r in NOISE:
        groups.setdefault(r.params["data.synthetic_ratio"], []).append(scores[r.trial_id])
    effect = summary["ratio_effect"]["series"]["val_score"]["effect"]
    got = {g["value"]: (g["n"], g["mean"]) for g in effect["groups"]}
    assert got == {k: (3, pytest.approx(sum(v) / 3)) for k, v in groups.items()}
    ss_within = sum(sum((x - sum(v) / len(v)) ** 2 for x in v) for v in groups.values())
    assert effect["df"] == 6
    assert effect["pooled_sd"] == pytest.approx(math.sqrt(ss_within / 6))
    means = [sum(v) / 3 for v in groups.values()]
    assert effect["between"] == pytest.approx(max(means) - min(means))
    # per-task means too (fpb equals the objective here, fiqasa is 0.1 lower)
    fiqasa = summary["ratio_effect"]["series"]["val_fiqasa"]["means"]
    assert {float(k): v for k, v in fiqasa.items()} == {k: pytest.approx(sum(v) / 3 - 0.1) for k, v in groups.items()}

    lr = summary["lr_effect"]["series"]["val_score"]
    lrs = [r.params["optim.lr"] for r in NOISE]
    assert lr["n"] == 9
    assert lr["rho"] == pytest.approx(_spearman_no_ties([math.log10(x) for x in lrs], [scores[r.trial_id] for r in NOISE]))
    assert lr["z"] == pytest.approx(abs(lr["rho"]) * math.sqrt(8))


def test_no_clear_effect_only_for_noise_level_differences(tmp_path):
    noise = write_sweep_report(NOISE, str(tmp_path / "noise"))
    text = (tmp_path / "noise" / "summary.md").read_text()
    ratio_part, lr_part = section(text, "Effect of the synthetic ratio"), section(text, "Effect of the learning rate")
    assert f"`val_score`: {NO_EFFECT}" in ratio_part
    assert f"`val_score`: {NO_EFFECT}" in lr_part
    assert noise["summary"]["ratio_effect"]["series"]["val_score"]["effect"]["verdict"] == "no_clear_effect"

    strong = write_sweep_report([*STRONG, STOPPED], str(tmp_path / "strong"))
    text = (tmp_path / "strong" / "summary.md").read_text()
    assert NO_EFFECT not in section(text, "Effect of the synthetic ratio")
    assert NO_EFFECT not in section(text, "Effect of the learning rate")
    effect = strong["summary"]["ratio_effect"]["series"]["val_score"]["effect"]
    assert effect["verdict"] == "effect" and effect["best"] == 2.0
    assert strong["summary"]["lr_effect"]["series"]["val_score"]["rho"] > 0.8
    assert "higher values scored higher" in section(text, "Effect of the learning rate")
    assert "Trial `t8`" in section(text, "Best configuration")


def test_plots_written_and_missing_params_noted(tmp_path):
    write_sweep_report([*STRONG, STOPPED, errored_trial()], str(tmp_path / "full"))
    for name in ("score_vs_ratio.png", "score_vs_lr.png", "curves.png"):
        data = (tmp_path / "full" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name

    no_lr = [make_trial(f"r{i}", ratio, None, 0.4 + 0.01 * i) for i, ratio in enumerate((0.0, 0.5, 1.0, 0.0))]
    result = write_sweep_report(no_lr, str(tmp_path / "no_lr"))
    files = {p.name for p in (tmp_path / "no_lr").iterdir()}
    assert "score_vs_lr.png" not in files and {"score_vs_ratio.png", "curves.png"} <= files
    text = (tmp_path / "no_lr" / "summary.md").read_text()
    assert "no learning-rate parameter" in text and result["summary"]["lr_effect"] is None


def test_test_results_beside_published_numbers(tmp_path):
    published = json.loads(resources.files("finadapt").joinpath("resources/published_results.json").read_text())
    gpt4 = next(m for m in published["models"] if m["model"] == "GPT-4")
    finma = next(m for m in published["models"] if m["model"] == "FinMA-7B")
    test_results = {"scores": [{"task": "fpb", "mode": "compat", "score": 0.4321},
                               {"task": "fiqasa", "mode": "compat", "score": math.nan}]}
    write_sweep_report(STRONG, str(tmp_path), test_results=test_results, best_trial_id="t5")
    text = section((tmp_path / "summary.md").read_text(), "Best model on the FLARE test splits")
    ours = next(line for line in text.splitlines() if line.startswith("| **best trial"))
    assert ours.split(" | ")[1:] == ["0.4321", "- |"]
    gpt_line = next(line for line in text.splitlines() if line.startswith("| GPT-4 "))
    assert f"{gpt4['fpb']:.4f}" in gpt_line and f"{gpt4['fiqasa']:.4f}" in gpt_line
    assert any(line.startswith("| FinMA-7B ") and f"{finma['fpb']:.4f}" in line for line in text.splitlines())
    # the given best trial is marked, not the top-ranked one
    assert [r["trial_id"] for r in read_csv(tmp_path) if r["best"] == "yes"] == ["t5"]
    with pytest.raises(InputError, match="best_trial_id 'nope'"):
        write_sweep_report(STRONG, str(tmp_path / "x"), best_trial_id="nope")


def _same(a: list[TrialRecord], b: list[TrialRecord]) -> bool:
    """Equality that treats NaN as equal to NaN (records keep NaN scores and losses)."""
    return json.dumps([asdict(r) for r in a]) == json.dumps([asdict(r) for r in b])


def test_records_round_trip_with_nan(tmp_path):
    records = [*STRONG[:2], STOPPED, errored_trial()]
    path = str(tmp_path / "records.jsonl")
    save_records(records, path)
    loaded = load_records(path)
    assert _same(loaded, records) and loaded[0] == records[0]
    assert math.isnan(loaded[-1].history[0]["loss"]) and math.isnan(loaded[-1].final_scores["val_score"])
    assert [p.name for p in tmp_path.iterdir()] == ["records.jsonl"]  # atomic write left no temp file


def test_records_and_report_on_s3(s3_bucket):
    records = [*NOISE[:4], errored_trial()]
    save_records(records, f"{s3_bucket}/sweep/records.jsonl")
    assert _same(load_records(f"{s3_bucket}/sweep/records.jsonl"), records)
    result = write_sweep_report(records, f"{s3_bucket}/sweep/report")
    from finadapt import storage

    listed = {uri.rsplit("/", 1)[-1] for uri in storage.list_files(f"{s3_bucket}/sweep/report")}
    assert listed == set(result["files"])


def test_bad_jsonl_names_file_and_line(tmp_path):
    good = json.dumps(asdict(STRONG[0]))
    path = tmp_path / "records.jsonl"
    path.write_text(good + "\n" + "{not json\n")
    with pytest.raises(InputError, match=r"records\.jsonl: line 2: not valid JSON"):
        load_records(str(path))
    bad_status = dict(asdict(STRONG[1]), status="finished")
    path.write_text(good + "\n\n" + json.dumps(bad_status) + "\n")
    with pytest.raises(InputError, match=r"line 3: status 'finished' is not one of"):
        load_records(str(path))
    missing = {k: v for k, v in asdict(STRONG[1]).items() if k != "steps_run"}
    path.write_text(json.dumps(missing) + "\n")
    with pytest.raises(InputError, match=r"line 1: missing field\(s\) steps_run"):
        load_records(str(path))
    path.write_text(good + "\n" + good + "\n")
    with pytest.raises(InputError, match=r"line 2: trial_id 't1' already on line 1"):
        load_records(str(path))
