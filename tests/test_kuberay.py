"""deploy/kuberay/rayjob.yaml is a RayJob that KubeRay accepts as written, and its cluster is cluster.yaml's on
Kubernetes: the same node groups and custom resources, Ray version, runtime env and `zv-ray train` entrypoint.

The schema is the RayJob CRD of a pinned KubeRay release, KUBERAY_CRD below: public repository content that this
repository does not carry; shared/ holds it. ZV_KUBERAY_CRD=PATH checks against another copy, e.g. the CRD your
cluster runs (`kubectl get crd rayjobs.ray.io -o yaml > crd.yaml`).

Kubernetes prunes the fields a structural schema does not define, so a typo'd key would vanish on `kubectl apply`
instead of failing: `strict` turns the CRD into a JSON schema that rejects unknown keys wherever the CRD lists
`properties` (or gives an object no fields at all), and reads the `x-kubernetes-*` extensions the way the API
server does. CEL rules (`x-kubernetes-validations`) are not evaluated here, so a field that carries one is refused
outright: the manifest must not depend on a rule this test cannot check.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import tomllib
from pathlib import Path

import jsonschema
import pytest
import typer
import yaml
from conftest import REPO
from test_cluster_config import launcher_config

from zv_ray.cli import app
from zv_ray.cluster.resources import Supply, add_autoscaling, bootstrap_node_types, group_nodes, shortfall, training_phases
from zv_ray.config import load_config

MANIFEST = REPO / "deploy" / "kuberay" / "rayjob.yaml"
DOCKERFILE = REPO / "deploy" / "kuberay" / "Dockerfile"
# KubeRay v1.7.0 (commit 59d663aeec13760646da3db9c1cf8cfe883e30b7),
# ray-operator/config/crd/bases/ray.io_rayjobs.yaml of github.com/ray-project/kuberay.
KUBERAY_CRD = REPO.parent / "shared" / "kuberay" / "v1.7.0" / "ray.io_rayjobs.yaml"
KUBERAY_CRD_SHA256 = "01a5cf3b17c1769fda44af7e82debcd98722f0c27b9ab84d084681c6649121f5"
IMAGE_TAG = re.compile(r":(\d+\.\d+\.\d+)-py(\d)(\d+)-(cpu|gpu)$")


def rayjob() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


def ray_pin() -> str:
    return re.search(r"^ray==(\S+)$", (REPO / "constraints.txt").read_text(), re.M).group(1)


# --- the CRD as a strict JSON schema ------------------------------------------------------------------------------


def strict(schema: dict, *, root: bool = True) -> dict:
    """A CRD's openAPIV3Schema as a JSON schema that refuses what Kubernetes would prune."""
    out = {k: v for k, v in schema.items() if k not in ("properties", "items", "additionalProperties", "anyOf")}
    if "properties" in schema:
        # The root's metadata is ObjectMeta, which the API server checks itself (its CRD schema is `type: object`).
        out["properties"] = {k: strict(v, root=False) if not (root and k == "metadata") else v
                             for k, v in schema["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            out[key] = strict(schema[key], root=False)
        elif key in schema:
            out[key] = schema[key]
    if "anyOf" in schema:
        out["anyOf"] = [strict(s, root=False) for s in schema["anyOf"]]
    if schema.get("x-kubernetes-int-or-string") and "anyOf" not in schema:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("x-kubernetes-embedded-resource"):
        out["properties"] = {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
                             **out.get("properties", {})}
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    preserved = schema.get("x-kubernetes-preserve-unknown-fields")
    if out.get("type") == "object" and "additionalProperties" not in schema and not preserved:
        out["additionalProperties"] = False  # pruned: listed properties only, or none at all
    return out


def _list_type(validator, kind, instance, schema):
    """x-kubernetes-list-type: `set` items and `map` keys are unique; the API server refuses duplicates."""
    if not validator.is_type(instance, "array") or kind not in ("set", "map"):
        return
    keys = schema.get("x-kubernetes-list-map-keys", [])
    seen = set()
    for item in instance:
        key = json.dumps(item if kind == "set" else [item.get(k) for k in keys], sort_keys=True)
        if key in seen:
            yield jsonschema.ValidationError(f"duplicate {'item' if kind == 'set' else dict(zip(keys, json.loads(key)))} "
                                             f"in a list of x-kubernetes-list-type {kind}")
        seen.add(key)


def _cel(validator, rules, instance, schema):
    yield jsonschema.ValidationError(
        "this field carries CEL rules this test does not evaluate ("
        + "; ".join(r.get("message") or r["rule"] for r in rules) + "): leave it out of the manifest")


# OpenAPI v3 schemas are close to draft 4 (boolean exclusiveMinimum); `format` is not checked by default.
KubernetesValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator, {"x-kubernetes-list-type": _list_type, "x-kubernetes-validations": _cel})


def crd_errors(crd: dict, manifest: dict) -> list[str]:
    """'spec.a.b: why' for each way `manifest` breaks the CRD version it names."""
    group, version = manifest["apiVersion"].split("/")
    assert crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == manifest["kind"]
    served = {v["name"]: v for v in crd["spec"]["versions"] if v.get("served")}
    assert version in served, f"{manifest['apiVersion']} is not served by this CRD (serves {sorted(served)})"
    validator = KubernetesValidator(strict(served[version]["schema"]["openAPIV3Schema"]))
    return [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in sorted(validator.iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path)))]


