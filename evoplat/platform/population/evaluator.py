"""What a worker hosts for ES: a model replica, the task (data or environment), member-range evaluation.

Pure torch: the runtime builds one of these inside each actor (or in the driver for backend 'local')
and calls `evaluate(pop, start, stop)`; the fitness of member i depends only on (center, seed, g, i)
and the chunk size, never on which worker computes it.
"""
from __future__ import annotations

import resource
import time
from typing import Optional

import numpy as np
import torch

from evoplat.platform.models import build_model
from evoplat.platform.population.forward import PopulationForward
from evoplat.platform.population.lowrank import make_perturbation
from evoplat.platform.population.noise import Population
from evoplat.platform.population.task import make_task


def pick_device(gpus: float) -> torch.device:
    return torch.device("cuda") if gpus > 0 and torch.cuda.is_available() else torch.device("cpu")


class ESEvaluator:
    def __init__(self, cfg, data_root: Optional[str] = None, device: Optional[str] = None):
        self.cfg = cfg
        self.device = torch.device(device) if device else pick_device(cfg.runtime.gpus_per_worker)
        self.task = make_task(cfg, data_root, self.device)
        model = build_model(cfg.model, self.task.input_shape, self.task.num_outputs).to(self.device)
        self.forward = PopulationForward(model, cfg.runtime.chunk_size, cfg.method.bn_mode)
        self.noise = make_es_noise(cfg, self.forward.layout)

    def evaluate(self, pop: Population, start: int, stop: int, task_state: Optional[dict] = None) -> dict:
        """Fitness of members [start, stop), computed in chunks aligned to multiples of chunk_size.

        For a task with a running state (observation statistics, say) the members act under
        `task_state`, and what they add to it comes back per member, in member order ("task_rows")."""
        if task_state is None:
            return self._fitness(pop, start, stop)
        self.task.load_state(task_state)
        self.task.take_member_stats()            # whatever a call that failed half-way left behind
        out = self._fitness(pop, start, stop)
        out["task_rows"] = self.task.take_member_stats()
        return out

    def _fitness(self, pop: Population, start: int, stop: int) -> dict:
        t0 = time.perf_counter()
        chunk = self.cfg.runtime.chunk_size
        out, noise_s = [], 0.0
        a = start
        while a < stop:
            b = min(stop, (a // chunk + 1) * chunk)
            tn = time.perf_counter()
            members = self.noise.chunk(pop, a, b, self.device)
            if not getattr(self.task, "accepts_chunks", False):     # a user's task: plain [K, P] vectors
                members = members.materialize()
            noise_s += time.perf_counter() - tn
            out.append(self.task.member_fitness(self.forward, members, pop.generation))
            a = b
        # The work item's only read from the device, once for all its chunks (on a GPU, each read waits for
        # every kernel queued before it).
        fitness = torch.cat(out).cpu().numpy().astype(np.float32)
        return {"fitness": fitness, "noise_s": noise_s, "total_s": time.perf_counter() - t0,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def make_es_noise(cfg, layout):
    """The run's keyed perturbations (driver and workers build the same): es.noise, es.perturbation."""
    m = cfg.method
    return make_perturbation(getattr(m, "perturbation", "full"), m.noise, layout, getattr(m, "rank", 1),
                             m.noise_table_size, cfg.seed)
