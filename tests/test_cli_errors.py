"""Issue 11, item 5: the project's own errors reach the CLI as one line naming the place, exit code 2
for configuration and input errors, no traceback unless asked for (`--verbose`, `--traceback`, log file);
what is knowable at config load is validated there; a broken task does not block the others."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from finadapt.cli import app
from finadapt.config import ConfigError, EvalConfig, load_config
from finadapt.tasks import unregister_task

ROOT = Path(__file__).resolve().parents[1]
GOOD = [("Profit rose sharply.", "positive"), ("Losses doubled.", "negative"), ("Sales grew 9%.", "positive"),
        ("The bank cut jobs.", "negative")]
PROMPT = "Sentiment?\nText: {text}\nAnswer:"


@pytest.fixture(autouse=True)
def private_env(tmp_path, monkeypatch):
    """Own cache (the error log goes there), one torch thread, and no custom task left registered."""
    monkeypatch.setenv("FINADAPT_CACHE_DIR", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    for name in ("good_task", "bad_task", "other_task"):
        unregister_task(name)


def invoke(args: list[str]):
    return CliRunner().invoke(app, args)


def one_line_error(result, *needles: str, code: int = 2) -> str:
    """Exit `code`, no traceback, and exactly one non-empty stderr line that contains every needle."""
    assert result.exit_code == code, (result.exit_code, result.output, repr(result.exception))
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def write_task(tmp_path: Path, name: str, rows: list[str], **extra) -> Path:
    data = tmp_path / f"{name}.jsonl"
    data.write_text("".join(line + "\n" for line in rows))
    spec = tmp_path / f"{name}.yaml"
    fields = {"name": name, "data": str(data), "labels": ["positive", "negative"], "prompt": PROMPT, **extra}
    spec.write_text(json.dumps(fields))  # JSON is YAML
    return spec


def good_rows() -> list[str]:
    return [json.dumps({"text": t, "label": lab}) for t, lab in GOOD]


def eval_args(tmp_path: Path, *task_files: Path, out: str | None = None) -> list[str]:
    args = ["eval", "-m", "tiny-random", "--no-ray", "--mode", "choice", "--set", "bootstrap=0",
            "-o", out or str(tmp_path / "out")]
    for spec in task_files:
        args += ["--task-file", str(spec)]
    return args


# --------------------------------------------------------------------------- task specs and data
def test_bad_task_spec_is_one_line_naming_file_and_field(tmp_path):
    spec = tmp_path / "broken.yaml"
    spec.write_text("name: broken\ndata: x.jsonl\nlabels: [a, b]\n")  # no prompt
    one_line_error(invoke(eval_args(tmp_path, spec)), str(spec), "prompt")
    assert not (tmp_path / "out" / "results.json").exists()


def test_missing_task_spec_file_is_one_line(tmp_path):
    one_line_error(invoke(eval_args(tmp_path, tmp_path / "nope.yaml")), str(tmp_path / "nope.yaml"))


def test_bad_data_line_is_one_line_naming_file_and_line(tmp_path):
    spec = write_task(tmp_path, "bad_task", [good_rows()[0], "{not json"])
    one_line_error(invoke(eval_args(tmp_path, spec)), f"{tmp_path / 'bad_task.jsonl'}: line 2")


def test_a_broken_task_does_not_block_the_others(tmp_path):
    good = write_task(tmp_path, "good_task", good_rows())
    bad = write_task(tmp_path, "bad_task", [*good_rows()[:2], json.dumps({"text": "x", "label": "maybe"})])
    result = invoke(eval_args(tmp_path, bad, good))
    assert result.exit_code == 2, result.output + repr(result.exception)
    assert "Traceback" not in result.output
    where = f"{tmp_path / 'bad_task.jsonl'}: line 3"
    assert any("bad_task" in line and where in line for line in result.stderr.splitlines()), result.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {s["task"] for s in results["scores"]} == {"good_task"}
    assert results["scores"][0]["n"] == len(GOOD)
    assert [f["task"] for f in results["failed_tasks"]] == ["bad_task"]
    assert where in results["failed_tasks"][0]["error"]
    assert "bad_task" in (tmp_path / "out" / "results.md").read_text()


def test_a_broken_spec_file_does_not_block_the_others(tmp_path):
    good = write_task(tmp_path, "good_task", good_rows())
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [\n")
    result = invoke(eval_args(tmp_path, broken, good))
    assert result.exit_code == 2
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {s["task"] for s in results["scores"]} == {"good_task"}
    assert str(broken) in results["failed_tasks"][0]["error"]


# --------------------------------------------------------------------------- validated at config load
@pytest.mark.parametrize("args", [["--tasks", "fpb,bogus"], ["--set", "tasks=[bogus]"]])
def test_unknown_task_name_fails_at_config_load(tmp_path, args):
    line = one_line_error(invoke(["eval", "-m", "tiny-random", "--no-ray", "-o", str(tmp_path / "o"), *args]),
                          "config error", "bogus")
    assert "fpb" in line  # the known names are listed
    assert not (tmp_path / "o").exists()
    with pytest.raises(ConfigError, match="bogus"):
        load_config(EvalConfig, None, ["tasks=[fpb, bogus]"])


def test_task_limits_for_a_task_not_evaluated_fail_at_config_load():
    with pytest.raises(ConfigError, match="task_limits"):
        load_config(EvalConfig, None, ["tasks=[fpb]", "task_limits={ner: 3}"])


@pytest.mark.parametrize("stage, sets, field", [
    ("sft", ["validation.task_limits={ner: -1}"], "validation.task_limits.ner"),
    ("sft", ["validation.tasks=[fpb, bogus]"], "bogus"),
    ("sft", ["data.tasks=[bogus]"], "bogus"),
    ("synth", ["validation.min_words=50", "validation.max_words=10"], "min_words"),
    ("eval", ["task_limits={fpb: -2}"], "task_limits.fpb"),
])
def test_stage_configs_reject_what_is_knowable_at_load(stage, sets, field):
    args = ["config", stage]
    for item in sets:
        args += ["--set", item]
    one_line_error(invoke(args), "config error", field)


def test_corpus_filter_min_above_max_is_rejected():
    from finadapt.data.filters import FilterConfig

    with pytest.raises(ValueError, match="min_chars"):
        FilterConfig(min_chars=500, max_chars=100)
    one_line_error(invoke(["config", "corpus", "-c", str(ROOT / "pipelines/configs/corpus.yaml"),
                           "--set", "filters.min_chars=500", "--set", "filters.max_chars=100"]), "min_chars")


# --------------------------------------------------------------------------- model paths
def test_relative_model_path_that_does_not_exist_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = write_task(tmp_path, "good_task", good_rows())
    args = eval_args(tmp_path, spec)
    args[2] = "runs/x/best"
    one_line_error(invoke(args), "runs/x/best", "not found locally", "hub id")


def test_relative_model_path_that_exists_is_a_path(tmp_path, monkeypatch):
    from finadapt.models import build_tiny_random, model_provenance

    model, tokenizer = build_tiny_random()
    model.save_pretrained(tmp_path / "runs" / "x" / "best")
    tokenizer.save_pretrained(tmp_path / "runs" / "x" / "best")
    monkeypatch.chdir(tmp_path)
    path, revision = model_provenance("runs/x/best")
    assert path == str((tmp_path / "runs" / "x" / "best").resolve()) and not revision.startswith("hub:")


def test_sft_demo_config_without_its_pretrained_model_is_one_line(tmp_path, monkeypatch):
    """sft_demo.yaml names `runs/pretrain-demo/best`: from a directory without it, a one-line error."""
    monkeypatch.chdir(tmp_path)
    one_line_error(invoke(["sft", "--no-ray", "-c", str(ROOT / "pipelines/configs/sft_demo.yaml"),
                           "-o", str(tmp_path / "sft")]), "runs/pretrain-demo/best", "not found locally")


# --------------------------------------------------------------------------- every command
def test_report_names_a_corrupt_results_file(tmp_path):
    (tmp_path / "results.json").write_text('{"scores": [')
    one_line_error(invoke(["report", str(tmp_path)]), str(tmp_path / "results.json"))


def test_report_names_a_results_file_without_scores(tmp_path):
    (tmp_path / "results.json").write_text('{"model": {}}')
    one_line_error(invoke(["report", str(tmp_path)]), str(tmp_path / "results.json"), "scores")


def test_model_fetch_of_an_unknown_embedded_model_is_one_line():
    one_line_error(invoke(["model", "fetch", "embedded:nope"]), "nope")


def test_tasks_show_of_an_unknown_task_is_one_line():
    one_line_error(invoke(["tasks", "show", "bogus"]), "bogus")
    one_line_error(invoke(["tasks", "show", "fpb", "--split", "dev"]), "dev")


def test_config_of_an_unknown_stage_is_one_line():
    one_line_error(invoke(["config", "bogus"]), "bogus", "eval")


def test_synth_with_a_missing_teacher_is_one_line(tmp_path):
    one_line_error(invoke(["synth", "--set", f"teacher.spec={tmp_path}/no-such-model", "-o", str(tmp_path / "s")]),
                   "no-such-model")


def test_serve_teacher_with_a_missing_model_is_one_line(tmp_path):
    one_line_error(invoke(["serve-teacher", "-m", str(tmp_path / "no-such-model"), "--port", "0"]), "no-such-model")


def test_mix_with_a_bad_line_is_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    one_line_error(invoke(["mix", "-s", str(bad), "--tasks", "fpb", "-o", str(tmp_path / "m.jsonl")]), str(bad))


def test_corpus_with_an_unwritable_output_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    one_line_error(invoke(["corpus", "-c", str(ROOT / "pipelines/configs/corpus.yaml"), "-o", str(blocker / "out")]),
                   str(blocker / "out"))


# --------------------------------------------------------------------------- traceback on request
def test_traceback_only_on_request_and_always_in_the_log(tmp_path):
    spec = write_task(tmp_path, "bad_task", ["{not json"])
    quiet = invoke(eval_args(tmp_path, spec))
    line = one_line_error(quiet, "bad_task.jsonl: line 1")
    log = tmp_path / "cache" / "logs" / "last-error.log"
    assert str(log) in line and "Traceback" in log.read_text() and "DataFormatError" in log.read_text()
    for args in (eval_args(tmp_path, spec) + ["--verbose"], ["--traceback", *eval_args(tmp_path, spec)]):
        loud = invoke(args)
        assert loud.exit_code == 2 and "Traceback" in loud.stderr, loud.stderr


def test_real_process_prints_one_line_and_exits_2(tmp_path):
    """As a user sees it: `python -m finadapt.cli`, stderr is one line, no traceback."""
    spec = write_task(tmp_path, "bad_task", [good_rows()[0], '{"text": "x"}'])
    env = {**os.environ, "FINADAPT_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "finadapt.cli", *eval_args(tmp_path, spec)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{tmp_path / 'bad_task.jsonl'}: line 2" in lines[0]


def test_evaluate_entrypoint_prints_one_line_and_returns_2(tmp_path, capsys):
    import importlib.util

    loader = importlib.util.spec_from_file_location("evaluate_entrypoint", ROOT / "pipelines" / "evaluate.py")
    entrypoint = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(entrypoint)
    spec = write_task(tmp_path, "bad_task", ["{not json"])
    code = entrypoint.main(["model.spec=tiny-random", "ray.enabled=false", "tasks=[]", f"task_files=[{spec}]",
                            "modes=[choice]", f"output_dir={tmp_path / 'o'}", "--config",
                            str(ROOT / "pipelines/configs/evaluate.yaml")])
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip() and "INFO" not in line]
    assert len(lines) == 1 and "bad_task.jsonl: line 1" in lines[0], err