def test_strict_refuses_what_kubernetes_would_prune_and_reads_the_extensions():
    quantity = {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True}
    crd = {"spec": {"group": "ray.io", "names": {"kind": "RayJob"}, "versions": [{"name": "v1", "served": True, "schema": {
        "openAPIV3Schema": {"type": "object", "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
            "spec": {"type": "object", "properties": {
                "limits": {"type": "object", "additionalProperties": quantity},
                "port": {"x-kubernetes-int-or-string": True},
                "opaque": {"type": "object"},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "env": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                        "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
                "managedBy": {"type": "string", "x-kubernetes-validations": [{"rule": "self == oldSelf",
                                                                              "message": "immutable"}]},
            }},
        }}}}]}}
    good = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "x", "labels": {"a": "b"}},
            "spec": {"limits": {"cpu": "8", "nvidia.com/gpu": 8}, "port": "http", "free": {"any": {"thing": 1}},
                     "env": [{"name": "A"}, {"name": "B"}]}}
    assert crd_errors(crd, good) == []
    bad = json.loads(json.dumps(good))
    bad["spec"].update(limit={"cpu": "8"}, port=8.5, opaque={"dropped": 1}, env=[{"name": "A"}, {"name": "A"}],
                       managedBy="me")
    bad["spec"]["limits"]["memory"] = True
    errors = "\n".join(crd_errors(crd, bad))
    assert "spec: Additional properties are not allowed ('limit' was unexpected)" in errors
    assert "spec.opaque: Additional properties are not allowed ('dropped' was unexpected)" in errors
    assert "spec.port: 8.5 is not valid under any of the given schemas" in errors
    assert "spec.limits.memory: True is not valid under any of the given schemas" in errors
    assert "spec.env: duplicate {'name': 'A'}" in errors
    assert "spec.managedBy: this field carries CEL rules this test does not evaluate (immutable)" in errors


def kuberay_crd() -> dict:
    path = Path(os.environ.get("ZV_KUBERAY_CRD", KUBERAY_CRD))
    if not path.is_file():
        pytest.skip(f"no KubeRay RayJob CRD at {path}: see KUBERAY_CRD in {Path(__file__).name}")
    data = path.read_bytes()
    if "ZV_KUBERAY_CRD" not in os.environ:
        assert hashlib.sha256(data).hexdigest() == KUBERAY_CRD_SHA256, f"{path} is not KubeRay v1.7.0's RayJob CRD"
    return yaml.safe_load(data)


def test_the_rayjob_is_valid_under_the_kuberay_crd():
    assert crd_errors(kuberay_crd(), rayjob()) == []


def test_a_typo_the_api_server_would_prune_is_refused():
    crd, job = kuberay_crd(), rayjob()
    render = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    render["rayStartParam"] = render.pop("rayStartParams")
    render["template"]["spec"]["containers"][0]["resource"] = {}
    job["spec"]["runtimeEnvYaml"] = job["spec"]["runtimeEnvYAML"]
    assert crd_errors(crd, job) == [
        "spec: Additional properties are not allowed ('runtimeEnvYaml' was unexpected)",
        "spec.rayClusterSpec.workerGroupSpecs.0: Additional properties are not allowed ('rayStartParam' was unexpected)",
        "spec.rayClusterSpec.workerGroupSpecs.0.template.spec.containers.0: Additional properties are not allowed "
        "('resource' was unexpected)",
    ]


# --- the cluster it starts is cluster.yaml's ----------------------------------------------------------------------


