"""The project's manifest rules that neither schema can express.

JSON schema checks a field's shape, not its meaning across fields: that a worker group whose name, image,
toleration or label says GPU asks for `nvidia.com/gpu`; that an env var named like a credential comes
from a Secret; that Ray token auth is on in every Ray container. The offline Kubernetes schema of
kubernetes-validate also has no enums and no quantity formats (`imagePullPolicy: Sometimes`, `memory:
16 GB` pass it), so the values the project sets are checked here too.

Every rule returns (path, message) pairs; the path is a tuple of keys and list indexes into the manifest.
"""
from __future__ import annotations

import re
from typing import Any, Iterator

import yaml

FieldPath = tuple  # keys (str) and list indexes (int) into a manifest
GPU_RESOURCE = "nvidia.com/gpu"
GPU_LABEL = "finadapt.io/gpu"  # set on the pod template of every GPU group the project renders
AUTH_TOKEN_KEY = "auth_token"  # the Secret key KubeRay's authOptions.secretName expects

_CREDENTIAL = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET|CREDENTIAL|API_?KEY|PRIVATE_KEY|^AWS_ACCESS_KEY_ID$")
_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i|[numkMGTPE])?$")
_PULL_POLICIES = ("Always", "IfNotPresent", "Never")
_RESTART_POLICIES = ("Always", "OnFailure", "Never")
_TOLERATION_OPERATORS = ("Exists", "Equal")
_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def is_credential_name(name: str) -> bool:
    """AWS_SECRET_ACCESS_KEY, AWS_ACCESS_KEY_ID, *TOKEN*, *PASSWORD*, *SECRET*, *API_KEY*, ..."""
    return bool(_CREDENTIAL.search(name.upper()))


def is_quantity(value: object) -> bool:
    return not isinstance(value, bool) and bool(_QUANTITY.match(str(value)))


def image_problem(image: str) -> str | None:
    """Why an image reference is not pinned (None: a tag other than latest, or a digest)."""
    if "@sha256:" in image:
        return None
    name = image.rsplit("/", 1)[-1]
    if ":" not in name:
        return f"image {image!r} has no tag: pin one (never latest)"
    if name.rsplit(":", 1)[1] == "latest":
        return f"image {image!r} uses the latest tag: pin a version"
    return None


def dotted(path: FieldPath) -> str:
    """("spec", "workerGroupSpecs", 0, "template") -> spec.workerGroupSpecs[0].template"""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def _get(node: Any, *keys) -> Any:
    for key in keys:
        if isinstance(key, int):
            node = node[key] if isinstance(node, list) and 0 <= key < len(node) else None
        else:
            node = node.get(key) if isinstance(node, dict) else None
    return node


def cluster_spec_path(doc: dict) -> FieldPath | None:
    """Where the RayClusterSpec sits: spec (RayCluster) or spec.rayClusterSpec (RayJob)."""
    kind = doc.get("kind") if isinstance(doc, dict) else None
    return {"RayCluster": ("spec",), "RayJob": ("spec", "rayClusterSpec")}.get(kind)


def worker_groups(doc: dict) -> Iterator[tuple[FieldPath, dict]]:
    base = cluster_spec_path(doc)
    groups = _get(doc, *base, "workerGroupSpecs") if base else None
    for i, group in enumerate(groups if isinstance(groups, list) else []):
        if isinstance(group, dict):
            yield (*base, "workerGroupSpecs", i), group


def pod_templates(doc: dict) -> Iterator[tuple[FieldPath, str, dict]]:
    """(path, role, template) of every pod template: head, each worker group, the job's submitter."""
    base = cluster_spec_path(doc)
    if base is None:
        return
    head = _get(doc, *base, "headGroupSpec", "template")
    if isinstance(head, dict):
        yield (*base, "headGroupSpec", "template"), "head", head
    for path, group in worker_groups(doc):
        if isinstance(group.get("template"), dict):
            yield (*path, "template"), f"worker group {group.get('groupName')!r}", group["template"]
    submitter = _get(doc, "spec", "submitterPodTemplate") if doc.get("kind") == "RayJob" else None
    if isinstance(submitter, dict):
        yield ("spec", "submitterPodTemplate"), "submitter", submitter


def _containers(template: dict, path: FieldPath) -> Iterator[tuple[FieldPath, dict]]:
    for field in ("initContainers", "containers"):
        items = _get(template, "spec", field)
        for i, container in enumerate(items if isinstance(items, list) else []):
            if isinstance(container, dict):
                yield (*path, "spec", field, i), container


