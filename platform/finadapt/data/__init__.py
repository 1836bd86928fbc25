"""Corpus stage on Ray Data: ingest, normalize, filter, exact and near dedup, decontaminate, mix, pack.

Contract between the stages: a Ray Dataset whose rows have at least
`id` (str, unique), `text` (str), `source` (str, e.g. "reuters21578"), `domain` ("financial" | "general").
Each stage is a small function `stage(ds, cfg) -> ds` (or a `map_batches` UDF) with its own counts.
"""
