"""Near-duplicate stage: MinHash config/signatures, verification, clustering, Ray == single-process oracle."""
from __future__ import annotations

import gzip
import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from finadapt.data import neardup
from finadapt.data.minhash import Hasher, MinHashConfig, normalize, signature_batch
from finadapt.data.neardup import near_dedup, near_dedup_local
from finadapt.paths import data_dir

REUTERS = data_dir() / "corpora" / "reuters21578.jsonl.gz"

BASE = (
    "The central bank left its benchmark lending rate unchanged on Thursday and said inflation "
    "pressures were easing as energy prices fell, while analysts polled last week had expected a "
    "quarter point cut to support exporters hurt by the strong currency and weak demand in Europe. "
    "The governor told reporters that further moves would depend on wage data due next month and "
    "that the board saw no need to act before then."
)
OTHER_1 = (
    "Shares of the mining group rose sharply in early trading after the company reported record "
    "copper output for the third quarter and raised its full year production forecast, citing "
    "higher grades at its flagship mine in Chile and lower costs for diesel and explosives across "
    "its operations, although it warned that labour talks at two sites remained unresolved and "
    "could delay shipments."
)
OTHER_2 = (
    "The river flows north through a broad valley of farms and small villages before it joins the "
    "sea near an old fishing port, where a museum describes the history of the region, the ships "
    "built there in the nineteenth century, and the families who worked the boats through long "
    "winters, and every summer a festival brings music, food and thousands of visitors to the narrow "
    "streets of the harbour."
)


def _replace_word(text: str, index: int, word: str) -> str:
    words = text.split(" ")
    words[index] = word
    return " ".join(words)


def _rows(**texts: str) -> list[dict]:
    return [{"id": k, "text": v, "source": "test", "domain": "financial"} for k, v in texts.items()]


def _shingle_set(text: str, n: int = 5) -> set[tuple[str, ...]]:
    toks = normalize(pa.array([text])).to_pylist()[0].split()
    return {tuple(toks[i:i + n]) for i in range(max(len(toks) - n + 1, 1))}


def _jaccard(a: str, b: str) -> float:
    x, y = _shingle_set(a), _shingle_set(b)
    return len(x & y) / len(x | y)


# ------------------------------------------------------------------------------------------ config
def test_bands_rows_derived_from_threshold():
    cfg = MinHashConfig(threshold=0.8, num_perm=128)
    assert cfg.bands * cfg.rows <= cfg.num_perm
    assert 0.7 <= cfg.s_curve_threshold() <= 0.85
    # recall-leaning S-curve: pairs at the threshold are found, pairs at J=0.5 rarely become candidates
    assert cfg.collision_probability(0.8) >= 0.85
    assert cfg.collision_probability(0.5) <= 0.05
    fp, fn = cfg.error_areas()
    assert fn < fp  # the weights favour recall; verification removes the extra candidates
    # equal weights reproduce datasketch's MinHashLSH choice for 0.8 / 128 (9 bands x 13 rows)
    even = MinHashConfig(false_positive_weight=0.5, false_negative_weight=0.5)
    assert (even.bands, even.rows) == (9, 13)
    assert abs(even.s_curve_threshold() - 0.8) < 0.05
    # the exact Dice equivalent of J >= 0.8 for the shingle_indel scorer
    assert cfg.verify_threshold == pytest.approx(100 * 2 * 0.8 / 1.8)


def test_config_rejects_bad_settings():
    with pytest.raises(ValueError):
        MinHashConfig(bands=10)  # rows missing
    with pytest.raises(ValueError):
        MinHashConfig(bands=20, rows=10, num_perm=128)
    with pytest.raises(ValueError):
        MinHashConfig(treshold=0.8)  # extra="forbid" catches typos
    assert MinHashConfig(bands=16, rows=8).bands == 16


