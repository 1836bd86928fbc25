"""KubeRay manifests (issue 14, parts 2 and 3): generated from the typed configs, committed, validated offline.

Shows: every committed manifest equals a fresh render and validates; a RayJob's size follows its stage
config; the four broken cases (misspelled field, wrong type, GPU group without a GPU limit, a secret as a
literal) fail naming the field; the JSON schema and kubernetes-validate each catch what the other cannot;
a broken stage config fails the render naming the file; the CLI renders, checks and validates.
No Kubernetes cluster and no Ray instance are needed.
"""
from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from finadapt.cli import app
from finadapt.cluster import render as render_mod
from finadapt.cluster.config import ClusterConfig, load_cluster_config
from finadapt.cluster.rules import GPU_RESOURCE, is_credential_name
from finadapt.cluster.schema import schema_problems
from finadapt.cluster.sizing import PodShape, Reservation, WorkerSet, pods_needed
from finadapt.cluster.validate import validate_file, validate_manifest
from finadapt.config import ConfigError, validate
from finadapt.stages import build_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster" / "cluster.yaml"
COMMITTED = ROOT / "cluster" / "kuberay"
# job -> (entry script, stage config): the README's `python pipelines/<script> --config <config>` per pipeline
EXPECTED_JOBS = {
    "corpus": ("prepare_corpus.py", "corpus.yaml"), "synth": ("synthesize.py", "synth_gpu.yaml"),
    "pretrain": ("pretrain.py", "pretrain.yaml"), "sft": ("sft.py", "sft.yaml"), "sweep": ("sweep.py", "sweep_gpu.yaml"),
    "evaluate": ("evaluate.py", "evaluate.yaml"), "reproduce": ("reproduce.py", "reproduce_gpu.yaml"),
}
GPU_GROUP = ("spec", "rayClusterSpec", "workerGroupSpecs")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    """A fresh render of the committed cluster config into a temporary directory."""
    out = tmp_path_factory.mktemp("kuberay")
    render_mod.render(CLUSTER_YAML, out)
    return out


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def committed(name: str) -> dict:
    return load(COMMITTED / name)


def _at(doc: dict, *keys):
    for key in keys:
        doc = doc[key]
    return doc


def _group(doc: dict, name: str) -> dict:
    groups = doc["spec"]["workerGroupSpecs"] if doc["kind"] == "RayCluster" else _at(doc, *GPU_GROUP)
    return next(g for g in groups if g["groupName"] == name)


def _messages(problems) -> list[str]:
    return [str(p) for p in problems]


# --------------------------------------------------------------------------- committed == fresh, and valid
def test_committed_manifests_equal_a_fresh_render(fresh):
    rendered = sorted(p.name for p in fresh.glob("*.yaml"))
    assert rendered == sorted(p.name for p in COMMITTED.glob("*.yaml")), "a manifest is missing or stale"
    assert rendered == ["raycluster.yaml"] + sorted(f"rayjob-{job}.yaml" for job in EXPECTED_JOBS)
    differ = [name for name in rendered if (fresh / name).read_bytes() != (COMMITTED / name).read_bytes()]
    assert not differ, f"{differ} differ from a fresh render: .venv/bin/finadapt cluster render"


@pytest.mark.parametrize("name", sorted(p.name for p in COMMITTED.glob("*.yaml")))
def test_every_committed_manifest_validates(name):
    assert validate_file(COMMITTED / name) == []
    assert (COMMITTED / name).read_text().startswith(render_mod.GENERATED_MARK)  # says how to re-render


def test_the_renderer_refuses_to_write_a_manifest_that_does_not_validate(monkeypatch, tmp_path):
    """Render validates before writing: a generator bug never reaches the committed files."""
    real = render_mod.raycluster

    def literal_secret(cfg):
        doc = real(cfg)
        doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"].append(
            {"name": "AWS_SECRET_ACCESS_KEY", "value": "not-a-secret"})
        return doc

    monkeypatch.setattr(render_mod, "raycluster", literal_secret)
    with pytest.raises(render_mod.ManifestError, match=r"raycluster.yaml: spec.headGroupSpec.*AWS_SECRET_ACCESS_KEY"):
        render_mod.render(CLUSTER_YAML, tmp_path)
    assert not list(tmp_path.glob("*.yaml"))


