"""How many worker pods a RayJob needs, from the stage config's `ray:` section.

A stage reserves `ray.workers` x (`ray.cpus_per_worker` CPU, `ray.gpus_per_worker` GPU) (a vLLM replica:
`engine.tensor_parallel_size` GPUs); with `ray.enabled: false` the work runs in the driver, which then
reserves those resources itself (entrypointNumCpus/Gpus). Workers that need a GPU go to the GPU group,
the others to the CPU group; they are packed first-fit-decreasing into pods of the cluster config's
size, honouring a training stage's STRICT_SPREAD (one pod each) and STRICT_PACK (one pod for all). The
driver stays on the head unless it needs a GPU or more CPUs than the head has.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from pydantic import BaseModel

from finadapt.config import ConfigError


def _frac(value: float) -> Fraction:
    return Fraction(str(value))  # 0.1 stays 1/10: packing sums never drift


def _num(value: Fraction) -> str:
    return f"{float(value):g}"


@dataclass(frozen=True)
class Reservation:
    """What one Ray worker (or the driver) reserves."""

    cpus: Fraction
    gpus: Fraction = Fraction(0)

    def __add__(self, other: "Reservation") -> "Reservation":
        return Reservation(self.cpus + other.cpus, self.gpus + other.gpus)

    def fits(self, cpus: int, gpus: int) -> bool:
        return self.cpus <= cpus and self.gpus <= gpus

    def __str__(self) -> str:
        return f"{_num(self.cpus)} CPU" + (f" + {_num(self.gpus)} GPU" if self.gpus else "")


@dataclass(frozen=True)
class WorkerSet:
    """`count` workers of one reservation, placed as one Ray placement strategy says."""

    count: int
    reservation: Reservation
    what: str
    placement: str = "PACK"

    def __str__(self) -> str:
        strategy = "" if self.placement in ("PACK", "SPREAD") else f", {self.placement}"
        return f"{self.count} x ({self.reservation}) {self.what}{strategy}"


@dataclass
class StageDemand:
    """What one stage config asks of the cluster: its workers and its driver."""

    source: str
    workers: list[WorkerSet]
    driver: Reservation


def _ray_workers(cfg: BaseModel, what: str) -> WorkerSet:
    ray = cfg.ray
    return WorkerSet(ray.workers, Reservation(_frac(ray.cpus_per_worker), _frac(ray.gpus_per_worker)), what,
                     getattr(ray, "placement_strategy", "PACK"))


def stage_demand(stage: str, cfg: BaseModel, source: str, driver_cpus: float) -> StageDemand:
    """A registered stage's demand from its typed config."""
    driver = Reservation(_frac(driver_cpus))
    engine = getattr(cfg, "engine", None)
    if stage == "synth" and getattr(engine, "kind", None) == "vllm" and not engine.cpu:
        replica = Reservation(_frac(cfg.ray.cpus_per_worker), Fraction(engine.tensor_parallel_size))
        return StageDemand(source, [WorkerSet(cfg.ray.workers, replica, "vLLM replicas (ray.workers x "
                                              "engine.tensor_parallel_size GPUs)")], driver)
    if not cfg.ray.enabled:  # the stage runs in the driver process: the driver reserves what a worker would
        return StageDemand(source, [], driver + Reservation(_frac(cfg.ray.cpus_per_worker),
                                                            _frac(cfg.ray.gpus_per_worker)))
    return StageDemand(source, [_ray_workers(cfg, f"{stage} workers (ray.workers)")], driver)


def sweep_demand(sweep, source: str, driver_cpus: float) -> StageDemand:
    """A sweep runs max_concurrent_trials trials at once: each a trial process (trial_resources) plus its
    stage-2 run's Ray Train workers (the base config's `ray:`)."""
    from finadapt.config import validate
    from finadapt.train.config import SftConfig

    swept = [key for key in sweep.space.keys() if key.split(".")[0] == "ray"]
    if swept:
        raise ConfigError(f"{source}: the search space varies {swept}; a RayJob is sized from one value "
                          f"(set it in base_overrides)")
    base = validate(SftConfig, sweep.base, sweep.cfg.base or "<SftConfig defaults>")
    trials = sweep.cfg.max_concurrent_trials
    trial = Reservation(_frac(sweep.cfg.trial_resources.cpu), _frac(sweep.cfg.trial_resources.gpu))
    per_worker = Reservation(_frac(base.ray.cpus_per_worker), _frac(base.ray.gpus_per_worker))
    driver = Reservation(_frac(driver_cpus))
    if not base.ray.enabled:
        return StageDemand(source, [WorkerSet(trials, trial + per_worker, "trials running stage 2 in-process "
                                              "(max_concurrent_trials)")], driver)
    sets = [WorkerSet(trials, trial, "trial processes (max_concurrent_trials x trial_resources)")]
    placement = getattr(base.ray, "placement_strategy", "PACK")
    if placement == "STRICT_PACK":  # each trial's workers share one pod, trials need not
        sets += [WorkerSet(base.ray.workers, per_worker, f"stage-2 workers of trial {i + 1} (base ray.workers)",
                           placement) for i in range(trials)]
    else:
        sets.append(WorkerSet(trials * base.ray.workers, per_worker, "stage-2 workers (max_concurrent_trials x "
                              "base ray.workers)", placement))
    return StageDemand(source, [s for s in sets if s.reservation.cpus or s.reservation.gpus], driver)