def autoscaling_config(job: dict) -> dict:
    """The autoscaling config (node types, their resources and max counts) that KubeRay's autoscaler derives from
    the RayJob's cluster, through Ray's own code, which also checks it against Ray's cluster launcher schema."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    ray_cr = {"metadata": {"name": job["metadata"]["name"], "namespace": "default"}, "spec": job["spec"]["rayClusterSpec"]}
    return _derive_autoscaling_config_from_ray_cr(ray_cr)


def custom(resources: dict[str, float]) -> set[str]:
    return set(resources) - {"CPU", "GPU", "memory"}


def test_node_groups_carry_cluster_yaml_custom_resources_in_ray_start_params():
    job, launcher = rayjob(), launcher_config()
    config = autoscaling_config(job)
    types = config["available_node_types"]
    head = launcher["available_node_types"][launcher["head_node_type"]]["resources"]
    assert types[config["head_node_type"]]["resources"]["CPU"] == head["CPU"] == 0  # the head drives jobs and runs no work
    wanted = set().union(*(custom(t["resources"]) for t in launcher["available_node_types"].values()))
    assert wanted == {"render", "trainer"}
    for group in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        name, resources = group["groupName"], types[group["groupName"]]["resources"]
        assert custom(resources) == {name}, f"group {name} declares {custom(resources)}, not its own resource"
        # Declared in rayStartParams (`ray start --resources`); a group-level `resources` would override them.
        assert "resources" not in group and name in group["rayStartParams"]["resources"]
    render, trainer = types["render"]["resources"], types["trainer"]["resources"]
    assert render["render"] == render["CPU"] and "GPU" not in render  # one render slot per CPU, as cluster.yaml
    assert trainer["trainer"] == trainer["GPU"] > 0  # one Ray Train worker per GPU, as cluster.yaml


def test_the_paper_config_fits_the_autoscaled_cluster_as_zv_ray_preflight_sees_it():
    paper = load_config(REPO / "configs/paper.yaml")
    scaled = Supply(add_autoscaling(group_nodes([]), bootstrap_node_types(autoscaling_config(rayjob()))), local=False)
    assert shortfall(training_phases(paper), scaled) is None, scaled.describe()
    # The trainer group's maxReplicas is what holds 64 workers: fewer nodes cannot.
    job = rayjob()
    job["spec"]["rayClusterSpec"]["workerGroupSpecs"][1]["maxReplicas"] = 7
    small = Supply(add_autoscaling(group_nodes([]), bootstrap_node_types(autoscaling_config(job))), local=False)
    assert "even with autoscaling" in shortfall(training_phases(paper), small)


def test_images_run_the_pinned_ray_and_python():
    spec = rayjob()["spec"]["rayClusterSpec"]
    assert spec["rayVersion"] == ray_pin()
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    from packaging.specifiers import SpecifierSet

    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for group in groups:
        container = group["template"]["spec"]["containers"][0]
        version, major, minor, flavor = IMAGE_TAG.search(container["image"]).groups()
        assert version == ray_pin() and SpecifierSet(requires).contains(f"{major}.{minor}"), container["image"]
        gpus = "nvidia.com/gpu" in container["resources"]["limits"]
        assert (flavor == "gpu") == gpus, f"{container['image']} on a group {'with' if gpus else 'without'} GPUs"
    base = re.search(r"^FROM rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)-\$\{FLAVOR\}$", DOCKERFILE.read_text(), re.M)
    assert base and base.group(1) == ray_pin() and SpecifierSet(requires).contains(f"{base[2]}.{base[3]}")


def test_the_entrypoint_is_zv_ray_train_with_the_runtime_env_of_ray_job_submit():
    job = rayjob()["spec"]
    args = shlex.split(job["entrypoint"])
    assert args[:2] == ["zv-ray", "train"] and (REPO / args[2]).is_file()
    command = typer.main.get_command(app).commands["train"]
    command.make_context("train", args[2:])  # parses as the CLI would; never runs
    env = yaml.safe_load(job["runtimeEnvYAML"])
    workdir = re.search(r"^WORKDIR (\S+)$", DOCKERFILE.read_text(), re.M).group(1)
    # `ray job submit --working-dir . --runtime-env runtime_env.yaml`: `.` is the image's copy of the repository.
    assert env.pop("working_dir") == workdir
    assert env == yaml.safe_load((REPO / "runtime_env.yaml").read_text())
    ignored = (REPO / "deploy" / "kuberay" / "Dockerfile.dockerignore").read_text().split()
    assert all(e in ignored or f"**/{e}" in ignored for e in env["excludes"])


def test_files_the_instructions_name_exist():
    text = MANIFEST.read_text() + DOCKERFILE.read_text()
    named = set(re.findall(r"-f (deploy/\S+)", text)) | set(re.findall(r"bash (scripts/\S+)", text))
    assert len(named) == 3 and all((REPO / path).is_file() for path in named), named
