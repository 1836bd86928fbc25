"""Evaluation end to end on tiny-random: report files, the Ray Data actor pool, a user-defined task
through the CLI with S3 input/output, and CLI config errors.

Splits are materialized into a private FINADAPT_CACHE_DIR (tiny-random needs no model cache).
"""
from __future__ import annotations

import json
import re
from collections import Counter, defaultdict

import pytest
import torch
import yaml
from sklearn.metrics import f1_score

from finadapt import paths, storage
from finadapt.config import ConfigError, EvalConfig, EvalRaySection, ModelConfig
from finadapt.evaluate.api import evaluate
from finadapt.tasks import TASK_NAMES, get_task, unregister_task
from finadapt.tasks.prompts import HEADLINE_COLUMNS

DATA = paths.data_dir()
pytestmark = pytest.mark.skipif(not (DATA / "fpb").is_dir(), reason=f"real data not found in {DATA}")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHAT_TEMPLATE = "<|im_start|>user\n{query}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """FINADAPT_CACHE_DIR -> a tmp dir for the whole module (splits are materialized there once);
    one torch thread (tiny models, shared 2-core box: OpenMP spinning makes them much slower)."""
    cache = tmp_path_factory.mktemp("finadapt-cache")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FINADAPT_CACHE_DIR", str(cache))
        yield cache
    torch.set_num_threads(threads)


def _tiny_cfg(out: str, **kw) -> EvalConfig:
    base = dict(model=ModelConfig(spec="tiny-random"), limit=3, ray=EvalRaySection(enabled=False), bootstrap=50,
                output_dir=out)
    base.update(kw)
    return EvalConfig(**base)


def _read_predictions(text: str) -> list[dict]:
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


# --------------------------------------------------------------------------- in-process, all tasks
@pytest.fixture(scope="module")
def full_run(tmp_path_factory, private_cache):
    out = tmp_path_factory.mktemp("eval") / "full"
    cfg = _tiny_cfg(str(out))
    run, results = evaluate(cfg)
    return cfg, run, results, out


def test_results_json_has_provenance(full_run, private_cache):
    cfg, run, results, out = full_run
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))  # what was returned is what was written
    assert on_disk["model"] == {"spec": "tiny-random", "path": "tiny-random", "revision": "seed0",
                                "dtype": "auto", "trust_remote_code": False}
    assert re.fullmatch(r"[0-9a-f]{7,40}(-dirty)?|finadapt-.+", on_disk["code_revision"]), on_disk["code_revision"]
    from finadapt.tasks.materialize import load_manifest

    manifest = json.loads(next(private_cache.glob("splits/*/manifest.json")).read_text())
    assert manifest == load_manifest()
    assert re.fullmatch(r"[0-9a-f]{16}", on_disk["data"]["data_fingerprint"])
    assert on_disk["data"]["data_fingerprint"] == manifest["data_fingerprint"]
    assert on_disk["data"]["licenses"] == {t: get_task(t).license for t in TASK_NAMES}
    assert on_disk["split"] == "test" and on_disk["limit"] == 3
    assert on_disk["modes"] == ["choice", "compat", "robust"]
    assert on_disk["wrapper"] == "chat"
    assert on_disk["wrapper_template"] == CHAT_TEMPLATE
    assert on_disk["prompt_templates"] == {t: get_task(t).prompt_template for t in TASK_NAMES}
    assert on_disk["rows"] == len(run.rows) == 3 + 3 + 27 + 3
    assert yaml.safe_load(on_disk["config_yaml"])["model"]["spec"] == "tiny-random"
    for task, ex in on_disk["example_queries"].items():
        row = next(r for r in run.rows if r["id"] == ex["id"])
        assert row["task"] == task and row["query"] == ex["query"]


def test_scores_for_every_task_and_mode(full_run):
    _, run, results, _ = full_run
    scores = results["scores"]
    keys = Counter((s["task"], s["mode"]) for s in scores)
    assert keys == Counter({(t, m): 1 for t in TASK_NAMES for m in ("choice", "compat", "robust")})
    n_expected = {"fpb": 3, "fiqasa": 3, "headlines": 27, "ner": 3}
    primary = {"fpb": "f1_weighted", "fiqasa": "f1_weighted", "headlines": "avg_f1", "ner": "entity_f1"}
    for s in scores:
        assert s["n"] == n_expected[s["task"]], s
        assert s["primary"] == primary[s["task"]]
        assert s["score"] == s[s["primary"]]
        assert 0.0 <= s["score"] <= 1.0
        lo, hi = s["ci95"]
        assert 0.0 <= lo <= hi <= 1.0, s
        assert s["n_boot"] == 50
        assert 0.0 <= s["majority_floor"] <= 1.0
        if s["task"] == "ner":
            assert s["majority_floor"] == 0.0
    # NER is always generated; its choice column carries the note
    ner_choice = next(s for s in scores if s["task"] == "ner" and s["mode"] == "choice")
    assert "compat parse" in ner_choice["note"]


def test_choice_scores_agree_with_predictions_file(full_run):
    """fpb/fiqasa choice scores recomputed from predictions.jsonl (sklearn weighted F1)."""
    _, run, results, out = full_run
    preds = _read_predictions((out / "predictions.jsonl").read_text())
    for task in ("fpb", "fiqasa"):
        rows = [p for p in preds if p["task"] == task]
        n_labels = len(get_task(task).choices)
        gold = [p["gold"] for p in rows]
        pred = [p["choice_pred"] for p in rows]
        expected = f1_score(gold, pred, average="weighted", labels=list(range(n_labels)), zero_division=0)
        got = next(s for s in results["scores"] if s["task"] == task and s["mode"] == "choice")
        assert got["score"] == pytest.approx(expected, abs=1e-12)
        assert got["accuracy"] == pytest.approx(sum(g == p for g, p in zip(gold, pred)) / len(gold))


def test_predictions_jsonl_one_line_per_row(full_run):
    _, run, _, out = full_run
    preds = _read_predictions((out / "predictions.jsonl").read_text())
    assert len(preds) == len(run.rows)
    assert [p["id"] for p in preds] == [r["id"] for r in run.rows]
    assert len({p["id"] for p in preds}) == len(preds)
    by_id = {r["id"]: r for r in run.rows}
    for p in preds:
        row = by_id[p["id"]]
        assert p["task"] == row["task"] and p["gold"] == row["gold"] and p["answer"] == row["answer"]
        assert p["prompt_tokens"] > 0
        if row["kind"] == "ner":
            assert p["choice_pred"] == -1 and p["choice_logprobs"] == []
        else:
            lp = p["choice_logprobs"]
            assert len(lp) == len(row["choices"]) and all(v < 0 for v in lp)
            assert p["choice_pred"] == max(range(len(lp)), key=lambda k: lp[k])


def test_results_md_has_the_table(full_run):
    _, _, results, out = full_run
    md = (out / "results.md").read_text()
    assert md.startswith("# FLARE zero-shot evaluation: `tiny-random`")
    assert "| task | mode | n | primary | score | 95% CI | majority floor | accuracy | missing rate |" in md
    for s in results["scores"]:
        line = next((ln for ln in md.splitlines() if ln.startswith(f"| {s['task']} | {s['mode']} | ")), None)
        assert line is not None, (s["task"], s["mode"])
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[2] == str(s["n"]) and cells[3] == s["primary"]
        assert cells[4] == f"{s['score']:.3f}"
        assert cells[5] == f"{s['ci95'][0]:.3f}–{s['ci95'][1]:.3f}"
        assert cells[6] == f"{s['majority_floor']:.3f}"
    assert "| tiny-random (choice) |" in md and "| GPT-4 |" in md
    assert results["data"]["data_fingerprint"] in md


def test_results_png_is_a_real_png(full_run):
    _, _, _, out = full_run
    data = (out / "results.png").read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 600 and height >= 400, (width, height)
    assert data.endswith(b"IEND\xaeB`\x82")


def test_headlines_limit_keeps_all_nine_questions(full_run):
    _, run, _, _ = full_run
    rows = [r for r in run.rows if r["task"] == "headlines"]
    by_text = defaultdict(list)
    for r in rows:
        by_text[r["text"]].append(r["group"])
    assert len(by_text) == 3  # limit=3 headlines
    for text, groups in by_text.items():
        assert sorted(groups) == sorted(HEADLINE_COLUMNS), text
        assert len(HEADLINE_COLUMNS) == 9


def test_task_limits_override_the_global_limit():
    from finadapt.evaluate.runner import load_rows

    rows = load_rows(_tiny_cfg("unused", limit=3, task_limits={"headlines": 2, "fpb": 5}))
    counts = Counter(r["task"] for r in rows)
    assert counts == {"fpb": 5, "fiqasa": 3, "headlines": 2 * 9, "ner": 3}
    # seeded: the same selection twice
    again = load_rows(_tiny_cfg("unused", limit=3, task_limits={"headlines": 2, "fpb": 5}))
    assert [r["id"] for r in again] == [r["id"] for r in rows]


# --------------------------------------------------------------------------- Ray Data actor pool
@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    # address="local": a fresh local instance even if RAY_ADDRESS points at another cluster
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_actor_pool_matches_in_process(ray_local, tmp_path, monkeypatch):
    from finadapt.evaluate import runner

    common = dict(tasks=["fpb"], limit=4, modes=["choice"], bootstrap=20)
    ray_cfg = _tiny_cfg(str(tmp_path / "ray"), ray=EvalRaySection(enabled=True, cpus_per_worker=1), batch_rows=2,
                        **common)
    local_cfg = _tiny_cfg(str(tmp_path / "local"), **common)
    with monkeypatch.context() as mp:  # the Ray run must not fall back to in-process scoring
        mp.setattr(runner, "predict_in_process", lambda *a, **k: pytest.fail("Ray run scored in-process"))
        ray_run, ray_results = evaluate(ray_cfg)
    local_run, local_results = evaluate(local_cfg)
    assert [r["id"] for r in ray_run.rows] == [r["id"] for r in local_run.rows]
    assert len(ray_run.outputs) == len(local_run.outputs) == 4
    ray_preds = {p["id"]: p for p in _read_predictions((tmp_path / "ray" / "predictions.jsonl").read_text())}
    local_preds = {p["id"]: p for p in _read_predictions((tmp_path / "local" / "predictions.jsonl").read_text())}
    assert set(ray_preds) == set(local_preds) and len(ray_preds) == 4
    for rid, lp in local_preds.items():
        assert ray_preds[rid]["choice_pred"] == lp["choice_pred"], rid
        torch.testing.assert_close(torch.tensor(ray_preds[rid]["choice_logprobs"]),
                                   torch.tensor(lp["choice_logprobs"]), atol=1e-5, rtol=0)
    def untimed(scores):  # wall-clock fields differ between runs
        return [{k: v for k, v in s.items() if "seconds" not in k} for s in scores]

    assert untimed(ray_results["scores"]) == untimed(local_results["scores"])


# --------------------------------------------------------------------------- user-defined task via the CLI
BANK_NEWS = [
    ("Bank A's quarterly profit beat expectations as lending grew.", "positive"),
    ("Bank B cut its dividend after loan losses doubled.", "negative"),
    ("Bank C raised its full-year guidance on strong fee income.", "positive"),
    ("Regulators fined Bank D for money-laundering failures.", "negative"),
    ("Bank E's deposits rose 8% and its capital ratio improved.", "positive"),
    ("Bank F completed its merger ahead of schedule and lifted its outlook.", "positive"),
]
BANK_PROMPT = "Is this bank news positive or negative?\nText: {text}\nAnswer:"


def _bank_spec(data_uri: str, metric: str = "accuracy") -> dict:
    # required by tasks/custom.py: name, data, labels, prompt (with {text}); the rest has defaults
    return {"name": "bank_news_cli", "data": data_uri, "text_field": "sentence", "label_field": "label",
            "labels": ["positive", "negative"], "prompt": BANK_PROMPT, "metric": metric, "license": "internal"}


@pytest.fixture
def bank_data(s3_bucket):
    uri = f"{s3_bucket}/data/bank_news.jsonl"
    lines = [json.dumps({"sentence": s, "label": lab}) for s, lab in BANK_NEWS]
    storage.write_text(uri, "\n".join(lines) + "\n")
    yield uri
    unregister_task("bank_news_cli")


def _invoke(args: list[str]):
    from typer.testing import CliRunner

    from finadapt.cli import app

    return CliRunner().invoke(app, args)


def _check_custom_results(bucket: str, out_uri: str):
    assert storage.exists(f"{out_uri}/results.json")
    results = json.loads(storage.read_text(f"{out_uri}/results.json"))
    preds = _read_predictions(storage.read_text(f"{out_uri}/predictions.jsonl"))
    assert [p["id"] for p in preds] == [f"bank_news_cli-test-{i:05d}" for i in range(6)]
    assert [p["gold"] for p in preds] == [0 if lab == "positive" else 1 for _, lab in BANK_NEWS]
    scores = {s["mode"]: s for s in results["scores"]}
    assert set(scores) == {"choice", "compat", "robust"}
    assert {s["task"] for s in results["scores"]} == {"bank_news_cli"}
    acc = sum(p["choice_pred"] == p["gold"] for p in preds) / 6
    for s in scores.values():
        assert s["n"] == 6 and s["primary"] == "accuracy" and s["n_boot"] == 20
        assert s["score"] == s["accuracy"]
    assert scores["choice"]["score"] == pytest.approx(acc)
    assert results["prompt_templates"] == {"bank_news_cli": BANK_PROMPT}
    assert results["data"]["licenses"] == {"bank_news_cli": "internal"}
    assert results["limit"] == 6 and results["model"]["spec"] == "tiny-random"
    assert storage.read_bytes(f"{out_uri}/results.png")[:8] == PNG_MAGIC
    assert "| bank_news_cli | choice | 6 | accuracy |" in storage.read_text(f"{out_uri}/results.md")
    return results, preds


def test_cli_custom_task_with_s3_data_and_s3_output(bank_data, s3_bucket, tmp_path):
    """Spec file local, its data and the results on S3."""
    spec_path = tmp_path / "bank_news.yaml"
    spec_path.write_text(yaml.safe_dump(_bank_spec(bank_data)))
    out_uri = f"{s3_bucket}/out"
    result = _invoke(["eval", "--model", "tiny-random", "--task-file", str(spec_path), "--no-ray",
                      "--limit", "6", "-o", out_uri, "--set", "bootstrap=20"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "| bank_news_cli | choice | 6 |" in result.output
    _check_custom_results(s3_bucket, out_uri)


def test_cli_custom_task_spec_on_s3(bank_data, s3_bucket):
    """`--task-file s3://.../spec.yaml`: EvalConfig.task_files documents "local or s3://"."""
    storage.write_text(f"{s3_bucket}/tasks/spec.yaml", yaml.safe_dump(_bank_spec(bank_data)))
    out_uri = f"{s3_bucket}/out-s3-spec"
    result = _invoke(["eval", "--model", "tiny-random", "--task-file", f"{s3_bucket}/tasks/spec.yaml", "--no-ray",
                      "--limit", "6", "-o", out_uri, "--set", "bootstrap=20"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    _check_custom_results(s3_bucket, out_uri)


def test_custom_task_floor_uses_the_task_metric(tmp_path):
    """A custom task scored by accuracy: the majority floor is the majority-class share (4/6)."""
    data = tmp_path / "bank_news.jsonl"
    data.write_text("".join(json.dumps({"sentence": s, "label": lab}) + "\n" for s, lab in BANK_NEWS))
    spec = tmp_path / "bank_news.yaml"
    spec.write_text(yaml.safe_dump(_bank_spec(str(data))))
    try:
        cfg = _tiny_cfg(str(tmp_path / "out"), tasks=[], task_files=[str(spec)], limit=6, modes=["choice"],
                        bootstrap=20)
        _, results = evaluate(cfg)
    finally:
        unregister_task("bank_news_cli")
    s = results["scores"][0]
    assert s["primary"] == "accuracy"
    assert s["majority_floor"] == pytest.approx(4 / 6)  # actual: 0.533 (weighted F1 of the majority class)


# --------------------------------------------------------------------------- CLI config errors
@pytest.mark.parametrize("override, field", [("limit=-1", "limit"), ("bogus=1", "bogus"),
                                             ("ray.workers=0", "ray.workers")])
def test_cli_invalid_override_exits_2_naming_the_field(override, field, tmp_path):
    result = _invoke(["eval", "--model", "tiny-random", "--no-ray", "-o", str(tmp_path / "never"),
                      "--set", override])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())  # rich may wrap long lines
    assert "config error" in text and f"{field}:" in text, text
    assert not (tmp_path / "never").exists()


def test_cli_invalid_config_file_names_the_file(tmp_path):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text("model:\n  spec: tiny-random\nwrapper: bogus\n")
    result = _invoke(["eval", "--config", str(cfg), "--no-ray", "-o", str(tmp_path / "never")])
    assert result.exit_code == 2
    text = "".join(result.output.split())  # rich may break a long path across lines
    assert "".join(str(cfg).split()) in text and "wrapper:" in text


def test_cli_flags_become_overrides():
    from finadapt.cli import eval_config_from_cli

    cfg = eval_config_from_cli(None, "tiny-random", "fpb,ner", ["s3://b/t.yaml", "/tmp/u.yaml"], 5,
                               "choice,robust", "finma", "valid", "s3://b/out", True, ["seed=7"])
    assert cfg.model.spec == "tiny-random" and cfg.tasks == ["fpb", "ner"]
    assert cfg.task_files == ["s3://b/t.yaml", "/tmp/u.yaml"]
    assert cfg.limit == 5 and cfg.modes == ["choice", "robust"] and cfg.wrapper == "finma"
    assert cfg.split == "valid" and cfg.output_dir == "s3://b/out" and cfg.ray.enabled is False and cfg.seed == 7
    only_file = eval_config_from_cli(None, None, None, ["spec.yaml"], None, None, None, None, None, False, [])
    assert only_file.tasks == [] and only_file.task_files == ["spec.yaml"] and only_file.ray.enabled is True


def test_cli_limit_zero_is_rejected():
    from finadapt.cli import eval_config_from_cli

    with pytest.raises(ConfigError, match="limit"):
        eval_config_from_cli(None, "tiny-random", "fpb", [], 0, None, None, None, None, True, [])
