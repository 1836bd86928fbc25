"""Near-duplicate removal: MinHash LSH candidates -> rapidfuzz verification -> connected components.

The same algorithm runs twice: `near_dedup` with Ray over a Dataset's blocks (nothing of the corpus
reaches the driver, only pairs) and `near_dedup_local` in one process (throughput baseline and test
oracle). Both call the batch functions below, so they give identical clusters on the same input.

1. keys: one row (shard, band_key, id) per document and band                 map task per block
2. candidates: a bucket (equal band key) of 2..`exhaustive_bucket_max` docs gives every pair of its
   members (k(k-1)/2); a larger one is a star: every member paired with the bucket's smallest id,
   so a huge bucket (boilerplate) costs O(k), not O(k^2)                       reduce task per shard
   -> distinct (rep, member) pairs with rep < member, collected on the driver (few in practice)
   Why not stars everywhere: a star verifies member-member pairs only through the rep, so two
   members similar to each other but not to the smallest id were never compared (measured: 1-2 of
   150-200 simulated triples). The limit remains above the cap, where a bucket is a star: a pair of
   members neither of which is like the rep is found only if they share another, smaller bucket
   (benchmarks/dedup.py reports the recall with stars only, with the cap and exhaustively).
3. verification: every doc of a candidate pair emits its payload (shingle set or cut normalised
   text) once per rep it is paired with ("star" = the pairs of one rep), keyed by that rep; each
   star is scored where it lands with rapidfuzz                               map task per block + reduce per shard
4. clusters: union-find on the driver over VERIFIED pairs only. Survivor of a cluster = the longest
   normalised text (characters after lower-casing and folding runs of punctuation/whitespace, so a
   copy padded with spaces or line breaks does not beat its original), ties -> smallest id (keeps
   the most complete copy, deterministic); all other members are removed. `length` in the stats'
   examples is that normalised length.
5. output: the input dataset filtered by the removed ids (lazy).
"""
from __future__ import annotations

import time
from collections import defaultdict
from functools import lru_cache
from typing import Any, Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from rapidfuzz import fuzz, process
from rapidfuzz.distance import Indel

from finadapt.data.minhash import MinHashConfig, band_keys_for, hasher_for, normalize, shingle_sets

HEAD_CHARS = 200
# A pair passes verification when score >= verify_threshold - SCORE_TOLERANCE: a pair exactly at the
# threshold (J = 0.8 is Dice 8/9) must not fail on the last bit of float rounding. Distinct Dice
# values of texts cut to max_chars_verify differ by far more (> 1e-5 on the 0-100 scale).
SCORE_TOLERANCE = 1e-6


# -- stage 1 and 2: band keys -> candidate pairs ----------------------------------------------------
def key_rows(batch: pa.Table, cfg: MinHashConfig) -> pa.Table:
    """One row per (document, band): shard, band_key, id. Documents without shingles emit nothing."""
    keys, nsh = band_keys_for(batch.column("text"), cfg, hasher_for(cfg))
    has = nsh > 0
    keys = keys[has].ravel()
    ids = pc.take(batch.column("id"), pa.array(np.repeat(np.flatnonzero(has), cfg.bands)))
    shard = (keys.view(np.uint64) % np.uint64(cfg.num_shards)).astype(np.int32)
    return pa.table({"shard": shard, "band_key": keys, "id": ids})


