"""Turn training rows into micro-batches that waste (almost) no compute.

Stage 1 rows are already packed to a fixed length; stage 2 samples have ragged lengths, so each
optimizer step's samples are sorted by length and cut into micro-batches of similar lengths
(right-padded to the longest of the micro-batch: with causal attention, real tokens never see the
padding after them, so no attention mask is needed and the flash path stays on). Labels are -100
wherever no loss is taken: prompts, padding, the unused tail of the last packed row.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

IGNORE = -100


@dataclass
class MicroBatch:
    input_ids: torch.Tensor  # [B, L] long
    labels: torch.Tensor  # [B, L] long, IGNORE where no loss
    real_tokens: int  # tokens that are not padding (useful compute)

    @property
    def target_tokens(self) -> int:
        """Positions that contribute to the loss (labels shifted by one)."""
        return int((self.labels[:, 1:] != IGNORE).sum())

    @property
    def padded_tokens(self) -> int:
        return int(self.input_ids.numel())


def packed_micro_batches(input_ids: np.ndarray, n_tokens: np.ndarray, micro_batch_size: int,
                         seq_len: int | None = None) -> list[MicroBatch]:
    """Stage 1: rows of packed ids (+ their real lengths) -> micro-batches of `micro_batch_size` rows.

    `seq_len` cuts every row into windows of that length first (shorter sequences on small machines);
    windows that hold no real token are dropped, so the count can shrink but no token is lost.
    """
    ids = np.asarray(input_ids, dtype=np.int64)
    lengths = np.asarray(n_tokens, dtype=np.int64)
    if seq_len is not None and seq_len != ids.shape[1]:
        if ids.shape[1] % seq_len:
            raise ValueError(f"seq_len {seq_len} does not divide the packed length {ids.shape[1]}")
        k = ids.shape[1] // seq_len
        starts = np.arange(k) * seq_len
        lengths = np.clip(lengths[:, None] - starts[None, :], 0, seq_len).reshape(-1)
        ids = ids.reshape(-1, seq_len)
        keep = lengths > 0
        ids, lengths = ids[keep], lengths[keep]
    positions = np.arange(ids.shape[1])[None, :]
    labels = np.where(positions < lengths[:, None], ids, IGNORE)
    out = []
    for start in range(0, len(ids), micro_batch_size):
        sl = slice(start, start + micro_batch_size)
        out.append(MicroBatch(torch.from_numpy(ids[sl]), torch.from_numpy(labels[sl]), int(lengths[sl].sum())))
    return out


def encode_sft(prompt_ids: list[int], response_ids: list[int], max_length: int) -> tuple[list[int], int, bool]:
    """(ids, prompt_length, truncated): the prompt keeps its end when prompt + response is too long."""
    room = max_length - len(response_ids)
    if room < 1:
        raise ValueError(f"response of {len(response_ids)} tokens does not fit max_length {max_length}")
    truncated = len(prompt_ids) > room
    prompt = prompt_ids[-room:] if truncated else prompt_ids
    return list(prompt) + list(response_ids), len(prompt), truncated


def length_grouped_micro_batches(ids: list[np.ndarray], prompt_lengths: list[int], max_tokens: int,
                                 pad_id: int, group_cost_tokens: int = 128) -> list[MicroBatch]:
    """Stage 2: one worker's samples of a step -> length-sorted micro-batches of <= max_tokens padded tokens.

    The sorted samples are cut into contiguous groups by a small dynamic programme that minimises
    padded tokens + `group_cost_tokens` per group (a forward has a fixed cost, so tiny groups are not
    free either). Loss is on response tokens only: label = token id from the prompt length on, else
    IGNORE. A sample longer than `max_tokens` gets a micro-batch of its own.
    """
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    lengths = [len(ids[i]) for i in order]
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[j]: cost of grouping the first j sorted samples
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        width = lengths[j - 1]  # ascending: the last member is the widest
        for i in range(j - 1, -1, -1):
            count = j - i
            if count > 1 and width * count > max_tokens:
                break
            cost = best[i] + width * count + group_cost_tokens
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups: list[list[int]] = []
    j = n
    while j > 0:
        groups.append(order[cut[j]:j])
        j = cut[j]
    groups.reverse()
    out = []
    for group in groups:
        width = max(len(ids[i]) for i in group)
        batch = np.full((len(group), width), pad_id, dtype=np.int64)
        labels = np.full((len(group), width), IGNORE, dtype=np.int64)
        for row, i in enumerate(group):
            seq = np.asarray(ids[i], dtype=np.int64)
            batch[row, : len(seq)] = seq
            labels[row, prompt_lengths[i]: len(seq)] = seq[prompt_lengths[i]:]
        real = sum(len(ids[i]) for i in group)
        out.append(MicroBatch(torch.from_numpy(batch), torch.from_numpy(labels), real))
    return out
