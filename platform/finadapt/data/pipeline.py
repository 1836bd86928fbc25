"""The corpus stage end to end on Ray Data:

ingest -> normalize -> filter -> exact dedup -> near dedup -> decontaminate -> tokenize -> mix -> pack.

Every stage reports its counts per source (per-block aggregates in the workers; nothing is collected
on the driver but counts, pairs and examples), a stage's result is materialized in the object store
where it is read more than once (it spills to disk, so memory stays bounded) and released as soon as
the next copy exists, and the shards + manifest + report land in `output_dir` (local or s3://).
`tests/test_corpus_memory.py` runs it on a corpus several times the object store.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ConfigDict, Field, field_validator

from finadapt import storage, telemetry
from finadapt.config import RaySection, StageConfig
from finadapt.data.aggregate import by_key, sum_by
from finadapt.data.decontaminate import DecontamConfig, decontaminate
from finadapt.data.exact_dedup import EXTRA_COLUMNS as EXACT_EXTRA_COLUMNS
from finadapt.data.exact_dedup import ExactDedupConfig, exact_dedup
from finadapt.data.filters import FilterConfig, keep_passing, label_dataset
from finadapt.data.ingest import InputSpec, ingest
from finadapt.data.minhash import MinHashConfig
from finadapt.data.mix import MixConfig, bucketed_dataset, mix_bucketed, seeded_shuffle
from finadapt.data.neardup import near_dedup
from finadapt.data.normalize import normalize_batch
from finadapt.data.pack import PackConfig, Tokenize, pack_batch, tokenize_batch
from finadapt.ray_connect import connect

log = logging.getLogger(__name__)


class NearDedupSection(MinHashConfig):
    enabled: bool = Field(True, description="run MinHash-LSH near-duplicate removal")


class CorpusConfig(StageConfig):
    """Corpus stage config (`pipelines/configs/corpus.yaml`)."""

    model_config = ConfigDict(extra="forbid")
    renamed_keys: ClassVar[dict[str, str]] = {"ray_address": "ray.address", "num_cpus": "ray.num_cpus"}

    inputs: list[InputSpec] = Field(description="files or folders, local or s3://, each with source and domain")
    output_dir: str = Field("runs/corpus", description="shards, manifest and report (local dir or s3://)")
    filters: FilterConfig = FilterConfig()
    exact_dedup: ExactDedupConfig = ExactDedupConfig()
    near_dedup: NearDedupSection = NearDedupSection()
    decontamination: DecontamConfig = DecontamConfig()
    mix: MixConfig = MixConfig()
    pack: PackConfig = PackConfig()
    shard_rows: int = Field(2048, ge=1, description="packed sequences per parquet shard (at most; "
                            "the last shard of a write task may hold fewer)")
    ray: RaySection = Field(RaySection(), description="where the stage's Ray Data pipeline runs (address, "
                            "num_cpus of a local instance)")
    disk_shuffle: bool = Field(
        True,
        description="Run the all-to-all steps (exact-dedup grouping, mix shuffle) on Ray Data's disk-based hash "
                    "shuffle: shards go to files under $TMPDIR on each node instead of objects. With the object "
                    "store transport, shards under Ray's inline size (100 KB; many partitions of a large corpus) "
                    "are held in the driver's memory until reduced.")
    block_mb: float | None = Field(
        None, gt=0,
        description="Ray Data target block size (MiB) while the stage runs; shuffle input batches are twice "
                    "that. None: 1/16 of the cluster's object store, between 1 MiB and Ray's default (128 MiB). "
                    "Blocks far below the store keep a small store from overflowing into fallback allocations.")

    @field_validator("inputs", mode="before")
    @classmethod
    def _resolve_data_prefix(cls, value: Any) -> Any:
        """`data:corpora/x.jsonl.gz` -> a path under FINADAPT_DATA_DIR (default ../shared/data)."""
        from finadapt.paths import data_dir

        if not isinstance(value, list):
            return value
        out = []
        for item in value:
            if isinstance(item, dict) and str(item.get("path", "")).startswith("data:"):
                item = {**item, "path": str(data_dir() / item["path"][len("data:"):])}
            out.append(item)
        return out


def config_hash(cfg: CorpusConfig) -> str:
    return hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:16]


def input_fingerprints(specs: list[InputSpec]) -> list[dict[str, Any]]:
    """Size + mtime per input file (cheap, exact enough to tell inputs apart; S3: size only)."""
    out = []
    for spec in specs:
        fs, path = storage.filesystem_for(spec.path)
        files = storage.list_files(spec.path)
        infos = fs.get_file_info([storage.filesystem_for(f)[1] for f in files])
        digest = hashlib.sha256()
        total = 0
        for f, info in zip(files, infos):
            digest.update(f"{f}:{info.size}:{info.mtime_ns or 0}".encode())
            total += info.size or 0
        out.append({"source": spec.source, "path": spec.path, "files": len(files), "bytes": total,
                    "fingerprint": digest.hexdigest()[:16]})
    return out


def _shard_stats(shards: list[str]) -> tuple[int, int, int]:
    """(sequences, tokens, documents) of the written shards, one shard's two int columns at a time."""
    import pyarrow.parquet as pq

    rows = tokens = docs = 0
    for uri in shards:
        fs, path = storage.filesystem_for(uri)
        table = pq.read_table(path, filesystem=fs, columns=["n_tokens", "n_docs"])
        rows += table.num_rows
        tokens += int(pc.sum(table.column("n_tokens")).as_py() or 0)
        docs += int(pc.sum(table.column("n_docs")).as_py() or 0)
    return rows, tokens, docs


