"""Memory stays bounded when the corpus is larger than the object store (issue 4).

A synthetic but realistic corpus (distinct multi-paragraph documents over a Zipf vocabulary, in
JSONL.gz files, with planted malformed records, short and number-table documents, exact and near
duplicates and contaminated documents) several times a small object store goes through the real
corpus pipeline under ``ray.init(num_cpus=2, object_store_memory=<80 MiB>)``. Checked:

- the run completes and every document is accounted for: lines written = ingested + quarantined,
  and at each stage documents in = documents out + what that stage counted as dropped, each drop
  equal to what was planted; the packed shards on disk hold every mixed document and token;
- the object store never held more than its capacity (no fallback allocation past it): the
  corpus went through spilling, not through memory;
- the driver's resident memory grew by far less than the corpus (documents never pass through it).

Knobs for a manual, larger run: FINADAPT_MEMTEST_MB (corpus MB of text), FINADAPT_MEMTEST_STORE_MB.

The quick tests at the end pin the pieces that make this possible to the code they replaced:
per-block aggregates instead of groupby shuffles, the seeded hash shuffle instead of
`random_shuffle`, and the vectorised exact-dedup, decontamination, filter and normalization paths.
"""
from __future__ import annotations

import gc
import gzip
import json
import os
import resource
import threading
import time

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest
import ray

from finadapt.config import load_config
from finadapt.data.pipeline import CorpusConfig, run_corpus
from finadapt.tasks import load_samples

MIB = 2**20
STORE_BYTES = int(float(os.environ.get("FINADAPT_MEMTEST_STORE_MB", "80")) * MIB)  # Ray's minimum: 75 MiB
CORPUS_BYTES = int(float(os.environ.get("FINADAPT_MEMTEST_MB", "240")) * 1e6)  # UTF-8 bytes of document text
WARMUP_BYTES = 3_000_000
FILES_PER_SOURCE = 4

# What is planted, per source (fin, gen): each must come out of its stage's counter exactly.
BAD_LINES = {"bad_json": 2, "missing_text": 1, "empty_text": 1}
SHORT_DOCS = 3        # min_chars
NUMBER_TABLES = 2     # max_digit_ratio
EXACT_COPIES = 5      # exact duplicates of distinct originals (different ids)
NEAR_COPIES = 4       # one word changed in a distinct original
CONTAMINATED = 1      # an original with an FPB test sentence appended