# ------------------------------------------------------------------------------------------ signatures
def test_signature_agreement_estimates_jaccard():
    cfg = MinHashConfig(bands=32, rows=4)  # 128 values for a tight estimate
    h = Hasher(cfg)
    pairs = [(BASE, _replace_word(BASE, 30, "sharply")), (BASE, OTHER_1),
             (BASE, " ".join(BASE.split()[:45]))]
    texts = [t for p in pairs for t in p]
    tok, counts = h.token_hashes(normalize(pa.array(texts)))
    sig = h.signatures(*h.shingle_hashes(tok, counts))
    for i, (a, b) in enumerate(pairs):
        est = float(np.mean(sig[2 * i] == sig[2 * i + 1]))
        assert abs(est - _jaccard(a, b)) < 0.15, (i, est, _jaccard(a, b))


def test_signature_batch_is_batch_independent_and_skips_empty_docs():
    cfg = MinHashConfig()
    batch = pa.table({"id": ["a", "b", "c"], "text": [BASE, "", OTHER_1.upper() + "  !!"]})
    out = signature_batch(batch, cfg)
    assert out.column_names == ["id", "text", "num_shingles", "band_keys"]
    keys = out.column("band_keys").to_pylist()
    assert len(keys[0]) == cfg.bands and keys[1] is None
    alone = signature_batch(pa.table({"id": ["a"], "text": [BASE]}), cfg).column("band_keys").to_pylist()
    assert alone[0] == keys[0]  # same doc, different batch -> same keys (Ray blocks vs one process)
    lower = signature_batch(pa.table({"id": ["c"], "text": [OTHER_1]}), cfg).column("band_keys").to_pylist()
    assert lower[0] == keys[2]  # case, whitespace and punctuation are normalised away
    other_seed = signature_batch(batch, MinHashConfig(seed=7)).column("band_keys").to_pylist()
    assert other_seed[0] != keys[0]


# ------------------------------------------------------------------------------------------ local algorithm
def test_one_word_change_is_found_and_different_texts_are_not():
    near = _replace_word(BASE, 33, "sharp")
    assert _jaccard(BASE, near) >= 0.8
    kept, stats = near_dedup_local(_rows(base=BASE, near=near, other1=OTHER_1, other2=OTHER_2),
                                   MinHashConfig(collect_clusters=True))
    assert stats["cluster_members"] == [["base", "near"]]
    assert stats["removed"] == 1
    assert sorted(r["id"] for r in kept) == ["base", "other1", "other2"]  # longer text survives


@pytest.mark.parametrize("cfg", [MinHashConfig(shingle="char", ngram=24, collect_clusters=True),
                                 MinHashConfig(verify_scorer="ratio", collect_clusters=True)],
                         ids=["char24", "ratio"])
def test_char_shingles_and_ratio_scorer_find_the_near_dup(cfg):
    near = _replace_word(BASE, 33, "sharp")
    _, stats = near_dedup_local(_rows(base=BASE, near=near, other1=OTHER_1, other2=OTHER_2), cfg)
    assert stats["cluster_members"] == [["base", "near"]]
    if cfg.verify_scorer == "ratio":
        assert 98.0 < cfg.verify_threshold < 99.0  # substitution-model equivalent of J=0.8 (see config)


def test_verification_rejects_lsh_false_candidates(monkeypatch):
    """Force every doc into the same buckets: candidates galore, only the real near-dup is verified."""
    _same_buckets(monkeypatch)
    near = _replace_word(BASE, 33, "sharp")
    cfg = MinHashConfig(collect_clusters=True)
    _, stats = near_dedup_local(_rows(a_other=OTHER_1, base=BASE, near=near, other2=OTHER_2), cfg)
    assert stats["candidates"] == 6  # a bucket of 4 (<= exhaustive_bucket_max): every pair
    assert stats["verified_pairs"] == 1 and stats["cluster_members"] == [["base", "near"]]
    low = [s for a, b, s in stats["scored_pairs"] if (a, b) != ("base", "near")]
    assert len(low) == 5 and max(low) < cfg.verify_threshold
    # stars only: the near-dup pair is compared only when "base" is the smallest id
    star = MinHashConfig(collect_clusters=True, exhaustive_bucket_max=2)
    _, stats = near_dedup_local(_rows(a_other=OTHER_1, base=BASE, near=near, other2=OTHER_2), star)
    assert stats["candidates"] == 3 and stats["verified_pairs"] == 0  # star around "a_other"
    _, stats = near_dedup_local(_rows(base=BASE, near=near, other1=OTHER_1, other2=OTHER_2), star)
    assert stats["candidates"] == 3 and stats["cluster_members"] == [["base", "near"]]