# --------------------------------------------------------------------------- credentials
def env_problems(env: Any, path: FieldPath) -> list[tuple[FieldPath, str]]:
    """A credential-named env var must be `valueFrom.secretKeyRef`, never `value` (nor a ConfigMap)."""
    out = []
    for i, var in enumerate(env if isinstance(env, list) else []):
        name = var.get("name") if isinstance(var, dict) else None
        if not isinstance(name, str) or not is_credential_name(name):
            continue
        where = (*path, i)
        if "value" in var:
            out.append(((*where, "value"), f"{name} is a credential written as a literal value; give it with "
                                           f"valueFrom.secretKeyRef (a Kubernetes Secret)"))
        elif not isinstance(_get(var, "valueFrom", "secretKeyRef"), dict):
            source = next(iter(var.get("valueFrom") or {}), "nothing")
            out.append((where, f"{name} is a credential and must come from valueFrom.secretKeyRef, not {source}"))
    return out


def runtime_env_problems(doc: dict) -> list[tuple[FieldPath, str]]:
    """runtimeEnvYAML is a YAML mapping; its env_vars are strings and never credentials (a runtime env
    cannot reference a Secret, so a credential there is always a literal)."""
    text = _get(doc, "spec", "runtimeEnvYAML")
    if doc.get("kind") != "RayJob" or not isinstance(text, str):
        return []
    path = ("spec", "runtimeEnvYAML")
    try:
        runtime_env = yaml.safe_load(text)
    except yaml.YAMLError as err:
        return [(path, f"not valid YAML: {' '.join(str(err).split())}")]
    if runtime_env is None:
        return []
    if not isinstance(runtime_env, dict):
        return [(path, f"must be a YAML mapping (env_vars, ...), got {type(runtime_env).__name__}")]
    env_vars = runtime_env.get("env_vars", {})
    if not isinstance(env_vars, dict):
        return [(path, "env_vars must be a mapping of names to strings")]
    out = []
    for name, value in env_vars.items():
        if is_credential_name(str(name)):
            out.append((path, f"env_vars.{name} is a credential written into the runtime env; give it to the "
                              f"pods with valueFrom.secretKeyRef instead"))
        elif not isinstance(value, str):
            out.append((path, f"env_vars.{name}: Ray needs a string, got {type(value).__name__} {value!r}"))
    return out


# --------------------------------------------------------------------------- GPU groups
def gpu_reason(group: dict) -> str | None:
    """Why a worker group is a GPU group (its name, image, toleration or the project's label); None if not."""
    template = group.get("template") if isinstance(group.get("template"), dict) else {}
    if "gpu" in str(group.get("groupName", "")).lower():
        return "its name says GPU"
    if str(_get(template, "metadata", "labels", GPU_LABEL)).lower() == "true":
        return f"it is labelled {GPU_LABEL}"
    images = [str(c.get("image", "")) for _, c in _containers(template, ())]
    if any(re.search(r"gpu|cuda", image, re.I) for image in images):
        return "its image says GPU"
    tolerations = _get(template, "spec", "tolerations")
    if any(isinstance(t, dict) and t.get("key") == GPU_RESOURCE for t in tolerations or []):
        return f"it tolerates the {GPU_RESOURCE} taint"
    return None


def gpu_problems(doc: dict) -> list[tuple[FieldPath, str]]:
    """A GPU group's Ray container (containers[0]) has a positive whole nvidia.com/gpu limit, and a
    request, if given, equal to it (Kubernetes refuses extended resources that overcommit)."""
    out = []
    for path, group in worker_groups(doc):
        reason = gpu_reason(group)
        if reason is None:
            continue
        name = group.get("groupName")
        where = (*path, "template", "spec", "containers", 0, "resources")
        resources = _get(group, "template", "spec", "containers", 0, "resources") or {}
        limit = _get(resources, "limits", GPU_RESOURCE)
        if limit is None:
            out.append(((*where, "limits"), f"GPU worker group {name!r} has no {GPU_RESOURCE} limit ({reason})"))
            continue
        if isinstance(limit, bool) or not re.fullmatch(r"[1-9]\d*", str(limit)):
            out.append(((*where, "limits", GPU_RESOURCE), f"GPU worker group {name!r}: {GPU_RESOURCE} must be a "
                                                           f"whole number >= 1, got {limit!r}"))
        request = _get(resources, "requests", GPU_RESOURCE)
        if request is not None and str(request) != str(limit):
            out.append(((*where, "requests", GPU_RESOURCE), f"GPU worker group {name!r}: request {request!r} must "
                                                             f"equal the limit {limit!r}"))
    return out