# ------------------------------------------------------------------------------------------ corpus
class _Writer:
    """Synthetic documents: headline + 2-6 paragraphs of 2-8 sentences over a Zipf vocabulary."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        syllables = ["ka", "to", "re", "mi", "sa", "lo", "ne", "vi", "du", "pe", "ra", "ti", "mo", "se", "la",
                     "an", "or", "in", "el", "us", "ber", "gan", "tor", "mar"]
        common = ("the of and to in a is that for on was with as by at from its said it be has have were are "
                  "an this which or company market shares percent bank year million rates prices").split()
        words = {"".join(self.rng.choice(syllables, size=self.rng.integers(2, 5))) for _ in range(40_000)}
        rare = sorted(words - set(common))
        self.vocab = np.array(common + [rare[i] for i in self.rng.permutation(len(rare))], dtype=object)
        p = 1.0 / np.arange(1, len(self.vocab) + 1) ** 1.07
        self.cdf = np.cumsum(p / p.sum())

    def _words(self, n: int) -> np.ndarray:
        return self.vocab[np.minimum(np.searchsorted(self.cdf, self.rng.random(n)), len(self.vocab) - 1)]

    def _sentence(self, words: np.ndarray) -> str:
        out = list(words)
        out[0] = out[0].capitalize()
        if self.rng.random() < 0.3:
            out.insert(int(self.rng.integers(1, len(out))), f"{self.rng.integers(1, 999)}.{self.rng.integers(0, 9)}")
        if len(out) > 8 and self.rng.random() < 0.4:
            out[len(out) // 2] += ","
        return " ".join(out) + "."

    def document(self) -> str:
        paragraphs = [" ".join(self._words(int(self.rng.integers(5, 10)))).title()]
        for _ in range(int(self.rng.integers(2, 7))):
            sentences = [self._sentence(self._words(int(self.rng.integers(8, 26))))
                         for _ in range(int(self.rng.integers(2, 9)))]
            paragraphs.append(" ".join(sentences))
        return "\n\n".join(paragraphs)


def _write_corpus(root, contaminating: list[str], text_bytes: int) -> dict:
    """JSONL.gz files per source, written as generated (the test process never holds the corpus);
    returns the lines, documents and text bytes written."""
    writer = _Writer(seed=4)
    truth: dict = {"lines": {}, "docs": {}, "text_bytes": 0}
    per_source = text_bytes // 2
    n_special = EXACT_COPIES + NEAR_COPIES
    for s, source in enumerate(("fin", "gen")):
        folder = root / source
        folder.mkdir(parents=True)
        files = [gzip.open(folder / f"part-{f}.jsonl.gz", "wt", compresslevel=1) for f in range(FILES_PER_SOURCE)]
        lines = size = 0

        def put(record: dict) -> None:
            nonlocal lines
            files[int(writer.rng.integers(len(files)))].write(json.dumps(record) + "\n")
            lines += 1

        special: list[tuple[str, str]] = []  # distinct originals, spread out, to copy below
        while size < per_source:
            doc_id, text = f"{source}{lines:07d}", writer.document()
            if lines % 97 == 0 and len(special) < n_special:
                special.append((doc_id, text))
            put({"id": doc_id, "text": text})
            size += len(text.encode())
        for k, (doc_id, text) in enumerate(special[:EXACT_COPIES]):
            put({"id": f"{doc_id}-copy{k}", "text": text})  # exact: a larger id than the original, removed
        for k, (doc_id, text) in enumerate(special[EXACT_COPIES:]):
            words = text.split(" ")
            words[len(words) // 2] = "CHANGED"
            put({"id": f"{doc_id}-near{k}", "text": " ".join(words)})  # J ~ 0.98 with its original
        for k in range(CONTAMINATED):  # a fresh document (no near twin) ending with an FPB test sentence
            put({"id": f"{source}-contam{k}", "text": writer.document() + "\n\n" + contaminating[s * CONTAMINATED + k]})
        for k in range(SHORT_DOCS):
            put({"id": f"{source}-short{k}", "text": "Shares rose."})
        for k in range(NUMBER_TABLES):
            rows = "\n".join(" ".join(str(writer.rng.integers(10, 99999)) for _ in range(8)) for _ in range(30))
            put({"id": f"{source}-table{k}", "text": "Quotes\n" + rows})
        for _ in range(BAD_LINES["bad_json"]):
            files[0].write('{"id": "broken", "text": \n')
            lines += 1
        for k in range(BAD_LINES["missing_text"]):
            put({"id": f"{source}-notext{k}", "body": "x"})
        for k in range(BAD_LINES["empty_text"]):
            put({"id": f"{source}-empty{k}", "text": "  "})
        for f in files:
            f.close()
        truth["lines"][source] = lines
        truth["docs"][source] = lines - sum(BAD_LINES.values())
        truth["text_bytes"] += size
    return truth


# ------------------------------------------------------------------------------------------ monitor
def _rss_parts() -> dict[str, int]:
    """This process's resident memory (bytes): all of it, and its anonymous part (heap, Arrow and
    numpy buffers: what the process itself holds), without the object-store pages it has mapped."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon"):
                fields[key] = int(value.split()[0]) * 1024
    return {"rss": fields["VmRSS"], "anon": fields["RssAnon"]}


