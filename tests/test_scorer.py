"""Model-side scoring against naive references: choice log-probs, batching, truncation, greedy decoding.

Everything runs on tiny random Llamas with the byte-level tokenizer (no download, CPU, fp32):
- labels such as "positive" are several byte tokens, so `ChoiceScorer` takes its KV-cache path;
- the "finma" wrapper ends in a newline (no separator) and 1-character labels are one token each,
  so `ChoiceScorer` takes its right-padded single-token path.
"""
from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from finadapt.evaluate.scorer import (
    ChoiceScorer,
    Generator,
    encode_prompts,
    eos_ids,
    greedy_generate,
    label_variants,
    left_pad,
    length_batches,
)
from finadapt.evaluate.wrappers import FINMA_TEMPLATE, answer_separator, render_prompt, template_description
from finadapt.models import build_byte_tokenizer, build_tiny_random, load_model

SENTENCE = ("Operating profit rose to EUR 13.1 mn from EUR 8.7 mn in the corresponding period in 2007 "
            "representing 7.7 % of net sales.")


def _scaled_tiny(seed: int = 4, std: float = 0.3):
    """tiny-random re-initialised with larger weights: peaked logits and varied greedy outputs
    (the default init just repeats the last prompt token)."""
    model, tok = build_tiny_random(seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, std, generator=gen)
    return model.eval(), tok


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core box OpenMP spinning makes them
    100x slower; restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny():
    loaded = load_model("tiny-random", device="cpu")
    return loaded.model, loaded.tokenizer


@pytest.fixture(scope="module")
def scaled():
    return _scaled_tiny()


@pytest.fixture(params=["tiny-random", "scaled"])
def any_model(request, tiny, scaled):
    return tiny if request.param == "tiny-random" else scaled


def _generated(result):
    """greedy_generate returns the token lists (optionally with the answer-position log-probs)."""
    return result[0] if isinstance(result, tuple) else result


