"""Near-duplicate removal: MinHash LSH candidates -> rapidfuzz verification -> connected components.

The same algorithm runs twice: `near_dedup` on Ray Data (nothing of the corpus reaches the driver,
only pairs) and `near_dedup_local` in one process (throughput baseline and test oracle). Both call
the batch functions below, so they give identical clusters on the same input.

1. keys: one row (shard, band_key, id) per document and band                 map_batches
2. candidates: in each bucket (equal band key) with >= 2 docs, every member is paired with the
   bucket's smallest id. A star has the connected components of the full clique at linear size,
   so a huge bucket (boilerplate) costs O(k), not O(k^2)                       groupby(shard).map_groups
   -> distinct (rep, member) pairs, collected on the driver (at most docs x bands rows, in practice few)
3. verification: every doc of a candidate pair emits its payload (shingle set or cut normalised
   text) once per star it belongs to, keyed by the star's rep; each star is scored where it lands
   with rapidfuzz                                                             map_batches + groupby(shard).map_groups
4. clusters: union-find on the driver over VERIFIED pairs only. Survivor of a cluster = the longest
   original text (characters), ties -> smallest id (keeps the most complete copy, deterministic);
   all other members are removed.
5. output: the input dataset filtered by the removed ids (lazy).
"""
from __future__ import annotations

import time
from collections import defaultdict
from typing import Any, Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from rapidfuzz import fuzz, process
from rapidfuzz.distance import Indel

from finadapt.data.minhash import MinHashConfig, band_keys_for, hasher_for, normalize, shingle_sets

HEAD_CHARS = 200


# -- stage 1 and 2: band keys -> candidate pairs ----------------------------------------------------
def key_rows(batch: pa.Table, cfg: MinHashConfig) -> pa.Table:
    """One row per (document, band): shard, band_key, id. Documents without shingles emit nothing."""
    keys, nsh = band_keys_for(batch.column("text"), cfg, hasher_for(cfg))
    has = nsh > 0
    keys = keys[has].ravel()
    ids = pc.take(batch.column("id"), pa.array(np.repeat(np.flatnonzero(has), cfg.bands)))
    shard = (keys.view(np.uint64) % np.uint64(cfg.num_shards)).astype(np.int32)
    return pa.table({"shard": shard, "band_key": keys, "id": ids})


def star_pairs(keys: pa.Table) -> pa.Table:
    """Distinct (rep, member) pairs: each bucket member paired with the bucket's smallest id."""
    t = keys.select(["band_key", "id"]).sort_by([("band_key", "ascending"), ("id", "ascending")])
    k = t.column("band_key").to_numpy()
    if len(k) == 0:
        return _distinct_pairs(pa.table({"rep": pa.array([], pa.string()), "member": pa.array([], pa.string())}))
    first = np.r_[True, k[1:] != k[:-1]]
    rep_row = np.flatnonzero(first)[np.cumsum(first) - 1]
    members = np.flatnonzero(~first)
    ids = t.column("id")
    return _distinct_pairs(pa.table({"rep": pc.take(ids, pa.array(rep_row[members])),
                                     "member": pc.take(ids, pa.array(members))}))


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
    norm = pc.utf8_slice_codeunits(normalize(sub.column("text")), 0, cfg.max_chars_verify)
    payload = shingle_sets(norm, hasher_for(cfg)) if cfg.verify_scorer == "shingle_indel" else norm
    source = sub.column("source") if "source" in sub.column_names else pa.nulls(len(sub), pa.string())
    docs = pa.table({
        "id": sub.column("id"),
        "length": pc.utf8_length(sub.column("text")),
        "source": source,
        "head": pc.utf8_slice_codeunits(sub.column("text"), 0, HEAD_CHARS),
        "payload": payload,
    })
    mine = roles.filter(pc.is_in(roles.column("id"), value_set=docs.column("id")))
    out = docs.take(pc.index_in(mine.column("id"), value_set=docs.column("id")))  # a join that keeps list columns
    shard = (hasher_for(cfg).hash_strings(mine.column("rep")) % np.uint64(cfg.num_shards)).astype(np.int32)
    return out.append_column("rep", mine.column("rep")).append_column("shard", pa.array(shard))


def verify_scores(a: list, b: list, cfg: MinHashConfig) -> np.ndarray:
    """rapidfuzz score (0-100) of each pair (a[i], b[i]); see MinHashConfig.verify_scorer."""
    if not a:
        return np.zeros(0)
    if cfg.verify_scorer == "shingle_indel":
        return 100.0 * process.cpdist(a, b, scorer=Indel.normalized_similarity, workers=1)
    return np.asarray(process.cpdist(a, b, scorer=fuzz.ratio, workers=1), dtype=np.float64)