class _Monitor:
    """Samples the object store (raylet stats) and the driver's and workers' RSS while the run goes."""

    def __init__(self, interval: float = 0.25) -> None:
        from ray._private.internal_api import get_memory_info_reply, get_state_from_address

        state = get_state_from_address(ray.get_runtime_context().gcs_address)
        self._reply = lambda: get_memory_info_reply(state).store_stats
        self.interval = interval
        self.me = psutil.Process()
        self.peak = {"store_used": 0, "store_primary": 0, "fallback": 0, "driver_rss": 0, "driver_anon": 0,
                     "worker_rss": 0}
        self.fallback_at: float | None = None  # seconds into the run of the first fallback allocation
        self.timeline: list[tuple[float, int]] = []  # (seconds into the run, driver anonymous bytes)
        self.capacity = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        s = self._reply()
        self.capacity = s.object_store_bytes_avail
        mem = _rss_parts()
        for key, value in (("store_used", s.object_store_bytes_used),
                           ("store_primary", s.object_store_bytes_primary_copy),
                           ("fallback", s.object_store_bytes_fallback),
                           ("driver_rss", mem["rss"]), ("driver_anon", mem["anon"])):
            self.peak[key] = max(self.peak[key], value)
        if s.object_store_bytes_fallback and self.fallback_at is None:
            self.fallback_at = time.perf_counter() - self.t0
        self.timeline.append((time.perf_counter() - self.t0, mem["anon"]))
        for child in self.me.children(recursive=True):
            try:
                if child.name().startswith("ray::"):
                    self.peak["worker_rss"] = max(self.peak["worker_rss"], child.memory_info().rss)
            except psutil.Error:
                pass

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def __enter__(self) -> "_Monitor":
        self.t0 = time.perf_counter()
        mem = _rss_parts()
        self.rss_before, self.anon_before = mem["rss"], mem["anon"]
        self.maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.stats_before = self._reply()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.stats_after = self._reply()
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        if maxrss > self.maxrss_before:  # the process peak was set during the run: exact, not sampled
            self.peak["driver_rss"] = max(self.peak["driver_rss"], maxrss)

    def anon_by_stage(self, stage_seconds: dict[str, float]) -> dict[str, float]:
        """Peak driver anonymous memory (MiB) within each stage of the run."""
        out, start = {}, 0.0
        for stage, secs in stage_seconds.items():
            inside = [a for t, a in self.timeline if start <= t < start + secs]
            out[stage] = round(max(inside) / MIB, 1) if inside else None
            start += secs
        return out

    def spilled(self) -> int:
        return self.stats_after.spilled_bytes_total - self.stats_before.spilled_bytes_total

    def restored(self) -> int:
        return self.stats_after.restored_bytes_total - self.stats_before.restored_bytes_total


# ------------------------------------------------------------------------------------------ test
@pytest.fixture(scope="module")
def small_store_ray():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, address="local", object_store_memory=STORE_BYTES, include_dashboard=False,
             log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def _config(raw, out) -> CorpusConfig:
    return load_config(CorpusConfig, None, [
        f"inputs=[{{path: '{raw / 'fin'}', source: fin, domain: financial}}, "
        f"{{path: '{raw / 'gen'}', source: gen, domain: general}}]",
        f"output_dir={out}", "pack.tokenizer=tiny-random", "pack.seq_len=1024",
        "mix.ratios={financial: 0.6, general: 0.4}", "exact_dedup.num_partitions=8"])