def test_transitive_chain_is_one_cluster_with_deterministic_survivor():
    words = (BASE + " " + OTHER_1).split(" ")
    a = " ".join(words)
    b = _replace_word(_replace_word(a, 5, "lifted"), 15, "rising")
    c = _replace_word(_replace_word(b, 80, "softer"), 90, "mostly") + " today"  # longest of the three
    assert _jaccard(a, b) >= 0.8 and _jaccard(b, c) >= 0.8 and _jaccard(a, c) < 0.8
    cfg = MinHashConfig(bands=20, rows=5, collect_clusters=True)  # steep enough that every pair is a candidate
    kept, stats = near_dedup_local(_rows(a=a, b=b, c=c, z=OTHER_2), cfg)
    assert stats["cluster_members"] == [["a", "b", "c"]]
    assert ("a", "c") not in {(x, y) for x, y, s in stats["scored_pairs"] if s >= cfg.verify_threshold}
    assert sorted(r["id"] for r in kept) == ["c", "z"]
    assert stats["examples"][0]["survivor"] == "c"
    # equal lengths: the smallest id survives, whatever the input order
    kept, _ = near_dedup_local(_rows(y=BASE, x=BASE, w=BASE), cfg)
    assert [r["id"] for r in kept] == ["w"]


def _same_buckets(monkeypatch):
    """Every document lands in the same bucket of every band: each pair is a candidate if its bucket
    is verified exhaustively (rapidfuzz decides), only pairs with the smallest id under a star."""
    real = neardup.band_keys_for

    def same(texts, cfg, hasher=None):
        keys, nsh = real(texts, cfg, hasher)
        return np.zeros_like(keys), nsh

    monkeypatch.setattr(neardup, "band_keys_for", same)


def _words(n: int, tag: str) -> list[str]:
    """n distinct words (so n - 4 distinct 5-gram shingles)."""
    return [f"{tag}{i}w" for i in range(n)]


def _substituted(words: list[str], positions: list[int], tag: str) -> str:
    """Each substitution at a position >= 5 words from any other and from the ends replaces 5 shingles."""
    out = list(words)
    for j, pos in enumerate(positions):
        out[pos] = f"{tag}{j}x"
    return " ".join(out)


def test_node_in_two_candidate_groups_joins_both(monkeypatch):
    """c ~ a and c ~ b, a !~ b: one cluster {a, b, c}. The verified pairs are (a, c) and (b, c), so a
    union that sets parent[member] = rep without finding roots would cut c from a."""
    words = _words(204, "t")  # 200 shingles
    c = " ".join(words)
    a = _substituted(words, [20, 50, 80], "a")              # J(a, c) = 185/215
    b = _substituted(words, [110, 140, 170], "b")           # J(b, c) = 185/215, J(a, b) = 170/230
    assert _jaccard(a, c) >= 0.8 and _jaccard(b, c) >= 0.8 and _jaccard(a, b) < 0.8
    _same_buckets(monkeypatch)
    cfg = MinHashConfig(collect_clusters=True)
    kept, stats = near_dedup_local(_rows(a=a, b=b, c=c, z=OTHER_2), cfg)
    verified = {(x, y) for x, y, sc in stats["scored_pairs"] if sc >= cfg.verify_threshold}
    assert verified == {("a", "c"), ("b", "c")}  # c is in two candidate groups, one with each rep
    assert stats["cluster_members"] == [["a", "b", "c"]]
    assert sorted(r["id"] for r in kept) == ["c", "z"]  # c is the longest (no substituted word is longer)
    # the clustering alone, from pairs in either order
    scored = pa.table({"a": ["b", "a"], "b": ["c", "c"], "score": [95.0, 95.0], "a_len": [1, 1], "b_len": [2, 2],
                       "a_source": ["s", "s"], "b_source": ["s", "s"], "a_head": ["", ""], "b_head": ["", ""]})
    removed, st = neardup.clusters_from(scored, MinHashConfig(collect_clusters=True))
    assert st["cluster_members"] == [["a", "b", "c"]] and removed == ["a", "b"]


