"""Mixing ratios and packing boundaries: no token lost, EOS between documents, exact shares."""
from __future__ import annotations

import numpy as np
import pytest

from finadapt.data.mix import MixConfig, add_bucket, apply_mix, bucket_cutoffs, sampling_rates
from finadapt.data.pack import Tokenize, pack_batch


def _batch(docs: list[list[int]]) -> dict:
    return {"input_ids": np.array([np.asarray(d, dtype=np.int32) for d in docs], dtype=object)}


def test_pack_keeps_every_token_in_order_and_pads_only_the_last_row():
    docs = [[1, 2, 3, 9], [4, 5, 9], [6, 7, 8, 10, 11, 9], [12, 9]]
    table = pack_batch(_batch(docs), seq_len=4, pad_id=0)
    rows = np.asarray(table.column("input_ids").to_pylist())
    n_tokens = table.column("n_tokens").to_pylist()
    assert rows.shape == (4, 4)
    assert n_tokens == [4, 4, 4, 3]
    flat = np.concatenate([r[:n] for r, n in zip(rows, n_tokens)])
    assert flat.tolist() == [t for d in docs for t in d]  # nothing lost, nothing reordered
    assert rows[-1].tolist() == [9, 12, 9, 0]
    assert sum(table.column("n_docs").to_pylist()) == len(docs)


def test_pack_exact_multiple_has_no_padding_row():
    table = pack_batch(_batch([[1, 2, 9], [3, 4, 5, 9, 6]]), seq_len=4)
    assert table.column("n_tokens").to_pylist() == [4, 4]


def test_tokenize_appends_separator_between_documents():
    tok = Tokenize("tiny-random")
    out = tok({"text": np.array(["ab", "c"], dtype=object)})
    sep = tok.sep_id
    assert [list(x) for x in out["input_ids"]] == [
        tok.tokenizer("ab", add_special_tokens=False)["input_ids"] + [sep],
        tok.tokenizer("c", add_special_tokens=False)["input_ids"] + [sep]]
    assert out["n_tokens"].tolist() == [3, 2]
    packed = pack_batch(out, seq_len=8, pad_id=0)
    row = packed.column("input_ids").to_pylist()[0][:5]
    assert row[2] == sep and row[4] == sep  # EOS between the two documents and at the end


def test_unknown_separator_token_is_a_clear_error():
    with pytest.raises(ValueError, match="separator token"):
        Tokenize("tiny-random", separator="<|no-such-token|>")


def test_sampling_rates_hit_target_shares_without_upsampling():
    rates = sampling_rates({"financial": 1000, "general": 5000}, MixConfig(ratios={"financial": 0.5, "general": 0.5}))
    assert rates == pytest.approx({"financial": 1.0, "general": 0.2})


def test_upsampling_needs_permission():
    cfg = MixConfig(ratios={"financial": 0.8, "general": 0.2}, total_tokens=5000)
    with pytest.raises(ValueError, match="allow_upsample"):
        sampling_rates({"financial": 1000, "general": 5000}, cfg)
    cfg = MixConfig(ratios={"financial": 0.8, "general": 0.2}, total_tokens=5000, allow_upsample=True)
    assert sampling_rates({"financial": 1000, "general": 5000}, cfg) == pytest.approx({"financial": 4.0, "general": 0.2})


def test_missing_group_is_a_clear_error():
    with pytest.raises(ValueError, match="no tokens left"):
        sampling_rates({"financial": 1000}, MixConfig(ratios={"financial": 0.5, "general": 0.5}))


def _mix_locally(batch, rates, seed, buckets=4096):
    """The pipeline's two steps without Ray: bucket histogram -> cutoffs -> copies."""
    bucketed = add_bucket(batch, seed, buckets)
    hist = {}
    for b, g, t in zip(bucketed["mix_bucket"], bucketed["domain"], bucketed["n_tokens"]):
        hist[(g, int(b))] = hist.get((g, int(b)), 0) + int(t)
    rows = [{"domain": g, "mix_bucket": b, "sum(n_tokens)": t} for (g, b), t in hist.items()]
    return apply_mix(bucketed, rates, bucket_cutoffs(rows, rates, "domain"), "domain")


def test_mix_is_seeded_and_hits_the_token_share_even_with_unequal_documents():
    rng = np.random.default_rng(0)
    n = 3000
    tokens = rng.pareto(1.2, n).astype(np.int64) * 50 + 10  # heavy-tailed document lengths
    batch = {"id": np.array([f"d{i}" for i in range(n)], dtype=object),
             "domain": np.array(["general"] * n, dtype=object), "n_tokens": tokens}
    a = _mix_locally(batch, {"general": 0.25}, seed=1)
    b = _mix_locally(batch, {"general": 0.25}, seed=1)
    c = _mix_locally(batch, {"general": 0.25}, seed=2)
    assert a["id"].tolist() == b["id"].tolist() and a["id"].tolist() != c["id"].tolist()
    share = a["n_tokens"].sum() / tokens.sum()
    assert abs(share - 0.25) < 0.01, share  # token share, within about one bucket / one document
    up = _mix_locally(batch, {"general": 2.5}, seed=1)
    assert abs(up["n_tokens"].sum() / tokens.sum() - 2.5) < 0.02
    assert len(set(up["id"].tolist())) == len(up["id"])  # repeated copies get distinct ids
