"""KubeRay manifests in clusters/: strict CRD-schema validation plus the checks a schema cannot express."""

import copy
import importlib.util
import os
import shlex
from pathlib import Path

import pytest
import yaml

from raytrain_vireid.errors import run_cli

REPO = Path(__file__).resolve().parents[1]
CLUSTERS = REPO / "clusters"
_spec = importlib.util.spec_from_file_location("clusters_validate", CLUSTERS / "validate.py")
validate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(validate)

RAY_MANIFESTS = ["raycluster.yaml", "rayjob-train.yaml", "rayjob-tune.yaml"]


@pytest.fixture(scope="module")
def crds_dir():
    found = validate.find_crds_dir()
    if found is None:
        where = f"{REPO.parent / 'shared' / 'kuberay-crds'} or $KUBERAY_CRDS_DIR"
        if os.environ.get("CI") == "true":
            pytest.fail(f"KubeRay CRDs not found in CI ({where}); the manifest validation must not be skipped")
        pytest.skip(f"KubeRay CRDs not found ({where})")
    return found


@pytest.fixture(scope="module")
def ray_version():
    return validate.pinned_ray_version()


def _load(name):
    return yaml.safe_load((CLUSTERS / name).read_text())


def _cluster(doc):
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


def test_pinned_ray_version_is_read_from_setup_cfg(tmp_path):
    cfg = tmp_path / "setup.cfg"
    cfg.write_text("[options]\ninstall_requires =\n    torch==2.0\n    ray[train,tune]==2.60.0\n")
    assert validate.pinned_ray_version(cfg) == "2.60.0"


@pytest.mark.parametrize("name", RAY_MANIFESTS)
def test_manifest_passes_strict_schema_and_semantic_checks(name, crds_dir, ray_version):
    assert validate.validate_file(CLUSTERS / name, crds_dir, ray_version) == []


def test_every_ray_manifest_in_clusters_is_covered():
    ray_files = {p.name for p in CLUSTERS.glob("*.yaml") if "ray.io/" in p.read_text()}
    assert ray_files == set(RAY_MANIFESTS)


def test_strictify_closes_listed_objects_only():
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "object", "properties": {"b": {"type": "string"}}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {"c": {}}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    strict = validate.strictify(schema)
    assert strict["additionalProperties"] is False and strict["properties"]["a"]["additionalProperties"] is False
    assert "additionalProperties" not in strict["properties"]["free"]
    assert strict["properties"]["labels"]["additionalProperties"] == {"type": "string"}
    assert "additionalProperties" not in schema  # the input is not modified


def test_broken_manifest_fails_naming_each_field(crds_dir, ray_version):
    doc = _load("rayjob-train.yaml")
    group = doc["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    group["replica"] = 2  # unknown field (typo of replicas)
    group["minReplicas"] = "two"  # wrong type
    group["template"]["spec"]["containers"][0]["image"] = "rayproject/ray:2.59.0-py311-gpu"  # mismatched tag
    del doc["spec"]["shutdownAfterJobFinishes"]  # ttl without shutdown
    messages = validate.validate_manifest(doc, crds_dir, ray_version)
    worker = "spec.rayClusterSpec.workerGroupSpecs[0]"
    assert f"{worker}.replica: unknown field" in messages
    assert f"{worker}.minReplicas: 'two' is not of type 'integer'" in messages
    image = f"{worker}.template.spec.containers[0].image"
    assert any(m.startswith(f"{image}: Ray 2.59.0 in the image tag") for m in messages)
    ttl = "spec.ttlSecondsAfterFinished: set without spec.shutdownAfterJobFinishes"
    assert any(m.startswith(ttl) for m in messages)
    assert len(messages) == 4, messages


def test_too_few_gpus_for_num_workers_and_wrong_ray_version(crds_dir, ray_version):
    doc = _load("rayjob-train.yaml")
    cluster = doc["spec"]["rayClusterSpec"]
    cluster["workerGroupSpecs"][0]["maxReplicas"] = 1  # 1 pod x 4 GPUs < --num-workers 8
    cluster["rayVersion"] = "2.59.0"
    cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] = "rayproject/ray:latest"
    doc["spec"]["runtimeEnvYAML"] = "pip: [ray==2.59.0]\n"
    messages = validate.validate_manifest(doc, crds_dir, ray_version)
    gpus = "spec.entrypoint: --num-workers 8 with --use-gpu needs 8 GPUs"
    assert any(m.startswith(gpus) and "at most 4" in m for m in messages)
    assert "spec.rayClusterSpec.rayVersion: '2.59.0' differs from the Ray pinned in setup.cfg (2.60.0)" in messages
    head_image = "spec.rayClusterSpec.headGroupSpec.template.spec.containers[0].image"
    assert any(m.startswith(f"{head_image}: tag 'latest'") for m in messages)
    assert "spec.runtimeEnvYAML: pip pins ray 2.59.0, setup.cfg pins 2.60.0" in messages