def star_pairs(keys: pa.Table, exhaustive_max: int = 2) -> pa.Table:
    """Distinct (rep, member) candidate pairs, rep < member: all pairs of a bucket of at most
    `exhaustive_max` docs, else each member paired with the bucket's smallest id (a star)."""
    t = _shared_buckets(keys.select(["band_key", "id"])).sort_by([("band_key", "ascending"), ("id", "ascending")])
    k = t.column("band_key").to_numpy()
    if len(k) == 0:
        return _distinct_pairs(pa.table({"rep": pa.array([], pa.string()), "member": pa.array([], pa.string())}))
    ids = t.column("id").combine_chunks()
    same_id = pc.equal(ids[1:], ids[:-1]).to_numpy(zero_copy_only=False) if len(k) > 1 else np.zeros(0, bool)
    if same_id.any():  # a doc twice in one bucket (two of its bands collide): count it once
        keep = np.r_[True, (k[1:] != k[:-1]) | ~same_id]
        k, ids = k[keep], ids.filter(pa.array(keep))
    first = np.r_[True, k[1:] != k[:-1]]
    starts = np.flatnonzero(first)
    sizes = np.diff(np.r_[starts, len(k)])
    group = np.cumsum(first) - 1
    start_row, size = starts[group], sizes[group]
    star = (~first) & (size > exhaustive_max)
    left, right = [start_row[star]], [np.flatnonzero(star)]
    pos = np.arange(len(k)) - start_row  # position inside the bucket (ids ascending)
    small = size <= exhaustive_max
    for d in range(1, max(exhaustive_max, 2)):  # row i with row i+d of the same small bucket
        rows = np.flatnonzero(small & (pos + d < size))
        if not len(rows):
            break
        left.append(rows)
        right.append(rows + d)
    return _distinct_pairs(pa.table({"rep": pc.take(ids, pa.array(np.concatenate(left))),
                                     "member": pc.take(ids, pa.array(np.concatenate(right)))}))


def _shared_buckets(keys: pa.Table) -> pa.Table:
    """The rows whose band key occurs more than once. Almost every bucket is a single document, so
    an int64 sort in numpy first leaves the (key, id) sort with strings only a few rows."""
    k = keys.column("band_key").to_numpy()
    if len(k) < 2:
        return keys.slice(0, 0)
    order = np.argsort(k)
    ks = k[order]
    same = ks[1:] == ks[:-1]
    shared = np.r_[same, False] | np.r_[False, same]
    return keys.take(pa.array(order[shared]))


def _distinct_pairs(pairs: pa.Table) -> pa.Table:
    return pairs.group_by(["rep", "member"], use_threads=False).aggregate([]).select(["rep", "member"])


def star_roles(pairs: pa.Table) -> pa.Table:
    """(id, rep) for every member of every star, the rep itself included."""
    reps = pc.unique(pairs.column("rep"))
    return pa.table({
        "id": pa.concat_arrays([pairs.column("member").combine_chunks(), reps]),
        "rep": pa.concat_arrays([pairs.column("rep").combine_chunks(), reps]),
    })


# -- stage 3: payloads -> scored pairs ---------------------------------------------------------------
def payload_rows(batch: pa.Table, cfg: MinHashConfig, roles: pa.Table) -> pa.Table:
    """Candidate docs of the batch, once per star: shard, rep, id, length, source, head, payload."""
    sub = batch.filter(pc.is_in(batch.column("id"), value_set=roles.column("id")))
    norm_full = normalize(sub.column("text"))
    norm = pc.utf8_slice_codeunits(norm_full, 0, cfg.max_chars_verify)
    payload = shingle_sets(norm, hasher_for(cfg)) if cfg.verify_scorer == "shingle_indel" else norm
    source = sub.column("source") if "source" in sub.column_names else pa.nulls(len(sub), pa.string())
    docs = pa.table({
        "id": sub.column("id"),
        "length": pc.utf8_length(norm_full),  # survivor rule: padding with spaces/newlines does not count
        "source": source,
        "head": pc.utf8_slice_codeunits(sub.column("text"), 0, HEAD_CHARS),
        "payload": payload,
    })
    mine = roles.filter(pc.is_in(roles.column("id"), value_set=docs.column("id")))
    out = docs.take(pc.index_in(mine.column("id"), value_set=docs.column("id")))  # a join that keeps list columns
    shard = (hasher_for(cfg).hash_strings(mine.column("rep")) % np.uint64(cfg.num_shards)).astype(np.int32)
    return out.append_column("rep", mine.column("rep")).append_column("shard", pa.array(shard))


