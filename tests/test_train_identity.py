"""Run identity without Ray: a re-used run name resumes only the same training config (else exit 2 naming
the keys), `--fresh` starts over, an interrupted run resumes exactly, checkpoints are kept like Ray's,
and output locations are probed before any data or model is loaded."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from train_fixtures import pretrain_cfg, write_shards
from typer.testing import CliRunner

from finadapt.train import PretrainConfig, run_training


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("corpus"))


def _cli(cfg: dict, tmp: Path, *extra: str):
    from finadapt.cli import app

    file = tmp / f"cfg-{time.monotonic_ns()}.yaml"
    file.write_text(yaml.safe_dump(cfg))
    return CliRunner().invoke(app, ["pretrain", "-c", str(file), "--no-ray", *extra])


def _history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(directory / "model.safetensors")


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_reused_name_with_another_config_fails_naming_the_keys_and_fresh_starts_over(shards, tmp_path):
    first = pretrain_cfg(shards, tmp_path, max_steps=2, eval_every_steps=1)
    result = _cli(first, tmp_path)
    assert result.exit_code == 0, result.output
    old_best = _weights(tmp_path / "out" / "best")

    changed = pretrain_cfg(shards, tmp_path, max_steps=2, eval_every_steps=1, optim={"lr": 5e-4, "warmup_ratio": 0.0},
                           batch={"batch_size": 8, "grad_accum": 1, "micro_batch_size": 4})
    result = _cli(changed, tmp_path)
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "optim.lr: 0.001 -> 0.0005" in message and "batch.batch_size: 4 -> 8" in message
    assert "batch.grad_accum: 2 -> 1" in message and "--fresh" in message and "checkpoint.resume=force" in message
    assert "output_dir" not in message  # where results go is not part of the identity
    assert _weights(tmp_path / "out" / "best").keys() == old_best.keys()  # nothing was overwritten
    assert _max_diff(_weights(tmp_path / "out" / "best"), old_best) == 0

    result = _cli(changed, tmp_path, "--fresh")
    assert result.exit_code == 0, result.output
    history = _history(tmp_path / "out")
    assert [h["step"] for h in history] == [1, 2] and all(h["restarts"] == 0 for h in history)
    assert _max_diff(_weights(tmp_path / "out" / "best"), old_best) > 1e-4  # a newly trained model
    record = json.loads((tmp_path / "ckpt" / "run" / "finadapt_run.json").read_text())
    assert record["training_config"]["optim.lr"] == 5e-4


def test_force_resumes_a_changed_config_and_says_so(shards, tmp_path):
    run_training(PretrainConfig.model_validate(pretrain_cfg(shards, tmp_path, max_steps=2)), use_ray=False)
    forced = pretrain_cfg(shards, tmp_path, max_steps=3, checkpoint={
        "storage_path": str(tmp_path / "ckpt"), "name": "run", "resume": "force"})
    summary = run_training(PretrainConfig.model_validate(forced), use_ray=False)
    assert summary["run"]["resumed_from_step"] == 2 and summary["run"]["forced_over"]
    history = _history(tmp_path / "out")
    assert [h["step"] for h in history] == [1, 2, 3] and [h["restarts"] for h in history] == [0, 0, 1]


def test_pipeline_entrypoint_override_reaches_the_resume_key(shards, tmp_path, capsys, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("pretrain_entry", Path(__file__).resolve().parents[1]
                                                  / "pipelines" / "pretrain.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    run_training(PretrainConfig.model_validate(pretrain_cfg(shards, tmp_path, max_steps=2)), use_ray=False)
    file = tmp_path / "c.yaml"
    file.write_text(yaml.safe_dump(pretrain_cfg(shards, tmp_path, max_steps=2, seed=7)))
    assert entry.main(["--config", str(file)]) == 2
    assert "seed: 0 -> 7" in capsys.readouterr().err
    seen = []
    import finadapt.train.cli_support as cli_support

    monkeypatch.setattr(cli_support, "run_stage", lambda cfg: seen.append(cfg.checkpoint.resume) or 0)
    assert entry.main(["--config", str(file), "checkpoint.resume=fresh"]) == 0 and seen == ["fresh"]


def test_default_run_names_differ_between_configs_and_repeat_for_the_same(shards, tmp_path):
    from finadapt.train.run import prepare

    def name(**extra):
        cfg = pretrain_cfg(shards, tmp_path, **extra)
        del cfg["checkpoint"]["name"]
        return prepare(PretrainConfig.model_validate(cfg))[0].checkpoint.name

    base = name()
    assert base.startswith("pretrain-") and base == name()
    assert name(optim={"lr": 5e-4}) != base and name(data={"shards": str(shards), "val_sequences": 4}) != base
    assert name(output_dir=str(tmp_path / "elsewhere"), eval_every_steps=3) == base  # not training-relevant


def _interrupt_at(monkeypatch, step: int) -> None:
    from finadapt.train.loop import Trainer

    def boom(self):
        if self.state["step"] == step:
            raise RuntimeError(f"interrupted after step {step}")

    monkeypatch.setattr(Trainer, "_maybe_sleep", boom)


def test_interrupted_run_resumes_without_ray_like_an_uninterrupted_one(shards, tmp_path, monkeypatch):
    """Same name, same config: the second run continues from the latest checkpoint (step 2); every
    step's loss and the final weights equal an uninterrupted run's, and num_to_keep holds."""
    common = dict(max_steps=6, eval_every_steps=2)
    reference = PretrainConfig.model_validate(pretrain_cfg(shards, tmp_path / "ref", **common))
    run_training(reference, use_ray=False)
    expected = _history(tmp_path / "ref" / "out")

    cfg = PretrainConfig.model_validate(pretrain_cfg(shards, tmp_path / "cut", **common))
    _interrupt_at(monkeypatch, 3)
    with pytest.raises(RuntimeError, match="interrupted after step 3"):
        run_training(cfg, use_ray=False)
    monkeypatch.undo()
    summary = run_training(cfg, use_ray=False)
    assert summary["run"]["resumed_from_step"] == 2
    history = _history(tmp_path / "cut" / "out")
    assert [h["step"] for h in history] == [1, 2, 3, 4, 5, 6]
    assert [h["restarts"] for h in history] == [0, 0, 1, 1, 1, 1]
    assert [h["batch_fingerprint"] for h in history] == [h["batch_fingerprint"] for h in expected]
    for got, want in zip(history, expected):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5, abs=1e-6), got["step"]
    last = {run: max((tmp_path / run / "ckpt" / "run").glob("checkpoint_*")) for run in ("ref", "cut")}
    assert last["ref"].name == last["cut"].name == "checkpoint_step0000006"
    assert _max_diff(_weights(last["ref"]), _weights(last["cut"])) < 1e-5
    # num_to_keep=2 best by val_loss, plus the latest (Ray's rule): never more than 3 of the 3 reported
    kept = sorted(p.name for p in (tmp_path / "ref" / "ckpt" / "run").glob("checkpoint_*"))
    assert len(kept) <= 3
    val = {h["step"]: h["val_loss"] for h in expected if "val_loss" in h}
    best_two = sorted(val, key=val.get)[:2]
    assert {f"checkpoint_step{s:07d}" for s in best_two} | {"checkpoint_step0000006"} == set(kept)


def test_num_to_keep_holds_without_ray(shards, tmp_path):
    cfg = PretrainConfig.model_validate(pretrain_cfg(shards, tmp_path, max_steps=4, eval_every_steps=1,
                                                     checkpoint={"storage_path": str(tmp_path / "ckpt"),
                                                                 "name": "run", "num_to_keep": 1}))
    run_training(cfg, use_ray=False)
    kept = list((tmp_path / "ckpt" / "run").glob("checkpoint_*"))
    assert 1 <= len(kept) <= 2, kept  # the best, and the latest when that is not the best


# ------------------------------------------------------------------ outputs probed before the work
def _no_work(monkeypatch):
    import finadapt.train.run as run_module

    def never(*_a, **_k):
        raise AssertionError("data or model loaded before the output locations were checked")

    monkeypatch.setattr(run_module, "build_tables", never)
    monkeypatch.setattr("finadapt.models.load_model", never)


def test_unwritable_local_output_fails_before_loading(shards, tmp_path, monkeypatch):
    from finadapt.storage import StorageError

    _no_work(monkeypatch)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cfg = PretrainConfig.model_validate(pretrain_cfg(shards, tmp_path, output_dir=str(blocker / "out")))
    with pytest.raises(StorageError, match=str(blocker / "out")):
        run_training(cfg, use_ray=False)
    cfg = PretrainConfig.model_validate(pretrain_cfg(shards, tmp_path, checkpoint={
        "storage_path": str(blocker / "ckpt")}))
    with pytest.raises(StorageError, match=str(blocker / "ckpt")):
        run_training(cfg, use_ray=False)


def test_down_s3_endpoint_fails_fast_before_loading(shards, tmp_path, monkeypatch):
    import socket

    from finadapt import storage

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("FINADAPT_S3_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    _no_work(monkeypatch)
    cfg = PretrainConfig.model_validate(pretrain_cfg(shards, tmp_path, output_dir="s3://down-bucket/out"))
    start = time.perf_counter()
    with pytest.raises(storage.StorageError, match="s3://down-bucket/out"):
        run_training(cfg, use_ray=True)
    assert time.perf_counter() - start < 30


# ------------------------------------------------------------------ train_state.pt is not pickle
class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


def test_pickle_in_train_state_is_refused_on_resume(tmp_path):
    from finadapt.train.checkpoint import STATE_FILE, load_train_state

    marker = tmp_path / "marker"
    torch.save({"optimizer": {}, "state": {"step": 1}, "evil": _Payload(str(marker))}, tmp_path / STATE_FILE)
    with pytest.raises(Exception, match="weights_only|Unsupported|unpickl"):
        load_train_state(tmp_path)
    assert not marker.exists()


def test_resume_restores_rng_and_optimizer_exactly(tmp_path):
    import random

    import numpy as np

    from finadapt.models import build_tiny_random
    from finadapt.train.checkpoint import load_train_state, save_checkpoint
    from finadapt.train.config import OptimConfig
    from finadapt.train.step import SelectedTokenLoss, build_optimizer, build_scheduler

    model, tok = build_tiny_random()
    opt = build_optimizer(model, OptimConfig())
    sched = build_scheduler(opt, OptimConfig(), 10)
    SelectedTokenLoss(model)(torch.randint(3, 200, (1, 16)), torch.randint(3, 200, (1, 16))).backward()
    opt.step()
    sched.step()
    random.seed(5), np.random.seed(6), torch.manual_seed(7)
    save_checkpoint(tmp_path, model, tok, opt, sched, state={"step": 1, "history": [{"loss": 1.5}]})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    opt2 = build_optimizer(model, OptimConfig())
    state = load_train_state(tmp_path, opt2, build_scheduler(opt2, OptimConfig(), 10))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert state == {"step": 1, "history": [{"loss": 1.5}]}
    for a, b in zip(opt.state_dict()["state"].values(), opt2.state_dict()["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