@pytest.mark.slow
def test_corpus_larger_than_object_store_streams_with_bounded_memory(tmp_path, small_store_ray):
    contaminating = [s.text for s in load_samples("fpb", "test") if len(s.text.split()) >= 20][:2 * CONTAMINATED]
    # Warm-up on a small corpus: the driver's one-time costs (imports, the FLARE n-gram index, Ray Data
    # operators, actor classes) are paid before the baseline, so what is measured is what the corpus adds.
    _write_corpus(tmp_path / "warm", contaminating, WARMUP_BYTES)
    run_corpus(_config(tmp_path / "warm", tmp_path / "warm-out"))
    truth = _write_corpus(tmp_path / "raw", contaminating, CORPUS_BYTES)
    cfg = _config(tmp_path / "raw", tmp_path / "out")
    gc.collect()
    t0 = time.perf_counter()
    with _Monitor() as mon:
        manifest = run_corpus(cfg)
    seconds = time.perf_counter() - t0

    # -- every document accounted for ------------------------------------------------------------
    stages = manifest["documents_per_stage"]
    assert stages["ingested"] == truth["docs"]
    assert manifest["quarantine"]["total"] == 2 * sum(BAD_LINES.values())
    for source in ("fin", "gen"):
        lines = stages["ingested"][source] + sum(manifest["quarantine"]["by_source"][source].values())
        assert lines == truth["lines"][source]
        assert manifest["quarantine"]["by_source"][source] == BAD_LINES
    drops = manifest["filter_drops"]
    assert drops == {"min_chars": {"fin": SHORT_DOCS, "gen": SHORT_DOCS},
                     "max_digit_ratio": {"fin": NUMBER_TABLES, "gen": NUMBER_TABLES}}
    assert manifest["exact_dedup"]["removed"] == 2 * EXACT_COPIES
    assert manifest["near_dedup"]["removed"] == 2 * NEAR_COPIES
    assert manifest["decontamination"]["flagged"] == 2 * CONTAMINATED
    for source in ("fin", "gen"):
        filtered = stages["ingested"][source] - sum(d.get(source, 0) for d in drops.values())
        assert stages["filtered"][source] == filtered
        assert stages["exact_dedup"][source] == filtered - EXACT_COPIES
        assert stages["near_dedup"][source] == filtered - EXACT_COPIES - NEAR_COPIES
        assert stages["decontaminated"][source] == filtered - EXACT_COPIES - NEAR_COPIES - CONTAMINATED
    # the mix keeps every financial document (the scarcer group at 60/40) and samples the rest
    assert stages["mixed"]["fin"] == stages["decontaminated"]["fin"]
    tokens_after = manifest["tokens"]["by_domain_after_mix"]
    assert abs(tokens_after["financial"] / sum(tokens_after.values()) - 0.6) < 0.01
    # what is on disk: read back independently of the manifest
    shards = sorted((tmp_path / "out" / "shards").glob("*.parquet"))
    on_disk = [pq.read_table(p, columns=["n_tokens", "n_docs"]) for p in shards]
    assert sum(int(t.column("n_docs").to_numpy().sum()) for t in on_disk) == sum(stages["mixed"].values())
    assert sum(int(t.column("n_tokens").to_numpy().sum()) for t in on_disk) == sum(tokens_after.values())
    assert manifest["packing"]["documents"] == sum(stages["mixed"].values())

    # -- memory ----------------------------------------------------------------------------------
    corpus = truth["text_bytes"]
    driver_growth = mon.peak["driver_rss"] - mon.rss_before
    driver_heap_growth = mon.peak["driver_anon"] - mon.anon_before
    report = {
        "corpus_mb": round(corpus / 1e6, 1), "documents": sum(truth["docs"].values()),
        "object_store_mb": round(mon.capacity / MIB, 1), "corpus_over_store": round(corpus / mon.capacity, 2),
        "peak_store_used_mb": round(mon.peak["store_used"] / MIB, 1),
        "peak_store_fallback_mb": round(mon.peak["fallback"] / MIB, 1),
        "spilled_mb": round(mon.spilled() / MIB, 1), "restored_mb": round(mon.restored() / MIB, 1),
        "driver_rss_before_mb": round(mon.rss_before / MIB, 1),
        "driver_rss_peak_mb": round(mon.peak["driver_rss"] / MIB, 1),
        "driver_rss_growth_mb": round(driver_growth / MIB, 1),
        "driver_anon_before_mb": round(mon.anon_before / MIB, 1),
        "driver_anon_growth_mb": round(driver_heap_growth / MIB, 1),
        "first_fallback_at_s": None if mon.fallback_at is None else round(mon.fallback_at, 1),
        "driver_anon_peak_by_stage_mb": mon.anon_by_stage(manifest["seconds"]),
        "largest_worker_rss_mb": round(mon.peak["worker_rss"] / MIB, 1),
        "seconds": round(seconds, 1), "stage_seconds": manifest["seconds"],
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
    }
    print("\ncorpus memory test:", json.dumps(report))
    assert mon.capacity and mon.capacity <= STORE_BYTES
    assert corpus >= 2.5 * mon.capacity, report  # the corpus is several times the store
    assert mon.peak["store_used"] <= mon.capacity, report  # never past the store, fallback allocations included
    assert mon.spilled() >= corpus, report  # the corpus went through spilling to disk
    # documents never pass through the driver: what it gains (~30-45 MB here, mostly the FLARE index
    # and the mix histogram, whatever the corpus size) stays far below the corpus
    assert driver_heap_growth < corpus / 4, report
    assert driver_growth < corpus / 4, report  # resident, object-store pages it mapped included


# ------------------------------------------------------------------------------------------ the pieces
def test_block_summaries_count_like_a_groupby(small_store_ray):
    from ray.data.expressions import col

    from finadapt.data.aggregate import count_by, sum_by, total_by

    rows = [{"source": ["a", "b", None][i % 3], "reason": "" if i % 4 else "short", "n": i} for i in range(1000)]
    ds = ray.data.from_items(rows, override_num_blocks=7)
    assert count_by(ds, "source") == {"None": 333, "a": 334, "b": 333}
    assert total_by(ds, "source", "n") == {
        str(k): sum(r["n"] for r in rows if r["source"] == k) for k in ("a", "b", None)}
    got = {(r["source"], r["reason"]): (r["count"], r["sum(n)"]) for r in sum_by(ds, ["source", "reason"], ["n"])}
    want: dict = {}
    for r in rows:
        c, t = want.get((r["source"], r["reason"]), (0, 0))
        want[(r["source"], r["reason"])] = (c + 1, t + r["n"])
    assert got == want
    assert count_by(ray.data.from_items(rows).filter(expr=col("n") < 0), "source") == {}