# --------------------------------------------------------------------------- what the manifests hold
@pytest.mark.parametrize("job", sorted(EXPECTED_JOBS))
def test_one_rayjob_per_pipeline_running_the_readme_entrypoint(job):
    script, config = EXPECTED_JOBS[job]
    doc = committed(f"rayjob-{job}.yaml")
    spec = doc["spec"]
    assert spec["entrypoint"] == f"python pipelines/{script} --config pipelines/configs/{config}"
    assert (ROOT / "pipelines" / script).is_file() and (ROOT / "pipelines" / "configs" / config).is_file()
    stage = load_cluster_config(CLUSTER_YAML).jobs[job].stage  # the script runs the job's stage
    source = (ROOT / "pipelines" / script).read_text()
    assert (f'run_entrypoint("{stage}"' in source) if stage != "sweep" else ("finadapt.tune.cli" in source)
    assert spec["submissionMode"] == "K8sJobMode"
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] >= 0
    assert spec["activeDeadlineSeconds"] >= 1 and spec["backoffLimit"] >= 0
    env_vars = yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"]
    assert env_vars["FINADAPT_DATA_DIR"] == load_cluster_config(CLUSTER_YAML).data_dir
    assert "working_dir" not in yaml.safe_load(spec["runtimeEnvYAML"])  # the image holds the code
    assert spec["rayClusterSpec"]["rayVersion"] == "2.60.0"


def test_ray_version_is_the_one_the_project_pins():
    """The images are built from this project: the manifests' rayVersion must be its Ray."""
    assert load_cluster_config(CLUSTER_YAML).ray_version == importlib.metadata.version("ray")


def test_raycluster_has_head_cpu_and_gpu_groups_with_autoscaling_bounds_and_metrics():
    cfg = load_cluster_config(CLUSTER_YAML)
    doc = committed("raycluster.yaml")
    assert doc["spec"]["enableInTreeAutoscaling"] is True
    for section, gpu in ((cfg.cpu_workers, False), (cfg.gpu_workers, True)):
        group = _group(doc, section.name)
        assert (group["minReplicas"], group["replicas"], group["maxReplicas"]) == \
            (section.min_replicas, section.replicas, section.max_replicas)
        container = group["template"]["spec"]["containers"][0]
        assert container["image"] == (cfg.images.gpu if gpu else cfg.images.cpu)
        if gpu:
            assert container["resources"]["limits"][GPU_RESOURCE] == str(cfg.gpu_workers.gpus)
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in \
                group["template"]["spec"]["tolerations"]
        else:
            assert GPU_RESOURCE not in container["resources"]["limits"]
    starts = [doc["spec"]["headGroupSpec"]["rayStartParams"]] + [g["rayStartParams"] for g in doc["spec"]["workerGroupSpecs"]]
    assert all(p["metrics-export-port"] == str(cfg.metrics_export_port) for p in starts)


def _containers(doc: dict):
    spec = doc["spec"].get("rayClusterSpec", doc["spec"])
    templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    templates += [doc["spec"]["submitterPodTemplate"]] if "submitterPodTemplate" in doc["spec"] else []
    return [c for t in templates for c in t["spec"]["containers"]], spec


@pytest.mark.parametrize("name", sorted(p.name for p in COMMITTED.glob("*.yaml")))
def test_credentials_come_from_secrets_and_token_auth_is_on(name):
    cfg = load_cluster_config(CLUSTER_YAML)
    doc = committed(name)
    containers, spec = _containers(doc)
    assert spec["authOptions"] == {"mode": "token", "secretName": cfg.ray_auth.secret}
    for container in containers:
        env = {v["name"]: v for v in container["env"]}
        assert env["RAY_AUTH_MODE"] == {"name": "RAY_AUTH_MODE", "value": "token"}
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": cfg.ray_auth.secret, "key": "auth_token"}
        for var in env.values():
            if is_credential_name(var["name"]):
                assert "value" not in var and "secretKeyRef" in var["valueFrom"], (name, var)
        if container["name"] != "ray-job-submitter":
            assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == cfg.s3.secret