def run_corpus(cfg: CorpusConfig) -> dict[str, Any]:
    """Run the whole corpus stage; returns the manifest (also written to `output_dir`).

    Memory: the driver only ever holds counts, candidate pairs, examples and block references.
    Documents live in the object store (spilled to disk when it fills), and each stage drops its
    references to the previous stage's blocks as soon as they are consumed, so at most two copies of
    the corpus (a stage's input and output) are alive at any time, in the store or on spill disk.
    Per-stage counts are per-block summaries over projected columns (no shuffle), taken in the pass
    that reads a stage's output anyway where possible.
    """
    import ray

    storage.probe_writable(cfg.output_dir)  # an unwritable output fails now, not after the whole stage
    connect(cfg.ray)
    from ray.data.context import ShuffleStrategy

    ctx = ray.data.DataContext.get_current()
    names = ("target_max_block_size", "shuffle_input_batch_bytes", "shuffle_strategy", "use_disk_based_hash_shuffle")
    saved = {name: getattr(ctx, name) for name in names}
    stores = [n["Resources"].get("object_store_memory", 0) for n in ray.nodes() if n.get("Alive")]
    block = block_bytes(cfg.block_mb, min(stores, default=0), saved["target_max_block_size"])  # smallest store
    ctx.target_max_block_size = block
    ctx.shuffle_input_batch_bytes = min(2 * block, saved["shuffle_input_batch_bytes"] or 2 * block)
    ctx.shuffle_strategy = ShuffleStrategy.SHUFFLE_V2  # hash shuffles: exact-dedup grouping, mix shuffle
    ctx.use_disk_based_hash_shuffle = cfg.disk_shuffle
    try:
        return _run_corpus(cfg, block)
    finally:
        for name, value in saved.items():
            setattr(ctx, name, value)


def block_bytes(block_mb: float | None, store_bytes: float | None, default: int | None) -> int:
    """Target block size: `block_mb` if set, else 1/16 of the object store within [1 MiB, Ray's default]."""
    default = default or 128 * 2**20
    if block_mb is not None:
        return int(block_mb * 2**20)
    if not store_bytes:
        return default
    return int(min(default, max(2**20, store_bytes / 16)))


