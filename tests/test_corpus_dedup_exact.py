"""Exact dedup on Ray: duplicates across sources go, the smallest id survives, near-copies stay."""
from __future__ import annotations

import pytest
import ray

from finadapt.data.exact_dedup import ExactDedupConfig, exact_dedup, text_hash

STORY = "Oil prices rose on Tuesday after OPEC agreed to extend output cuts."


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, address="local", include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _ds(rows, blocks=3):
    return ray.data.from_items(rows, override_num_blocks=blocks)


DOCS = [
    {"id": "wiki-9", "text": STORY, "source": "wiki", "domain": "general"},
    {"id": "reuters-2", "text": STORY, "source": "reuters", "domain": "financial"},
    {"id": "reuters-10", "text": STORY, "source": "reuters", "domain": "financial"},
    {"id": "edgar-1", "text": "Item 1A. Risk Factors", "source": "edgar", "domain": "financial"},
    {"id": "edgar-2", "text": "Item 1A. Risk Factors", "source": "edgar", "domain": "financial"},
    # near but not exact: one character, case, trailing space, extra word
    {"id": "near-1", "text": STORY.replace("Tuesday", "Monday"), "source": "reuters", "domain": "financial"},
    {"id": "near-2", "text": STORY.lower(), "source": "reuters", "domain": "financial"},
    {"id": "near-3", "text": STORY + " ", "source": "wiki", "domain": "general"},
    {"id": "near-4", "text": STORY + " Analysts agreed.", "source": "wiki", "domain": "general"},
]


def test_removes_exact_duplicates_keeps_smallest_id_and_near_copies(ray_local):
    result = exact_dedup(_ds(DOCS), ExactDedupConfig(num_partitions=2))
    rows = {r["id"]: r for r in result.dataset.take_all()}
    # "reuters-10" < "reuters-2" < "wiki-9" as strings: the survivor rule is lexicographic
    assert sorted(rows) == ["edgar-1", "near-1", "near-2", "near-3", "near-4", "reuters-10"]
    assert result.removed == 3
    assert rows["reuters-10"] == {"id": "reuters-10", "text": STORY, "source": "reuters", "domain": "financial"}


def test_example_groups_largest_first_with_ids_and_sources(ray_local):
    result = exact_dedup(_ds(DOCS), ExactDedupConfig(max_examples=5))
    assert [e["kept"]["id"] for e in result.examples] == ["reuters-10", "edgar-1"]
    story = result.examples[0]
    assert story["hash"] == text_hash(STORY) and story["removed_count"] == 2
    assert story["kept"] == {"id": "reuters-10", "source": "reuters"}
    assert story["removed"] == [{"id": "reuters-2", "source": "reuters"}, {"id": "wiki-9", "source": "wiki"}]
    assert exact_dedup(_ds(DOCS), ExactDedupConfig(max_examples=1)).examples[0]["kept"]["id"] == "reuters-10"


def test_survivor_independent_of_input_order_and_partitions(ray_local):
    forward = exact_dedup(_ds(DOCS, blocks=1), ExactDedupConfig(num_partitions=1))
    backward = exact_dedup(_ds(DOCS[::-1], blocks=4), ExactDedupConfig(num_partitions=3))
    assert sorted(r["id"] for r in forward.dataset.take_all()) == sorted(r["id"] for r in backward.dataset.take_all())


def test_no_duplicates_nothing_removed(ray_local):
    rows = [{"id": f"d{i}", "text": f"document number {i}", "source": "s", "domain": "general"} for i in range(20)]
    result = exact_dedup(_ds(rows))
    assert result.removed == 0 and result.examples == [] and result.dataset.count() == 20
    assert set(result.dataset.schema().names) == {"id", "text", "source", "domain"}
