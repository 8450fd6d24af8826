"""The resource preflight: what a config asks of Ray, what a cluster has (alive and autoscalable), and the one line
that names the shortfall and its fix. Pure functions over ray.nodes()-shaped dicts; one test on a real local Ray."""

from __future__ import annotations

import io
import time

import pytest
import yaml

from conftest import REPO
from zv_ray.cluster.resources import (
    Supply, add_autoscaling, bootstrap_node_types, dataset_phases, group_nodes, require_fit, shortfall,
    InsufficientResources, training_phases,
)
from zv_ray.config import load_config

GIB = 2.0**30


def node(cpus: float, *, head: bool = False, gib: float = 8, **custom: float) -> dict:
    res = {"CPU": cpus, "memory": gib * GIB, "object_store_memory": 2 * GIB, "node:127.0.0.1": 1.0, **custom}
    if head:
        res["node:__internal_head__"] = 1.0
    return {"Alive": True, "Resources": res}


def supply(*nodes: dict, local: bool = False) -> Supply:
    return Supply(group_nodes(nodes), local)


def tiny(*overrides: str):
    return load_config(REPO / "configs/tiny.yaml", list(overrides))


def test_the_tiny_config_fits_a_two_cpu_head_because_rendering_and_training_take_turns():
    phases = training_phases(tiny())
    assert [[g.what for g in p] for p in phases] == [["generator actors"], ["train workers"]]
    assert shortfall(phases, supply(node(2, head=True))) is None
    # Streamed instead of materialized, actors and workers hold CPUs together: 3 CPUs.
    streamed = tiny("data.materialize=false")
    problem = shortfall(training_phases(streamed), supply(node(2, head=True)))
    assert problem.startswith("this config needs 3 CPU at once (1 train workers x 1 + 2 generator actors x 1)")
    assert "--set data.num_generator_actors=1" in problem


def test_local_ray_suggests_more_logical_cpus():
    problem = shortfall(training_phases(tiny("data.num_generator_actors=6")), supply(node(4), local=True))
    assert "local Ray has 4" in problem
    assert "--set data.num_generator_actors=4" in problem and "--set cluster.local_num_cpus=6" in problem


def test_a_node_type_that_does_not_exist_is_named():
    paper = load_config(REPO / "configs/paper.yaml")
    problem = shortfall(training_phases(paper), supply(node(4, head=True)))
    assert "no node of the cluster can hold one of the train workers" in problem
    assert "no node has GPU 1" in problem and "add GPU nodes" in problem
    # GPUs without the custom resource the config pins workers to: that resource is named, with its fix.
    problem = shortfall(training_phases(paper), supply(node(4, head=True), node(96, GPU=8)))
    assert "no node has trainer 1" in problem and "ray start --resources='{\"trainer\": N}'" in problem
    with pytest.raises(InsufficientResources, match="trainer"):
        require_fit(training_phases(paper), supply(node(4, head=True), node(96, GPU=8)))


def test_autoscaling_counts_what_the_cluster_launcher_may_add():
    paper = load_config(REPO / "configs/paper.yaml")
    types = bootstrap_node_types(yaml.safe_load((REPO / "cluster.yaml").read_text()))
    assert {name: (res, most) for name, res, most in types} == {
        "render_cpu": ({"CPU": 32, "render": 32}, 64), "train_gpu": ({"CPU": 96, "GPU": 8, "trainer": 8}, 8)}
    head_only = group_nodes([node(0.0, head=True)])
    scaled = Supply(add_autoscaling(head_only, types), local=False)
    assert shortfall(training_phases(paper), scaled) is None
    # Alive nodes of a type count against its max_workers: 8 alive GPU nodes leave none to add.
    full = group_nodes([node(0.0, head=True), *[node(96, GPU=8, trainer=8) for _ in range(8)]])
    assert [k.can_add for k in add_autoscaling(full, types) if "train_gpu" in k.name] == []
    # 64 workers need all 8 GPU nodes; one node type capped at 2 cannot hold them.
    capped = Supply(add_autoscaling(head_only, [("train_gpu", {"CPU": 96, "GPU": 8, "trainer": 8}, 2),
                                                ("render_cpu", {"CPU": 32, "render": 32}, -1)]), local=False)
    problem = shortfall(training_phases(paper), capped)
    assert "even with autoscaling" in problem and "GPU" in problem


def test_totals_can_fit_while_the_nodes_cannot():
    cfg = tiny("data.materialize=false", "data.num_generator_actors=2", "data.generator_num_cpus=1.5",
               "cluster.cpus_per_worker=1")
    # 4 CPUs in all across two 2-CPU nodes, but two 1.5-CPU actors leave 0.5 on each: no room for the worker.
    problem = shortfall(training_phases(cfg), supply(node(2), node(2)))
    assert problem.startswith("the train workers {CPU: 1} do not fit on the nodes of the cluster")
    assert shortfall(training_phases(cfg), supply(node(2), node(3))) is None


def test_memory_requests_are_checked_too():
    problem = shortfall(training_phases(tiny("data.generator_memory_mb=6000")), supply(node(4, gib=8)))
    assert "memory" in problem and "GiB" in problem


def test_dataset_demand_is_the_actors_and_a_writer():
    (phase,) = dataset_phases(tiny())
    assert [g.what for g in phase] == ["generator actors", "shard writer tasks"]
    assert sum(g.total("CPU") for g in phase) == pytest.approx(2.25)
    assert "needs 2.25 CPU" in shortfall([phase], supply(node(2, head=True)))


def test_progress_says_what_it_waits_for_instead_of_staying_silent():
    from rich.console import Console

    from zv_ray.train.progress import TrainingProgress

    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=False)
    lines = iter(["need {CPU: 1} x 1; free {CPU: 0}"] * 3 + [None] * 100)
    # No report arrives, so the display asks what Ray is waiting for.
    with TrainingProgress(10, console, waiting=lambda: next(lines), every_s=0.05):
        time.sleep(0.5)
    said = out.getvalue().splitlines()
    assert said.count("waiting for resources: need {CPU: 1} x 1; free {CPU: 0}") == 1  # once per change


@pytest.mark.timeout(120)
def test_pending_demand_reads_what_ray_cannot_place_now():
    import ray

    from zv_ray.cluster.resources import pending_demand

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        @ray.remote(num_cpus=2)
        class Holder:
            def ready(self) -> bool:
                return True

        holder = Holder.remote()
        ray.get(holder.ready.remote())
        assert pending_demand() is None
        waiting = ray.remote(num_cpus=1)(lambda: 1).remote()
        deadline = time.time() + 30
        while (line := pending_demand()) is None and time.time() < deadline:
            time.sleep(0.5)
        assert line is not None and line.startswith("need {CPU: 1} x 1; free {")
        assert "CPU: 0" in line
        ray.kill(holder)
        assert ray.get(waiting, timeout=30) == 1
    finally:
        ray.shutdown()
