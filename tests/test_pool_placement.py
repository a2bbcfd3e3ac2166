"""Pool workers created inside a placement group stay in it (as Tune trials need)."""
from __future__ import annotations

import sys

import ray
from ray.util.placement_group import placement_group, remove_placement_group

from evoplat.platform.runtime.pool import WorkerPool

# Ray workers cannot import this test module; ship its classes by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class PlacementProbe:
    """A hosted object that reports the placement group its actor runs in."""

    def where(self, _item):
        pg = ray.util.get_current_placement_group()
        return None if pg is None else pg.id.hex()


def test_workers_join_the_given_placement_group(ray_local):
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="PACK")
    ray.get(pg.ready(), timeout=60)
    pool = WorkerPool(PlacementProbe, 2, cpus_per_worker=1, placement_group=pg)
    try:
        assert pool.run("where", [(i,) for i in range(4)]) == [pg.id.hex()] * 4
    finally:
        pool.shutdown()
        remove_placement_group(pg)


def test_workers_of_a_task_inside_a_placement_group_join_it(ray_local):
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="PACK")
    ray.get(pg.ready(), timeout=60)

    @ray.remote(num_cpus=1)
    def trial():   # like a Tune trial: a process in bundle 0 that builds its own pool
        pool = WorkerPool(PlacementProbe, 1, cpus_per_worker=1)
        try:
            return pool.run("where", [(0,)])[0]
        finally:
            pool.shutdown()

    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
    strategy = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0)
    try:
        assert ray.get(trial.options(scheduling_strategy=strategy).remote(), timeout=120) == pg.id.hex()
    finally:
        remove_placement_group(pg)
