"""The synth benchmark compares engines on equal terms: same batch size and replicas, spread over
repeats, at least 3 repeats for a committed result."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "synth.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("synth_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("batch_size", [4, 8])
def test_every_engine_gets_the_same_batch_size_and_one_replica(bench, batch_size):
    from finadapt.synth.config import SynthConfig

    cfgs = [SynthConfig.model_validate({"engine": bench.engine_config(kind, batch_size, "http://127.0.0.1:1/v1"),
                                        "ray": bench.ray_config(kind)}) for kind in ("hf", "vllm", "openai")]
    assert [c.engine.batch_size for c in cfgs] == [batch_size] * 3
    assert [c.ray.workers for c in cfgs] == [1, 1, 1]


def test_spread_reports_mean_min_max_stdev(bench):
    assert bench.spread([1.0, 2.0, 3.0]) == dict(mean=2.0, min=1.0, max=3.0, stdev=1.0, n=3)
    assert bench.spread([5.0])["stdev"] == 0.0


def test_a_committed_result_needs_three_repeats(bench, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["synth.py", "--repeats", "2"])
    with pytest.raises(SystemExit) as err:
        bench.main()
    assert err.value.code == 2 and "at least 3 repeats" in capsys.readouterr().err


def test_start_up_is_timed_apart_from_generation(bench, monkeypatch):
    """A 1-request, 1-token run times the start-up; rates are on the full run minus that."""
    from finadapt.synth.config import SynthConfig
    from finadapt.synth.prompts import TaskExamples, build_requests
    from finadapt.synth.validate import Reference
    from finadapt.tasks import load_samples

    requests = build_requests({"fpb": TaskExamples.of("fpb", load_samples("fpb", "train"))}, {"fpb": 4}, 0, 2)
    calls = []

    def fake_timed(cfg, reqs):
        calls.append([(r.request_id, r.max_tokens) for r in reqs])
        seconds = 5.0 if len(reqs) == 1 else 25.0  # start-up 5 s; full run = 5 s start-up + 20 s generation
        return seconds, [dict(request_id=r.request_id, output="not json", truncated=False, generated_tokens=10)
                         for r in reqs]

    monkeypatch.setattr(bench, "timed", fake_timed)
    run = bench.one_repeat(SynthConfig(tasks=["fpb"]), requests, Reference.build({}, [], None))
    assert calls[0] == [(requests[0].request_id, 1)]
    assert calls[1] == [(r.request_id, r.max_tokens) for r in requests]
    assert (run["startup_s"], run["generation_s"], run["full_s"]) == (5.0, 20.0, 25.0)
    assert run["samples_per_s"] == pytest.approx(4 / 20) and run["tokens_per_s"] == pytest.approx(40 / 20)
    assert run["end_to_end_samples_per_s"] == pytest.approx(4 / 25) and run["accepted"] == 0
