"""Tokenize documents and pack them into fixed-length training sequences (EOS between documents).

Packing wastes no compute on padding; the only padded sequence is the last one of each batch,
whose real length is kept in `n_tokens` so that no token is lost and none is invented.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from finadapt.config import ConfigError


class PackConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokenizer: str = Field("embedded:smollm2-135m-instruct", description="model spec whose tokenizer is used")
    seq_len: int = Field(1024, ge=16, description="tokens per packed sequence")
    separator: str | None = Field(None, description="token between documents; None = the tokenizer's EOS")
    batch_size: int = Field(512, ge=1, description="documents per packing batch")


class Tokenize:
    """Ray Data class UDF: adds `input_ids` (document tokens + separator; uint16 or int32) and `n_tokens`."""

    def __init__(self, tokenizer_spec: str, separator: str | None = None):
        from finadapt.models import load_tokenizer

        self.tokenizer = load_tokenizer(tokenizer_spec)
        token = separator or self.tokenizer.eos_token
        self.sep_id = self.tokenizer.convert_tokens_to_ids(token)
        if self.sep_id is None or self.sep_id == self.tokenizer.unk_token_id and token != self.tokenizer.unk_token:
            raise ConfigError(f"pack.separator: separator token {token!r} is not in the vocabulary of {tokenizer_spec}")
        # Token ids between tokenizing and packing: uint16 when the vocabulary fits (SmolLM2: 49,152;
        # the byte tokenizer: 259), half the bytes of int32 in the object store and on spill disk.
        # Packed shards are int32 either way.
        self.dtype = np.uint16 if len(self.tokenizer) <= np.iinfo(np.uint16).max + 1 else np.int32

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch["text"]]
        fast = getattr(self.tokenizer, "is_fast", False)
        backend = getattr(self.tokenizer, "backend_tokenizer", None) if fast else None
        if backend is not None:  # same ids as tokenizer(...)["input_ids"], without the per-token Python lists
            encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
            encoded = [e.ids for e in encode(texts, add_special_tokens=False)]
        else:
            encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        ids = np.empty(len(encoded), dtype=object)  # 1-D even when every document has the same length
        for i, e in enumerate(encoded):
            ids[i] = np.append(np.asarray(e, dtype=self.dtype), self.dtype(self.sep_id))
        out = dict(batch)
        out["input_ids"] = ids
        out["n_tokens"] = np.asarray([len(x) for x in ids], dtype=np.int64)
        return out


@lru_cache(maxsize=4)
def _tokenizer(spec: str, separator: str | None) -> Tokenize:
    return Tokenize(spec, separator)


def tokenize_batch(batch: dict[str, np.ndarray], tokenizer_spec: str, separator: str | None = None
                   ) -> dict[str, np.ndarray]:
    """`Tokenize` as a plain batch function for Ray tasks: the tokenizer is loaded once per worker
    process and cached there, so tokenizing fuses with the map steps around it (no actor pool that
    holds a CPU while the steps before it wait for one)."""
    return _tokenizer(tokenizer_spec, separator)(batch)


def pack_batch(batch: dict[str, np.ndarray], seq_len: int, pad_id: int = 0) -> pa.Table:
    """Concatenate the batch's token lists and cut them into `seq_len` rows (last row right-padded).

    `input_ids` is a fixed-size list column, so shards read back with plain pyarrow/pandas too.
    """
    pieces = [np.asarray(x, dtype=np.int32) for x in batch["input_ids"]]
    if not pieces:
        return pa.table({"input_ids": pa.FixedSizeListArray.from_arrays(pa.array([], pa.int32()), seq_len),
                         "n_tokens": pa.array([], pa.int64()), "n_docs": pa.array([], pa.int64())})
    stream = np.concatenate(pieces)
    ends = np.cumsum([len(p) for p in pieces])
    n_rows = -(-len(stream) // seq_len)
    padded = np.full(n_rows * seq_len, pad_id, dtype=np.int32)
    padded[: len(stream)] = stream
    n_tokens = np.full(n_rows, seq_len, dtype=np.int64)
    n_tokens[-1] = len(stream) - (n_rows - 1) * seq_len
    # documents that end inside each row (a document spanning rows is counted where it ends)
    n_docs = np.bincount(np.minimum((ends - 1) // seq_len, n_rows - 1), minlength=n_rows)
    return pa.table({"input_ids": pa.FixedSizeListArray.from_arrays(pa.array(padded), seq_len),
                     "n_tokens": n_tokens, "n_docs": n_docs.astype(np.int64)})
