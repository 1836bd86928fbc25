"""FLARE-format sample files beyond the built-in splits (synthetic data, extra SFT data), local or s3://."""
from __future__ import annotations

import json

from finadapt import storage

from .base import Sample
from .jsonl import DataFormatError


def read_samples(uri: str) -> list[Sample]:
    """FLARE-format JSONL (local or s3://), e.g. synthetic samples; a bad line names file and line."""
    samples = []
    for number, line in enumerate(storage.read_text(uri).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            samples.append(Sample.from_row(json.loads(line)))
        except (json.JSONDecodeError, TypeError, KeyError) as err:
            raise DataFormatError(f"{uri}:{number}: not a FLARE sample ({err})") from err
    return samples