def verify_scores(a: list | pa.Array, b: list | pa.Array, cfg: MinHashConfig) -> np.ndarray:
    """Score (0-100) of each pair (a[i], b[i]); see MinHashConfig.verify_scorer. Arrow list columns
    of shingle sets are scored with `indel_similarity` (no Python objects), anything else with rapidfuzz."""
    if len(a) == 0:
        return np.zeros(0)
    if cfg.verify_scorer == "shingle_indel":
        if isinstance(a, (pa.Array, pa.ChunkedArray)):
            return indel_similarity(a, b)
        return 100.0 * np.asarray(process.cpdist(a, b, scorer=Indel.normalized_similarity, workers=1),
                                  dtype=np.float64)
    a = a.to_pylist() if isinstance(a, (pa.Array, pa.ChunkedArray)) else a
    b = b.to_pylist() if isinstance(b, (pa.Array, pa.ChunkedArray)) else b
    return np.asarray(process.cpdist(a, b, scorer=fuzz.ratio, workers=1), dtype=np.float64)


def indel_similarity(a: pa.Array | pa.ChunkedArray, b: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """100 * rapidfuzz Indel.normalized_similarity of each pair of sorted distinct shingle-hash lists
    (< 2^32), vectorised: for increasing sequences LCS = |A & B|, so the score is 100 * (1 - (|A| + |B|
    - 2|A & B|) / (|A| + |B|)) (1 when both are empty). Same value as rapidfuzz, in float64 (its cpdist
    rounds to float32), without turning the lists into Python ints (the cost of the rapidfuzz path)."""
    n = len(a)

    def keys(lists):
        lists = lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
        lens = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False).astype(np.int64)
        values = pc.list_flatten(lists).to_numpy(zero_copy_only=False).astype(np.int64)
        return (np.repeat(np.arange(n, dtype=np.int64), lens) << 32) | values, lens, values

    ka, na, va = keys(a)
    kb, nb, vb = keys(b)
    if (len(va) and va.max() >= 2**32) or (len(vb) and vb.max() >= 2**32):
        return verify_scores(a.to_pylist(), b.to_pylist(), MinHashConfig(verify_scorer="shingle_indel",
                                                                          bands=1, rows=1))
    pos = np.minimum(np.searchsorted(ka, kb), max(len(ka) - 1, 0))  # ka: sorted by pair, then value
    hit = ka[pos] == kb if len(ka) else np.zeros(len(kb), bool)
    inter = np.bincount(kb[hit] >> 32, minlength=n).astype(np.float64)
    lensum = (na + nb).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * np.where(lensum > 0, 1.0 - (lensum - 2.0 * inter) / lensum, 1.0)


def verify_stars(group: pa.Table, cfg: MinHashConfig) -> pa.Table:
    """Score each star member against its rep; one row per candidate pair (a=rep, b=member)."""
    is_rep = pc.equal(group.column("id"), group.column("rep"))
    reps, members = group.filter(is_rep), group.filter(pc.invert(is_rep))
    a = reps.take(pc.index_in(members.column("rep"), value_set=reps.column("id")))
    scores = verify_scores(a.column("payload"), members.column("payload"), cfg)
    return pa.table({
        "a": a.column("id"), "b": members.column("id"), "score": pa.array(scores, pa.float64()),
        "a_len": a.column("length"), "b_len": members.column("length"),
        "a_source": a.column("source"), "b_source": members.column("source"),
        "a_head": a.column("head"), "b_head": members.column("head"),
    })