# --------------------------------------------------------------------------- packing into pods
@dataclass(frozen=True)
class PodShape:
    group: str  # the cluster config section, for messages (cpu_workers, gpu_workers)
    cpus: int
    gpus: int = 0


@dataclass
class _Pod:
    cpus: Fraction
    gpus: Fraction
    items: list = field(default_factory=list)

    def take(self, r: Reservation) -> bool:
        if r.cpus <= self.cpus and r.gpus <= self.gpus:
            self.cpus -= r.cpus
            self.gpus -= r.gpus
            return True
        return False


def pods_needed(sets: list[WorkerSet], shape: PodShape, source: str) -> int:
    """Pods of `shape` holding every worker of `sets` (first-fit decreasing; strict placements honoured).
    A worker bigger than a pod is a ConfigError naming the stage config and the cluster config field."""
    pods: list[_Pod] = []
    loose: list[Reservation] = []
    for ws in sets:
        need = ws.reservation if ws.placement != "STRICT_PACK" else Reservation(
            ws.reservation.cpus * ws.count, ws.reservation.gpus * ws.count)
        if ws.count and not need.fits(shape.cpus, shape.gpus):
            whole = " together (STRICT_PACK)" if ws.placement == "STRICT_PACK" else ""
            raise ConfigError(f"{source}: {ws} needs {need}{whole}, more than one {shape.group} pod has "
                              f"({shape.cpus} CPU" + (f", {shape.gpus} GPU" if shape.gpus else "") +
                              f"; cluster config {shape.group}.cpu/gpus)")
        if ws.placement == "STRICT_PACK":
            pods.append(_Pod(Fraction(shape.cpus) - need.cpus, Fraction(shape.gpus) - need.gpus))
        elif ws.placement == "STRICT_SPREAD":
            pods += [_Pod(Fraction(shape.cpus) - need.cpus, Fraction(shape.gpus) - need.gpus)
                     for _ in range(ws.count)]
        else:
            loose += [ws.reservation] * ws.count
    for r in sorted(loose, key=lambda r: (r.gpus, r.cpus), reverse=True):
        if not any(pod.take(r) for pod in pods):
            pods.append(_Pod(Fraction(shape.cpus), Fraction(shape.gpus)))
            pods[-1].take(r)
    return len(pods)


@dataclass
class JobSizing:
    """Worker pods per group and the driver's reservation of one RayJob, with how they were derived."""

    cpu_pods: int = 0
    gpu_pods: int = 0
    driver: Reservation = Reservation(Fraction(1))
    notes: list[str] = field(default_factory=list)


def size_job(demands: list[StageDemand], head_cpus: int, cpu_shape: PodShape, gpu_shape: PodShape) -> JobSizing:
    """Pods per group for the job's stages (a reproduction runs them one after another: the most any
    step needs); the driver joins a group only when the head cannot hold it."""
    sizing = JobSizing(driver=Reservation(Fraction(0)))
    for demand in demands:
        gpu_sets = [ws for ws in demand.workers if ws.reservation.gpus]
        cpu_sets = [ws for ws in demand.workers if not ws.reservation.gpus]
        if demand.driver.gpus:
            gpu_sets.append(WorkerSet(1, demand.driver, "driver (the stage runs in-process)"))
        elif demand.driver.cpus > head_cpus:
            cpu_sets.append(WorkerSet(1, demand.driver, "driver (more CPUs than the head has)"))
        cpu_pods = pods_needed(cpu_sets, cpu_shape, demand.source) if cpu_sets else 0
        gpu_pods = pods_needed(gpu_sets, gpu_shape, demand.source) if gpu_sets else 0
        sizing.cpu_pods, sizing.gpu_pods = max(sizing.cpu_pods, cpu_pods), max(sizing.gpu_pods, gpu_pods)
        sizing.driver = Reservation(max(sizing.driver.cpus, demand.driver.cpus),
                                    max(sizing.driver.gpus, demand.driver.gpus))
        parts = [str(ws) for ws in demand.workers] or ["no Ray workers"]
        sizing.notes.append(f"{demand.source}: {'; '.join(parts)} -> {cpu_pods} {cpu_shape.group} pod(s), "
                            f"{gpu_pods} {gpu_shape.group} pod(s); driver {demand.driver}")
    return sizing


def check_bounds(sizing: JobSizing, job: str, cpu_max: int, gpu_max: int) -> None:
    """A job never asks for more pods than the cluster config lets its group have."""
    for pods, limit, group in ((sizing.cpu_pods, cpu_max, "cpu_workers"), (sizing.gpu_pods, gpu_max, "gpu_workers")):
        if pods > limit:
            raise ConfigError(f"job {job}: needs {pods} {group} pods, more than {group}.max_replicas={limit} of "
                              f"the cluster config ({'; '.join(sizing.notes)})")
