"""Validate KubeRay manifests offline before ``kubectl apply``.

Two layers:

1. the KubeRay CRD's ``v1`` ``openAPIV3Schema`` (from ``../shared/kuberay-crds/`` beside the repository,
   or ``$KUBERAY_CRDS_DIR``), made strict the way ``kubeconform -strict`` is: every object schema that
   lists ``properties`` and does not set ``x-kubernetes-preserve-unknown-fields`` rejects unknown fields;
2. checks a schema cannot express: the Ray version of ``spec.rayVersion`` and of ``rayproject/ray``
   image tags equals the Ray pinned in ``setup.cfg``; a RayJob entrypoint's ``--num-workers`` fits the
   GPUs of the worker groups at ``maxReplicas``; ``ttlSecondsAfterFinished`` only together with
   ``shutdownAfterJobFinishes: true``; ``runtimeEnvYAML`` is a YAML mapping.

Every message names the field path, e.g. ``spec.rayClusterSpec.workerGroupSpecs[0].replica: unknown field``.

Usage: ``python clusters/validate.py [--crds DIR] [--setup-cfg FILE] clusters/*.yaml`` (exit 0 when all
manifests pass, 1 when a manifest has problems, 2 on bad input). Needs ``jsonschema`` (``pip install
-e '.[test]'``).
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import yaml

from raytrain_vireid.errors import UserError, run_cli

REPO_ROOT = Path(__file__).resolve().parents[1]
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}
API_VERSION = "ray.io/v1"
GPU = "nvidia.com/gpu"
RAY_IMAGE = re.compile(r"^(?:[^/]+/)*rayproject/ray(?:-ml|-llm)?(?::(?P<tag>[^@]+))?(?:@.*)?$")
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def find_crds_dir() -> Path | None:
    """``<repo>/../shared/kuberay-crds`` if it holds the CRDs, else ``$KUBERAY_CRDS_DIR``, else None."""
    for candidate in (REPO_ROOT.parent / "shared" / "kuberay-crds", os.environ.get("KUBERAY_CRDS_DIR")):
        if candidate and all((Path(candidate) / name).is_file() for name in CRD_FILES.values()):
            return Path(candidate)
    return None


def pinned_ray_version(setup_cfg: str | Path = REPO_ROOT / "setup.cfg") -> str:
    """The X of ``ray[...]==X`` in ``setup.cfg``'s install_requires."""
    try:
        text = Path(setup_cfg).read_text()
    except OSError as exc:
        raise UserError(f"{setup_cfg}: cannot read ({exc.strerror})") from None
    match = re.search(r"^\s*ray(?:\[[^\]]*\])?\s*==\s*([0-9][\w.]*)", text, flags=re.MULTILINE)
    if not match:
        raise UserError(f"{setup_cfg}: no pinned ray==X requirement found")
    return match.group(1)


# --------------------------------------------------------------------------------------------
# Schema layer


