"""The reproduction report from a hand-built results dir (no models, no Ray): numbers equal the inputs
(mean and spread over seeds computed independently), verdicts follow the inputs and flip with them,
missing steps show as pending, the floor comes from the full test set, and the files are written."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from finadapt.errors import InputError, InputNotFoundError
from finadapt.reproduce.report import build_report, markdown_table, report_markdown, write_reproduce_report

REAL_RESULTS = Path(__file__).resolve().parents[1] / "results" / "zero-shot-demo" / "results.json"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TASKS = ("fpb", "fiqasa", "headlines", "ner")
FULL_FLOOR, SUBSET_FLOOR = 0.41, 0.47
SEEDS = {"a": [0], "b": [0, 1], "c": [0, 1], "d": [0, 1], "e": [0, 1], "f": [0, 1]}
LABELS = {"a": "base zero-shot", "b": "stage 2, real", "c": "stage 2, real + synthetic",
          "d": "stage 1 + stage 2, real", "e": "stage 1 + stage 2, real + synthetic", "f": "final recipe"}


def _steps(v: str, prefix: str) -> list[str]:
    if v == "a":
        return ["eval-a"] if prefix == "eval" else []
    return [f"{prefix}-{v}-s{s}" for s in SEEDS[v]]


def make_plan() -> dict:
    variants = {v: {"label": LABELS[v], "train_steps": _steps(v, "sft"), "eval_steps": _steps(v, "eval"),
                    "seeds": SEEDS[v], "test": "full" if v in "af" else "subset"} for v in SEEDS}
    variants["f"]["recipe"] = {"from": "variant d"}
    steps = ["corpus", "synth", "pretrain"] + [s for v in SEEDS for s in _steps(v, "sft")]
    steps += [s for v in SEEDS for s in _steps(v, "eval")]
    return {"name": "reproduce-test", "config_file": "pipelines/configs/reproduce_cpu.yaml", "steps": steps,
            "variants": variants, "test_subsets": {"limit": 200, "task_limits": {"headlines": 60}, "seed": 0}}


def make_results(scores: dict[str, float], floor: float, ci_half: float = 0.05, n: int = 100) -> dict:
    """The real results.json with every (task, mode) score replaced: compat gets `scores`, choice 0.1 less."""
    results = json.loads(REAL_RESULTS.read_text())
    out = []
    for entry in results["scores"]:
        e = copy.deepcopy(entry)
        value = scores[e["task"]] - (0.1 if e["mode"] == "choice" else 0.0)
        e.update(score=value, ci95=[value - ci_half, value + ci_half], majority_floor=floor, n=n)
        e[e["primary"]] = value
        if e["task"] == "fpb":
            e["accuracy"] = value + 0.02
        out.append(e)
    results["scores"] = out
    return results


def step_json(step: str, kind: str, wall: float, tokens: dict, notes: list[str] | None = None) -> dict:
    return {"step": step, "kind": kind, "key": "ab" * 32, "status": "done", "started": "2026-01-01T00:00:00",
            "finished": "2026-01-01T00:10:00", "wall_seconds": wall, "tokens": tokens, "notes": notes or [],
            "outputs": []}


def _write(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


# Per variant and seed, compat primary score per task. d and e beat b and c by far (stage 1 helps);
# c beats b and e beats d on classification (synthetic helps classification) and not on NER.
BASE = {"fpb": 0.50, "fiqasa": 0.60, "headlines": 0.70, "ner": 0.30}
STAGE1, SYNTH = 0.20, 0.10


def default_scores(v: str, seed: int) -> dict[str, float]:
    jitter = 0.01 * seed  # spread 0.005 per multi-seed row
    stage1 = STAGE1 if v in "def" else 0.0
    return {t: BASE[t] + stage1 + (SYNTH if v in "ce" and t != "ner" else 0.0) + jitter for t in TASKS}


def build_dir(root: Path, scores=default_scores, skip: tuple[str, ...] = ()) -> Path:
    """A results dir: plan.json, every step's step.json, eval results.json, sft summary.json, step pages."""
    plan = make_plan()
    _write(root / "plan.json", plan)
    for v, variant in plan["variants"].items():
        for seed, step in zip(variant["seeds"], variant["eval_steps"]):
            if step in skip:
                continue
            floor = FULL_FLOOR if variant["test"] == "full" else SUBSET_FLOOR
            _write(root / step / "results.json", make_results(scores(v, seed), floor))
            _write(root / step / "step.json", step_json(step, "eval", 120.0, {"generated_tokens": 1000}))
            (root / step / "results.md").write_text("# results\n")
        for step in variant["train_steps"]:
            if step in skip:
                continue
            _write(root / step / "step.json", step_json(step, "sft", 600.0, {}, ["lr 5e-5"]))
            _write(root / step / "summary.json", {"best_metrics": {"val_score": 0.4}, "data": {"tokens": 43220},
                                                  "wall_seconds": 590.0})
    for step, kind in (("corpus", "corpus"), ("synth", "synth"), ("pretrain", "pretrain")):
        if step not in skip:
            _write(root / step / "step.json", step_json(step, kind, 300.0, {"train_tokens": 5000}))
            (root / step / "report.md").write_text("# report\n")
    return root


