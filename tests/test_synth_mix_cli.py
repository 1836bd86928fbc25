"""Mixing synthetic data into stage-2 training (config and CLI) and the synth CLI's errors."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from finadapt.cli import app
from finadapt.tasks import load_samples
from finadapt.train.config import SftData
from finadapt.train.sft_data import training_samples


def _write_synthetic(path, task, n):
    real = load_samples(task, "train")[:n]
    rows = [{**s.to_row(), "id": f"synth-{task}-{i}", "provenance": {"source": "synthetic"}} for i, s in enumerate(real)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_sft_training_set_mixes_synthetic_at_the_ratio(tmp_path):
    syn = _write_synthetic(tmp_path / "syn.jsonl", "fpb", 30)
    data = SftData(tasks=["fpb", "fiqasa"], limit_per_task=20, synthetic_jsonl=[str(syn)],
                   synthetic_ratio={"fpb": 1.5, "fiqasa": 0.0})
    samples = training_samples(data, seed=0)
    synthetic = [s for s in samples if s.id.startswith("synth-")]
    assert len(synthetic) == 30 and len(samples) == 20 + 20 + 30
    with pytest.raises(ValueError, match="needs 40 synthetic samples, the synthetic data has 30"):
        training_samples(SftData(tasks=["fpb"], limit_per_task=20, synthetic_jsonl=[str(syn)], synthetic_ratio=2.0))


def test_mix_command_writes_the_mixed_file(tmp_path):
    syn = _write_synthetic(tmp_path / "syn.jsonl", "fpb", 12)
    out = tmp_path / "mixed.jsonl"
    result = CliRunner().invoke(app, ["mix", "-s", str(syn), "--ratio", "fpb=0.5", "--tasks", "fpb",
                                      "--limit-per-task", "10", "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert sum(r["id"].startswith("synth-") for r in rows) == 5 and len(rows) == 15
    assert "fpb: 10 real + 5 synthetic (ratio 0.500)" in result.output
    short = CliRunner().invoke(app, ["mix", "-s", str(syn), "--ratio", "3", "--tasks", "fpb",
                                     "--limit-per-task", "10", "-o", str(out)])
    assert short.exit_code == 2 and "needs 30 synthetic samples" in short.output


def test_mix_command_names_a_bad_synthetic_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\nnot json\n')
    result = CliRunner().invoke(app, ["mix", "-s", str(bad), "--tasks", "fpb", "-o", str(tmp_path / "m.jsonl")])
    assert result.exit_code != 0
    assert f"{bad}:1" in str(result.output) + str(result.exception)


def test_synth_command_rejects_a_bad_config(tmp_path):
    result = CliRunner().invoke(app, ["synth", "--set", "engine.kind=tgi", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "engine" in result.output
    result = CliRunner().invoke(app, ["synth", "--set", "sampling.top_p=1.5", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "sampling.top_p" in result.output


def test_synth_command_names_a_missing_teacher(tmp_path):
    result = CliRunner().invoke(app, ["synth", "--set", f"teacher.spec={tmp_path}/no-such-model", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "no-such-model" in result.output and "does not exist" in result.output
