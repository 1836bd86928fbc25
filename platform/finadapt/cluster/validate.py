"""Offline validation of a KubeRay manifest: three checks, because no single one is enough.

1. schema: the project's JSON schema of the `ray.io/v1` RayCluster / RayJob fields (finadapt.cluster.schema).
2. kubernetes: every pod template (head, each worker group, the job's submitter), wrapped as a core
   `PodTemplate`, against the Kubernetes schema of kubernetes-validate (strict: unknown keys fail). The
   project's schema only outlines pod templates; kubernetes-validate alone passes any custom resource.
3. rule: the project's rules (finadapt.cluster.rules): GPU groups ask for GPUs, credentials come from
   Secrets, token auth is on, values the offline schema lacks enums for.

Every problem names the file and the field path, e.g. `rayjob-synth.yaml: spec.rayClusterSpec.
workerGroupSpecs[0].template.spec.containers[0].resources.limits: GPU worker group 'gpu' has no ...`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from finadapt.cluster.config import DEFAULT_KUBERNETES_VERSION
from finadapt.cluster.rules import dotted, pod_templates, rule_problems
from finadapt.cluster.schema import explain_error, schema_problems

Check = Literal["yaml", "schema", "kubernetes", "rule"]


@dataclass(frozen=True)
class Problem:
    file: str
    path: str
    message: str
    check: Check

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.message}"


def pod_template_problems(doc: dict, kubernetes_version: str = DEFAULT_KUBERNETES_VERSION) -> list[tuple[tuple, str]]:
    """Each pod template as a core v1 PodTemplate through kubernetes-validate (its first error per template)."""
    import kubernetes_validate

    out = []
    for path, role, template in pod_templates(doc):
        wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "finadapt-check"},
                   "template": template}
        try:
            kubernetes_validate.validate(wrapped, kubernetes_version, strict=True)
        except kubernetes_validate.ValidationError as err:
            schema_name = f"the Kubernetes {err.version} PodTemplate schema"
            for inner, message in explain_error(err, schema_name):  # inner starts at the wrapper's "template"
                out.append(((*path, *inner[1:]), f"{message} ({role}; checked by kubernetes-validate)"))
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.utils.VersionNotSupportedError) as err:
            out.append((path, f"cannot check the {role} pod template: {err.message}"))
    return out


def validate_manifest(doc: object, source: str = "<manifest>",
                      kubernetes_version: str = DEFAULT_KUBERNETES_VERSION) -> list[Problem]:
    """All problems of one manifest (empty: it passes all three checks)."""
    if not isinstance(doc, dict):
        return [Problem(source, "<root>", f"a manifest is a mapping, got {type(doc).__name__}", "schema")]
    found: list[tuple[tuple, str, Check]] = [(p, m, "schema") for p, m in schema_problems(doc)]
    found += [(p, m, "kubernetes") for p, m in pod_template_problems(doc, kubernetes_version)]
    found += [(p, m, "rule") for p, m in rule_problems(doc)]
    return [Problem(source, dotted(p), m, check) for p, m, check in found]


def validate_text(text: str, source: str, kubernetes_version: str = DEFAULT_KUBERNETES_VERSION) -> list[Problem]:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        return [Problem(source, "<yaml>", f"not valid YAML: {' '.join(str(err).split())}", "yaml")]
    if not docs:
        return [Problem(source, "<yaml>", "no manifest in the file", "yaml")]
    return [p for doc in docs for p in validate_manifest(doc, source, kubernetes_version)]


def validate_file(path: str | Path, kubernetes_version: str = DEFAULT_KUBERNETES_VERSION) -> list[Problem]:
    file = Path(path)
    if not file.is_file():
        return [Problem(str(path), "<file>", "does not exist", "yaml")]
    return validate_text(file.read_text(), str(path), kubernetes_version)