# -- stage 4: clusters -------------------------------------------------------------------------------
def clusters_from(scored: pa.Table, cfg: MinHashConfig) -> tuple[list[str], dict[str, Any]]:
    """Union-find over verified pairs -> (removed ids, stats); the result does not depend on pair order."""
    cut = cfg.verify_threshold - SCORE_TOLERANCE
    verified = scored.filter(pc.greater_equal(scored.column("score"), cut)).to_pylist()
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    info: dict[str, dict[str, Any]] = {}
    for p in verified:
        for side in ("a", "b"):
            info[p[side]] = {"id": p[side], "length": p[f"{side}_len"], "source": p[f"{side}_source"],
                             "head": p[f"{side}_head"]}
        ra, rb = find(p["a"]), find(p["b"])
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[str, list[str]] = defaultdict(list)
    for doc in info:
        groups[find(doc)].append(doc)
    clusters = []
    for members in groups.values():
        survivor = min(members, key=lambda d: (-info[d]["length"], d))
        clusters.append((survivor, sorted(members)))
    clusters.sort(key=lambda c: (-len(c[1]), c[0]))
    removed = sorted(d for s, ms in clusters for d in ms if d != s)
    examples = [{"survivor": s, "size": len(ms),
                 "members": [{**info[d], "kept": d == s} for d in ms]} for s, ms in clusters[: cfg.max_examples]]
    stats = {
        "candidates": scored.num_rows, "verified_pairs": len(verified), "clusters": len(clusters),
        "docs_in_clusters": sum(len(ms) for _, ms in clusters), "removed": len(removed),
        "bands": cfg.bands, "rows": cfg.rows, "verify_scorer": cfg.verify_scorer,
        "verify_threshold": cfg.verify_threshold, "cluster_sizes": _size_histogram(clusters),
        "examples": examples,
    }
    if cfg.collect_clusters:
        stats["cluster_members"] = [ms for _, ms in clusters]
        stats["scored_pairs"] = [(a, b, sc) for a, b, sc in zip(scored.column("a").to_pylist(),
                                                                  scored.column("b").to_pylist(),
                                                                  scored.column("score").to_pylist())]
    return removed, stats


def _size_histogram(clusters: list[tuple[str, list[str]]]) -> dict[str, int]:
    hist: dict[str, int] = defaultdict(int)
    for _, ms in clusters:
        hist[str(len(ms)) if len(ms) < 10 else "10+"] += 1
    return dict(sorted(hist.items()))


def drop_ids(batch: pa.Table, removed: pa.Array) -> pa.Table:
    return batch.filter(pc.invert(pc.is_in(batch.column("id"), value_set=removed)))


def _empty_scored() -> pa.Table:
    s = pa.string()
    return pa.table({"a": pa.array([], s), "b": pa.array([], s), "score": pa.array([], pa.float64()),
                     "a_len": pa.array([], pa.int64()), "b_len": pa.array([], pa.int64()),
                     "a_source": pa.array([], s), "b_source": pa.array([], s),
                     "a_head": pa.array([], s), "b_head": pa.array([], s)})


def _sorted_pairs(tables: list[pa.Table], columns: tuple[str, ...]) -> pa.Table | None:
    t = pa.concat_tables(tables, promote_options="permissive") if tables else None
    key = [(c, "ascending") for c in columns]
    return t.sort_by(key) if t is not None else None