def _run_corpus(cfg: CorpusConfig, block: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    stages: dict[str, dict[str, int]] = {}

    def lap(name: str) -> None:
        seconds[name] = round(time.perf_counter() - t0 - sum(seconds.values()), 2)
        log.info("corpus stage %s done in %.1f s", name, seconds[name])

    fingerprints = input_fingerprints(cfg.inputs)
    quarantine_dir = storage.join(cfg.output_dir, "quarantine")
    ingested = ingest(cfg.inputs, quarantine_dir)
    # ingest -> normalize -> filter labels in one streaming pass; one materialized copy (with labels)
    labelled = label_dataset(ingested.dataset.map_batches(normalize_batch, batch_format="numpy"),
                             cfg.filters).materialize()
    label_counts = sum_by(labelled, ["source", "drop_reason"])
    stages["ingested"], stages["filtered"], drops = {}, {}, {}
    for row in sorted(label_counts, key=lambda r: (str(r["source"]), str(r["drop_reason"]))):
        source, reason, n = str(row["source"]), row["drop_reason"], row["count"]
        stages["ingested"][source] = stages["ingested"].get(source, 0) + n
        if reason:
            drops.setdefault(reason, {})[source] = n
        else:
            stages["filtered"][source] = n
    ds = keep_passing(labelled)  # lazy: a cheap filter over the labelled blocks
    lap("ingest+normalize+filter")

    exact = exact_dedup(ds, cfg.exact_dedup)  # materialized: its own copy of the corpus
    del ds, labelled  # release the labelled copy
    stages["exact_dedup"] = exact.kept_by_source
    lap("exact_dedup")

    ds = exact.dataset
    near_stats: dict[str, Any] = {"enabled": cfg.near_dedup.enabled}
    if cfg.near_dedup.enabled:
        minhash_cfg = MinHashConfig(**cfg.near_dedup.model_dump(exclude={"enabled"}))
        # on the materialized blocks themselves (no projected copy); lazy: those blocks minus the removed ids
        ds, stats = near_dedup(exact.materialized, minhash_cfg)
        ds = ds.drop_columns(EXACT_EXTRA_COLUMNS)
        near_stats.update(stats)
    lap("near_dedup")

    decon = decontaminate(ds, cfg.decontamination)  # materialized (with the contamination columns)
    exact_removed, exact_examples = exact.removed, exact.examples
    del ds, exact  # release the exact-dedup copy
    stages["near_dedup"] = decon.rows_by_source  # counted while decontaminating: one pass, not two
    stages["decontaminated"] = decon.kept_by_source
    lap("decontaminate")

    tokenized = decon.dataset.map_batches(
        tokenize_batch, fn_kwargs={"tokenizer_spec": cfg.pack.tokenizer, "separator": cfg.pack.separator},
        batch_size=cfg.pack.batch_size, batch_format="numpy").drop_columns(["text"])  # packing needs tokens only
    bucketed = bucketed_dataset(tokenized, cfg.mix).materialize()  # tokens + mix bucket, tokenized once
    decon_summary = {"flagged": decon.contaminated, "by_task": decon.by_task, "eval_texts": decon.eval_texts,
                     "skipped_short_eval_texts": decon.skipped_short, "matches": decon.report[:50]}
    del tokenized, decon  # release the decontaminated copy
    by = cfg.mix.by
    sums = sum_by(bucketed, list(dict.fromkeys([by, "source", "mix_bucket"])), ["n_tokens"])
    tokens_before = by_key(sums, by, "sum(n_tokens)")
    tokens_by_source_before = by_key(sums, "source", "sum(n_tokens)")
    histogram: dict[tuple[str, int], int] = {}
    for r in sums:
        key = (r[by], r["mix_bucket"])
        histogram[key] = histogram.get(key, 0) + r["sum(n_tokens)"]
    lap("tokenize")

    mixed, rates, cutoffs = mix_bucketed(bucketed, cfg.mix, histogram=[
        {by: g, "mix_bucket": b, "sum(n_tokens)": t} for (g, b), t in histogram.items()])
    partitions = math.ceil(bucketed.size_bytes() * max(1.0, *rates.values()) / (2 * block))
    mixed = seeded_shuffle(mixed, cfg.mix.seed, partitions).materialize()
    del bucketed  # release the unmixed copy
    sums = sum_by(mixed, list(dict.fromkeys([by, "source"])), ["n_tokens"])
    tokens_after = by_key(sums, by, "sum(n_tokens)")
    tokens_by_source_after = by_key(sums, "source", "sum(n_tokens)")
    stages["mixed"] = by_key(sums, "source")
    lap("mix")

    pad_id = Tokenize(cfg.pack.tokenizer, cfg.pack.separator).sep_id
    packed = mixed.select_columns(["input_ids"]).map_batches(
        pack_batch, fn_kwargs={"seq_len": cfg.pack.seq_len, "pad_id": pad_id},
        batch_size=cfg.pack.batch_size, batch_format="numpy")  # streamed into the parquet writer
    shards_dir = storage.join(cfg.output_dir, "shards")
    fs, path = storage.filesystem_for(shards_dir)
    # min and max: files of about shard_rows each (min alone lets one large block become a single file,
    # leaving stage 1 no shard to hold out for validation)
    packed.write_parquet(path, filesystem=fs, min_rows_per_file=cfg.shard_rows, max_rows_per_file=cfg.shard_rows)
    del packed, mixed
    shards = storage.list_files(shards_dir, suffix=".parquet") if storage.exists(shards_dir) else []
    n_sequences, n_tokens, n_docs = _shard_stats(shards)  # what was written, read back
    lap("pack+write")

    manifest = {
        "stage": "corpus",
        "config_hash": config_hash(cfg),
        "config": cfg.model_dump(mode="json"),
        "inputs": fingerprints,
        "inputs_skipped": ingested.skipped,  # files found but not read ('_'/'.' names), with the reason
        "quarantine": {"total": ingested.quarantined_total, "by_source": ingested.quarantined,
                       "files": ingested.quarantine_files, "corrupt_files": ingested.corrupt_files},
        "documents_per_stage": stages,
        "filter_drops": drops,
        "exact_dedup": {"removed": exact_removed, "examples": exact_examples},
        "near_dedup": near_stats,
        "decontamination": {"mode": cfg.decontamination.mode, **decon_summary},
        "tokens": {"by_" + cfg.mix.by + "_before_mix": tokens_before, "by_" + cfg.mix.by + "_after_mix": tokens_after,
                   "by_source_before_mix": tokens_by_source_before, "by_source_after_mix": tokens_by_source_after,
                   "target_ratios": cfg.mix.ratios, "sampling_rates": rates, "bucket_cutoffs": cutoffs},
        "packing": {"seq_len": cfg.pack.seq_len, "sequences": n_sequences, "tokens": n_tokens, "documents": n_docs,
                    "separator_id": pad_id, "shards": shards},
        "seconds": seconds,
    }
    storage.write_text(storage.join(cfg.output_dir, "manifest.json"), json.dumps(manifest, indent=2, default=str))
    publish_counts(manifest)
    from finadapt.data.report import corpus_report_markdown

    storage.write_text(storage.join(cfg.output_dir, "report.md"), corpus_report_markdown(manifest))
    storage.write_text(storage.join(cfg.output_dir, "report.json"), json.dumps(
        {k: v for k, v in manifest.items() if k != "config"}, indent=2, default=str))
    return manifest


def publish_counts(manifest: dict[str, Any]) -> None:
    """The manifest's document counts as Ray counters: in, out (kept into the mix), drops per filter,
    exact and near duplicates removed (a no-op without Ray)."""
    stages = manifest["documents_per_stage"]
    telemetry.record("finadapt_corpus_documents_in", sum(stages.get("ingested", {}).values()))
    telemetry.record("finadapt_corpus_documents_out", sum(stages.get("mixed", {}).values()))
    for name, by_source in manifest["filter_drops"].items():
        telemetry.record("finadapt_corpus_filter_drops", sum(by_source.values()), filter=name)
    telemetry.record("finadapt_corpus_duplicates_removed", manifest["exact_dedup"]["removed"], reason="exact")
    telemetry.record("finadapt_corpus_duplicates_removed", manifest["near_dedup"].get("removed", 0), reason="near")


def read_shards(output_dir: str) -> pa.Table:
    """All packed sequences of a corpus run (small corpora / tests; training streams them with Ray Data)."""
    import pyarrow.parquet as pq

    tables = []
    for uri in storage.list_files(storage.join(output_dir, "shards"), suffix=".parquet"):
        fs, path = storage.filesystem_for(uri)
        tables.append(pq.read_table(path, filesystem=fs))
    return pa.concat_tables(tables) if tables else pa.table({})
