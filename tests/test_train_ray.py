"""Both training stages on real Ray Train (local cluster): best checkpoint, DDP, S3 storage, LoRA."""
from __future__ import annotations

import json
import math

import pytest
import torch
from train_fixtures import pretrain_cfg, write_shards

from finadapt.train import PretrainConfig, SftConfig, run_training

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local(s3_server):
    """Ray workers inherit the environment at start: start after the S3 server's env is set."""
    import ray

    ray.init(num_cpus=2, address="local", include_dashboard=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("corpus"))


def _history(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_pretrain_keeps_the_best_checkpoint_and_the_harness_scores_it(ray_local, shards, tmp_path):
    from transformers import AutoModelForCausalLM

    from finadapt.config import EvalConfig
    from finadapt.evaluate.api import evaluate

    cfg = PretrainConfig.model_validate(pretrain_cfg(shards, tmp_path, eval_every_steps=1, max_steps=5))
    summary = run_training(cfg)
    history = _history(tmp_path / "out")
    assert [h["step"] for h in history] == [1, 2, 3, 4, 5]
    val = {h["step"]: h["val_loss"] for h in history}
    best_step = min(val, key=val.get)
    assert summary["best_metrics"]["step"] == best_step
    assert summary["best_metrics"]["val_loss"] == pytest.approx(val[best_step])
    assert all(math.isfinite(h["loss"]) and h["tokens_per_s"] > 0 and 0 < h["mfu"] < 1 for h in history)
    # the exported best model is a plain Hugging Face directory ...
    best = tmp_path / "out" / "best"
    model = AutoModelForCausalLM.from_pretrained(best)
    assert not (best / "train_state.pt").exists()
    assert sum(p.numel() for p in model.parameters()) > 0
    # ... which the evaluation harness scores
    ecfg = EvalConfig.model_validate({"model": {"spec": str(best)}, "tasks": ["fpb"], "limit": 4, "modes": ["choice"],
                                      "bootstrap": 0, "ray": {"enabled": False}, "output_dir": str(tmp_path / "eval")})
    _, results = evaluate(ecfg)
    assert results["scores"][0]["n"] == 4
    assert (tmp_path / "out" / "curves.png").stat().st_size > 1000
    assert "best checkpoint" in (tmp_path / "out" / "report.md").read_text()


def _best_weights(out) -> dict:
    from safetensors.torch import load_file

    return load_file(out / "best" / "model.safetensors")


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_two_workers_train_with_ddp(ray_local, shards, tmp_path):
    """DDP for real: both workers hold the same weights after every step, and a two-worker step equals a
    one-worker step on the same global batch (here the whole 8-row training set is one step)."""
    common = dict(max_steps=2, eval_every_steps=1, batch__micro_batch_size=2, data__limit_sequences=8)
    cfg = PretrainConfig.model_validate(pretrain_cfg(shards, tmp_path / "two", ray__workers=2, **common))
    summary = run_training(cfg)
    assert summary["plan"]["rows_per_worker_step"] == 4  # 8 per step split over 2 workers
    assert summary["plan"]["steps_per_epoch"] == 1
    history = _history(tmp_path / "two" / "out")
    assert [h["step"] for h in history] == [1, 2]
    # the step's loss is over both workers' tokens: 8 full 64-token windows minus the shift
    assert all(h["target_tokens"] == 8 * 63 for h in history)
    assert all(h["replica_weight_diff"] < 1e-9 for h in history), [h["replica_weight_diff"] for h in history]
    assert "val_loss" in summary["best_metrics"]

    one = PretrainConfig.model_validate(pretrain_cfg(shards, tmp_path / "one", **common))
    run_training(one, use_ray=False)
    single = _history(tmp_path / "one" / "out")
    for got, want in zip(history, single):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5), got["step"]
        assert got["val_loss"] == pytest.approx(want["val_loss"], rel=1e-5), got["step"]
    assert _max_diff(_best_weights(tmp_path / "two" / "out"), _best_weights(tmp_path / "one" / "out")) < 1e-5


def test_rerun_with_the_same_name_under_ray(ray_local, shards, tmp_path):
    """Same name + other config: exit 2 naming the keys; --fresh trains anew; the same config resumes."""
    import yaml
    from typer.testing import CliRunner

    from finadapt.cli import app

    def cli(cfg: dict, *extra: str):
        file = tmp_path / "cfg.yaml"
        file.write_text(yaml.safe_dump(cfg))
        return CliRunner().invoke(app, ["pretrain", "-c", str(file), *extra])

    first = PretrainConfig.model_validate(pretrain_cfg(shards, tmp_path, max_steps=2, eval_every_steps=1))
    run_training(first)
    old_best = _best_weights(tmp_path / "out")
    changed = pretrain_cfg(shards, tmp_path, max_steps=2, eval_every_steps=1, optim={"lr": 5e-4, "warmup_ratio": 0.0})
    result = cli(changed)
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "optim.lr: 0.001 -> 0.0005" in message and "--fresh" in message
    assert _max_diff(_best_weights(tmp_path / "out"), old_best) == 0

    result = cli(changed, "--fresh")
    assert result.exit_code == 0, result.output
    assert [h["restarts"] for h in _history(tmp_path / "out")] == [0, 0]
    new_best = _best_weights(tmp_path / "out")
    assert _max_diff(new_best, old_best) > 1e-4

    result = cli(changed)  # same config again: resumes the finished run, trains nothing new
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["run"]["resumed_from_step"] == 2 and summary["best_metrics"]["step"] in (1, 2)
    assert _max_diff(_best_weights(tmp_path / "out"), new_best) == 0