# --------------------------------------------------------------------------- naive references
@torch.inference_mode()
def reference_choice_logprobs(model, tok, row: dict, wrapper: str, max_length: int,
                              variants: bool = True) -> list[float]:
    """One sample at a time, no padding, no cache: full forward of prompt + continuation."""
    prompt = render_prompt(row["query"], wrapper, tok)
    sep = answer_separator(prompt)
    prompt_ids = tok(prompt, add_special_tokens=True)["input_ids"][-max_length:]
    scores = []
    for choice in row["choices"]:
        per_form = []
        for form in (label_variants(choice) if variants else [choice]):
            cont = tok(sep + form, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([prompt_ids + cont])
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
            per_form.append(sum(logp[len(prompt_ids) - 1 + j, t].item() for j, t in enumerate(cont)))
        top = max(per_form)
        scores.append(top + math.log(sum(math.exp(v - top) for v in per_form)))
    return scores


def _rows_multi_token() -> list[dict]:
    """Prompts of very different lengths (one longer than max_length) and ragged label sets."""
    fpb = ["positive", "neutral", "negative"]
    return [
        {"query": "Up?", "choices": ["Yes", "No"]},
        {"query": f"Analyze the sentiment of this statement: {SENTENCE}\nAnswer:", "choices": fpb},
        {"query": "Gold futures rose 2% today. Does the news headline talk about price going up?",
         "choices": ["up", "down", "no change"]},
        {"query": ("Context: " + SENTENCE + " ") * 6 + "\nAnswer:", "choices": fpb},  # ~700 bytes: truncated
        {"query": "€ Zürich Börse — 日本語\nAnswer:", "choices": ["Positive", "negative"]},
        {"query": "a", "choices": fpb},
        {"query": SENTENCE * 2 + " Answer:", "choices": ["Yes", "No"]},
    ]


def _rows_single_token() -> list[dict]:
    return [
        {"query": "x", "choices": ["a", "b"]},
        {"query": "Is the sentiment positive (a) or negative (b)? " + SENTENCE, "choices": ["a", "b"]},
        {"query": (SENTENCE + " ") * 3 + "Choose a, b or c.", "choices": ["a", "b", "c"]},
        {"query": "Pick one.", "choices": ["b", "a"]},
        {"query": "€ Zürich — 日本語", "choices": ["a", "b"]},
    ]


# --------------------------------------------------------------------------- choice scoring
@pytest.mark.parametrize("wrapper", ["raw", "chat"])
@pytest.mark.parametrize("token_budget", [96, 100_000])
def test_choice_scores_match_naive_reference_multi_token(any_model, wrapper, token_budget):
    model, tok = any_model
    rows = _rows_multi_token()
    max_length = 256
    scorer = ChoiceScorer(model, tok, wrapper=wrapper, max_length=max_length, token_budget=token_budget)
    # the byte tokenizer makes labels multi-token: this exercises the KV-cache path
    assert any(len(tok(answer_separator(render_prompt(r["query"], wrapper, tok)) + "positive",
                       add_special_tokens=False)["input_ids"]) > 1 for r in rows)
    got = scorer.score(rows)
    lengths = [len(tok(render_prompt(r["query"], wrapper, tok))["input_ids"]) for r in rows]
    assert max(lengths) > max_length and min(lengths) < 40  # very different lengths, one truncated
    for row, res, n in zip(rows, got, lengths):
        ref = reference_choice_logprobs(model, tok, row, wrapper, max_length)
        assert len(res["choice_logprobs"]) == len(row["choices"])
        torch.testing.assert_close(torch.tensor(res["choice_logprobs"], dtype=torch.float64),
                                   torch.tensor(ref, dtype=torch.float64), atol=1e-4, rtol=0)
        assert res["pred"] == max(range(len(ref)), key=lambda k: ref[k])
        assert res["prompt_tokens"] == min(n, max_length)
        assert res["truncated"] is (n > max_length)


@pytest.mark.parametrize("token_budget", [64, 100_000])
def test_choice_scores_match_naive_reference_single_token(any_model, token_budget):
    model, tok = any_model
    rows = _rows_single_token()
    scorer = ChoiceScorer(model, tok, wrapper="finma", max_length=1024, token_budget=token_budget)
    for r in rows:  # the single-token setup really is single-token
        prompt = render_prompt(r["query"], "finma", tok)
        assert prompt.endswith("\n") and answer_separator(prompt) == ""
        for c in r["choices"]:
            for form in label_variants(c):
                assert len(tok(form, add_special_tokens=False)["input_ids"]) == 1
    got = scorer.score(rows)
    for row, res in zip(rows, got):
        ref = reference_choice_logprobs(model, tok, row, "finma", 1024)
        torch.testing.assert_close(torch.tensor(res["choice_logprobs"], dtype=torch.float64),
                                   torch.tensor(ref, dtype=torch.float64), atol=1e-4, rtol=0)
        assert res["pred"] == max(range(len(ref)), key=lambda k: ref[k])
        assert res["truncated"] is False


def test_variants_are_log_sum_exp_of_surface_forms(scaled):
    """With variants the score is logsumexp(form scores); without, the label as written."""
    model, tok = scaled
    row = {"query": f"Sentiment: {SENTENCE}\nAnswer:", "choices": ["positive", "Negative"]}
    with_v = ChoiceScorer(model, tok, wrapper="raw").score([row])[0]["choice_logprobs"]
    without = ChoiceScorer(model, tok, wrapper="raw", variants=False).score([row])[0]["choice_logprobs"]
    ref_without = reference_choice_logprobs(model, tok, row, "raw", 1024, variants=False)
    torch.testing.assert_close(torch.tensor(without), torch.tensor(ref_without), atol=1e-4, rtol=0)
    for w, wo in zip(with_v, without):
        assert w > wo + 1e-3  # adding a second surface form strictly increases the probability mass
    assert label_variants("positive") == ["positive", "Positive"]
    assert label_variants("Negative") == ["Negative", "negative"]
    assert label_variants("no change") == ["no change", "No change"]
    assert label_variants("a") == ["a", "A"]


def test_scores_do_not_depend_on_batch_composition(scaled):
    """A row scored alone and inside a padded batch with much longer rows gives the same numbers."""
    model, tok = scaled
    rows = _rows_multi_token()
    scorer = ChoiceScorer(model, tok, wrapper="chat", max_length=256, token_budget=100_000)
    together = scorer.score(rows)
    for row, res in zip(rows, together):
        alone = scorer.score([row])[0]
        torch.testing.assert_close(torch.tensor(res["choice_logprobs"]), torch.tensor(alone["choice_logprobs"]),
                                   atol=1e-4, rtol=0)


def test_predictor_shared_prefill_matches_separate_choice_scoring():
    """choice+compat with single-token labels: choice scores come from the generator's prefill
    (left-padded) and must equal the scorer's own right-padded path and the naive reference."""
    import pandas as pd

    from finadapt.evaluate.predictor import FlarePredictor

    rows = [{"id": f"r{i}", "task": "t", "kind": "classification", **r} for i, r in enumerate(_rows_single_token())]
    limits = {"classification": 3, "headlines": 3, "ner": 3}
    shared = FlarePredictor("tiny-random", device="cpu", wrapper="finma", modes=("choice", "compat"),
                            max_new_tokens=limits, token_budget=100_000)
    alone = FlarePredictor("tiny-random", device="cpu", wrapper="finma", modes=("choice",), max_new_tokens=limits)
    assert shared.scorer.single_token(rows)
    shared.scorer.score = lambda *a, **k: pytest.fail("shared prefill should not call ChoiceScorer.score")
    got = shared(pd.DataFrame(rows)).to_dict("records")
    expected = alone(pd.DataFrame(rows)).to_dict("records")
    model, tok = alone.loaded.model, alone.loaded.tokenizer
    for row, g, e in zip(rows, got, expected):
        assert g["id"] == e["id"] == row["id"]
        ref = reference_choice_logprobs(model, tok, row, "finma", 1024)
        for scores in (g["choice_logprobs"], e["choice_logprobs"]):
            torch.testing.assert_close(torch.tensor(list(scores), dtype=torch.float64),
                                       torch.tensor(ref, dtype=torch.float64), atol=1e-4, rtol=0)
        assert g["choice_pred"] == e["choice_pred"] == max(range(len(ref)), key=lambda k: ref[k])
        assert g["generated_tokens"] == 3 and e["generated_tokens"] == 0
        assert g["prompt_tokens"] == e["prompt_tokens"] > 0


# --------------------------------------------------------------------------- batching and truncation
@pytest.mark.parametrize("seed", range(5))
def test_length_batches_respect_budget_and_cover_every_index_once(seed):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 300, (200,), generator=gen).tolist() + [900, 1]  # one longer than the budget
    budget, max_batch = 1000, 16
    batches = length_batches(lengths, budget, max_batch)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))  # every index exactly once
    for b in batches:
        assert b, "empty batch"
        assert len(b) <= max_batch
        padded = len(b) * max(lengths[i] for i in b)
        assert padded <= budget or len(b) == 1, (b, padded)
    # sorted by length: batch boundaries never interleave lengths
    seen = [lengths[i] for i in flat]
    assert seen == sorted(seen)
    # not degenerate: batches are packed (fewer batches than rows)
    assert len(batches) < len(lengths) // 2


