"""What a worker hosts for ES: a model replica, the data, and member-range evaluation.

Pure torch: the runtime builds one of these inside each actor (or in the driver for backend 'local')
and calls `evaluate(pop, start, stop)`; the fitness of member i depends only on (center, seed, g, i)
and the chunk size, never on which worker computes it.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np
import torch

from .data import load_dataset, minibatch_indices
from .models import build_model
from .noise import Population, make_noise
from .population import PopulationForward


def pick_device(gpus: float) -> torch.device:
    return torch.device("cuda") if gpus > 0 and torch.cuda.is_available() else torch.device("cpu")


class ESEvaluator:
    def __init__(self, cfg, data_root: Optional[str] = None, device: Optional[str] = None):
        self.cfg = cfg
        self.device = torch.device(device) if device else pick_device(cfg.runtime.gpus_per_worker)
        self.data = load_dataset(cfg.data, data_root, self.device)
        model = build_model(cfg.model, self.data.input_shape, self.data.num_classes).to(self.device)
        self.forward = PopulationForward(model, cfg.runtime.chunk_size, cfg.es.bn_mode)
        self.noise = make_noise(cfg.es.noise, cfg.seed, self.forward.layout.size, cfg.es.noise_table_size)

    def batch(self, generation: int):
        idx = minibatch_indices(len(self.data.x_train), self.cfg.es.batch_size, self.cfg.seed, generation,
                                self.device)
        return self.data.x_train[idx], self.data.y_train[idx]

    def evaluate(self, pop: Population, start: int, stop: int) -> dict:
        """Fitness of members [start, stop), computed in chunks aligned to multiples of chunk_size."""
        t0 = time.perf_counter()
        x, y = self.batch(pop.generation)
        chunk = self.cfg.runtime.chunk_size
        out, noise_s = [], 0.0
        a = start
        while a < stop:
            b = min(stop, (a // chunk + 1) * chunk)
            tn = time.perf_counter()
            thetas = self.noise.members(pop, a, b).to(self.device)
            noise_s += time.perf_counter() - tn
            out.append(self.forward.fitness(thetas, x, y, self.cfg.es.fitness).cpu())
            a = b
        fitness = torch.cat(out).numpy().astype(np.float32)
        return {"fitness": fitness, "noise_s": noise_s, "total_s": time.perf_counter() - t0}