def test_seeded_shuffle_is_a_seeded_permutation(small_store_ray):
    from finadapt.data.mix import add_shuffle_key, seeded_shuffle

    rows = [{"id": f"d{i}", "x": i} for i in range(500)]

    def partitions(blocks: int, seed: int) -> frozenset:
        """The output cut where the shuffle key drops: the partitions, each in its in-partition order."""
        ids = [r["id"] for r in seeded_shuffle(ray.data.from_items(rows, override_num_blocks=blocks), seed, 4)
               .take_all()]
        keys = add_shuffle_key({"id": np.array(ids, dtype=object)}, seed)["_shuffle_key"]
        cuts = [0, *(np.flatnonzero(np.diff(keys) < 0) + 1), len(ids)]
        assert sorted(ids) == sorted(r["id"] for r in rows) and ids != [r["id"] for r in rows]
        return frozenset(tuple(ids[a:b]) for a, b in zip(cuts, cuts[1:]))

    a = partitions(3, 0)
    assert len(a) == 4
    assert partitions(7, 0) == a  # other blocks: the same partitions in the same inner order
    assert partitions(3, 1) != a


def test_vectorised_exact_dedup_equals_one_call_per_group():
    import random

    import pyarrow as pa
    import pyarrow.compute as pc

    from finadapt.data.exact_dedup import keep_smallest_id, keep_smallest_ids

    rng = random.Random(0)
    rows = [{"id": f"id{rng.randrange(10**6):07d}", "hash": f"h{g:04d}", "source": rng.choice("abc"), "text": "t"}
            for g in range(200) for _ in range(rng.choice([1, 1, 2, 3, 15]))]
    rng.shuffle(rows)
    table = pa.Table.from_pylist(rows)
    for max_ids in (10, 2):
        want = [r for h in sorted({r["hash"] for r in rows})
                for r in keep_smallest_id(table.filter(pc.equal(table.column("hash"), h)), max_ids).to_pylist()]
        assert keep_smallest_ids(table, max_ids).sort_by("hash").to_pylist() == want
    assert keep_smallest_ids(table.slice(0, 0)).num_rows == 0


def test_batched_decontamination_equals_per_document():
    from finadapt.data.decontaminate import build_eval_index

    index = build_eval_index()
    fpb = [s.text for s in load_samples("fpb", "test")[:40]]
    writer = _Writer(seed=1)
    texts = [writer.document() for _ in range(60)] + [f"{writer.document()} {t}" for t in fpb] + ["", "Lender", fpb[0]]
    np.random.default_rng(0).shuffle(texts)
    assert index.batch_matches(texts, 5) == [index.matches(t, 5) for t in texts]
    assert sum(bool(m) for m in index.batch_matches(texts, 5)) >= 40


def test_fast_character_counts_and_whitespace_runs_equal_the_plain_definitions():
    import re

    from finadapt.data import normalize
    from finadapt.data.filters import _char_counts

    pieces = ["a", "Z", "7", " ", "\t", "\n", "\x1c", "\x0b", "é", "ß", "²", "３", "\u00a0", "\u2003", "\u3000",
              "٣", "Ⅻ", "$", ".", "漢", "\u200b"]
    rng = np.random.default_rng(0)
    texts = ["".join(rng.choice(pieces, size=int(rng.integers(0, 40)))) for _ in range(2000)]
    for t in texts:
        assert _char_counts(t) == (sum(map(str.isspace, t)), sum(map(str.isalpha, t)), sum(map(str.isdigit, t)),
                                   sum(map(str.isalnum, t)))
    plain = re.compile(r"[^\S\n]+")
    for t in texts:
        fix = lambda m: "\t" if "\t" in m.group() else " "  # noqa: E731
        assert normalize._HSPACE_RUN.sub(fix, t) == plain.sub(fix, t)