def verdict(report: dict, claim_id: str, mode: str = "compat") -> str:
    return next(v["verdict"] for v in report["verdicts"][mode] if v["id"] == claim_id)


def test_numbers_equal_inputs_and_files_written(tmp_path):
    root = build_dir(tmp_path / "res")
    report = write_reproduce_report(str(root))
    assert json.loads((root / "report.json").read_text()) == report
    assert (root / "ablation.png").read_bytes().startswith(PNG_MAGIC)
    assert report["modes"][:2] == ["compat", "choice"] and "robust" in report["modes"]

    b = report["tables"]["compat"]["rows"]["b"]["cells"]
    seeds = [default_scores("b", s)["fiqasa"] for s in (0, 1)]
    assert b["fiqasa"]["values"] == pytest.approx(seeds)
    assert b["fiqasa"]["mean"] == pytest.approx(sum(seeds) / 2)
    assert b["fiqasa"]["spread"] == pytest.approx((max(seeds) - min(seeds)) / 2)
    assert b["fiqasa"]["ci95"] is None and b["fiqasa"]["n"] == 100
    assert b["fpb_acc"]["mean"] == pytest.approx(sum(default_scores("b", s)["fpb"] + 0.02 for s in (0, 1)) / 2)
    choice = report["tables"]["choice"]["rows"]["e"]["cells"]["headlines"]
    assert choice["mean"] == pytest.approx(sum(default_scores("e", s)["headlines"] - 0.1 for s in (0, 1)) / 2)

    a = report["tables"]["compat"]["rows"]["a"]["cells"]["ner"]
    assert a["spread"] is None and a["ci95"] == pytest.approx([BASE["ner"] - 0.05, BASE["ner"] + 0.05])
    floor = report["tables"]["compat"]["majority_floor"]["fpb"]
    assert floor["value"] == FULL_FLOOR and "full test set" in floor["source"]

    names = {row["model"] for row in report["published"]["rows"]}
    assert {"GPT-4", "ChatGPT (gpt-3.5)", "FinMA-7B", "FinMA-30B", "Fin-Pythia-1.4B"} <= names
    table = markdown_table(report)
    assert f"{sum(seeds) / 2:.3f} ± {(max(seeds) - min(seeds)) / 2:.3f}" in table
    assert "test subset" in table and report["published"]["caveat"] in table

    totals = report["totals"]
    assert totals["pending"] == 0 and totals["done"] == len(make_plan()["steps"])
    n_sft = sum(len(v["train_steps"]) for v in make_plan()["variants"].values())
    # corpus/synth/pretrain from step.json; sft step.json tokens are empty, so summary.json's data.tokens fill them
    assert totals["tokens"]["train_tokens"] == 3 * 5000 + n_sft * 43220
    assert totals["wall_seconds"] == pytest.approx(3 * 300 + n_sft * 600 + 11 * 120)
    sft = next(r for r in report["steps"] if r["step"] == "sft-b-s0")
    assert sft["tokens"] == {"train_tokens": 43220} and sft["val_score"] == 0.4
    md = (root / "report.md").read_text()
    assert "[corpus/report.md](corpus/report.md)" in md and "[eval-b-s1/results.md](eval-b-s1/results.md)" in md


