"""Typed configs: YAML + `key.sub=value` overrides, and errors that name the field and the file."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from finadapt.config import (
    PIPELINE_CONFIGS,
    ConfigError,
    EvalConfig,
    dump_config,
    load_config,
    parse_override,
)

BASE_YAML = """\
model:
  spec: tiny-random
  dtype: float32
tasks: [fpb, headlines]
limit: 5
ray:
  enabled: true
  workers: 2
output_dir: results/test
"""


@pytest.fixture
def cfg_file(tmp_path: Path) -> Path:
    path = tmp_path / "conf" / "evaluate.yaml"
    path.parent.mkdir()
    path.write_text(BASE_YAML)
    return path


def test_defaults_without_a_file():
    cfg = load_config(EvalConfig)
    assert cfg == EvalConfig()
    assert cfg.model.spec == "embedded:smollm2-135m-instruct"
    assert cfg.tasks == ["fpb", "fiqasa", "headlines", "ner"]
    assert cfg.modes == ["choice", "compat", "robust"]
    assert cfg.limit is None and cfg.ray.enabled is True and cfg.wrapper == "chat"


def test_yaml_is_read_and_unset_fields_keep_defaults(cfg_file):
    cfg = load_config(EvalConfig, cfg_file)
    assert cfg.model.spec == "tiny-random"
    assert cfg.model.dtype == "float32"
    assert cfg.model.device is None  # default inside a section that the file only partly sets
    assert cfg.tasks == ["fpb", "headlines"]
    assert cfg.limit == 5
    assert cfg.ray.enabled is True and cfg.ray.workers == 2 and cfg.batch_rows == 256
    assert cfg.ray.cpus_per_worker == 2  # evaluation's default, also when the file sets other ray keys
    assert cfg.output_dir == "results/test"
    assert cfg.bootstrap == 1000


def test_path_may_be_a_string(cfg_file):
    assert load_config(EvalConfig, str(cfg_file)).limit == 5


def test_overrides_are_typed_and_merge_into_sections(cfg_file):
    cfg = load_config(EvalConfig, cfg_file, [
        "tasks=[fpb,ner]",
        "modes=[choice, robust]",
        "limit=7",
        "ray.enabled=false",
        "ray.cpus_per_worker=0.5",
        "model.spec=embedded:smollm2-135m-instruct",
        "model.device=null",
        "generation.max_new_tokens_ner=32",
        "seed=3",
        "output_dir=s3://bucket/eval/run-1",
    ])
    assert cfg.tasks == ["fpb", "ner"]
    assert cfg.modes == ["choice", "robust"]
    assert cfg.limit == 7 and isinstance(cfg.limit, int)
    assert cfg.ray.enabled is False
    assert cfg.ray.workers == 2  # the rest of the file's section survives an override inside it
    assert cfg.ray.cpus_per_worker == 0.5
    assert cfg.model.spec == "embedded:smollm2-135m-instruct"
    assert cfg.model.dtype == "float32"  # sibling key from the file kept
    assert cfg.model.device is None
    assert cfg.generation.max_new_tokens_ner == 32 and cfg.generation.max_new_tokens_headlines == 256
    assert cfg.seed == 3
    assert cfg.output_dir == "s3://bucket/eval/run-1"


def test_task_limits_override_is_a_mapping(cfg_file):
    cfg = load_config(EvalConfig, cfg_file, ["task_limits={headlines: 2, fpb: 10}"])
    assert cfg.task_limits == {"headlines": 2, "fpb": 10}
    assert cfg.limit == 5  # the global limit still applies to the other tasks
    assert load_config(EvalConfig, cfg_file, ["task_limits.fpb=4"]).task_limits == {"fpb": 4}


@pytest.mark.parametrize("value", [-1, 0])
def test_non_positive_task_limit_is_rejected(cfg_file, value):
    with pytest.raises(ConfigError) as info:
        load_config(EvalConfig, cfg_file, [f"task_limits.headlines={value}"])
    assert str(cfg_file) in str(info.value) and "task_limits.headlines" in str(info.value)


def test_later_override_wins_and_overrides_need_no_file():
    cfg = load_config(EvalConfig, None, ["limit=2", "limit=9", "wrapper=finma", "ray.enabled=False"])
    assert cfg.limit == 9 and cfg.wrapper == "finma" and cfg.ray.enabled is False


def test_duplicate_modes_are_collapsed_in_order():
    assert load_config(EvalConfig, None, ["modes=[robust,choice,robust]"]).modes == ["robust", "choice"]


def test_parse_override_types():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("x=[a, b]") == (["x"], ["a", "b"])
    assert parse_override("x=true") == (["x"], True)
    assert parse_override("x=1.5") == (["x"], 1.5)
    assert parse_override("x=") == (["x"], None)
    assert parse_override("x=a=b") == (["x"], "a=b")  # only the first '=' splits
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_override("no-equals-sign")


@pytest.mark.parametrize("override, field", [
    ("limit=-3", "limit"),
    ("limit=0", "limit"),
    ("wrapper=bogus", "wrapper"),
    ("modle.spec=x", "modle"),
    ("model.sepc=x", "model.sepc"),
    ("ray.workers=0", "ray.workers"),
    ("modes=[choice,bogus]", "modes.1"),
    ("modes=[]", "modes"),
    ("split=train", "split"),
    ("max_length=8", "max_length"),
    ("bootstrap=-1", "bootstrap"),
    ("tasks=fpb", "tasks"),
    ("limit=three", "limit"),
])
def test_invalid_values_name_the_field_and_the_file(cfg_file, override, field):
    with pytest.raises(ConfigError) as info:
        load_config(EvalConfig, cfg_file, [override])
    message = str(info.value)
    assert str(cfg_file) in message
    assert f"{field}:" in message, message
    assert "EvalConfig" in message


def test_invalid_value_inside_the_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  spec: tiny-random\nbatch_rows: 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(EvalConfig, path)
    assert str(path) in str(info.value) and "batch_rows:" in str(info.value)
    assert "(got 0)" in str(info.value)


def test_all_problems_are_reported_at_once(cfg_file):
    with pytest.raises(ConfigError) as info:
        load_config(EvalConfig, cfg_file, ["limit=-3", "wrapper=bogus"])
    assert "limit:" in str(info.value) and "wrapper:" in str(info.value)


def test_invalid_override_without_a_file_says_defaults():
    with pytest.raises(ConfigError, match=r"<defaults>.*limit:"):
        load_config(EvalConfig, None, ["limit=-3"])


def test_override_into_a_scalar_is_an_error(cfg_file):
    with pytest.raises(ConfigError, match="limit is not a section"):
        load_config(EvalConfig, cfg_file, ["limit.sub=1"])


def test_missing_file(tmp_path):
    missing = tmp_path / "nope" / "evaluate.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(EvalConfig, missing)
    assert str(missing) in str(info.value) and "does not exist" in str(info.value)


def test_bad_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model:\n  spec: [tiny-random\nlimit: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(EvalConfig, path)
    assert str(path) in str(info.value) and "not valid YAML" in str(info.value)


def test_top_level_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- fpb\n- ner\n")
    with pytest.raises(ConfigError) as info:
        load_config(EvalConfig, path)
    assert str(path) in str(info.value) and "mapping" in str(info.value) and "list" in str(info.value)


def test_empty_file_means_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing set\n")
    assert load_config(EvalConfig, path) == EvalConfig()


def test_dump_config_round_trips(cfg_file, tmp_path):
    cfg = load_config(EvalConfig, cfg_file, ["modes=[choice]", "ray.enabled=false", "limit=4"])
    dumped = tmp_path / "dumped.yaml"
    dumped.write_text(dump_config(cfg))
    assert yaml.safe_load(dumped.read_text())["ray"]["enabled"] is False
    assert load_config(EvalConfig, dumped) == cfg


def test_shipped_evaluate_config_validates():
    path = PIPELINE_CONFIGS / "evaluate.yaml"
    if not path.is_file():
        pytest.skip(f"{path} is not in the tree yet (pipelines/configs/evaluate.yaml not shipped)")
    cfg = load_config(EvalConfig, path)
    raw = yaml.safe_load(path.read_text()) or {}
    # every value written in the file is what the config holds (nothing silently dropped)
    dumped = cfg.model_dump(mode="json")

    def check(section: dict, got: dict, where: str) -> None:
        for key, value in section.items():
            if isinstance(value, dict):
                check(value, got[key], f"{where}{key}.")
            elif key == "modes":
                assert got[key] == list(dict.fromkeys(value)), f"{where}{key}"
            else:
                assert got[key] == value, f"{where}{key}"

    check(raw, dumped, "")
    assert cfg.tasks or cfg.task_files