def test_cli_reports_problems_and_exit_codes(tmp_path, crds_dir, capsys):
    assert run_cli(validate.main, [str(CLUSTERS / "raycluster.yaml"), "--crds", str(crds_dir)]) == 0
    doc = _load("raycluster.yaml")
    doc["spec"]["headGroupSpec"]["serviceTipe"] = "ClusterIP"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    assert run_cli(validate.main, [str(bad), "--crds", str(crds_dir)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}: RayCluster/raytrain-vireid: spec.headGroupSpec.serviceTipe: unknown field" in out
    assert run_cli(validate.main, [str(bad), "--crds", str(tmp_path)]) == 2
    assert "error: --crds: KubeRay CRDs not found" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# What this project needs from its manifests


@pytest.mark.parametrize("name", RAY_MANIFESTS)
def test_cluster_layout(name):
    doc = _load(name)
    cluster = _cluster(doc)
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert cluster["authOptions"]["mode"] == "token"
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    gpu_pod = groups["gpu"]["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu_pod["tolerations"]
    assert groups["gpu"]["minReplicas"] <= groups["gpu"]["maxReplicas"]
    actor = groups["memory-actor"]
    assert "memory_actor" in actor["rayStartParams"]["resources"]
    assert all("nvidia.com/gpu" not in c["resources"]["limits"] for c in actor["template"]["spec"]["containers"])
    pods = [cluster["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in groups.values()]
    claims = {c["metadata"]["name"] for c in yaml.safe_load_all((CLUSTERS / "storage.yaml").read_text())}
    for pod in pods:
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for c in pod["containers"] for m in c["volumeMounts"]}
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["sizeLimit"]
        assert volumes[mounts["/mnt/runs"]]["persistentVolumeClaim"]["claimName"] in claims
        used = {v["persistentVolumeClaim"]["claimName"] for v in volumes.values() if "persistentVolumeClaim" in v}
        assert used <= claims


@pytest.mark.parametrize(
    "name, module", [("rayjob-train.yaml", "raytrain_vireid.run"), ("rayjob-tune.yaml", "raytrain_vireid.tune")]
)
def test_jobs_run_the_project_commands(name, module):
    spec = _load(name)["spec"]
    args = shlex.split(spec["entrypoint"])
    assert args[:3] == ["python", "-m", module]
    assert args[args.index("--storage-path") + 1] == "/mnt/runs" and "--use-gpu" in args
    assert args[args.index("--address") + 1] == "auto"
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    if module.endswith("tune"):
        assert (REPO / args[args.index("--space") + 1]).is_file()
        assert _cluster(_load(name))["enableInTreeAutoscaling"] is True


def test_validation_does_not_modify_the_input(crds_dir, ray_version):
    doc = _load("rayjob-tune.yaml")
    before = copy.deepcopy(doc)
    validate.validate_manifest(doc, crds_dir, ray_version)
    assert doc == before


def test_sections_of_the_wrong_type_are_reported_not_crashed_on(crds_dir, ray_version):
    doc = _load("raycluster.yaml")
    doc["spec"]["headGroupSpec"] = "head"
    messages = validate.validate_manifest(doc, crds_dir, ray_version)
    assert "spec.headGroupSpec: 'head' is not of type 'object'" in messages
    assert messages[-1].endswith("checks skipped until the schema problems above are fixed")