def test_checkpoints_and_outputs_on_s3(ray_local, shards, tmp_path, s3_server, s3_bucket):
    from finadapt import storage

    cfg = PretrainConfig.model_validate(pretrain_cfg(
        shards, tmp_path, max_steps=2, eval_every_steps=1,
        checkpoint__storage_path=f"{s3_bucket}/train", output_dir=f"{s3_bucket}/out"))
    summary = run_training(cfg)
    keys = storage.list_files(f"{s3_bucket}/train")
    assert any(k.endswith("train_state.pt") for k in keys)
    assert any(k.endswith("model.safetensors") for k in keys)
    assert storage.exists(f"{s3_bucket}/out/best/model.safetensors")
    assert storage.exists(f"{s3_bucket}/out/summary.json") and storage.exists(f"{s3_bucket}/out/curves.png")
    assert summary["best_model_dir"] == f"{s3_bucket}/out/best"


def test_sft_on_real_task_data_with_response_only_loss(ray_local, tmp_path):
    cfg = SftConfig.model_validate({
        "model": {"spec": "tiny-random"}, "data": {"limit_per_task": 12, "max_length": 512},
        "batch": {"batch_size": 8, "grad_accum": 1, "micro_batch_tokens": 2048}, "max_steps": 2,
        "eval_every_steps": 2, "validation": {"limit": 4, "task_limits": {"headlines": 1, "ner": 2}},
        "ray": {"workers": 1, "cpus_per_worker": 1},
        "checkpoint": {"storage_path": str(tmp_path / "ckpt"), "name": "sft"}, "output_dir": str(tmp_path / "out")})
    summary = run_training(cfg)
    assert set(summary["data"]["per_task"]) == {"fpb", "fiqasa", "headlines", "ner"}
    history = _history(tmp_path / "out")
    # response-only: far fewer loss tokens than tokens processed
    assert all(h["target_tokens"] < h["tokens"] / 4 for h in history)
    best = summary["best_metrics"]
    assert {"val_score", "val_fpb", "val_fiqasa", "val_headlines", "val_ner"} <= set(best)


def test_lora_option_without_ray(shards, tmp_path):
    from transformers import AutoModelForCausalLM

    from finadapt.models import build_tiny_random

    cfg = PretrainConfig.model_validate(pretrain_cfg(
        shards, tmp_path, max_steps=2, lora={"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}))
    summary = run_training(cfg, use_ray=False)
    tuned = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "best")
    base, _ = build_tiny_random()
    diffs = {n: not torch.equal(p, base.state_dict()[n]) for n, p in tuned.state_dict().items()}
    assert any(d for n, d in diffs.items() if "q_proj" in n)  # adapters merged into the plain weights
    assert not any(d for n, d in diffs.items() if "mlp" in n)  # the rest stayed frozen
    assert summary["best_metrics"]["step"] in (2,)


def test_gradient_checkpointing_gives_the_same_update_without_ray(shards, tmp_path):
    """Recomputing activations trades time for memory, never the result."""
    from transformers import AutoModelForCausalLM

    weights = {}
    for flag in (False, True):
        cfg = PretrainConfig.model_validate(pretrain_cfg(shards, tmp_path / str(flag), max_steps=1,
                                                         gradient_checkpointing=flag))
        run_training(cfg, use_ray=False)
        weights[flag] = AutoModelForCausalLM.from_pretrained(tmp_path / str(flag) / "out" / "best").state_dict()
    for name, value in weights[False].items():
        assert torch.allclose(value, weights[True][name], atol=1e-6), name


def test_cli_pretrain_without_ray_and_config_errors(shards, tmp_path):
    from typer.testing import CliRunner

    from finadapt.cli import app

    runner = CliRunner()
    bad = runner.invoke(app, ["pretrain", "--set", "batch.micro_batch_size=5"])
    assert bad.exit_code == 2 and "micro_batch_size 5" in bad.output
    sets = [f"data.shards={shards}", "model.spec=tiny-random", "data.seq_len=null", "data.val_sequences=4",
            "batch.batch_size=4", "batch.grad_accum=1", "batch.micro_batch_size=2", "max_steps=1",
            f"checkpoint.storage_path={tmp_path / 'ckpt'}", "ray.cpus_per_worker=1"]
    from pathlib import Path

    demo = Path(__file__).resolve().parents[1] / "pipelines" / "configs" / "pretrain_demo.yaml"
    args = ["pretrain", "-c", str(demo), "--no-ray", "-o", str(tmp_path / "out")]
    for item in sets:
        args += ["--set", item]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "best" / "config.json").exists()


def test_a_split_the_driver_may_not_read_is_forbidden_in_its_train_workers(ray_local, tmp_path, monkeypatch):
    """A sweep trial forbids test reads in its own process; its Ray Train workers (other processes,
    started by the raylet without the trial's environment) must inherit the ban. Shown with the valid
    split, which only the workers read (rank 0 validates): the run must fail on that read."""
    from finadapt.tasks import split_guard

    monkeypatch.setenv(split_guard.ENV_VAR, "valid")
    cfg = SftConfig.model_validate({
        "model": {"spec": "tiny-random"}, "data": {"tasks": ["fpb"], "limit_per_task": 8, "max_length": 256},
        "batch": {"batch_size": 8, "grad_accum": 1, "micro_batch_tokens": 2048}, "max_steps": 1,
        "validation": {"tasks": ["fpb"], "limit": 2, "task_limits": {}},
        "ray": {"workers": 1, "cpus_per_worker": 1}, "failure": {"max_failures": 0},
        "checkpoint": {"storage_path": str(tmp_path / "ckpt"), "name": "guarded"}, "output_dir": str(tmp_path / "out")})
    with pytest.raises(Exception, match="reading the 'valid' split is forbidden"):
        run_training(cfg)
