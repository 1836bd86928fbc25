"""Can the cluster as it is now hold the Ray Train worker group a config asks for?

Why: Ray Train waits for its placement group without end when the request cannot fit (two workers
STRICT_SPREAD on a one-node cluster, 8 GPUs asked of a 4-GPU cluster), printing little. On a fixed
cluster that is a configuration error worth one clear line before the wait starts; on an autoscaling
cluster the nodes may still come, so the driver warns instead of failing.
"""
from __future__ import annotations

from typing import Any


def shortfall(workers: int, per_worker: dict[str, float], strategy: str, nodes: list[dict[str, Any]]) -> str | None:
    """Why `workers` x `per_worker` with `strategy` does not fit `nodes` (each: its total `Resources`,
    as `ray.nodes()` lists alive nodes), or None when it fits."""
    per_worker = {k: float(v) for k, v in per_worker.items() if v > 0}
    if not per_worker:
        return None
    capacity = [{k: float(node.get("Resources", {}).get(k, 0.0)) for k in per_worker} for node in nodes]

    def fits_on(c: dict[str, float]) -> bool:
        return all(c[k] >= v for k, v in per_worker.items())

    ask = ", ".join(f"{v:g} {k}" for k, v in per_worker.items())
    if strategy == "STRICT_SPREAD":
        room = sum(1 for c in capacity if fits_on(c))
        if room < workers:
            return (f"{workers} Ray Train workers with STRICT_SPREAD need {workers} nodes with {ask} each; the "
                    f"cluster has {room} such node(s) of {len(nodes)}")
        return None
    if strategy == "STRICT_PACK":
        whole = {k: v * workers for k, v in per_worker.items()}
        if not any(all(c[k] >= v for k, v in whole.items()) for c in capacity):
            return (f"{workers} Ray Train workers with STRICT_PACK need one node with "
                    f"{', '.join(f'{v:g} {k}' for k, v in whole.items())}; no node of {len(nodes)} has it")
        return None
    slots = sum(int(min(c[k] // v for k, v in per_worker.items())) for c in capacity)
    if slots < workers:
        return (f"{workers} Ray Train workers with {ask} each fit {slots} time(s) on the cluster's "
                f"{len(nodes)} node(s)")
    return None