def test_verdicts_follow_inputs(tmp_path):
    report = build_report(str(build_dir(tmp_path / "res")))
    assert verdict(report, "stage1_helps") == "reproduced"
    assert verdict(report, "synthetic_helps_classification") == "reproduced"
    assert verdict(report, "synthetic_not_ner") == "reproduced"
    delta = report["deltas"]["compat"]["d-b"]["tasks"]["fpb"]
    assert delta["delta"] == pytest.approx(STAGE1) and delta["outcome"] == "higher"
    assert delta["b_spread"] == pytest.approx(0.005)
    fb = report["deltas"]["compat"]["f-b"]["tasks"]["fpb"]
    assert fb["same_test_set"] is False and fb["outcome"] == "different test sets"
    assert "† compares different test sets" in report_markdown(report)


def test_verdicts_flip_when_inputs_flip(tmp_path):
    def flipped(v, seed):
        s = default_scores(v, seed)
        if v in "de":  # stage 1 now hurts
            s = {t: x - 2 * STAGE1 for t, x in s.items()}
        if v in "ce":  # synthetic now hurts classification and helps NER
            s = {t: (x + 0.3 if t == "ner" else x - 2 * SYNTH) for t, x in s.items()}
        return s

    report = build_report(str(build_dir(tmp_path / "flip", flipped)))
    assert verdict(report, "stage1_helps") == "not reproduced"
    assert verdict(report, "synthetic_helps_classification") == "not reproduced"
    assert verdict(report, "synthetic_not_ner") == "not reproduced"
    assert "This did not reproduce." in next(v["text"] for v in report["verdicts"]["choice"] if v["id"] == "stage1_helps")

    def flat(v, seed):  # every variant equal up to seed jitter: nothing beats the noise
        return {t: BASE[t] + 0.01 * seed for t in TASKS}

    report = build_report(str(build_dir(tmp_path / "flat", flat)))
    assert verdict(report, "stage1_helps") == "within noise"
    assert verdict(report, "synthetic_helps_classification") == "within noise"
    assert verdict(report, "synthetic_not_ner") == "reproduced"


def test_single_seed_ci_sets_the_noise_threshold(tmp_path):
    """A gain inside a single-seed row's CI is noise; the same gain with a tight CI counts."""
    from finadapt.reproduce.report import compare

    cell = lambda mean, ci, spread=None, seeds=1: {"mean": mean, "ci95": ci, "spread": spread, "seeds_total": seeds}
    rows = {"b": {"test": "subset", "cells": {"fpb": cell(0.5, None, 0.01, 2)}},
            "d": {"test": "subset", "cells": {"fpb": cell(0.6, [0.4, 0.8])}}}
    assert compare(rows, "d", "b", "fpb")["outcome"] == "within noise"
    rows["d"]["cells"]["fpb"] = cell(0.6, [0.58, 0.62])
    out = compare(rows, "d", "b", "fpb")
    assert out["outcome"] == "higher" and out["threshold"] == pytest.approx(0.02)


def test_missing_steps_are_pending(tmp_path):
    skip = ("sft-e-s1", "eval-e-s1", "eval-f-s0", "eval-f-s1", "synth")
    root = build_dir(tmp_path / "res", skip=skip)
    report = write_reproduce_report(str(root))
    status = {r["step"]: r["status"] for r in report["steps"]}
    assert all(status[s] == "pending" for s in skip) and status["eval-e-s0"] == "done"
    assert report["totals"]["pending"] == len(skip)
    e = report["tables"]["compat"]["rows"]["e"]["cells"]["fpb"]
    assert e["values"][1] is None and e["seeds_done"] == 1 and e["mean"] == pytest.approx(default_scores("e", 0)["fpb"])
    assert report["tables"]["compat"]["rows"]["f"]["cells"]["ner"]["mean"] is None
    assert all(q["bar_status"] == "pending" for q in report["quality_bar"])
    md = (root / "report.md").read_text()
    assert "| synth | synth | pending |" in md and "(1 of 2 seeds)" in md and "pending" in markdown_table(report)
    assert (root / "ablation.png").read_bytes().startswith(PNG_MAGIC)


