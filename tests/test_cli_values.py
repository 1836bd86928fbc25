"""Issue 11, item 3: CLI flags that take strings stay strings; only `key=value` overrides are read as
YAML, and an override whose value YAML would cut at a `#` comment is refused."""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from finadapt.cli import app, eval_config_from_cli
from finadapt.config import ConfigError, EvalConfig, entrypoint_config, load_config, parse_override
from finadapt.tasks import unregister_task

LINES = [("Profit rose sharply.", "positive"), ("Losses doubled.", "negative"), ("Sales grew 9%.", "positive")]


def _cfg(**flags) -> EvalConfig:
    args = dict(config=None, model=None, tasks=None, task_file=[], limit=None, mode=None, wrapper=None,
                split=None, output=None, no_ray=False, overrides=[])
    args.update(flags)
    return eval_config_from_cli(**args)


@pytest.mark.parametrize("output", ["out/run #2", "2024-01-05", "results/123", "out/yes", "out: x", "[a]", "null"])
def test_output_flag_is_taken_verbatim(output):
    assert _cfg(output=output).output_dir == output


def test_task_file_with_a_comma_stays_one_path():
    cfg = _cfg(task_file=["specs/a,b.yaml", "s3://bucket/t #1.yaml"])
    assert cfg.task_files == ["specs/a,b.yaml", "s3://bucket/t #1.yaml"]
    assert cfg.tasks == []


def test_list_flags_split_on_commas_only():
    cfg = _cfg(tasks="fpb, ner", mode="choice,robust", model="models/v1 #final", wrapper="raw", split="valid")
    assert cfg.tasks == ["fpb", "ner"] and cfg.modes == ["choice", "robust"]
    assert cfg.model.spec == "models/v1 #final" and cfg.wrapper == "raw" and cfg.split == "valid"


def test_flags_win_over_set_overrides():
    cfg = _cfg(output="flag-out", overrides=["output_dir=set-out", "seed=3"])
    assert cfg.output_dir == "flag-out" and cfg.seed == 3


@pytest.mark.parametrize("item", ["output_dir=out/run #2", "model.spec=a #b", "tasks=[fpb] # ner", "limit=5 #x"])
def test_override_cut_by_a_yaml_comment_is_refused(item):
    with pytest.raises(ConfigError, match="#") as err:
        parse_override(item)
    assert "quote" in str(err.value)


def test_quoted_override_keeps_the_hash():
    assert parse_override("output_dir='out/run #2'") == (["output_dir"], "out/run #2")
    assert parse_override("model.spec=a#b") == (["model", "spec"], "a#b")  # no space: not a comment
    assert load_config(EvalConfig, None, ['output_dir="out/run #2"']).output_dir == "out/run #2"


def test_override_values_are_still_typed():
    assert parse_override("limit=5") == (["limit"], 5)
    assert parse_override("tasks=[fpb, ner]") == (["tasks"], ["fpb", "ner"])
    assert parse_override("ray.enabled=false") == (["ray", "enabled"], False)


@pytest.mark.parametrize("value", ["2024-01-05", "2024"])
def test_override_of_a_string_field_accepts_dates_and_numbers(value):
    assert load_config(EvalConfig, None, [f"output_dir={value}"]).output_dir == value


def test_entrypoint_override_with_a_comment_is_refused(capsys):
    assert entrypoint_config(EvalConfig, "doc", "", ["output_dir=out/run #2"]) is None
    assert "#" in capsys.readouterr().err


def test_corpus_and_synth_output_flags_are_strings(monkeypatch, tmp_path):
    """`-o` of the other stages is passed as a typed value too (captured before any work starts)."""
    import finadapt.data.pipeline as corpus_pipeline
    import finadapt.synth as synth

    seen = {}

    def capture(name):
        def fake(cfg):
            seen[name] = cfg
            raise SystemExit(0)
        return fake

    monkeypatch.setattr(corpus_pipeline, "run_corpus", capture("corpus"))
    monkeypatch.setattr(synth, "synthesize", capture("synth"))
    CliRunner().invoke(app, ["corpus", "-o", "out/corpus #2"])
    CliRunner().invoke(app, ["synth", "-o", "2024-01-05", "--engine", "hf"])
    assert seen["corpus"].output_dir == "out/corpus #2"
    assert seen["synth"].output_dir == "2024-01-05" and seen["synth"].engine.kind == "hf"


def test_eval_cli_writes_to_the_directory_with_a_hash(tmp_path, monkeypatch):
    """End to end: `-o "out/run #2"` writes there, not to `out/run`."""
    monkeypatch.setenv("FINADAPT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in LINES))
    spec = tmp_path / "spec,v2.yaml"
    spec.write_text(f"name: hash_task\ndata: {data}\nlabels: [positive, negative]\n"
                    "prompt: 'Sentiment?\\nText: {text}\\nAnswer:'\n")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = CliRunner().invoke(app, ["eval", "-m", "tiny-random", "--task-file", str(spec), "--no-ray",
                                          "--mode", "choice", "-o", "out/run #2", "--set", "bootstrap=0"])
    finally:
        torch.set_num_threads(threads)
        unregister_task("hash_task")
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert (tmp_path / "out" / "run #2" / "results.json").is_file()
    assert not (tmp_path / "out" / "run").exists()


@pytest.mark.parametrize("stage", ["pretrain", "sft"])
def test_training_output_flag_is_a_string(monkeypatch, stage):
    import finadapt.train.cli_support as cli_support

    seen = {}

    def fake(cfg, use_ray=True):
        seen["cfg"] = cfg
        return 0

    monkeypatch.setattr(cli_support, "run_stage", fake)
    result = CliRunner().invoke(app, [stage, "--no-ray", "-o", "runs/out #2", "--set", "model.spec=tiny-random"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert seen["cfg"].output_dir == "runs/out #2"
