"""Issue 12, Part 0: one config shape for every stage. Every stage has the same `ray:` section (old
spellings fail naming the new key and the file), one registry builds a stage's config for the CLI and
the `pipelines/*.py` entrypoints alike, and one `connect()` reaches Ray."""
from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import yaml
from train_fixtures import pretrain_cfg, write_shards
from typer.testing import CliRunner

from finadapt import stages
from finadapt.cli import app
from finadapt.config import ConfigError, RaySection, load_config

ROOT = Path(__file__).resolve().parents[1]
BUILT_IN = ["eval", "corpus", "synth", "pretrain", "sft"]
ENTRYPOINTS = {"eval": "evaluate", "corpus": "prepare_corpus", "synth": "synthesize", "pretrain": "pretrain",
               "sft": "sft"}


def _nested(dotted: str, value: object) -> dict:
    data: object = value
    for key in reversed(dotted.split(".")):
        data = {key: data}
    return data


def _entrypoint(stage: str):
    name = ENTRYPOINTS[stage]
    spec = importlib.util.spec_from_file_location(f"shape_{name}", ROOT / "pipelines" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


OLD_KEYS = [(stage, old) for stage in BUILT_IN for old in stages.get_stage(stage).config_type().renamed_keys]


def test_every_stage_declares_its_old_ray_spellings():
    """The rename tables cover each stage's former Ray keys (issue 12: four spellings)."""
    renamed = {stage: set(stages.get_stage(stage).config_type().renamed_keys) for stage in BUILT_IN}
    assert {"ray.concurrency", "ray.num_cpus_per_actor", "ray.num_gpus_per_actor", "ray.batch_size"} <= renamed["eval"]
    assert {"scaling.num_workers", "scaling.use_gpu", "scaling.cpus_per_worker", "scaling.threads_per_worker",
            "ray_address", "num_cpus"} <= renamed["pretrain"] == renamed["sft"]
    assert {"ray_address", "num_cpus"} <= renamed["corpus"]
    assert {"ray_address", "engine.concurrency", "engine.num_cpus_per_actor", "engine.num_gpus_per_actor",
            "engine.num_cpus_per_engine"} <= renamed["synth"]
    for stage in BUILT_IN:
        assert "ray" in stages.get_stage(stage).config_type().model_fields
        assert issubclass(stages.get_stage(stage).config_type().model_fields["ray"].annotation, RaySection)


@pytest.mark.parametrize("stage, old", OLD_KEYS)
def test_old_key_names_the_new_key_and_the_file(stage, old, tmp_path):
    path = tmp_path / f"{stage}.yaml"
    path.write_text(yaml.safe_dump(_nested(old, 1)))
    new = stages.get_stage(stage).config_type().renamed_keys[old]
    with pytest.raises(ConfigError) as info:
        stages.build_config(stage, path)
    assert str(info.value) == f"{path}: {old} was renamed to {new}"


def test_old_key_on_the_cli_exits_2_with_one_line(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("model: {spec: tiny-random}\nscaling: {num_workers: 2}\n")
    result = CliRunner().invoke(app, ["pretrain", "-c", str(path)])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"config error: {path}: scaling.num_workers was renamed to ray.workers" in text
    assert "Traceback" not in result.output


def test_old_key_as_an_override_and_in_the_entrypoint_exits_2(capsys):
    with pytest.raises(ConfigError, match="engine.num_cpus_per_actor was renamed to ray.cpus_per_worker"):
        load_config(stages.get_stage("synth").config_type(), None, ["engine.num_cpus_per_actor=1"])
    code = _entrypoint("eval").main(["--config", str(ROOT / "pipelines/configs/evaluate.yaml"), "ray.batch_size=8"])
    err = capsys.readouterr().err
    assert code == 2 and "evaluate.yaml: ray.batch_size was renamed to batch_rows" in err


@pytest.mark.parametrize("stage", BUILT_IN)
def test_cli_and_entrypoint_build_the_same_config(stage, monkeypatch, tmp_path):
    """`finadapt <stage> -c F --set k=v` and `python pipelines/<stage>.py --config F k=v` reach the stage's
    run function with equal configs (captured there, before any work)."""
    monkeypatch.chdir(ROOT)
    seen: list = []
    for known in BUILT_IN:
        monkeypatch.setitem(stages.STAGES, known, dataclasses.replace(
            stages.STAGES[known], run=lambda cfg: seen.append(cfg) or 0))
    default = stages.get_stage(stage).default_config
    sets = ["ray.workers=2", f"output_dir={tmp_path / 'out'}"]
    result = CliRunner().invoke(app, [stage, "-c", default] + [arg for s in sets for arg in ("--set", s)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert _entrypoint(stage).main(["--config", default] + sets) == 0
    assert len(seen) == 2 and type(seen[0]) is stages.get_stage(stage).config_type()
    assert seen[0].model_dump() == seen[1].model_dump()
    assert seen[0].ray.workers == 2 and seen[0].output_dir == str(tmp_path / "out")


def test_registry_lookup_registration_and_config_command(monkeypatch):
    with pytest.raises(ConfigError, match="unknown stage 'bogus'; known: corpus, eval, pretrain, reproduce, sft, synth"):
        stages.get_stage("bogus")
    monkeypatch.setattr(stages, "STAGES", dict(stages.STAGES))
    extra = stages.register_stage(stages.Stage("probe", RaySection, lambda cfg: 0, ("x", "max")))
    with pytest.raises(ConfigError, match="already registered"):
        stages.register_stage(extra)
    result = CliRunner().invoke(app, ["config", "probe", "--set", "workers=3"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.output)["workers"] == 3
    bad = CliRunner().invoke(app, ["config", "nope"])
    assert bad.exit_code == 2 and "unknown stage 'nope'" in bad.output


def test_stage_metrics_match_the_training_score():
    from finadapt.train.loop import SCORE

    assert stages.get_stage("pretrain").metric == SCORE["pretrain"] == ("val_loss", "min")
    assert stages.get_stage("sft").metric == SCORE["sft"] == ("val_score", "max")


def test_training_identity_hashes_workers_not_placement():
    from finadapt.train import PretrainConfig
    from finadapt.train.identity import training_key

    def key(**ray):
        return training_key(PretrainConfig.model_validate({"model": {"spec": "tiny-random"}, "ray": ray,
                                                           "batch": {"micro_batch_size": 4}}), content="x")

    base = key()
    assert key(address="ray://h:10001", num_cpus=4, num_gpus=0, cpus_per_worker=3) == base
    assert key(workers=2) != base
    assert key(enabled=False, workers=2) == base  # without Ray one process trains, whatever ray.workers says


# --------------------------------------------------------------------------- connect() and ray.enabled
@pytest.fixture
def no_ray_running(monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if ray.is_initialized():
        ray.shutdown()
    yield ray
    if ray.is_initialized():
        ray.shutdown()


def test_connect_starts_a_local_instance_with_num_cpus_and_keeps_a_connection(no_ray_running):
    from finadapt.ray_connect import connect

    ray = no_ray_running
    connect(RaySection(num_cpus=1))
    assert ray.is_initialized() and ray.cluster_resources()["CPU"] == 1
    node = ray.get_runtime_context().get_node_id()
    connect(RaySection(num_cpus=2))  # already connected: kept as is
    assert ray.cluster_resources()["CPU"] == 1 and ray.get_runtime_context().get_node_id() == node


def test_ray_disabled_trains_in_this_process_without_ray(no_ray_running, tmp_path):
    from finadapt.train import PretrainConfig, run_training

    shards = write_shards(tmp_path / "corpus", n_files=2, docs_per_file=12)
    cfg = PretrainConfig.model_validate(pretrain_cfg(shards, tmp_path, max_steps=1, eval_every_steps=1,
                                                     ray__enabled=False, ray__workers=4))
    summary = run_training(cfg)
    assert summary["plan"]["rows_per_worker_step"] == cfg.batch.effective  # one process, the whole batch
    assert summary["best_metrics"]["step"] == 1
    assert not no_ray_running.is_initialized()