def test_pairs_just_below_the_threshold_are_not_merged_just_above_are(monkeypatch):
    """J = 355/445 = 0.798 (Dice 88.76 < 88.89 at threshold 0.8) stays apart; J = 360/440 = 0.818 merges."""
    words = _words(404, "u")  # 400 shingles
    base = " ".join(words)
    spots = [20 + 40 * i for i in range(9)]
    below = _substituted(words, spots, "d")        # 9 substitutions: 45 shingles gone, 45 new
    above = _substituted(words, spots[:8], "e")    # 8 substitutions
    other = " ".join(_words(404, "v"))
    assert 0.79 < _jaccard(base, below) < 0.8 < _jaccard(base, above) < 0.82
    _same_buckets(monkeypatch)
    cfg = MinHashConfig(collect_clusters=True)
    _, stats = near_dedup_local(_rows(base=base, below=below, other=other), cfg)
    scores = {(x, y): sc for x, y, sc in stats["scored_pairs"]}
    assert 88.0 < scores[("base", "below")] < cfg.verify_threshold  # scored, just under the cut
    assert stats["clusters"] == 0 and stats["removed"] == 0
    _, stats = near_dedup_local(_rows(base=base, above=above, other=other), cfg)
    assert stats["cluster_members"] == [["above", "base"]]


def test_members_similar_to_each_other_but_not_to_the_smallest_id_are_paired(monkeypatch):
    """The star shortcut lost these: b ~ c, neither ~ a, a the smallest id of their shared bucket.
    Buckets up to `exhaustive_bucket_max` documents are verified pair by pair."""
    near = _replace_word(BASE, 33, "sharp")
    _same_buckets(monkeypatch)
    cfg = MinHashConfig(collect_clusters=True)
    kept, stats = near_dedup_local(_rows(a=OTHER_1, b=BASE, c=near, d=OTHER_2), cfg)
    assert stats["candidates"] == 6  # 4 docs in one bucket: every pair
    assert stats["cluster_members"] == [["b", "c"]]
    assert sorted(r["id"] for r in kept) == ["a", "b", "d"]
    # above the cap the bucket is a star again (linear): the documented limit
    _, stats = near_dedup_local(_rows(a=OTHER_1, b=BASE, c=near, d=OTHER_2),
                                MinHashConfig(collect_clusters=True, exhaustive_bucket_max=3))
    assert stats["candidates"] == 3 and stats["clusters"] == 0


def test_large_bucket_is_linear_not_quadratic():
    keys = pa.table({"band_key": np.zeros(500, np.int64), "id": [f"d{i:03d}" for i in range(500)]})
    pairs = neardup.star_pairs(keys)
    assert pairs.num_rows == 499
    assert set(pairs.column("rep").to_pylist()) == {"d000"}