def strictify(schema: Any) -> Any:
    """A copy of ``schema`` where every object schema with ``properties`` and without
    ``x-kubernetes-preserve-unknown-fields`` gets ``additionalProperties: false``."""
    if isinstance(schema, list):
        return [strictify(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strictify(value) for key, value in schema.items()}
    open_ended = out.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in out
    if "properties" in out and not open_ended:
        out["additionalProperties"] = False
    return out


@functools.lru_cache(maxsize=None)
def strict_schema(crds_dir: str, kind: str) -> dict[str, Any]:
    """The strict ``v1`` schema of ``kind`` (loaded once per process: the CRD files are ~1 MB each)."""
    path = Path(crds_dir) / CRD_FILES[kind]
    try:
        crd = yaml.load(path.read_text(), Loader=LOADER)
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: cannot load the CRD ({exc})") from None
    versions = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    if not versions:
        raise UserError(f"{path}: the CRD has no v1 version")
    return strictify(copy.deepcopy(versions[0]["schema"]["openAPIV3Schema"]))


def format_path(parts: Sequence[Any]) -> str:
    """``["spec", "workerGroupSpecs", 0, "template"]`` → ``spec.workerGroupSpecs[0].template``."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _join(path: str, field: str) -> str:
    return f"{path}.{field}" if path else field


def schema_messages(doc: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Schema violations of ``doc``, one message per problem, each naming the field path."""
    from jsonschema import Draft7Validator  # the CRD schemas are OpenAPI v3 subsets of draft 7

    messages = []
    for error in Draft7Validator(schema).iter_errors(doc):
        path = format_path(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
            known = error.schema.get("properties", {})
            messages += [f"{_join(path, str(k))}: unknown field" for k in error.instance if k not in known]
        else:
            messages.append(f"{path or '<document>'}: {error.message}")
    return sorted(messages)


# --------------------------------------------------------------------------------------------
# Checks a schema cannot express


def _cluster_spec(doc: Mapping[str, Any]) -> tuple[str, Mapping[str, Any] | None]:
    spec = doc.get("spec") or {}
    if doc.get("kind") == "RayJob":
        return "spec.rayClusterSpec", spec.get("rayClusterSpec")
    return "spec", spec


def _containers(doc: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(path, container) of every container in the head, worker and submitter pod templates."""
    prefix, cluster = _cluster_spec(doc)
    templates = []
    if isinstance(cluster, Mapping):
        templates.append((f"{prefix}.headGroupSpec.template", (cluster.get("headGroupSpec") or {}).get("template")))
        for i, group in enumerate(cluster.get("workerGroupSpecs") or []):
            templates.append((f"{prefix}.workerGroupSpecs[{i}].template", (group or {}).get("template")))
    if doc.get("kind") == "RayJob":
        templates.append(("spec.submitterPodTemplate", (doc.get("spec") or {}).get("submitterPodTemplate")))
    for path, template in templates:
        pod = (template or {}).get("spec") or {}
        for key in ("initContainers", "containers"):
            for i, container in enumerate(pod.get(key) or []):
                if isinstance(container, Mapping):
                    yield f"{path}.spec.{key}[{i}]", container


def _as_int(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0  # not a whole number: the schema layer or the API server reports it


def _pinned(ray_version: str) -> str:
    return f"the Ray pinned in setup.cfg ({ray_version})"


def _version_messages(doc: Mapping[str, Any], ray_version: str) -> list[str]:
    messages = []
    prefix, cluster = _cluster_spec(doc)
    if isinstance(cluster, Mapping):
        declared = cluster.get("rayVersion")
        if declared is None:
            messages.append(f"{prefix}.rayVersion: missing; set it to the pinned Ray version {ray_version}")
        elif str(declared) != ray_version:
            messages.append(f"{prefix}.rayVersion: {declared!r} differs from {_pinned(ray_version)}")
    for path, container in _containers(doc):
        match = RAY_IMAGE.match(str(container.get("image", "")))
        if not match:
            continue  # a custom image: spec.rayVersion states its Ray version
        tag = match.group("tag") or "latest"
        version = re.match(r"\d+\.\d+\.\d+", tag)
        if not version:
            messages.append(f"{path}.image: tag {tag!r} names no Ray version; use {ray_version}-...")
        elif version.group(0) != ray_version:
            messages.append(
                f"{path}.image: Ray {version.group(0)} in the image tag differs from {_pinned(ray_version)}"
            )
    return messages


def _max_gpus(doc: Mapping[str, Any]) -> int:
    """GPUs of all worker groups at maxReplicas: Σ maxReplicas × numOfHosts × per-pod nvidia.com/gpu limits."""
    _, cluster = _cluster_spec(doc)
    total = 0
    for group in (cluster or {}).get("workerGroupSpecs") or []:
        pod = ((group or {}).get("template") or {}).get("spec") or {}
        limits = [((c or {}).get("resources") or {}).get("limits") or {} for c in pod.get("containers") or []]
        per_pod = sum(_as_int(limit.get(GPU, 0)) for limit in limits)
        total += _as_int(group.get("maxReplicas", 0)) * _as_int(group.get("numOfHosts", 1)) * per_pod
    return total


def _gpu_messages(doc: Mapping[str, Any]) -> list[str]:
    messages = []
    for path, container in _containers(doc):
        resources = container.get("resources") or {}
        requested = (resources.get("requests") or {}).get(GPU)
        limit = (resources.get("limits") or {}).get(GPU)
        if requested is not None and str(requested) != str(limit):
            messages.append(f"{path}.resources.requests.{GPU}: {requested!r} must equal the limit ({limit!r})")
    if doc.get("kind") != "RayJob":
        return messages
    entrypoint = str((doc.get("spec") or {}).get("entrypoint") or "")
    try:
        args = shlex.split(entrypoint)
    except ValueError as exc:
        return messages + [f"spec.entrypoint: cannot be split into arguments ({exc})"]
    workers = _flag_value(args, "--num-workers")
    gpus = _max_gpus(doc)
    if "--use-gpu" in args:
        if workers is not None and workers > gpus:
            messages.append(
                f"spec.entrypoint: --num-workers {workers} with --use-gpu needs {workers} GPUs, but the worker groups "
                f"offer at most {gpus} (maxReplicas x {GPU} limits)"
            )
    elif gpus and workers is not None:
        messages.append(f"spec.entrypoint: the worker groups offer {gpus} GPUs but the entrypoint lacks --use-gpu")
    return messages


def _flag_value(args: Sequence[str], flag: str) -> int | None:
    """The integer after ``flag`` (``--flag N`` or ``--flag=N``) in an argument list, or None."""
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return _as_int(args[i + 1])
        if arg.startswith(flag + "="):
            return _as_int(arg.split("=", 1)[1])
    return None


def _job_messages(doc: Mapping[str, Any], ray_version: str) -> list[str]:
    if doc.get("kind") != "RayJob":
        return []
    spec = doc.get("spec") or {}
    messages = []
    if "ttlSecondsAfterFinished" in spec and spec.get("shutdownAfterJobFinishes") is not True:
        messages.append(
            "spec.ttlSecondsAfterFinished: set without spec.shutdownAfterJobFinishes: true, so it has no effect "
            "(the cluster is never deleted)"
        )
    if "runtimeEnvYAML" in spec:
        try:
            runtime_env = yaml.safe_load(str(spec["runtimeEnvYAML"]))
        except yaml.YAMLError:
            runtime_env = None
        if not isinstance(runtime_env, Mapping):
            return messages + ["spec.runtimeEnvYAML: must hold a YAML mapping (working_dir, pip, env_vars, ...)"]
        pip = runtime_env.get("pip") or []
        packages = pip.get("packages") or [] if isinstance(pip, Mapping) else pip
        for package in packages if isinstance(packages, list) else []:
            pin = re.match(r"^\s*ray(?:\[[^\]]*\])?\s*==\s*([\w.]+)", str(package))
            if pin and pin.group(1) != ray_version:
                messages.append(f"spec.runtimeEnvYAML: pip pins ray {pin.group(1)}, setup.cfg pins {ray_version}")
    return messages


# --------------------------------------------------------------------------------------------
# Entry points


def validate_manifest(doc: Any, crds_dir: str | Path, ray_version: str) -> list[str]:
    """All problems of one manifest document (empty when it passes)."""
    if not isinstance(doc, Mapping):
        return ["<document>: expected a mapping"]
    kind = doc.get("kind")
    if kind not in CRD_FILES:
        return [f"kind: {kind!r} is not one of {', '.join(CRD_FILES)}"]
    messages = []
    if doc.get("apiVersion") != API_VERSION:
        messages.append(f"apiVersion: {doc.get('apiVersion')!r} must be {API_VERSION}")
    messages += schema_messages(doc, strict_schema(str(crds_dir), kind))
    try:
        messages += _version_messages(doc, ray_version) + _gpu_messages(doc) + _job_messages(doc, ray_version)
    except (AttributeError, TypeError):  # a section of the wrong type: the schema messages above name it
        if not messages:
            raise
        messages.append("<document>: version and GPU checks skipped until the schema problems above are fixed")
    return messages


def validate_file(path: str | Path, crds_dir: str | Path, ray_version: str) -> list[str]:
    """Problems of every ray.io document of a YAML file, prefixed ``FILE: Kind/name:``; other kinds are skipped."""
    path = Path(path)
    try:
        docs = [d for d in yaml.load_all(path.read_text(), Loader=LOADER) if d is not None]
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        return [f"{path}: not valid YAML" + (f" at line {mark.line + 1}" if mark else "")]
    messages = []
    for doc in docs:
        if isinstance(doc, Mapping) and not str(doc.get("apiVersion", "")).startswith("ray.io/"):
            continue
        name = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}" if isinstance(doc, Mapping) else "?"
        messages += [f"{path}: {name}: {m}" for m in validate_manifest(doc, crds_dir, ray_version)]
    return messages


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifests", nargs="+", help="KubeRay manifest YAML files")
    parser.add_argument("--crds", help="folder with ray.io_rayclusters.yaml and ray.io_rayjobs.yaml")
    parser.add_argument(
        "--setup-cfg", default=str(REPO_ROOT / "setup.cfg"), help="where the pinned Ray version is read"
    )
    args = parser.parse_args(argv)
    crds_dir = Path(args.crds) if args.crds else find_crds_dir()
    if crds_dir is None or not all((crds_dir / name).is_file() for name in CRD_FILES.values()):
        raise UserError(
            f"--crds: KubeRay CRDs not found ({crds_dir or REPO_ROOT.parent / 'shared' / 'kuberay-crds'}); "
            "pass --crds DIR or set KUBERAY_CRDS_DIR"
        )
    ray_version = pinned_ray_version(args.setup_cfg)
    messages = [m for path in args.manifests for m in validate_file(path, crds_dir, ray_version)]
    for message in messages:
        print(message)
    summary = f"{len(args.manifests)} file(s) checked against {crds_dir}: {len(messages) or 'no'} problem(s)"
    print(summary, file=sys.stderr)
    return 1 if messages else 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
