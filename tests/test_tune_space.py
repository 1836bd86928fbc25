"""Search spaces: parsing into Tune objects, and every error raised before a trial starts, naming the
key and the space file."""
from __future__ import annotations

import pytest
import yaml
from tune_fixtures import base_config, space_file, sweep_file, synthetic_pool

from finadapt.config import ConfigError
from finadapt.tune.config import load_sweep
from finadapt.tune.runner import param_space, precheck, search_alg


def _load(tmp_path, params, **extra):
    space = space_file(tmp_path, params)
    return load_sweep(sweep_file(tmp_path, space, base_config(tmp_path), **extra)), space


def test_every_distribution_becomes_its_tune_domain(tmp_path):
    from ray.tune.search.sample import Categorical, Float, Integer

    sweep, _ = _load(tmp_path, {"data.synthetic_ratio": {"grid": [0, 0.5]}, "optim.lr": {"loguniform": [1e-5, 1e-3]},
                                "optim.weight_decay": {"uniform": [0.0, 0.2]}, "seed": {"randint": [0, 4]},
                                "data.template": {"choice": ["chat", "flare"]}}, searcher="random")
    space = param_space(sweep)
    assert space["data.synthetic_ratio"] == {"grid_search": [0, 0.5]}
    lr = space["optim.lr"]
    assert isinstance(lr, Float) and (lr.lower, lr.upper) == (1e-5, 1e-3) and "LogUniform" in type(lr.sampler).__name__
    assert isinstance(space["optim.weight_decay"], Float) and (space["optim.weight_decay"].upper == 0.2)
    assert isinstance(space["seed"], Integer) and (space["seed"].lower, space["seed"].upper) == (0, 4)
    assert isinstance(space["data.template"], Categorical) and space["data.template"].categories == ["chat", "flare"]


@pytest.mark.parametrize("params, words", [
    ({"optim.learning_rate": {"grid": [1e-4]}}, ["params.optim.learning_rate", "unknown key"]),
    ({"optim.lr": {"gaussian": [1e-4, 1e-5]}}, ["params.optim.lr", "unknown distribution 'gaussian'"]),
    ({"optim.lr": {"loguniform": [0, 1e-3]}}, ["params.optim.lr", "low > 0"]),
    ({"optim.lr": {"uniform": [1e-3, 1e-4]}}, ["params.optim.lr", "low < high"]),
    ({"optim.lr": [1e-4, 1e-3]}, ["params.optim.lr", "exactly one distribution"]),
    ({"optim.lr": {"uniform": [-1.0, 1e-3]}}, ["params.optim.lr=-1.0", "rejects", "optim.lr"]),
    ({"data.template": {"grid": ["chat", "alpaca"]}}, ["params.data.template='alpaca'", "rejects"]),
    ({"batch.grad_accum": {"randint": [0, 3]}}, ["params.batch.grad_accum=0", "rejects"]),
    ({"output_dir": {"grid": ["a", "b"]}}, ["params.output_dir", "set by each trial"]),
])
def test_bad_spaces_fail_naming_the_key_and_the_file(tmp_path, params, words):
    space = space_file(tmp_path, params)
    with pytest.raises(ConfigError) as err:
        load_sweep(sweep_file(tmp_path, space, base_config(tmp_path)))
    message = str(err.value)
    assert str(space) in message
    for word in words:
        assert word in message, message


def test_space_file_settings_are_defaults_the_sweep_file_overrides(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"params": {"optim.lr": {"grid": [1e-4]}}, "num_samples": 3,
                                     "searcher": "random"}))
    sweep = load_sweep(sweep_file(tmp_path, space, base_config(tmp_path)), ["max_concurrent_trials=2"])
    assert (sweep.cfg.num_samples, sweep.cfg.searcher, sweep.cfg.max_concurrent_trials) == (3, "grid", 2)


def test_grid_searcher_refuses_ranges_and_optuna_needs_its_package(tmp_path):
    sweep, space = _load(tmp_path, {"optim.lr": {"loguniform": [1e-5, 1e-3]}})
    with pytest.raises(ConfigError, match="searcher grid needs grid/choice"):
        param_space(sweep)
    sweep.cfg.searcher = "optuna"
    try:
        import optuna  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="optuna package"):
            search_alg(sweep)


def test_pool_too_small_for_the_highest_ratio_fails_before_any_trial(tmp_path):
    pool = synthetic_pool(tmp_path, n=20)  # 16 real fpb samples: ratio 1 needs 16, ratio 2 needs 32
    base = base_config(tmp_path, data={"tasks": ["fpb"], "limit_per_task": 16, "max_length": 192,
                                       "synthetic_jsonl": [str(pool)]})
    ok = space_file(tmp_path, {"data.synthetic_ratio": {"grid": [0, 1]}}, "ok.yaml")
    sweep = load_sweep(sweep_file(tmp_path, ok, base))
    assert precheck(sweep) == 8  # ratio 1: 16 real + 16 synthetic rows = 4 steps of 8 per epoch, 2 epochs
    too_big = space_file(tmp_path, {"data.synthetic_ratio": {"grid": [0, 2]}}, "big.yaml")
    with pytest.raises(ConfigError) as err:
        precheck(load_sweep(sweep_file(tmp_path, too_big, base)))
    message = str(err.value)
    for word in (str(too_big), "data.synthetic_ratio=2", str(pool), "needs 32 synthetic samples", "has 20"):
        assert word in message, message
