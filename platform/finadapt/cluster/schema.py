"""The project's JSON schema of the KubeRay `ray.io/v1` fields it uses (resources/kuberay_v1.schema.json).

Why our own schema: kubernetes-validate knows only core kinds and passes an unknown custom resource (exit 0
even with --strict), so without this a misspelled `shutdownAfterJobFinshes` or `backoffLimit: "three"`
would reach the cluster. The schema was written from the KubeRay API reference, not copied from the CRDs.
Errors are reworded to name the field: an unknown key is reported at its own path with the closest known
name, and a schema node may carry `x-messages` (keyword -> text) for a clearer message.
"""
from __future__ import annotations

import difflib
import json
import re
from functools import lru_cache
from importlib import resources

from finadapt.cluster.rules import FieldPath

SCHEMA_RESOURCE = "resources/kuberay_v1.schema.json"


@lru_cache(maxsize=1)
def kuberay_schema() -> dict:
    return json.loads(resources.files("finadapt").joinpath(SCHEMA_RESOURCE).read_text())


@lru_cache(maxsize=1)
def _validator():
    from jsonschema import Draft202012Validator

    schema = kuberay_schema()
    Draft202012Validator.check_schema(schema)  # a broken schema file fails loudly, not as a pass
    return Draft202012Validator(schema)


def explain_error(error, schema_name: str | None = None) -> list[tuple[FieldPath, str]]:
    """One jsonschema error -> (path, message) pairs naming the offending field (`schema_name`: what an
    unknown field is unknown to, when the schema node has no title)."""
    path = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    custom = schema.get("x-messages", {}).get(error.validator)
    title = schema.get("title") or schema_name or "this object"
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = list(schema.get("properties", {}))
        out = []
        for key in sorted(k for k in error.instance if k not in known):
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.7)
            hint = (f" (did you mean {close[0]}?)" if close else
                    f" (known: {', '.join(known)})" if len(known) <= 12 else "")
            out.append(((*path, key), f"unknown field of {title}{hint}"))
        return out
    if error.validator == "required":
        match = re.match(r"^'(.+)' is a required property$", error.message)
        name = match.group(1) if match else str(error.validator_value)
        return [((*path, name), custom or f"missing: {title} needs it")]
    return [(path, custom or error.message)]


def schema_problems(doc: object) -> list[tuple[FieldPath, str]]:
    """Every violation of the ray.io/v1 schema in one manifest, in path order."""
    problems = [p for error in _validator().iter_errors(doc) for p in explain_error(error)]
    return sorted(set(problems), key=lambda p: ([str(k) for k in p[0]], p[1]))