# --------------------------------------------------------------------------- sizing from the stage configs
def test_committed_jobs_are_sized_from_their_stage_configs():
    synth = build_config("synth", ROOT / "pipelines/configs/synth_gpu.yaml")
    doc = committed("rayjob-synth.yaml")
    gpu = _group(doc, "gpu")
    assert gpu["replicas"] == gpu["minReplicas"] == gpu["maxReplicas"] == synth.ray.workers  # one vLLM replica per pod
    assert [g["groupName"] for g in _at(doc, *GPU_GROUP)] == ["gpu"]  # the synth job needs no CPU group
    pretrain = yaml.safe_load((ROOT / "pipelines/configs/reproduce_gpu.yaml").read_text())["pretrain"]["set"]["ray"]
    assert _group(committed("rayjob-reproduce.yaml"), "gpu")["replicas"] == pretrain["workers"]


def _tmp_root(tmp_path: Path) -> Path:
    """A copy of the project's entrypoints, stage configs and search spaces to edit."""
    root = tmp_path / "project"
    for name in ("pipelines", "tune_spaces"):
        shutil.copytree(ROOT / name, root / name)
    return root


def _set_yaml(path: Path, **values) -> None:
    data = yaml.safe_load(path.read_text())
    data.update(values)
    path.write_text(yaml.safe_dump(data))


def test_changing_a_stage_config_changes_its_rayjob(tmp_path):
    """Not hard-coded: more vLLM replicas -> more GPU pods; GPU training workers -> a GPU group; a stage run
    in-process (ray.enabled: false) on a GPU -> the driver reserves the GPU and a GPU pod holds it."""
    root = _tmp_root(tmp_path)
    configs = root / "pipelines" / "configs"
    _set_yaml(configs / "synth_gpu.yaml", ray={"workers": 2})
    _set_yaml(configs / "pretrain.yaml", ray={"workers": 4, "cpus_per_worker": 6, "gpus_per_worker": 1})
    _set_yaml(configs / "evaluate.yaml", ray={"enabled": False, "cpus_per_worker": 2, "gpus_per_worker": 1})
    texts = render_mod.render_manifests(load_cluster_config(CLUSTER_YAML), root=root)
    docs = {name: yaml.safe_load(text) for name, text in texts.items()}
    assert _group(docs["rayjob-synth.yaml"], "gpu")["replicas"] == 2
    pretrain = docs["rayjob-pretrain.yaml"]
    assert [(g["groupName"], g["replicas"]) for g in _at(pretrain, *GPU_GROUP)] == [("gpu", 4)]
    evaluate = docs["rayjob-evaluate.yaml"]
    assert evaluate["spec"]["entrypointNumGpus"] == 1 and evaluate["spec"]["entrypointNumCpus"] == 3
    assert [(g["groupName"], g["replicas"]) for g in _at(evaluate, *GPU_GROUP)] == [("gpu", 1)]
    assert "2 x (1 CPU + 1 GPU) vLLM replicas" in texts["rayjob-synth.yaml"]  # the header says why


def test_a_job_bigger_than_the_cluster_allows_fails_the_render(tmp_path):
    root = _tmp_root(tmp_path)
    _set_yaml(root / "pipelines/configs/synth_gpu.yaml", ray={"workers": 9})
    with pytest.raises(ConfigError, match=r"job synth: needs 9 gpu_workers pods, more than gpu_workers.max_replicas=8"):
        render_mod.render_manifests(load_cluster_config(CLUSTER_YAML), root=root)


def test_a_broken_stage_config_fails_the_render_naming_the_file(tmp_path):
    root = _tmp_root(tmp_path)
    path = root / "pipelines/configs/synth_gpu.yaml"
    path.write_text(path.read_text().replace("ray: {workers: 4}", "ray: {workers: many}"))
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as err:
        render_mod.render(CLUSTER_YAML, out, root=root)
    assert "job synth: pipelines/configs/synth_gpu.yaml: invalid SynthConfig: ray.workers" in str(err.value)
    assert not out.exists()  # nothing written