class _Clock:
    """Wall time per driver-side stage (stats["seconds"]), for the benchmark report."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._t, 3)
        self._t = now


# -- Ray -----------------------------------------------------------------------------------------------
def _split_by_shard(table: pa.Table, shards: int) -> tuple[pa.Table, ...]:
    """The rows of each shard (0..shards-1) as separate tables (fresh buffers, not slices), no `shard` column."""
    shard = table.column("shard").to_numpy()
    order = np.argsort(shard, kind="stable")
    bounds = np.concatenate(([0], np.cumsum(np.bincount(shard, minlength=shards))))
    rest = table.drop_columns(["shard"])
    return tuple(rest.take(pa.array(order[bounds[i]: bounds[i + 1]])) for i in range(shards))


def _batches(blocks: tuple, spans: list[tuple[int, int]], size: int) -> list[pa.Table]:
    """The rows spans[i] of blocks[i] (Arrow), concatenated and cut into `size`-row batches."""
    from ray.data.block import BlockAccessor

    tables = [BlockAccessor.for_block(b).to_arrow().slice(lo, hi - lo) for b, (lo, hi) in zip(blocks, spans)]
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    return [table.slice(i, size) for i in range(0, table.num_rows, size)] or [table]


def _map_keys(cfg: MinHashConfig, spans: list[tuple[int, int]], *blocks):
    """Map task of the candidate round: one key table per shard (a single table when there is one shard)."""
    parts = _split_by_shard(pa.concat_tables([key_rows(b, cfg) for b in _batches(blocks, spans, cfg.batch_size)]),
                            cfg.num_shards)
    return parts if cfg.num_shards > 1 else parts[0]


def _reduce_stars(exhaustive_max: int, *tables: pa.Table) -> pa.Table:
    return star_pairs(pa.concat_tables(tables), exhaustive_max)


def _map_payloads(cfg: MinHashConfig, roles: pa.Table, spans: list[tuple[int, int]], *blocks):
    """Map task of the verification round: the candidate docs of its blocks, one table per shard of their star."""
    batches = [b for b in _batches(blocks, spans, cfg.batch_size)
               if pc.any(pc.is_in(b.column("id"), value_set=roles.column("id"))).as_py()]
    if not batches:
        parts = (_EMPTY_PAYLOAD,) * cfg.num_shards
    else:
        payloads = pa.concat_tables([payload_rows(b, cfg, roles) for b in batches], promote_options="permissive")
        parts = _split_by_shard(payloads, cfg.num_shards)
    return parts if cfg.num_shards > 1 else parts[0]


def _reduce_verify(cfg: MinHashConfig, *tables: pa.Table) -> pa.Table:
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return _empty_scored()
    return verify_stars(pa.concat_tables(tables, promote_options="permissive"), cfg)


_EMPTY_PAYLOAD = pa.table({"id": pa.array([], pa.string())})


@lru_cache(maxsize=1)
def _remote_functions():
    import ray

    return tuple(ray.remote(f) for f in (_map_keys, _reduce_stars, _map_payloads, _reduce_verify))


def _map_inputs(ds: "ray.data.Dataset", batch_size: int) -> list[tuple[list[tuple[int, int]], list]]:
    """The dataset's blocks (executing it if lazy) grouped into map-task inputs of about `batch_size`
    rows: [(row spans, block refs)]. Holding the refs keeps the blocks alive for both rounds."""
    groups: list[tuple[list[tuple[int, int]], list]] = []
    rows = batch_size
    for bundle in ds.iter_internal_ref_bundles():
        for entry, piece in zip(bundle.blocks, bundle.slices):
            n = entry.metadata.num_rows if entry.metadata.num_rows is not None else batch_size
            lo, hi = (piece.start_offset, piece.end_offset) if piece is not None else (0, n)
            if hi <= lo and entry.metadata.num_rows is not None:
                continue
            if rows >= batch_size:
                groups.append(([], []))
                rows = 0
            groups[-1][0].append((lo, hi))
            groups[-1][1].append(entry.ref)
            rows += hi - lo
    return groups


def near_dedup(ds: "ray.data.Dataset", cfg: MinHashConfig | None = None) -> tuple["ray.data.Dataset", dict]:
    """Remove near-duplicates from a Dataset with rows {id, text, source, ...}; returns (deduped, stats).

    Two map/reduce rounds over the dataset's blocks with plain Ray tasks: map tasks (about
    `cfg.batch_size` documents each) return one object per shard, and `cfg.num_shards` reduce tasks
    each take their shard's objects. Nothing of the corpus reaches the driver, only candidate pairs
    and scored pairs. Compared with two Ray Data `groupby` shuffles this has no sampling pass, no
    per-operator executor start-up and no extra copy of the key rows. `ds` is executed once for both
    rounds (no copy when it is materialized) and once more by the lazy output filter.
    """
    import ray

    cfg = cfg or MinHashConfig()
    clock = _Clock()
    map_keys, reduce_stars, map_payloads, reduce_verify = _remote_functions()
    shards = cfg.num_shards
    inputs = _map_inputs(ds, cfg.batch_size)
    cfg_ref = ray.put(cfg)
    window = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))  # tasks in flight
    keys = _windowed([lambda spans=spans, refs=refs: map_keys.options(num_returns=shards).remote(cfg_ref, spans, *refs)
                      for spans, refs in inputs], window)
    stars = [reduce_stars.remote(cfg.exhaustive_bucket_max, *[k[s] for k in keys]) for s in range(shards)] \
        if keys else []
    del keys
    tables = [t for t in ray.get(stars) if t.num_rows]
    pairs = _distinct_pairs(pa.concat_tables(tables)) if tables else None
    clock.lap("candidates")
    if pairs is None or pairs.num_rows == 0:
        _, stats = clusters_from(_empty_scored(), cfg)
        return ds, {**stats, "seconds": clock.laps}
    roles_ref = ray.put(star_roles(pairs))
    payloads = _windowed([lambda spans=spans, refs=refs: map_payloads.options(num_returns=shards).remote(
        cfg_ref, roles_ref, spans, *refs) for spans, refs in inputs], window)
    verified = [reduce_verify.remote(cfg_ref, *[p[s] for p in payloads]) for s in range(shards)]
    del payloads, inputs
    scored = _sorted_pairs([t for t in ray.get(verified) if t.num_rows], ("a", "b"))
    clock.lap("verification")
    removed, stats = clusters_from(scored if scored is not None else _empty_scored(), cfg)
    clock.lap("clusters")
    stats["seconds"] = clock.laps
    if not removed:
        return ds, stats
    out = ds.map_batches(drop_ids, fn_kwargs={"removed": pa.array(removed, pa.string())},
                         batch_format="pyarrow", batch_size=None)  # block by block: no re-batching copy
    return out, stats


def _as_list(refs) -> list:
    return refs if isinstance(refs, list) else [refs]


def _windowed(submits: list, window: int) -> list[list]:
    """Submit map tasks with at most `window` running (Ray Data's backpressure, by hand): a task is
    submitted when an earlier one finished, so only the blocks of running tasks are pulled into the
    object store (restored from spill if need be), not every block at once. Returns each task's refs."""
    import ray

    out: list[list] = []
    running: list = []
    for submit in submits:
        if len(running) >= window:
            _, running = ray.wait(running, num_returns=1, fetch_local=False)
        refs = _as_list(submit())
        out.append(refs)
        running.append(refs[0])
    return out


# -- single process reference -------------------------------------------------------------------------
def near_dedup_local(records: Iterable[Mapping[str, Any]] | pa.Table,
                     cfg: MinHashConfig | None = None) -> tuple[list[dict] | pa.Table, dict]:
    """Same algorithm in one process: same batch functions, no Ray. Returns (kept rows, stats);
    kept rows are a Table when `records` is one, else a list of dicts in input order."""
    cfg = cfg or MinHashConfig()
    clock = _Clock()
    table = records if isinstance(records, pa.Table) else pa.Table.from_pylist(list(records))
    batches = [pa.Table.from_batches([b]) for b in table.to_batches(max_chunksize=cfg.batch_size)]
    keys = [key_rows(b, cfg) for b in batches]
    pairs = star_pairs(pa.concat_tables(keys), cfg.exhaustive_bucket_max) if keys else None
    clock.lap("candidates")
    if pairs is None or pairs.num_rows == 0:
        _, stats = clusters_from(_empty_scored(), cfg)
        return (table if isinstance(records, pa.Table) else table.to_pylist()), {**stats, "seconds": clock.laps}
    roles = star_roles(pairs)
    payloads = pa.concat_tables([payload_rows(b, cfg, roles) for b in batches], promote_options="permissive")
    scored = _sorted_pairs([verify_stars(payloads, cfg)], ("a", "b"))
    clock.lap("verification")
    removed, stats = clusters_from(scored, cfg)
    clock.lap("clusters")
    stats["seconds"] = clock.laps
    kept = drop_ids(table, pa.array(removed, pa.string()))
    return (kept if isinstance(records, pa.Table) else kept.to_pylist()), stats
