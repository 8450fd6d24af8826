"""cluster.yaml is a config Ray's launcher accepts, and every node it starts can install and run zv-ray."""

from __future__ import annotations

import re
import tomllib

import yaml
from packaging.specifiers import SpecifierSet
from conftest import REPO


def launcher_config() -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((REPO / "cluster.yaml").read_text()))  # fills Ray's defaults
    validate_config(config)  # Ray's own JSON schema: raises on a wrong key or type
    return config


def images(config: dict) -> list[str]:
    found = [config["docker"]["image"], config["docker"]["worker_image"]]
    return found + [t["docker"]["worker_image"] for t in config["available_node_types"].values() if "docker" in t]


def test_every_node_image_has_a_python_and_ray_zv_ray_installs_on():
    config = launcher_config()
    requires = SpecifierSet(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"])
    ray_pin = re.search(r"^ray==(\S+)$", (REPO / "constraints.txt").read_text(), re.M).group(1)
    for image in images(config):
        version, major, minor = re.search(r":(\d+\.\d+\.\d+)-py(\d)(\d+)-", image).groups()
        assert requires.contains(f"{major}.{minor}"), f"{image}: Python {major}.{minor}, zv-ray needs {requires}"
        assert version == ray_pin, f"{image}: Ray {version} on the nodes, {ray_pin} in constraints.txt"


def test_gpu_nodes_share_one_zone_a_placement_group_and_efa():
    config = launcher_config()
    assert "," not in config["provider"]["availability_zone"]
    gpu = [t for t in config["available_node_types"].values() if t["resources"].get("GPU")]
    assert gpu and all(t["resources"].get("trainer") == t["resources"]["GPU"] for t in gpu)
    for node_type in gpu:
        assert node_type["node_config"]["Placement"]["GroupName"]
        assert node_type["node_config"]["NetworkInterfaces"][0]["InterfaceType"] == "efa"
        assert "-gpu" in node_type["docker"]["worker_image"]


def test_files_the_cluster_instructions_name_exist():
    text = (REPO / "cluster.yaml").read_text()
    named = set(re.findall(r"--runtime-env (\S+)", text)) | set(re.findall(r"bash (scripts/\S+)", text))
    assert named and all((REPO / path).is_file() for path in named), named