def test_packing_honours_pod_size_and_strict_placement():
    gpu = PodShape("gpu_workers", cpus=8, gpus=2)
    one = Reservation(cpus=3, gpus=1)
    assert pods_needed([WorkerSet(4, one, "w")], gpu, "x.yaml") == 2  # two per pod (GPU-bound)
    assert pods_needed([WorkerSet(4, one, "w", "STRICT_SPREAD")], gpu, "x.yaml") == 4  # one pod each
    assert pods_needed([WorkerSet(5, Reservation(cpus=1), "w")], PodShape("cpu_workers", 2), "x.yaml") == 3
    with pytest.raises(ConfigError, match=r"x.yaml: 3 x \(3 CPU \+ 1 GPU\) w, STRICT_PACK needs 9 CPU \+ 3 GPU "
                                          r"together \(STRICT_PACK\), more than one gpu_workers pod has"):
        pods_needed([WorkerSet(3, one, "w", "STRICT_PACK")], gpu, "x.yaml")


def test_cluster_config_refuses_unpinned_images_credentials_and_bad_bounds():
    base = yaml.safe_load(CLUSTER_YAML.read_text())
    cases = [({"images": {"cpu": "finadapt:latest"}}, r"images.cpu: .*latest"),
             ({"images": {"gpu": "finadapt"}}, r"images.gpu: .*has no tag"),
             ({"env": {"HF_TOKEN": "x"}}, r"env: .*HF_TOKEN.*look like credentials"),
             ({"gpu_workers": {**base["gpu_workers"], "min_replicas": 9}}, r"gpu_workers: .*min_replicas <= replicas"),
             ({"jobs": {**base["jobs"], "synth": {**base["jobs"]["synth"], "stage": "synthesis"}}},
              r"jobs.synth.stage: .*unknown stage 'synthesis'")]
    for change, pattern in cases:
        with pytest.raises(ConfigError, match=pattern):
            validate(ClusterConfig, {**base, **change}, "cluster.yaml")


# --------------------------------------------------------------------------- the four broken cases
def _misspelled(doc):
    doc["spec"]["shutdownAfterJobFinshes"] = doc["spec"].pop("shutdownAfterJobFinishes")


def _wrong_type(doc):
    doc["spec"]["backoffLimit"] = "three"


def _replicas_as_string(doc):
    _at(doc, *GPU_GROUP)[0]["replicas"] = "4"


def _no_gpu_limit(doc):
    resources = _at(doc, *GPU_GROUP)[0]["template"]["spec"]["containers"][0]["resources"]
    for kind in ("limits", "requests"):
        del resources[kind][GPU_RESOURCE]