# ------------------------------------------------------------------------------------------ Ray
def _reuters_sample(n: int = 300) -> list[dict]:
    """The first n Reuters docs whose title line occurs more than once: real near-dups and look-alikes."""
    if not REUTERS.exists():
        pytest.skip(f"corpus not found: {REUTERS}")
    with gzip.open(REUTERS, "rt") as f:
        docs = [json.loads(line) for line in f]
    titles = Counter(d["text"].split("\n", 1)[0] for d in docs)
    picked = [d for d in docs if titles[d["text"].split("\n", 1)[0]] > 1][:n]
    return [{"id": d["id"], "text": d["text"], "source": d["source"], "domain": "financial"} for d in picked]


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_equals_local_on_real_reuters_sample(ray_local):
    rows = _reuters_sample()
    cfg = MinHashConfig(batch_size=64, num_shards=3, collect_clusters=True)
    kept_local, stats_local = near_dedup_local(rows, cfg)
    ds = ray_local.data.from_items(rows, override_num_blocks=5)
    strategy_before = ds.context.shuffle_strategy
    out, stats_ray = near_dedup(ds, cfg)
    kept_ray = out.take_all()
    assert ds.context.shuffle_strategy == strategy_before  # restored after the run
    assert stats_local["clusters"] >= 3 and stats_local["removed"] >= 3
    assert stats_local["candidates"] > stats_local["verified_pairs"]  # look-alikes were rejected
    drop = ("seconds",)
    assert {k: v for k, v in stats_ray.items() if k not in drop} == \
        {k: v for k, v in stats_local.items() if k not in drop}
    assert sorted(r["id"] for r in kept_ray) == sorted(r["id"] for r in kept_local)
    assert len(kept_ray) == len(rows) - stats_ray["removed"]
    assert set(kept_ray[0]) == {"id", "text", "source", "domain"}


@pytest.mark.slow
def test_ray_without_duplicates_returns_input(ray_local):
    rows = _rows(base=BASE, other1=OTHER_1, other2=OTHER_2)
    out, stats = near_dedup(ray_local.data.from_items(rows), MinHashConfig())
    assert stats["clusters"] == 0 and stats["removed"] == 0
    assert sorted(r["id"] for r in out.take_all()) == ["base", "other1", "other2"]


def test_vectorised_indel_equals_rapidfuzz():
    """The numpy shingle-set scorer gives rapidfuzz's Indel similarity (to float32 rounding)."""
    from rapidfuzz import process
    from rapidfuzz.distance import Indel

    rng = np.random.default_rng(3)
    a, b = [], []
    for n in (0, 1, 5, 40, 300, 0, 7):
        x = np.unique(rng.integers(0, 2**31, n)).tolist()
        y = sorted(set(x[: len(x) // 2]) | set(rng.integers(0, 2**31, n // 3).tolist()))
        a.append(x)
        b.append(y)
    a.append([]), b.append([5])
    got = neardup.indel_similarity(pa.array(a, pa.list_(pa.uint64())), pa.array(b, pa.list_(pa.uint64())))
    want = 100.0 * np.asarray(process.cpdist(a, b, scorer=Indel.normalized_similarity), dtype=np.float64)
    assert np.allclose(got, want, atol=1e-4) and got[0] == 100.0 and got[-1] == 0.0


def test_survivor_is_not_a_copy_padded_with_whitespace():
    """A copy with doubled spaces and line breaks is longer in raw characters, not in content:
    the original (same words, smaller id) is kept."""
    padded = BASE.replace(" ", "  ").replace(". ", ".\n\n")
    assert len(padded) > len(BASE)
    kept, stats = near_dedup_local(_rows(base=BASE, padded=padded, other=OTHER_1), MinHashConfig(collect_clusters=True))
    assert stats["cluster_members"] == [["base", "padded"]]
    assert sorted(r["id"] for r in kept) == ["base", "other"]


def test_pair_exactly_at_the_threshold_is_merged():
    """J = 0.8 exactly (Dice 8/9) is a duplicate (J >= threshold), whatever the last bit of rounding."""
    shingles = pa.array([list(range(0, 80)) + list(range(100, 110)), list(range(0, 80)) + list(range(200, 210))],
                        pa.list_(pa.uint64()))  # |A & B| = 80, |A | B| = 100
    score = float(neardup.indel_similarity(shingles.slice(0, 1), shingles.slice(1, 1))[0])
    cfg = MinHashConfig()
    for s in (score, cfg.verify_threshold * (1 - 1e-15)):  # at the cut, one ulp either side
        scored = pa.table({"a": ["x"], "b": ["y"], "score": [s], "a_len": [1], "b_len": [1], "a_source": ["s"],
                           "b_source": ["s"], "a_head": [""], "b_head": [""]})
        assert neardup.clusters_from(scored, cfg)[0] == ["y"], s