def verify_stars(group: pa.Table, cfg: MinHashConfig) -> pa.Table:
    """Score each star member against its rep; one row per candidate pair (a=rep, b=member)."""
    is_rep = pc.equal(group.column("id"), group.column("rep"))
    reps, members = group.filter(is_rep), group.filter(pc.invert(is_rep))
    a = reps.take(pc.index_in(members.column("rep"), value_set=reps.column("id")))
    scores = verify_scores(a.column("payload").to_pylist(), members.column("payload").to_pylist(), cfg)
    return pa.table({
        "a": a.column("id"), "b": members.column("id"), "score": pa.array(scores, pa.float64()),
        "a_len": a.column("length"), "b_len": members.column("length"),
        "a_source": a.column("source"), "b_source": members.column("source"),
        "a_head": a.column("head"), "b_head": members.column("head"),
    })


# -- stage 4: clusters -------------------------------------------------------------------------------
def clusters_from(scored: pa.Table, cfg: MinHashConfig) -> tuple[list[str], dict[str, Any]]:
    """Union-find over verified pairs -> (removed ids, stats); the result does not depend on pair order."""
    verified = scored.filter(pc.greater_equal(scored.column("score"), cfg.verify_threshold)).to_pylist()
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


# -- Ray Data ----------------------------------------------------------------------------------------
def near_dedup(ds: "ray.data.Dataset", cfg: MinHashConfig | None = None) -> tuple["ray.data.Dataset", dict]:
    """Remove near-duplicates from a Dataset with rows {id, text, source, ...}; returns (deduped, stats).

    `ds` is read up to three times (keys, candidate payloads, output): materialize it first if its
    upstream is expensive. The two groupings run with `cfg.shuffle_strategy`, set on `ds.context`
    only while this function runs.
    """
    from ray.data.context import ShuffleStrategy

    cfg = cfg or MinHashConfig()
    ctx = ds.context
    saved = ctx.shuffle_strategy
    if cfg.shuffle_strategy is not None:
        ctx.shuffle_strategy = ShuffleStrategy(cfg.shuffle_strategy)
    try:
        return _near_dedup(ds, cfg)
    finally:
        ctx.shuffle_strategy = saved


def _collect(ds: "ray.data.Dataset") -> list[pa.Table]:
    """Execute `ds` and fetch its (small: pairs only) blocks to the driver."""
    import ray

    return [t for t in ray.get(ds.to_arrow_refs()) if t.num_rows]


def _near_dedup(ds: "ray.data.Dataset", cfg: MinHashConfig) -> tuple["ray.data.Dataset", dict]:
    clock = _Clock()
    keys = ds.map_batches(key_rows, fn_kwargs={"cfg": cfg}, batch_format="pyarrow", batch_size=cfg.batch_size)
    cand = keys.groupby("shard", num_partitions=cfg.num_shards).map_groups(star_pairs, batch_format="pyarrow")
    cand_tables = _collect(cand)
    pairs = _distinct_pairs(pa.concat_tables(cand_tables)) if cand_tables else None
    clock.lap("candidates")
    if pairs is None or pairs.num_rows == 0:
        _, stats = clusters_from(_empty_scored(), cfg)
        return ds, {**stats, "seconds": clock.laps}
    scored_ds = (ds.map_batches(payload_rows, fn_kwargs={"cfg": cfg, "roles": star_roles(pairs)},
                                batch_format="pyarrow", batch_size=cfg.batch_size)
                 .groupby("shard", num_partitions=cfg.num_shards)
                 .map_groups(verify_stars, fn_kwargs={"cfg": cfg}, batch_format="pyarrow"))
    scored = _sorted_pairs(_collect(scored_ds), ("a", "b"))
    clock.lap("verification")
    removed, stats = clusters_from(scored if scored is not None else _empty_scored(), cfg)
    clock.lap("clusters")
    stats["seconds"] = clock.laps
    if not removed:
        return ds, stats
    out = ds.map_batches(drop_ids, fn_kwargs={"removed": pa.array(removed, pa.string())},
                         batch_format="pyarrow", batch_size=cfg.batch_size)
    return out, stats


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
    pairs = star_pairs(pa.concat_tables(keys)) if keys else None
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