def test_quality_bar_met_and_missed(tmp_path):
    def strong_f(v, seed):
        s = default_scores(v, seed)
        return {"fpb": 0.95, "fiqasa": 0.80, "headlines": 0.975, "ner": 0.70} if v == "f" else s

    report = build_report(str(build_dir(tmp_path / "res", strong_f)))
    got = {q["task"]: (q["bar_status"], q["goal_status"], q["value"]) for q in report["quality_bar"]}
    assert got["fpb"] == ("met", "met", pytest.approx(0.95))
    assert got["fiqasa"] == ("missed", "missed", pytest.approx(0.80))
    assert got["headlines"][:2] == ("met", "missed") and got["ner"][:2] == ("met", "missed")
    assert report["quality_bar"][0]["mode"] == "compat"


def test_bad_inputs_name_the_file(tmp_path):
    with pytest.raises(InputNotFoundError, match="plan.json"):
        build_report(str(tmp_path / "empty"))
    root = build_dir(tmp_path / "res")
    (root / "eval-b-s0" / "results.json").write_text("{not json")
    with pytest.raises(InputError, match=r"eval-b-s0/results.json: line 1"):
        build_report(str(root))
    (root / "plan.json").write_text(json.dumps({"steps": []}))
    with pytest.raises(InputError, match=r"plan.json: 'variants'"):
        build_report(str(root))


def test_plan_only_with_fewer_variants(tmp_path):
    """Right after the runner wrote plan.json: every step pending, no scores, variants c-f not planned."""
    plan = make_plan()
    plan["variants"] = {v: plan["variants"][v] for v in ("a", "b")}
    _write(tmp_path / "plan.json", plan)
    report = write_reproduce_report(str(tmp_path))
    assert report["modes"] == [] and report["totals"]["done"] == 0
    assert report["totals"]["pending"] == len(plan["steps"])
    assert "every eval step is pending" in markdown_table(report)
    assert "No claim can be judged yet" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "ablation.png").read_bytes().startswith(PNG_MAGIC)
    _write(tmp_path / "eval-b-s0" / "results.json", make_results(BASE, SUBSET_FLOOR))
    _write(tmp_path / "eval-b-s0" / "step.json", step_json("eval-b-s0", "eval", 60.0, {}))
    report = write_reproduce_report(str(tmp_path))
    assert report["verdicts"]["compat"][0]["verdict"] == "pending"
    assert report["deltas"]["compat"]["c-b"]["tasks"]["fpb"]["outcome"] == "not in plan"
    floor = report["tables"]["compat"]["majority_floor"]["fpb"]
    assert floor["value"] == SUBSET_FLOOR and "test subset (variant b" in floor["source"]


def test_floor_prefers_a_full_test_row(tmp_path):
    """With (a) pending, the floor comes from (f) (full test), not from the subset rows listed before it."""
    report = build_report(str(build_dir(tmp_path / "res", skip=("eval-a",))))
    floor = report["tables"]["choice"]["majority_floor"]["ner"]
    assert floor["value"] == FULL_FLOOR and floor["source"].startswith("full test set (variant f")
    subset = report["tables"]["choice"]["majority_floor_subset"]["ner"]
    assert subset["value"] == SUBSET_FLOOR and subset["source"].startswith("test subset (variant b")
    from finadapt.reproduce.report import markdown_table

    markdown = markdown_table(report)
    assert f"| majority-class floor, test subsets (rows b-e) | – | {SUBSET_FLOOR:.3f}" in markdown


def test_a_claim_whose_scores_are_all_zero_is_not_measurable():
    """NER at 0 everywhere (a model that never writes the entity format) confirms no claim."""
    from finadapt.reproduce.report import CLAIMS, claim_verdict

    cell = {"mean": 0.0, "spread": None, "ci95": [0.0, 0.0], "values": [0.0], "n": 98, "seeds_total": 1}
    rows = {v: {"test": "subset", "cells": {"ner": dict(cell)}} for v in "bcde"}
    claim = next(c for c in CLAIMS if c["id"] == "synthetic_not_ner")
    assert claim_verdict(rows, claim, "compat")["verdict"].startswith("not measurable")
    rows["c"]["cells"]["ner"] = {**cell, "mean": 0.30, "ci95": [0.25, 0.35]}
    assert claim_verdict(rows, claim, "compat")["verdict"] != "not measurable (every compared score is 0)"