def test_length_batches_edge_cases():
    assert length_batches([], 100) == []
    assert length_batches([500], 100) == [[0]]  # an over-budget row still gets its own batch
    assert length_batches([10] * 10, 100, max_batch=64) == [list(range(10))]
    assert length_batches([10] * 10, 99, max_batch=64) == [list(range(9)), [9]]
    assert length_batches([10] * 10, 1000, max_batch=4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_encode_prompts_truncation_keeps_the_end_and_flags_it():
    tok = build_byte_tokenizer()
    long = "IRRELEVANT PREAMBLE " * 10 + "Question: is this positive?\nAnswer:"
    short = "Answer:"
    enc = encode_prompts(tok, [long, short], max_length=40)
    full_long = tok(long)["input_ids"]
    assert len(full_long) > 40
    assert enc[0].truncated is True
    assert enc[0].ids == full_long[-40:]
    assert tok.decode(enc[0].ids) == long[-40:]  # bytes == chars here (ASCII)
    assert tok.decode(enc[0].ids).endswith("Question: is this positive?\nAnswer:")
    assert enc[1].truncated is False
    assert enc[1].ids == tok(short)["input_ids"]
    exact = encode_prompts(tok, ["x" * 40], max_length=40)[0]  # exactly at the limit: not truncated
    assert exact.truncated is False and len(exact.ids) == 40


# --------------------------------------------------------------------------- greedy generation
GEN_PROMPTS = [
    "Hi",
    "The quarterly revenue of the bank grew by 12% year over year. Answer:",
    "x" * 150,
    "Sentiment of: losses widened\nAnswer:",
    "Zürich €",
    "abc",
    SENTENCE,
]


@torch.inference_mode()
def _hf_greedy(model, tok, prompt_ids: list[int], max_new_tokens: int, stop_ids: list[int]) -> list[int]:
    ids = torch.tensor([prompt_ids])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                         max_new_tokens=max_new_tokens, eos_token_id=stop_ids, pad_token_id=tok.pad_token_id)
    return out[0, len(prompt_ids):].tolist()


def test_greedy_generate_equals_hf_generate_one_prompt_at_a_time(scaled):
    model, tok = scaled
    enc = [e.ids for e in encode_prompts(tok, GEN_PROMPTS, 1024)]
    free = [_hf_greedy(model, tok, p, 16, [tok.eos_token_id]) for p in enc]
    assert len({tuple(g) for g in free}) == len(free), "outputs should differ between prompts"
    ids, mask = left_pad(enc, tok.pad_token_id, "cpu")
    got = _generated(greedy_generate(model, ids, mask, 16, [tok.eos_token_id]))
    assert got == free


