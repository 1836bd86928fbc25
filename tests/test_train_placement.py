"""The driver says up front when a Ray Train worker group cannot fit the cluster as it is (Ray Train
itself would wait for the placement group without a word)."""
from __future__ import annotations

import logging

from finadapt.train.placement import shortfall
from finadapt.train.run import warn_if_it_cannot_fit

HEAD_1CPU = {"Resources": {"CPU": 1.0, "memory": 1e9}}
WORKER_2CPU = {"Resources": {"CPU": 2.0}}
GPU_NODE = {"Resources": {"CPU": 8.0, "GPU": 1.0}}


def test_strict_spread_needs_one_node_per_worker():
    assert shortfall(2, {"CPU": 1}, "STRICT_SPREAD", [HEAD_1CPU, WORKER_2CPU]) is None
    message = shortfall(2, {"CPU": 1}, "STRICT_SPREAD", [WORKER_2CPU])
    assert message == ("2 Ray Train workers with STRICT_SPREAD need 2 nodes with 1 CPU each; the cluster has "
                       "1 such node(s) of 1")
    assert "has 1 such node" in shortfall(2, {"CPU": 2}, "STRICT_SPREAD", [HEAD_1CPU, WORKER_2CPU])


def test_pack_and_spread_count_slots_on_every_node():
    assert shortfall(3, {"CPU": 1}, "PACK", [HEAD_1CPU, WORKER_2CPU]) is None
    assert shortfall(4, {"CPU": 1}, "SPREAD", [HEAD_1CPU, WORKER_2CPU]) == (
        "4 Ray Train workers with 1 CPU each fit 3 time(s) on the cluster's 2 node(s)")
    assert "fit 1 time(s)" in shortfall(2, {"CPU": 1, "GPU": 1}, "PACK", [GPU_NODE, WORKER_2CPU])


def test_strict_pack_needs_one_node_for_all():
    assert shortfall(2, {"CPU": 1}, "STRICT_PACK", [WORKER_2CPU]) is None
    assert shortfall(3, {"CPU": 1}, "STRICT_PACK", [HEAD_1CPU, WORKER_2CPU]) == (
        "3 Ray Train workers with STRICT_PACK need one node with 3 CPU; no node of 2 has it")


def test_the_driver_warns_naming_the_config_keys(caplog):
    from finadapt.train.config import SftConfig

    cfg = SftConfig.model_validate({"model": {"spec": "tiny-random"},
                                    "ray": {"workers": 2, "cpus_per_worker": 1, "placement_strategy": "STRICT_SPREAD"}})
    with caplog.at_level(logging.WARNING, logger="finadapt.train.run"):
        assert warn_if_it_cannot_fit(cfg, [HEAD_1CPU, WORKER_2CPU]) is None
        assert "STRICT_SPREAD need 2 nodes" in warn_if_it_cannot_fit(cfg, [WORKER_2CPU])
    assert "ray.placement_strategy in the training config" in caplog.text
