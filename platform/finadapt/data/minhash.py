"""MinHash signatures and LSH band keys, vectorised over a whole batch of documents.

Why batch-level numpy/Arrow: a per-document, per-shingle Python loop (datasketch's `MinHash.update`)
is the throughput limit of a dedup stage; here every step runs over all shingles of a batch at once.
Steps per batch:

1. normalise (lower case, every run of non letter/digit characters -> one space) with Arrow kernels;
2. hash each distinct token of the batch once (seeded polynomial over its UTF-8 bytes, vectorised over
   the Arrow dictionary), or each UTF-8 byte for char shingles;
3. n-gram hash = sum_k token_hash[i+k] * C_k (mod 2^64) + splitmix64 finaliser, for all windows at once;
4. MinHash: h_j(x) = (a_j * x + b_j) mod (2^31 - 1) for all permutations at once (two Mersenne folds
   instead of a division; residues 0 and 1 may also show as p and p+1, a 2^-30 effect on a minimum),
   minimum per document with `np.minimum.reduceat`;
5. band keys: each band's `rows` values folded into one 64-bit key that also encodes the band index.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator

MERSENNE_31 = np.uint64((1 << 31) - 1)
_CHUNK = 8192  # shingles hashed per numpy step: two (k x 8192) uint64 buffers, ~8 MB each at k=126
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


class MinHashConfig(BaseModel):
    """Near-duplicate detection settings (MinHash LSH + rapidfuzz verification + Ray pipeline knobs)."""

    model_config = ConfigDict(extra="forbid")

    shingle: Literal["word", "char"] = Field(
        "word",
        description="Shingle unit: word n-grams (datatrove style) or UTF-8 byte n-grams (NeMo style, ngram ~24).")
    ngram: int = Field(5, ge=1, description="Shingle length in units; docs shorter than this form one shingle.")
    num_perm: int = Field(
        128, ge=2, le=1024, description="MinHash permutations available; only bands*rows of them are computed.")
    threshold: float = Field(0.8, gt=0.0, lt=1.0, description="Target Jaccard similarity of shingle sets.")
    false_positive_weight: float = Field(
        0.1, ge=0.0, le=1.0,
        description="Weight of the false-positive area when deriving bands/rows. Low because every candidate "
                    "is verified anyway: a false candidate costs one rapidfuzz call, a missed pair is lost.")
    false_negative_weight: float = Field(0.9, ge=0.0, le=1.0, description="Weight of the false-negative area.")
    bands: int | None = Field(None, ge=1, description="LSH bands; derived with `rows` from threshold when both unset.")
    rows: int | None = Field(None, ge=1, description="Signature rows per band; derived with `bands`.")
    seed: int = Field(42, ge=0, description="Seed of token hashes, n-gram coefficients and permutations.")
    verify_scorer: Literal["shingle_indel", "ratio"] = Field(
        "shingle_indel",
        description="Verification of each LSH candidate pair with rapidfuzz. 'shingle_indel': Indel similarity "
                    "of the two sorted distinct shingle-hash sequences of the normalised texts, which is exactly "
                    "their Dice coefficient 2|A&B|/(|A|+|B|) = 2J/(1+J) (LCS of two increasing sequences is their "
                    "intersection). 'ratio': fuzz.ratio of the normalised texts (cheaper to ship, order "
                    "sensitive, only approximately tied to J).")
    verify_threshold: float | None = Field(
        None, ge=0.0, le=100.0,
        description="Minimum verification score (0-100). Unset: derived from `threshold` (see "
                    "`derived_verify_threshold`).")
    max_chars_verify: int = Field(
        5000, ge=100, description="Normalised texts are cut to this many characters before verification.")
    batch_size: int = Field(2048, ge=1, description="Documents per vectorised step (map tasks split larger blocks).")
    num_shards: int = Field(4, ge=1, description="Hash partitions (reduce tasks) of the two map/reduce rounds.")
    exhaustive_bucket_max: int = Field(
        16, ge=2,
        description="LSH buckets of up to this many documents are verified pair by pair (k(k-1)/2 pairs); "
                    "larger buckets (boilerplate) are stars: each member against the bucket's smallest id "
                    "only, linear but blind to members alike to each other and not to that id. 2 = stars only.")
    max_examples: int = Field(5, ge=0, description="Example clusters kept in the stats.")
    collect_clusters: bool = Field(
        False, description="Also return every cluster's members and every scored candidate pair in the stats "
                           "(for evaluation; size grows with the number of duplicates).")

    @model_validator(mode="after")
    def _derive_bands(self) -> "MinHashConfig":
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both bands and rows, or neither (then they are derived from threshold)")
        if self.bands is None:
            from datasketch.lsh import _optimal_param  # imports scipy: only where bands are derived

            b, r = _optimal_param(self.threshold, self.num_perm, self.false_positive_weight,
                                  self.false_negative_weight)
            object.__setattr__(self, "bands", b)
            object.__setattr__(self, "rows", r)
        if self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands*rows={self.bands * self.rows} exceeds num_perm={self.num_perm}")
        if self.verify_threshold is None:
            object.__setattr__(self, "verify_threshold", self.derived_verify_threshold())
        return self

    def derived_verify_threshold(self) -> float:
        """Verification score equivalent to Jaccard `threshold`.

        shingle_indel: the score is the Dice coefficient D, and J >= t <=> D >= 2t/(1+t) (exact).
        ratio: substitution model. Replacing a fraction e of the words keeps s = (1-e)^n of the n-gram
        shingles, so J = s/(2-s) and J = t at e_t = 1 - (2t/(1+t))^(1/n). A substituted word moves
        fuzz.ratio by about 0.6 word-lengths of its 2-text length (measured on Reuters/Wikipedia:
        ratio ~ 1 - 0.6 e), giving 100 * (1 - 0.6 e_t); 98.6 for t=0.8, n=5 words.
        """
        dice = 2 * self.threshold / (1 + self.threshold)
        if self.verify_scorer == "shingle_indel":
            return 100.0 * dice
        e_t = 1.0 - dice ** (1.0 / self.ngram)
        return 100.0 * (1.0 - 0.6 * e_t)

    def collision_probability(self, jaccard: float) -> float:
        """Probability that a pair with this Jaccard shares at least one band (the LSH S-curve)."""
        return 1.0 - (1.0 - jaccard ** self.rows) ** self.bands

    def s_curve_threshold(self) -> float:
        """(1/b)^(1/r): the usual approximation of the Jaccard where the S-curve is steepest."""
        return (1.0 / self.bands) ** (1.0 / self.rows)

    def error_areas(self) -> tuple[float, float]:
        """(false positive area, false negative area) of the S-curve around `threshold`."""
        from datasketch.lsh import _false_negative_probability, _false_positive_probability

        return (_false_positive_probability(self.threshold, self.bands, self.rows),
                _false_negative_probability(self.threshold, self.bands, self.rows))


def _splitmix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: avalanche a uint64 array (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


class Hasher:
    """Seeded hash parameters; built once per worker (cheap) so that every process agrees."""

    def __init__(self, cfg: MinHashConfig) -> None:
        self.cfg = cfg
        rng = np.random.default_rng(cfg.seed)
        k = cfg.bands * cfg.rows
        self.a = rng.integers(1, int(MERSENNE_31), size=k, dtype=np.uint64)
        self.b = rng.integers(0, int(MERSENNE_31), size=k, dtype=np.uint64)
        self.ngram_coef = rng.integers(1, 2**63, size=cfg.ngram, dtype=np.uint64) | np.uint64(1)
        self.band_coef = rng.integers(1, 2**63, size=cfg.rows, dtype=np.uint64) | np.uint64(1)
        self.band_salt = rng.integers(0, 2**63, size=cfg.bands, dtype=np.uint64)
        self.byte_table = rng.integers(0, 2**63, size=256, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self.byte_coef = rng.integers(1, 2**63, dtype=np.uint64) | np.uint64(1)
        self.len_coef = rng.integers(1, 2**63, dtype=np.uint64) | np.uint64(1)
        self._buf = np.empty((k, _CHUNK), dtype=np.uint64)
        self._tmp = np.empty((k, _CHUNK), dtype=np.uint64)

    # -- tokens ---------------------------------------------------------------------------
    def token_hashes(self, norm: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """Hash of every token of the batch (flat) and the token count of each document."""
        norm = norm.combine_chunks() if isinstance(norm, pa.ChunkedArray) else norm
        if self.cfg.shingle == "char":
            data, offsets = _string_bytes(pc.fill_null(norm, ""))
            return self.byte_table[data], np.diff(offsets)
        tokens = pc.split_pattern(pc.if_else(pc.equal(norm, ""), pa.scalar(None, pa.string()), norm), " ")
        counts = pc.fill_null(pc.list_value_length(tokens), 0).to_numpy(zero_copy_only=False).astype(np.int64)
        flat = pc.list_flatten(tokens)  # normalised text: single spaces, trimmed; "" became null (no tokens)
        if len(flat) == 0:
            return np.zeros(0, np.uint64), counts
        enc = pc.dictionary_encode(flat)
        return self.hash_strings(enc.dictionary)[enc.indices.to_numpy()], counts

    def hash_strings(self, strings: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Seeded 64-bit hash of each string: splitmix(sum_j T[byte_j] * C^j + len * C'), all at once."""
        data, offsets = _string_bytes(strings)
        lengths = np.diff(offsets)
        if len(data) == 0:
            return _splitmix(lengths.astype(np.uint64) * self.len_coef)
        starts = offsets[:-1]
        pos = np.arange(len(data)) - np.repeat(starts, lengths)
        powers = np.cumprod(np.full(int(lengths.max()), self.byte_coef, dtype=np.uint64))
        terms = self.byte_table[data] * powers[pos]
        nonempty = lengths > 0
        h = np.zeros(len(lengths), dtype=np.uint64)
        h[nonempty] = np.add.reduceat(terms, starts[nonempty])
        return _splitmix(h + lengths.astype(np.uint64) * self.len_coef)

    # -- shingles -------------------------------------------------------------------------
    def shingle_hashes(self, tok: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """31-bit hash of every n-gram window (docs shorter than n give one window) and per-doc counts."""
        n = self.cfg.ngram
        n_docs, total = len(counts), len(tok)
        doc = np.repeat(np.arange(n_docs), counts)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1])) if n_docs else np.zeros(0, np.int64)
        end = (starts + counts)[doc]
        pos = np.arange(total) - starts[doc]
        valid = pos <= np.maximum(counts - n, 0)[doc]
        padded = np.concatenate((tok, np.zeros(n, np.uint64)))
        g = padded[:total] * self.ngram_coef[0]
        idx = np.arange(total)
        for k in range(1, n):
            inside = (idx + k) < end
            g += np.where(inside, padded[k: total + k], np.uint64(0)) * self.ngram_coef[k]
        g = _splitmix(g[valid]) >> np.uint64(33)
        return g, np.bincount(doc[valid], minlength=n_docs)

    # -- minhash --------------------------------------------------------------------------
    def signatures(self, shingles: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """(n_docs, bands*rows) uint32 MinHash values; docs without shingles stay at 2^32-1.

        Computed permutation-major, (k, chunk): each row is contiguous for the broadcast and the
        per-document `reduceat`, ~1.7x faster than (chunk, k) in numpy.
        """
        k = len(self.a)
        sig = np.full((k, len(counts)), np.iinfo(np.uint32).max, dtype=np.uint32)
        doc = np.repeat(np.arange(len(counts)), counts)
        a, b, shift = self.a[:, None], self.b[:, None], np.uint64(31)
        for c0 in range(0, len(shingles), _CHUNK):
            x = shingles[c0: c0 + _CHUNK]
            m = len(x)
            v, y = self._buf[:, :m], self._tmp[:, :m]
            np.multiply(a, x[None, :], out=v)
            v += b
            np.right_shift(v, shift, out=y)  # fold 1: v mod (2^31-1), value < 2^32
            v &= MERSENNE_31
            v += y
            np.right_shift(v, shift, out=y)  # fold 2: value <= 2^31
            v &= MERSENNE_31
            v += y
            d = doc[c0: c0 + m]
            seg = np.flatnonzero(np.r_[True, d[1:] != d[:-1]])
            mins = np.minimum.reduceat(v, seg, axis=1).astype(np.uint32)
            docs = d[seg]
            sig[:, docs] = np.minimum(sig[:, docs], mins)
        return np.ascontiguousarray(sig.T)

    def band_keys(self, sig: np.ndarray) -> np.ndarray:
        """(n_docs, bands) int64 keys; equal key <=> equal band (up to 2^-64 collisions)."""
        b, r = self.cfg.bands, self.cfg.rows
        s = sig.reshape(len(sig), b, r).astype(np.uint64)
        key = (s * self.band_coef).sum(axis=2, dtype=np.uint64) + self.band_salt
        return _splitmix(key).view(np.int64)


def _string_bytes(strings: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(UTF-8 bytes, int64 offsets starting at 0) of a string array, zero-copy; nulls count as empty."""
    arr = strings.combine_chunks() if isinstance(strings, pa.ChunkedArray) else strings
    if pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
    if len(arr) == 0:
        return np.zeros(0, np.uint8), np.zeros(1, np.int64)
    _, off_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(off_buf, dtype=np.int32)[arr.offset: arr.offset + len(arr) + 1].astype(np.int64)
    data = np.frombuffer(data_buf, dtype=np.uint8)[offsets[0]: offsets[-1]] if data_buf is not None \
        else np.zeros(0, np.uint8)
    return data, offsets - offsets[0]


def normalize(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Lower case; every run of characters that are not letters or digits becomes one space."""
    lowered = pc.utf8_lower(texts)
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(lowered, r"[^\pL\pN]+", " "))


def _as_table(batch: pa.Table | dict) -> pa.Table:
    return batch if isinstance(batch, pa.Table) else pa.table(batch)


@lru_cache(maxsize=4)
def _hasher(cfg_json: str) -> Hasher:
    return Hasher(MinHashConfig.model_validate_json(cfg_json))


def hasher_for(cfg: MinHashConfig) -> Hasher:
    """One Hasher per config and process, reused across batches and Ray tasks (it holds ~16 MB of buffers)."""
    return _hasher(cfg.model_dump_json())


def signature_batch(batch: pa.Table | dict, cfg: MinHashConfig, hasher: Hasher | None = None) -> pa.Table:
    """`map_batches` UDF: the batch plus `num_shingles` and a list column `band_keys` (null if no shingles).

    Use as `ds.map_batches(signature_batch, fn_kwargs={"cfg": cfg}, batch_format="pyarrow")`.
    """
    table = _as_table(batch)
    keys, nsh = band_keys_for(table.column("text"), cfg, hasher)
    flat = pa.array(keys.ravel(), type=pa.int64())
    lists = pa.FixedSizeListArray.from_arrays(flat, cfg.bands)
    lists = pc.if_else(pa.array(nsh > 0), lists, pa.scalar(None, lists.type))
    return table.append_column("num_shingles", pa.array(nsh, pa.int32())).append_column("band_keys", lists)


def band_keys_for(texts: pa.Array | pa.ChunkedArray, cfg: MinHashConfig,
                  hasher: Hasher | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(n_docs, bands) band keys and the shingle count of each text."""
    h = hasher or hasher_for(cfg)
    tok, counts = h.token_hashes(normalize(texts))
    shingles, nsh = h.shingle_hashes(tok, counts)
    return h.band_keys(h.signatures(shingles, nsh)), nsh


def shingle_sets(norm: pa.Array | pa.ChunkedArray, hasher: Hasher) -> pa.ListArray:
    """Sorted distinct shingle hashes of each (already normalised) text, as a list<uint64> column."""
    tok, counts = hasher.token_hashes(norm)
    shingles, nsh = hasher.shingle_hashes(tok, counts)
    doc = np.repeat(np.arange(len(nsh)), nsh)
    order = np.lexsort((shingles, doc))
    shingles, doc = shingles[order], doc[order]
    keep = np.r_[True, (shingles[1:] != shingles[:-1]) | (doc[1:] != doc[:-1])] if len(doc) else np.zeros(0, bool)
    per_doc = np.bincount(doc[keep], minlength=len(nsh))
    offsets = np.concatenate(([0], np.cumsum(per_doc))).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(shingles[keep], pa.uint64()))
