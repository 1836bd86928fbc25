"""Training building blocks without Ray: loss mask, packing, accumulation, checkpoints, configs."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from finadapt.config import ConfigError, load_config
from finadapt.evaluate.wrappers import render_prompt
from finadapt.models import build_byte_tokenizer, build_tiny_random
from finadapt.tasks.base import Sample
from finadapt.train import PretrainConfig, SftConfig
from finadapt.train.batching import IGNORE, length_grouped_micro_batches, packed_micro_batches
from finadapt.train.data import plan_steps, rewindow
from finadapt.train.sft_data import encode_samples, prompt_and_response
from finadapt.train.step import SelectedTokenLoss, StepRunner, build_scheduler


def _sample(answer="positive", query="Analyze the sentiment of this statement.\nText: profits rose\nAnswer:"):
    return Sample(id="s1", task="fpb", query=query, answer=answer, choices=["negative", "neutral", "positive"],
                  gold=2, text="profits rose")


# ------------------------------------------------------------------ response-only loss mask
@pytest.mark.parametrize("template", ["chat", "flare"])
def test_loss_mask_covers_exactly_the_response(template):
    tok = build_byte_tokenizer()
    sample = _sample()
    prompt, response = prompt_and_response(sample, template, tok)
    if template == "chat":  # the prompt is byte-identical to what the evaluation harness shows
        assert prompt == render_prompt(sample.query, "chat", tok)
        assert response.startswith("positive") and tok.eos_token in response
    else:
        assert prompt == sample.query and response == " positive" + tok.eos_token
    enc = encode_samples([sample], tok, template, max_length=1024)
    ids, plen = enc.ids[0], enc.prompt_lengths[0]
    (mb,) = length_grouped_micro_batches(enc.ids, enc.prompt_lengths, 4096, pad_id=tok.pad_token_id)
    labels = mb.labels[0].numpy()
    assert (labels[:plen] == IGNORE).all()
    assert (labels[plen:] == ids[plen:]).all()
    assert tok.decode(ids[plen:]) == response
    assert mb.target_tokens == len(ids) - plen


def test_long_prompt_keeps_its_end_and_the_whole_response():
    tok = build_byte_tokenizer()
    sample = _sample(query="x" * 500 + " Answer:")
    enc = encode_samples([sample], tok, "flare", max_length=100)
    assert enc.truncated == 1 and len(enc.ids[0]) == 100
    assert tok.decode(enc.ids[0]).endswith(" Answer: positive" + tok.eos_token)


def test_length_grouping_pads_little_and_loses_nothing():
    rng = np.random.default_rng(0)
    ids = [rng.integers(3, 200, size=n) for n in rng.integers(20, 300, size=64)]
    plens = [len(x) // 2 for x in ids]
    mbs = length_grouped_micro_batches(ids, plens, max_tokens=1024, pad_id=0)
    assert all(mb.padded_tokens <= 1024 or mb.input_ids.shape[0] == 1 for mb in mbs)
    assert sum(mb.real_tokens for mb in mbs) == sum(len(x) for x in ids)
    assert sum(mb.target_tokens for mb in mbs) == sum(len(x) - p for x, p in zip(ids, plens))
    padding = 1 - sum(mb.real_tokens for mb in mbs) / sum(mb.padded_tokens for mb in mbs)
    naive = 1 - sum(len(x) for x in ids) / sum(max(len(x) for x in ids[i:i + 4]) * len(ids[i:i + 4])
                                                for i in range(0, 64, 4))
    assert padding < 0.1 and padding < naive / 3  # file-order batches of 4 would pad ~40%
    # every sample's tokens appear once, in a row of their own
    rows = sorted(tuple(int(t) for t in row[: n]) for mb in mbs for row, n in
                  zip(mb.input_ids, (mb.input_ids != 0).sum(1)))
    assert rows == sorted(tuple(int(t) for t in x) for x in ids)


# ------------------------------------------------------------------ packing boundaries
def test_packed_rows_mask_padding_and_keep_eos_boundaries():
    ids = np.arange(2 * 8).reshape(2, 8) + 10
    ids[1, 5:] = 0  # last packed row: 5 real tokens, then padding
    mbs = packed_micro_batches(ids, np.array([8, 5]), micro_batch_size=2)
    (mb,) = mbs
    assert mb.real_tokens == 13
    assert (mb.labels[1, 5:] == IGNORE).all() and (mb.labels[1, :5] == mb.input_ids[1, :5]).all()
    assert mb.target_tokens == 7 + 4


def test_rewindow_loses_no_token():
    import pyarrow as pa

    ids = np.arange(3 * 16, dtype=np.int32)
    table = pa.table({"input_ids": pa.FixedSizeListArray.from_arrays(pa.array(ids), 16),
                      "n_tokens": pa.array([16, 16, 5], pa.int64())})
    out = rewindow(table, 4)
    assert out.column("input_ids").type.list_size == 4
    assert int(np.asarray(out.column("n_tokens")).sum()) == 37
    assert out.num_rows == 4 + 4 + 2  # the last row's empty windows are dropped
    flat = out.column("input_ids").combine_chunks().flatten().to_numpy()
    assert (flat[:32] == ids[:32]).all()
    with pytest.raises(ValueError, match="must divide"):
        rewindow(table, 5)


# ------------------------------------------------------------------ loss and accumulation
def test_selected_token_loss_equals_the_hf_loss():
    model, tok = build_tiny_random()
    ids = torch.randint(3, len(tok), (2, 24))
    labels = ids.clone()
    labels[:, :10] = IGNORE
    ours = SelectedTokenLoss(model)(ids, labels) / (labels[:, 1:] != IGNORE).sum()
    theirs = model(input_ids=ids, labels=labels).loss
    assert torch.allclose(ours, theirs, atol=1e-5)


def _train_once(micro_tokens: int) -> torch.Tensor:
    model, _ = build_tiny_random(seed=3)
    rng = np.random.default_rng(1)
    ids = [rng.integers(3, 250, size=n) for n in (12, 40, 17, 33, 25, 9)]
    mbs = length_grouped_micro_batches(ids, [4] * len(ids), micro_tokens, pad_id=2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    runner = StepRunner(SelectedTokenLoss(model), opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0))
    stats = runner.run(mbs)
    assert stats.target_tokens == sum(len(x) - 4 for x in ids)
    return torch.cat([p.detach().flatten() for p in model.parameters()]), len(mbs)


def test_gradient_accumulation_is_token_weighted_whatever_the_micro_batching():
    """One big micro-batch or many small ones: the same update (the effective batch holds)."""
    big, n_big = _train_once(10_000)
    small, n_small = _train_once(64)
    assert n_big == 1 and n_small >= 4
    assert torch.allclose(big, small, atol=1e-5)


def test_scheduler_warms_up_then_decays():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    from finadapt.train.config import OptimConfig

    sched = build_scheduler(opt, OptimConfig(lr=1.0, warmup_ratio=0.2), total_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:])) and lrs[-1] < 0.1


# ------------------------------------------------------------------ configs
def test_paper_defaults():
    pre, sft = PretrainConfig(), SftConfig()
    assert (pre.epochs, sft.epochs) == (2, 1)
    for cfg in (pre, sft):
        assert cfg.optim.lr == 1e-4 and cfg.optim.weight_decay == 0.1
        assert (cfg.batch.batch_size, cfg.batch.grad_accum, cfg.batch.effective) == (32, 4, 128)
        assert cfg.lora is None  # full fine-tuning by default


@pytest.mark.parametrize("overrides, message", [
    (["ray.workers=3"], "cannot be split evenly over 3 workers"),
    (["batch.micro_batch_size=5"], "cannot make the effective batch 128"),
    (["ray.workers=2", "batch.micro_batch_size=48"], "64 per worker is not a multiple of 48"),
    (["optim.lr=-1"], "optim.lr"),
    (["batch.mirco_batch_size=4"], "mirco_batch_size"),
])
def test_bad_configs_fail_with_a_clear_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(PretrainConfig, None, overrides)


def test_shipped_configs_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "pipelines" / "configs"
    for name, cls in (("pretrain", PretrainConfig), ("pretrain_demo", PretrainConfig), ("sft", SftConfig),
                      ("sft_demo", SftConfig)):
        cfg = load_config(cls, root / f"{name}.yaml")
        assert cfg.stage == cls().stage


def test_too_little_data_for_one_step_is_an_error():
    with pytest.raises(ValueError, match="fewer than one effective batch"):
        plan_steps(PretrainConfig(), train_rows=100, num_workers=1)
    plan = plan_steps(PretrainConfig(max_steps=3), train_rows=1000, num_workers=1)
    assert plan == {"steps_per_epoch": 7, "total_steps": 3, "train_rows": 1000, "rows_per_worker_step": 128,
                    "dropped_rows_per_epoch": 104}


def test_missing_shards_name_the_place(tmp_path):
    from finadapt.train.data import pretrain_tables

    cfg = PretrainConfig.model_validate({"data": {"shards": str(tmp_path / "nowhere")}})
    with pytest.raises(Exception, match="nowhere"):
        pretrain_tables(cfg)


# ------------------------------------------------------------------ checkpoints
def test_checkpoint_is_a_plain_hf_dir_and_resumes_optimizer_state(tmp_path):
    from transformers import AutoModelForCausalLM

    from finadapt.train.checkpoint import load_train_state, save_checkpoint
    from finadapt.train.config import OptimConfig
    from finadapt.train.step import build_optimizer

    model, tok = build_tiny_random()
    opt = build_optimizer(model, OptimConfig())
    sched = build_scheduler(opt, OptimConfig(), 10)
    loss = SelectedTokenLoss(model)(torch.randint(3, 200, (1, 16)), torch.randint(3, 200, (1, 16)))
    loss.backward()
    opt.step()
    sched.step()
    save_checkpoint(tmp_path, model, tok, opt, sched, state={"step": 7, "epoch": 1, "step_in_epoch": 2})
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    opt2 = build_optimizer(copy.deepcopy(model), OptimConfig())
    sched2 = build_scheduler(opt2, OptimConfig(), 10)
    state = load_train_state(tmp_path, opt2, sched2)
    assert state["step"] == 7 and sched2.last_epoch == 1
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
