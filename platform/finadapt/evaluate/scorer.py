"""Model-side scoring, plain PyTorch (no Ray), so it runs and is checked anywhere: CPU, one GPU, an actor.

- `ChoiceScorer`: log-likelihood of each label at the answer position. Prompts are sorted by
  length and batched under a token budget (almost no padding), the transformer body runs once
  per prompt, and the vocabulary projection is applied only at the answer positions.
- `Generator`: greedy generation (FLARE's `greedy_until` with no stop string: until EOS or the
  token cap), batched by length.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from finadapt.evaluate.wrappers import answer_separator, render_prompt


@dataclass
class EncodedPrompt:
    ids: list[int]
    truncated: bool


def encode_prompts(tokenizer, prompts: list[str], max_length: int) -> list[EncodedPrompt]:
    """Tokenize; over-long prompts lose their *start*, keeping the question and "Answer:" (PIXIU #63)."""
    encoded = tokenizer(prompts, add_special_tokens=True)["input_ids"]
    out = []
    for ids in encoded:
        truncated = len(ids) > max_length
        out.append(EncodedPrompt(ids[-max_length:] if truncated else list(ids), truncated))
    return out


def length_batches(lengths: list[int], token_budget: int, max_batch: int = 64) -> list[list[int]]:
    """Indices sorted by length, cut into batches whose padded size (n × longest) fits the budget."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = max(lengths[i], max((lengths[j] for j in current), default=0))
        if current and (longest * (len(current) + 1) > token_budget or len(current) >= max_batch):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def left_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq):] = 1
    return ids.to(device), mask.to(device)


def right_pad(seqs: list[list[int]], pad_id: int, device) -> torch.Tensor:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return ids.to(device)


def label_variants(label: str) -> list[str]:
    """Surface forms counted as the same answer (FLARE lower-cases FPB/FiQA answers)."""
    forms = [label, label.lower(), label.capitalize()]
    return list(dict.fromkeys(forms))


def split_head(model) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(transformer body, vocabulary head) of a HF causal LM."""
    body = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    head = model.get_output_embeddings()
    return body, head


class _PromptRunner:
    """What both scorers share: the model, how prompts are rendered, truncated and batched."""

    def __init__(self, model, tokenizer, wrapper: str, max_length: int, token_budget: int):
        self.model = model
        self.tokenizer = tokenizer
        self.wrapper = wrapper
        self.max_length = max_length
        self.token_budget = token_budget
        self.device = next(model.parameters()).device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


class ChoiceScorer(_PromptRunner):
    """Scores `choices` by log P(label | prompt), summed over label tokens, log-sum-exp over surface forms."""

    def __init__(self, model, tokenizer, wrapper: str = "chat", max_length: int = 1024,
                 token_budget: int = 4096, variants: bool = True):
        super().__init__(model, tokenizer, wrapper, max_length, token_budget)
        self.variants = variants
        self.body, self.head = split_head(model)

    def _continuations(self, choices: list[str], sep: str) -> list[list[list[int]]]:
        """Token ids of each surface form of each choice: [choice][variant] -> ids."""
        out = []
        for choice in choices:
            forms = label_variants(choice) if self.variants else [choice]
            out.append([self.tokenizer(sep + f, add_special_tokens=False)["input_ids"] for f in forms])
        return out

    def single_token(self, rows: list[dict]) -> bool:
        """True when every surface form of every label is one token (then the answer position decides)."""
        for r in rows:
            sep = answer_separator(render_prompt(r["query"], self.wrapper, self.tokenizer))
            if any(len(v) != 1 for choice in self._continuations(list(r["choices"]), sep) for v in choice):
                return False
        return True

    def from_first_logprobs(self, rows: list[dict], first_logprobs: list[torch.Tensor]) -> list[dict]:
        """Choice scores from answer-position log-probs already computed by the generator (shared prefill)."""
        results = []
        for r, logp in zip(rows, first_logprobs):
            sep = answer_separator(render_prompt(r["query"], self.wrapper, self.tokenizer))
            conts = self._continuations(list(r["choices"]), sep)
            scores = [_logsumexp([logp[v[0]].item() for v in choice]) for choice in conts]
            results.append({"pred": max(range(len(scores)), key=lambda k: scores[k]), "choice_logprobs": scores})
        return results

    @torch.inference_mode()
    def score(self, rows: list[dict]) -> list[dict]:
        prompts = [render_prompt(r["query"], self.wrapper, self.tokenizer) for r in rows]
        encoded = encode_prompts(self.tokenizer, prompts, self.max_length)
        conts = [self._continuations(list(r["choices"]), answer_separator(p)) for r, p in zip(rows, prompts)]
        results: list[dict | None] = [None] * len(rows)
        for batch in length_batches([len(e.ids) for e in encoded], self.token_budget):
            scores = self._score_batch([encoded[i].ids for i in batch], [conts[i] for i in batch])
            for i, choice_scores in zip(batch, scores):
                best = max(range(len(choice_scores)), key=lambda k: choice_scores[k])
                results[i] = {
                    "pred": best,
                    "choice_logprobs": choice_scores,
                    "prompt_tokens": len(encoded[i].ids),
                    "truncated": encoded[i].truncated,
                    "generation": "",
                }
        return results  # type: ignore[return-value]

    def _score_batch(self, prompts: list[list[int]], conts: list[list[list[int]]]) -> list[list[float]]:
        """Right padding needs no attention mask: causal attention never lets a real token see the pads
        after it, so the fast is_causal kernel runs and default positions are right."""
        multi_token = any(len(v) > 1 for row in conts for choice in row for v in choice)
        ids = right_pad(prompts, self.pad_id, self.device)
        out = self.body(input_ids=ids, use_cache=multi_token)
        lengths = torch.tensor([len(p) for p in prompts], device=self.device)
        rows = torch.arange(len(prompts), device=self.device)
        last_logp = torch.log_softmax(self.head(out.last_hidden_state[rows, lengths - 1]).float(), dim=-1)
        tails = self._score_tails(out.past_key_values, lengths, ids.shape[1], conts) if multi_token else {}
        scores = []
        for b, row in enumerate(conts):
            per_choice = []
            for c, choice in enumerate(row):
                forms = [last_logp[b, v[0]].item() + tails.get((b, c, k), 0.0) for k, v in enumerate(choice)]
                per_choice.append(_logsumexp(forms))
            scores.append(per_choice)
        return scores

    def _score_tails(self, cache, lengths: torch.Tensor, width: int, conts) -> dict[tuple[int, int, int], float]:
        """log P(tokens 2.. of a label | prompt, token 1) for the multi-token forms only, re-using the
        prompt's KV cache (rows repeated once per such form; the prompt's right pads are masked)."""
        flat = [(b, c, k) for b, row in enumerate(conts) for c, choice in enumerate(row)
                for k, v in enumerate(choice) if len(v) > 1]
        source = torch.tensor([b for b, _, _ in flat], device=self.device)
        for layer in cache.layers:
            layer.keys, layer.values = layer.keys[source], layer.values[source]
        tail_len = max(len(conts[b][c][k]) for b, c, k in flat) - 1
        feed = torch.full((len(flat), tail_len), self.pad_id, dtype=torch.long, device=self.device)
        for row, (b, c, k) in enumerate(flat):
            seq = conts[b][c][k][:-1]  # the last label token is predicted, never fed
            feed[row, : len(seq)] = torch.tensor(seq, device=self.device)
        prompt_mask = (torch.arange(width, device=self.device)[None, :] < lengths[source][:, None]).long()
        mask = torch.cat([prompt_mask, torch.ones_like(feed)], dim=1)
        positions = lengths[source][:, None] + torch.arange(tail_len, device=self.device)[None, :]
        hidden = self.body(input_ids=feed, attention_mask=mask, position_ids=positions,
                           past_key_values=cache, use_cache=False).last_hidden_state
        logp = torch.log_softmax(self.head(hidden).float(), dim=-1)
        tails = {}
        for row, (b, c, k) in enumerate(flat):
            seq = conts[b][c][k]
            tails[(b, c, k)] = sum(logp[row, j - 1, seq[j]].item() for j in range(1, len(seq)))
        return tails


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def eos_ids(model, tokenizer) -> list[int]:
    """Every token that ends an answer: the tokenizer's EOS plus the generation config's."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)


@torch.inference_mode()
def greedy_generate(model, ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int,
                    stop_ids: list[int]) -> tuple[list[list[int]], torch.Tensor]:
    """Greedy decoding with a KV cache that drops finished rows.

    `model.generate` keeps finished rows in the batch until the longest one ends, so one rambling
    answer makes the whole batch decode 256 steps; here each step only runs the rows still alive.
    Also returns the log-probs at the answer position (first step), which choice scoring re-uses.
    """
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    first_logp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
    next_tok = first_logp.argmax(-1)
    alive = torch.arange(ids.shape[0], device=ids.device)
    position = positions[:, -1]
    stops = torch.tensor(stop_ids, device=ids.device)
    generated: list[list[int]] = [[] for _ in range(ids.shape[0])]
    for step in range(max_new_tokens):
        for row, tok in zip(alive.tolist(), next_tok.tolist()):
            generated[row].append(tok)
        keep = ~torch.isin(next_tok, stops)
        if step == max_new_tokens - 1 or not keep.any():
            break
        if not keep.all():
            idx = keep.nonzero().squeeze(-1)
            alive, next_tok, mask, position = alive[idx], next_tok[idx], mask[idx], position[idx]
            for layer in cache.layers:
                layer.keys, layer.values = layer.keys[idx], layer.values[idx]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        position = position + 1
        out = model(input_ids=next_tok[:, None], attention_mask=mask, position_ids=position[:, None],
                    past_key_values=cache, use_cache=True)
        next_tok = out.logits[:, -1].argmax(-1)
    return generated, first_logp


class Generator(_PromptRunner):
    """Greedy decoding until EOS or `max_new_tokens`, batched by prompt length; generations are stripped."""

    def __init__(self, model, tokenizer, wrapper: str = "chat", max_length: int = 1024,
                 token_budget: int = 4096, max_batch: int = 32):
        super().__init__(model, tokenizer, wrapper, max_length, token_budget)
        self.max_batch = max_batch
        self.stop_ids = eos_ids(model, tokenizer)

    def generate(self, rows: list[dict], max_new_tokens: int, keep_first_logprobs: bool = False) -> list[dict]:
        """Generations per row; with `keep_first_logprobs` also the answer-position log-probs (CPU tensor)."""
        prompts = [render_prompt(r["query"], self.wrapper, self.tokenizer) for r in rows]
        encoded = encode_prompts(self.tokenizer, prompts, self.max_length)
        results: list[dict | None] = [None] * len(rows)
        for batch in length_batches([len(e.ids) for e in encoded], self.token_budget, self.max_batch):
            ids, mask = left_pad([encoded[i].ids for i in batch], self.pad_id, self.device)
            generated, first_logp = greedy_generate(self.model, ids, mask, max_new_tokens, self.stop_ids)
            texts = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
            for k, i in enumerate(batch):
                results[i] = {
                    "generation": texts[k].strip(),
                    "prompt_tokens": len(encoded[i].ids),
                    "generated_tokens": len(generated[k]),
                    "truncated": encoded[i].truncated,
                }
                if keep_first_logprobs:
                    results[i]["first_logprobs"] = first_logp[k].cpu()
        return results  # type: ignore[return-value]