def test_greedy_generate_with_rows_stopping_at_different_times(scaled):
    model, tok = scaled
    max_new = 16
    enc = [e.ids for e in encode_prompts(tok, GEN_PROMPTS, 1024)]
    free = [_hf_greedy(model, tok, p, max_new, [tok.eos_token_id]) for p in enc]
    # stop tokens chosen from the free generations so that rows end at different steps
    stops = sorted({free[0][1], free[1][4], free[3][8], tok.eos_token_id})
    expected = [_hf_greedy(model, tok, p, max_new, stops) for p in enc]
    lengths = [len(e) for e in expected]
    assert len(set(lengths)) >= 3 and max_new in lengths and min(lengths) < max_new // 2, lengths
    for e in expected:  # HF stops right after emitting a stop token (which it keeps)
        assert len(e) == max_new or e[-1] in stops
    ids, mask = left_pad(enc, tok.pad_token_id, "cpu")
    got = _generated(greedy_generate(model, ids, mask, max_new, stops))
    assert got == expected


def test_greedy_generate_on_default_tiny_random_matches_hf(tiny):
    """The default init (outputs repeat the last token): a frequently produced token as stop id."""
    model, tok = tiny
    enc = [e.ids for e in encode_prompts(tok, GEN_PROMPTS, 1024)]
    free = [_hf_greedy(model, tok, p, 10, [tok.eos_token_id]) for p in enc]
    common = Counter(t for g in free for t in g).most_common(1)[0][0]
    stops = sorted({common, tok.eos_token_id})
    expected = [_hf_greedy(model, tok, p, 10, stops) for p in enc]
    assert len({len(e) for e in expected}) >= 2
    ids, mask = left_pad(enc, tok.pad_token_id, "cpu")
    assert _generated(greedy_generate(model, ids, mask, 10, stops)) == expected


@pytest.mark.parametrize("token_budget", [64, 100_000])
def test_generator_equals_hf_generate(scaled, token_budget):
    model, tok = scaled
    max_new = 12
    rows = [{"query": q} for q in GEN_PROMPTS]
    generator = Generator(model, tok, wrapper="chat", max_length=1024, token_budget=token_budget, max_batch=3)
    assert generator.stop_ids == eos_ids(model, tok) and tok.eos_token_id in generator.stop_ids
    prompts = [render_prompt(q, "chat", tok) for q in GEN_PROMPTS]
    enc = [e.ids for e in encode_prompts(tok, prompts, 1024)]
    free = [_hf_greedy(model, tok, p, max_new, generator.stop_ids) for p in enc]
    generator.stop_ids = sorted({*generator.stop_ids, free[0][2], free[2][5]})
    expected = [_hf_greedy(model, tok, p, max_new, generator.stop_ids) for p in enc]
    assert len({len(e) for e in expected}) >= 2
    got = generator.generate(rows, max_new)
    for res, exp, p in zip(got, expected, enc):
        assert res["generated_tokens"] == len(exp)
        assert res["generation"] == tok.decode(exp, skip_special_tokens=True).strip()
        assert res["prompt_tokens"] == len(p)
        assert res["truncated"] is False


def test_eos_ids_include_generation_config(tiny):
    model, tok = tiny
    assert eos_ids(model, tok) == [tok.eos_token_id]

    class Cfg:
        eos_token_id = [7, tok.eos_token_id]

    class Fake:
        generation_config = Cfg()

    assert eos_ids(Fake(), tok) == sorted({7, tok.eos_token_id})


# --------------------------------------------------------------------------- wrappers
def test_render_prompt_exact_strings():
    tok = build_byte_tokenizer()
    q = "Analyze the sentiment of this statement.\nText: Sales rose.\nAnswer:"
    assert render_prompt(q, "raw") == q
    assert render_prompt(q, "finma") == "Human: \n" + q + "\n\nAssistant: \n"
    assert FINMA_TEMPLATE == "Human: \n{query}\n\nAssistant: \n"
    assert render_prompt(q, "chat", tok) == (
        "<|im_start|>user\n" + q + "<|im_end|>\n<|im_start|>assistant\n")
    assert template_description("chat", tok) == "<|im_start|>user\n{query}<|im_end|>\n<|im_start|>assistant\n"
    assert template_description("raw") == "{query}"
    with pytest.raises(ValueError, match="chat template"):
        render_prompt(q, "chat")
    with pytest.raises(ValueError, match="bogus"):
        render_prompt(q, "bogus", tok)


def test_answer_separator():
    assert answer_separator("Answer:") == " "
    assert answer_separator("Human: \nq\n\nAssistant: \n") == ""
    assert answer_separator("<|im_start|>assistant\n") == ""
    assert answer_separator("Answer: ") == ""
    assert answer_separator("x\t") == ""
    assert answer_separator("") == " "
