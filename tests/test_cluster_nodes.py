"""A population over a multi-node `ray.cluster_utils.Cluster` (a head plus 3 one-CPU worker nodes, all
on this machine): members are evaluated on every node, and removing the node that is evaluating a
member range mid-generation changes nothing in the result. Workers that run the loop themselves
(`runtime.loop: workers`) form their gloo group across the nodes and reach the one-worker result;
`runtime.loop: auto` keeps the driver loop on such a cluster.

The cluster is private: random ports, no dashboard, and RAY_TMPDIR pointed at a temp folder so the
`ray_current_cluster` file it writes never makes someone else's `ray.init()` connect here.
"""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest
import ray

from conftest import synthetic_config
from evoplat.methods.es.trainer import ESTrainer
from evoplat.platform.population.worker_loop import ESLoopHost
from evoplat.platform.runtime.cluster import worker_nodes
from evoplat.platform.runtime.pool import LocalPool, WorkerPool
from test_faults_support import GUARD_S, Gate, gated_factory, run_generations, run_with_fault, same_tensor
from test_worker_loop import span_center

pytestmark = pytest.mark.slow
WORKER_NODES = 3
GENERATIONS = 3


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster
    if ray.is_initialized():   # the session's local instance; the next ray_local user restarts it
        ray.shutdown()
    old_tmp = os.environ.get("RAY_TMPDIR")
    tmp = tempfile.mkdtemp(prefix="evn-", dir="/tmp")   # short: unix socket paths are length-limited
    os.environ["RAY_TMPDIR"] = tmp
    c = None
    try:
        # The head holds no CPUs: only the driver and the gate live there, so removing a worker node
        # never takes them down, and every pool worker sits on a worker node.
        c = Cluster(initialize_head=True, head_node_args=dict(
            num_cpus=0, include_dashboard=False, dashboard_agent_listen_port=None,
            object_store_memory=100 * 1024 * 1024))
        for _ in range(WORKER_NODES):
            c.add_node(num_cpus=1, object_store_memory=100 * 1024 * 1024)
        ray.init(address=c.address, configure_logging=False, log_to_driver=False)
        yield c
    finally:
        ray.shutdown()
        if c is not None:
            c.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
        if old_tmp is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = old_tmp


def _head_gate(cluster):
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    return Gate.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        cluster.head_node.node_id, soft=False)).remote()


def test_population_is_evaluated_on_every_node(cluster):
    cfg = synthetic_config(runtime={"num_workers": WORKER_NODES}, es={"popsize": 48})
    gate = _head_gate(cluster)
    pool = WorkerPool(gated_factory(cfg, gate), num_workers=WORKER_NODES, cpus_per_worker=1)
    try:
        nodes = pool.wait_ready(timeout=GUARD_S)
        worker_node_ids = {n.node_id for n in cluster.worker_nodes}
        assert set(nodes) == worker_node_ids           # one worker per node (SPREAD, one CPU each)
        run_generations(cfg, pool, 1)
        # 6 member ranges, 3 workers: each node must have evaluated some; item_nodes says which.
        assert set(pool.stats.item_nodes) == worker_node_ids
    finally:
        pool.shutdown()
        ray.kill(gate)


def test_worker_loop_runs_across_the_nodes(cluster):
    import functools
    cfg = synthetic_config(runtime={"num_workers": WORKER_NODES, "loop": "workers"}, es={"popsize": 48})
    pool = WorkerPool(functools.partial(ESLoopHost, cfg, None, "cpu"), num_workers=WORKER_NODES,
                      cpus_per_worker=1, task_timeout_s=GUARD_S)
    try:
        assert set(pool.wait_ready(timeout=GUARD_S)) == {n.node_id for n in cluster.worker_nodes}
        center = span_center(cfg, pool, GENERATIONS + 2)
    finally:
        pool.shutdown()
    alone = span_center(cfg, LocalPool(functools.partial(ESLoopHost, cfg, None, "cpu")), GENERATIONS + 2)
    assert pool.stats.retries == 0 and same_tensor(center, alone)


def test_auto_keeps_the_driver_loop_across_nodes(cluster):
    runtime = synthetic_config(runtime={"num_workers": WORKER_NODES}).runtime
    assert runtime.loop == "auto" and worker_nodes(runtime) == WORKER_NODES    # the CPU-less head hosts none
    assert ESTrainer._which_loop(runtime) == "driver"
    assert worker_nodes(runtime.model_copy(update={"cpus_per_worker": 2.0})) == 0


def test_node_removed_mid_generation_gives_same_weights(cluster):
    cfg = synthetic_config(runtime={"num_workers": 2})
    gate = _head_gate(cluster)
    # Two workers on three nodes: after a node goes, the replacement fits on the spare one.
    pool = WorkerPool(gated_factory(cfg, gate), num_workers=2, cpus_per_worker=1, task_timeout_s=GUARD_S)
    try:
        pool.wait_ready(timeout=GUARD_S)
        ref_center, ref_fitness = run_generations(cfg, pool, GENERATIONS)

        ray.get(gate.arm.remote(1, 8, "block"))
        removed = []

        def remove_victims_node(_actor_id, node_id):
            cluster.remove_node(next(n for n in cluster.worker_nodes if n.node_id == node_id))
            removed.append(node_id)

        center, fitness = run_with_fault(cfg, pool, gate, remove_victims_node, GENERATIONS)
        assert len(removed) == 1 and removed[0] not in pool.stats.item_nodes
        assert pool.stats.lost >= 1 and pool.stats.retries >= 1
        assert all((a == b).all() for a, b in zip(fitness, ref_fitness))
        assert same_tensor(center, ref_center)
    finally:
        pool.shutdown()
        ray.kill(gate)