def _literal_secret(doc):
    env = doc["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    index = next(i for i, v in enumerate(env) if v["name"] == "AWS_SECRET_ACCESS_KEY")
    env[index] = {"name": "AWS_SECRET_ACCESS_KEY", "value": "wJalrXUtnFEMI"}


def _root_pod(doc):
    doc["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"].pop("securityContext")


BROKEN = {
    "misspelled-field": (_misspelled, "schema", "rayjob-synth.yaml: spec.shutdownAfterJobFinshes: unknown field of "
                         "RayJobSpec (did you mean shutdownAfterJobFinishes?)"),
    "wrong-type": (_wrong_type, "schema", "rayjob-synth.yaml: spec.backoffLimit: 'three' is not of type 'integer'"),
    "replicas-as-string": (_replicas_as_string, "schema", "rayjob-synth.yaml: spec.rayClusterSpec.workerGroupSpecs[0]"
                           ".replicas: '4' is not of type 'integer'"),
    "gpu-group-without-gpu-limit": (_no_gpu_limit, "rule", "rayjob-synth.yaml: spec.rayClusterSpec.workerGroupSpecs[0]"
                                    ".template.spec.containers[0].resources.limits: GPU worker group 'gpu' has no "
                                    "nvidia.com/gpu limit"),
    "pod-may-run-as-root": (_root_pod, "rule", "rayjob-synth.yaml: spec.rayClusterSpec.headGroupSpec.template.spec"
                            ".securityContext.runAsNonRoot: head: pods must set runAsNonRoot: true"),
    "secret-as-literal": (_literal_secret, "rule", "rayjob-synth.yaml: spec.rayClusterSpec.headGroupSpec.template.spec"
                          ".containers[0].env[3].value: AWS_SECRET_ACCESS_KEY is a credential written as a literal value"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_manifest_fails_naming_the_field(case, tmp_path):
    """Each case written to a file and validated as `finadapt cluster validate` does."""
    breaks, check, expected = BROKEN[case]
    doc = committed("rayjob-synth.yaml")
    breaks(doc)
    path = tmp_path / "rayjob-synth.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    problems = validate_file(path)
    assert problems, f"{case} passed validation"
    hits = [p for p in problems if str(p).replace(str(tmp_path) + "/", "").startswith(expected)]
    assert hits and all(p.check == check for p in hits), _messages(problems)


def test_the_secret_rule_also_covers_the_runtime_env_and_refuses_a_config_map():
    doc = committed("rayjob-synth.yaml")
    doc["spec"]["runtimeEnvYAML"] = "env_vars:\n  HF_TOKEN: hf_abc\n"
    env = doc["spec"]["submitterPodTemplate"]["spec"]["containers"][0]["env"]
    env[1] = {"name": "RAY_AUTH_TOKEN", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "t"}}}
    messages = _messages(validate_manifest(doc, "rayjob-synth.yaml"))
    assert any("spec.runtimeEnvYAML: env_vars.HF_TOKEN is a credential" in m for m in messages), messages
    assert any("spec.submitterPodTemplate.spec.containers[0].env[1]: RAY_AUTH_TOKEN is a credential and must come "
               "from valueFrom.secretKeyRef, not configMapKeyRef" in m for m in messages), messages


def test_token_auth_off_is_refused():
    doc = committed("raycluster.yaml")
    del doc["spec"]["authOptions"]
    doc["spec"]["workerGroupSpecs"][1]["template"]["spec"]["containers"][0]["env"][0]["value"] = "disabled"
    messages = _messages(validate_manifest(doc, "raycluster.yaml"))
    assert messages == ["raycluster.yaml: spec.workerGroupSpecs[1].template.spec.containers[0].env: worker group "
                        "'gpu': RAY_AUTH_MODE is 'disabled'; Ray token auth must stay on (token)"]


# --------------------------------------------------------------------------- why three checks
def test_a_pod_template_typo_is_caught_only_by_kubernetes_validate():
    """The project's schema only outlines pod templates; kubernetes-validate (strict) knows every field."""
    doc = committed("rayjob-synth.yaml")
    container = _at(doc, *GPU_GROUP)[0]["template"]["spec"]["containers"][0]
    container["imagePullPolcy"] = container.pop("imagePullPolicy")
    assert schema_problems(doc) == []  # the JSON schema alone would pass it
    problems = validate_manifest(doc, "rayjob-synth.yaml")
    assert [(p.check, p.path) for p in problems] == [
        ("kubernetes", "spec.rayClusterSpec.workerGroupSpecs[0].template.spec.containers[0].imagePullPolcy")]
    assert "did you mean imagePullPolicy?" in problems[0].message


def test_kubernetes_validate_alone_passes_a_broken_rayjob():
    """kubernetes-validate has no schema for ray.io/v1: its CLI path reports nothing and exits 0 even with
    --strict, so the project's JSON schema is what catches the misspelling."""
    import kubernetes_validate

    doc = committed("rayjob-synth.yaml")
    _misspelled(doc)
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(doc, "1.33", strict=True)
    assert kubernetes_validate.validate_resource(doc, "rayjob.yaml", "1.33", strict=True, quiet=True, no_warn=True) == 0
    assert [p.check for p in validate_manifest(doc, "rayjob-synth.yaml")] == ["schema", "schema"]


def test_an_invalid_enum_or_quantity_passes_kubernetes_validate_but_not_the_rules():
    """The offline Kubernetes schema has no enums or quantity formats: `Sometimes` and `16 GB` pass it."""
    doc = committed("rayjob-synth.yaml")
    container = doc["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    container["imagePullPolicy"] = "Sometimes"
    container["resources"]["limits"]["memory"] = "16 GB"
    problems = validate_manifest(doc, "rayjob-synth.yaml")
    head = "spec.rayClusterSpec.headGroupSpec.template.spec.containers[0]"
    assert sorted((p.check, p.path) for p in problems) == [
        ("rule", f"{head}.imagePullPolicy"), ("rule", f"{head}.resources.limits.memory")]


def test_schema_checks_kuberay_rules_shutdown_with_ttl_and_string_start_params():
    doc = committed("rayjob-synth.yaml")
    doc["spec"]["shutdownAfterJobFinishes"] = False
    doc["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    del _at(doc, *GPU_GROUP)[0]["rayStartParams"]["metrics-export-port"]
    assert _messages(validate_manifest(doc, "j.yaml")) == [
        "j.yaml: spec.rayClusterSpec.headGroupSpec.rayStartParams.num-cpus: rayStartParams values must be strings "
        "(quote the number)",
        "j.yaml: spec.rayClusterSpec.workerGroupSpecs[0].rayStartParams.metrics-export-port: every Ray node exports "
        "its metrics on a fixed port: metrics-export-port is missing",
        "j.yaml: spec.shutdownAfterJobFinishes: ttlSecondsAfterFinished takes effect only with "
        "shutdownAfterJobFinishes: true"]


# --------------------------------------------------------------------------- the CLI
def test_cli_render_validate_and_check(tmp_path):
    runner = CliRunner()
    out = tmp_path / "kuberay"
    (out).mkdir()
    (out / "rayjob-gone.yaml").write_text(render_mod.GENERATED_MARK + " from an old config\n")  # a removed job
    (out / "notes.yaml").write_text("mine: true\n")  # not generated: kept
    result = runner.invoke(app, ["cluster", "render", "-c", str(CLUSTER_YAML), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "removed" in result.output and not (out / "rayjob-gone.yaml").exists() and (out / "notes.yaml").exists()
    assert all((out / p.name).read_bytes() == p.read_bytes() for p in COMMITTED.glob("*.yaml"))
    (out / "notes.yaml").unlink()

    result = runner.invoke(app, ["cluster", "render", "-c", str(CLUSTER_YAML), "-o", str(out), "--check"])
    assert result.exit_code == 0, result.output
    manifest = out / "rayjob-sft.yaml"
    manifest.write_text(manifest.read_text().replace("backoffLimit: 3", "backoffLimit: 5"))  # hand-edited
    result = runner.invoke(app, ["cluster", "render", "-c", str(CLUSTER_YAML), "-o", str(out), "--check"])
    assert result.exit_code == 1 and f"{manifest}: differs from a fresh render" in result.stderr

    result = runner.invoke(app, ["cluster", "validate", *map(str, sorted(COMMITTED.glob("*.yaml")))])
    assert result.exit_code == 0 and "8 manifest(s) valid" in result.output, result.output
    broken = committed("rayjob-synth.yaml")
    _no_gpu_limit(broken)
    _wrong_type(broken)
    path = tmp_path / "rayjob-synth.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = runner.invoke(app, ["cluster", "validate", str(path), str(COMMITTED / "raycluster.yaml")])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert f"{path}: spec.backoffLimit: 'three' is not of type 'integer'" in lines
    assert any(line.startswith(f"{path}: spec.rayClusterSpec.workerGroupSpecs[0].template.spec.containers[0]"
                               ".resources.limits: GPU worker group 'gpu' has no nvidia.com/gpu limit") for line in lines)
    assert lines[-1] == "2 problem(s) in 1 of 2 manifest(s)"


def test_cli_render_reports_a_broken_cluster_config_in_one_line(tmp_path):
    config = tmp_path / "cluster.yaml"
    config.write_text(CLUSTER_YAML.read_text().replace("cpu: finadapt:0.7.0-cpu", "cpu: finadapt:latest"))
    result = CliRunner().invoke(app, ["cluster", "render", "-c", str(config), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{config}: invalid ClusterConfig: images.cpu" in result.stderr and "latest" in result.stderr