# --------------------------------------------------------------------------- Ray token auth
def auth_problems(doc: dict) -> list[tuple[FieldPath, str]]:
    """Token auth on in every Ray container (head, workers): RAY_AUTH_MODE=token set here, or left to
    KubeRay's authOptions.mode: token (KubeRay never overrides an env var the template sets)."""
    base = cluster_spec_path(doc)
    if base is None:
        return []
    mode = _get(doc, *base, "authOptions", "mode")
    out = []
    if mode is not None and mode != "token":
        out.append(((*base, "authOptions", "mode"), f"Ray token auth must stay on: got {mode!r}"))
    for path, role, template in pod_templates(doc):
        if role == "submitter":
            continue
        env = _get(template, "spec", "containers", 0, "env")
        env = env if isinstance(env, list) else []
        values = {v.get("name"): v for v in env if isinstance(v, dict)}
        where = (*path, "spec", "containers", 0, "env")
        set_mode = values.get("RAY_AUTH_MODE", {}).get("value")
        if "RAY_AUTH_MODE" in values and set_mode != "token":
            out.append((where, f"{role}: RAY_AUTH_MODE is {set_mode!r}; Ray token auth must stay on (token)"))
        elif "RAY_AUTH_MODE" not in values and mode != "token":
            out.append((where, f"{role}: Ray token auth is off (no RAY_AUTH_MODE=token and no authOptions.mode: "
                               f"token)"))
        elif "RAY_AUTH_MODE" in values and mode != "token" and "RAY_AUTH_TOKEN" not in values:
            out.append((where, f"{role}: RAY_AUTH_MODE=token without RAY_AUTH_TOKEN (from a Secret)"))
    return out


def non_root_problems(doc: dict) -> list[tuple[FieldPath, str]]:
    """Every pod runs as a non-root uid (the image's user), which Kubernetes then enforces."""
    out = []
    for path, role, template in pod_templates(doc):
        context = _get(template, "spec", "securityContext")
        context = context if isinstance(context, dict) else {}
        user = context.get("runAsUser")
        if context.get("runAsNonRoot") is not True:
            out.append(((*path, "spec", "securityContext", "runAsNonRoot"), f"{role}: pods must set runAsNonRoot: true"))
        elif user is not None and (isinstance(user, bool) or not isinstance(user, int) or user < 1):
            out.append(((*path, "spec", "securityContext", "runAsUser"), f"{role}: runAsUser {user!r} is not a non-root uid"))
    return out


# --------------------------------------------------------------------------- Kubernetes values
def value_problems(doc: dict) -> list[tuple[FieldPath, str]]:
    """Enums and quantities the offline Kubernetes schema does not check, pinned images, credentials."""
    out = []
    for path, _, template in pod_templates(doc):
        restart = _get(template, "spec", "restartPolicy")
        if restart is not None and restart not in _RESTART_POLICIES:
            out.append(((*path, "spec", "restartPolicy"), f"{restart!r} is not one of {list(_RESTART_POLICIES)}"))
        tolerations = _get(template, "spec", "tolerations")
        for i, tol in enumerate(tolerations if isinstance(tolerations, list) else []):
            where = (*path, "spec", "tolerations", i)
            if isinstance(tol, dict) and tol.get("operator", "Equal") not in _TOLERATION_OPERATORS:
                out.append(((*where, "operator"), f"{tol['operator']!r} is not one of {list(_TOLERATION_OPERATORS)}"))
            if isinstance(tol, dict) and tol.get("effect", "NoSchedule") not in (*_TAINT_EFFECTS, ""):
                out.append(((*where, "effect"), f"{tol['effect']!r} is not one of {list(_TAINT_EFFECTS)}"))
        for cpath, container in _containers(template, path):
            out += _container_problems(container, cpath)
    base = cluster_spec_path(doc)
    if base:
        out += env_problems(_get(doc, *base, "autoscalerOptions", "env"), (*base, "autoscalerOptions", "env"))
    return out


def _container_problems(container: dict, path: FieldPath) -> list[tuple[FieldPath, str]]:
    out = env_problems(container.get("env"), (*path, "env"))
    image = container.get("image")
    if isinstance(image, str) and image_problem(image):
        out.append(((*path, "image"), image_problem(image)))
    policy = container.get("imagePullPolicy")
    if policy is not None and policy not in _PULL_POLICIES:
        out.append(((*path, "imagePullPolicy"), f"{policy!r} is not one of {list(_PULL_POLICIES)}"))
    for kind in ("limits", "requests"):
        values = _get(container, "resources", kind)
        for resource, value in (values.items() if isinstance(values, dict) else []):
            if not is_quantity(value):
                out.append(((*path, "resources", kind, resource), f"{value!r} is not a Kubernetes quantity "
                                                                   f"(e.g. 8, 500m, 16Gi)"))
    return out


def replica_problems(doc: dict) -> list[tuple[FieldPath, str]]:
    out = []
    for path, group in worker_groups(doc):
        low, want, high = group.get("minReplicas", 0), group.get("replicas", 0), group.get("maxReplicas")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (low, want) + ((high,) if high else ())):
            continue  # a wrong type is the JSON schema's finding
        if low > want or (high is not None and want > high):
            out.append((path, f"worker group {group.get('groupName')!r}: need minReplicas <= replicas <= "
                              f"maxReplicas, got {low} <= {want} <= {high}"))
    return out


RULES = (gpu_problems, auth_problems, non_root_problems, value_problems, runtime_env_problems, replica_problems)


def rule_problems(doc: dict) -> list[tuple[FieldPath, str]]:
    """Every project rule's findings on one manifest."""
    return [problem for rule in RULES for problem in rule(doc)]
