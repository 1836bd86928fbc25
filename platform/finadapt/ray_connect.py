"""One way for every stage to reach Ray: join the job's cluster or start a local instance, once.

Why one helper: the stages used to call `ray.init` four different ways (some ignored `num_cpus`, some
the address); a sweep trial, a `ray job submit` entrypoint and the CLI must all connect alike.
"""
from __future__ import annotations

import logging
import os

from finadapt.config import RaySection

log = logging.getLogger(__name__)


def connect(section: RaySection | None = None) -> None:
    """Initialise Ray for `section` unless this process is already connected (a driver that called
    `ray.init` itself, a Ray task or actor, a Tune trial): then the existing connection is kept.

    With no address and no RAY_ADDRESS a local instance starts with `num_cpus`/`num_gpus`; with an
    address those are the cluster's business and are not passed."""
    import ray

    section = section or RaySection()
    if ray.is_initialized():
        return
    joining = section.address is not None or bool(os.environ.get("RAY_ADDRESS"))
    kwargs: dict = {"address": section.address, "ignore_reinit_error": True, "log_to_driver": True}
    if not joining:
        kwargs.update(num_cpus=section.num_cpus, num_gpus=section.num_gpus)
    log.info("connecting to Ray: %s", section.address or os.environ.get("RAY_ADDRESS") or "new local instance")
    ray.init(**kwargs)
