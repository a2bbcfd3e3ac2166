"""The ES phase of the hybrid backprop/ES method (docs/hybrid.md, Specification), in pure torch.

An ES phase starts from the backprop weights ("the base") and searches over a subset S of the
parameters. The strategies (ElitistES, OpenAIES) run in *scaled coordinates* u, starting at u = 0:

    theta[S] = base[S] + scale * u

`scale` is 1 for an absolute sigma, or std(W_l) of each parameter tensor for a relative sigma, so a
member u = sigma * eps is exactly theta[S] = base[S] + sigma * std(W_l) * eps. The strategies need no
change, the noise has only |S| dimensions, and only |S| floats per member are ever generated.

The base (all weights and batch-norm buffers) travels inside the population (`PhasePopulation`), so
any worker can evaluate any member range; a worker reloads it, and recomputes cached features, only
when the phase changes. Fitness is measured on the validation split (never the test set) with batch
norm in eval mode, i.e. the parent's running statistics.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Optional

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from evoplat.platform.data import load_dataset
from evoplat.platform.models import build_model
from evoplat.platform.population.evaluator import pick_device
from evoplat.platform.population.noise import CounterNoise, Population
from evoplat.platform.population.forward import ParamLayout
from evoplat.platform.population.task import FITNESS

_BN = nn.modules.batchnorm._BatchNorm


# -- which parameters are mutated -------------------------------------------------------------------
def layer_groups(model: nn.Module) -> list[list[str]]:
    """Parameter names grouped by layer, in registration order.

    A layer is a module that owns parameters; a batch norm joins the layer before it (conv + its BN
    count as one layer), so "the last k layers" means the last k conv/linear layers with their BN.
    """
    groups: list[list[str]] = []
    for mname, module in model.named_modules():
        own = [f"{mname}.{p}" if mname else p for p, _ in module.named_parameters(recurse=False)]
        if not own:
            continue
        if isinstance(module, _BN) and groups:
            groups[-1].extend(own)
        else:
            groups.append(own)
    return groups


def select_parameters(model: nn.Module, subset: str, last_k: int = 1) -> list[str]:
    """Names of the mutated parameters: 'all', 'classifier' (the model's `classifier` module, else the
    last layer), or 'last_k' layers."""
    if subset == "all":
        return [n for n, _ in model.named_parameters()]
    if subset == "classifier" and isinstance(getattr(model, "classifier", None), nn.Module):
        return [f"classifier.{n}" for n, _ in model.classifier.named_parameters()]
    groups = layer_groups(model)
    k = 1 if subset == "classifier" else last_k
    if not 1 <= k <= len(groups):
        raise ValueError(f"last_k={k} but the model has {len(groups)} layers")
    return [n for g in groups[-k:] for n in g]


def splits_head(model: nn.Module, subset: str) -> bool:
    """Whether a phase over `subset` can cache the `features` outputs and run only the `classifier`."""
    return (subset == "classifier" and isinstance(getattr(model, "features", None), nn.Module)
            and isinstance(getattr(model, "classifier", None), nn.Module))


@torch.no_grad()
def mean_fitness(logits_of, y: torch.Tensor, kind: str, batch_size: int) -> torch.Tensor:
    """Fitness [K] of K members over all of (inputs, y), batch by batch, each batch weighted by its size;
    `logits_of(a, b)` gives the members' logits [K, b - a, C] on examples a..b."""
    total = torch.zeros(1, dtype=torch.float64)
    for a in range(0, len(y), batch_size):
        logits = logits_of(a, a + batch_size)
        total = total + FITNESS.get(kind)(logits, y[a:a + batch_size]).double().cpu() * logits.shape[1]
    return (total / len(y)).float()


@torch.no_grad()
def cached_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`model.features` of x (model in eval mode), in slices of 1000 to bound memory."""
    return torch.cat([model.features(x[a:a + 1000]) for a in range(0, len(x), 1000)])


class SubsetLayout(ParamLayout):
    """A flat view of only the named parameters (same methods as `ParamLayout`)."""

    def __init__(self, module: nn.Module, names: list[str]):
        params = dict(module.named_parameters())
        self.names, self.shapes, self.offsets = [], [], []
        offset = 0
        for name in names:
            self.names.append(name)
            self.shapes.append(tuple(params[name].shape))
            self.offsets.append(offset)
            offset += params[name].numel()
        self.size = offset


def coordinate_scale(model: nn.Module, layout: SubsetLayout, relative: bool, floor: float = 1e-3) -> torch.Tensor:
    """Per-coordinate scale [|S|]: ones (absolute sigma) or each tensor's std (relative sigma).

    A tensor with (near-)zero spread, e.g. biases at init or BN betas, gets `floor` so it still moves.
    """
    if not relative:
        return torch.ones(layout.size)
    params = dict(model.named_parameters())
    parts = []
    for name in layout.names:
        p = params[name].detach().float()
        std = float(p.std()) if p.numel() > 1 else float(p.abs().mean())
        parts.append(torch.full((p.numel(),), max(std, floor)))
    return torch.cat(parts)


# -- what travels to the workers --------------------------------------------------------------------
@dataclass
class PhasePopulation(Population):
    """A generation's population plus the phase's base weights (numpy arrays: zero-copy in Ray)."""

    phase: int = 0
    base: Optional[dict] = None            # {"state": {name: array}, "scale": array [|S|]}

    @classmethod
    def wrap(cls, pop: Population, phase: int, base: dict) -> "PhasePopulation":
        return cls(**{f.name: getattr(pop, f.name) for f in fields(Population)}, phase=phase, base=base)


def make_base(model: nn.Module, scale: torch.Tensor) -> dict:
    """The phase's base: every parameter and buffer of the backprop replica, and the subset scale."""
    state = {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
    return {"state": state, "scale": scale.numpy().astype(np.float32)}


class PhaseStrategy:
    """Wraps a strategy so that its populations carry the phase's base (ask) — tell is unchanged."""

    def __init__(self, inner, phase: int, base: dict):
        self.inner, self.phase, self.base = inner, phase, base

    def ask(self, state):
        return PhasePopulation.wrap(self.inner.ask(state), self.phase, self.base)

    def tell(self, state, fitness, noise, pop):
        return self.inner.tell(state, fitness, noise, pop)


def apply_members(base_subset: torch.Tensor, scale: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Subset weights of members u ([K, |S|] or [|S|]): base + scale * u."""
    return base_subset + scale * u


# -- the evaluator a worker hosts -------------------------------------------------------------------
class HybridPhaseEvaluator:
    """Holds a model replica and the validation examples; scores members of the current phase, on a GPU
    when the worker has one (runtime.gpus_per_worker > 0), like the ES evaluator.

    With subset 'classifier' on a model with `features`/`classifier` modules, the features of the
    validation examples are computed once per phase and only the classifier runs per member.
    """

    def __init__(self, cfg, data_root: Optional[str] = None, device: Optional[str] = None):
        self.cfg, hc = cfg, cfg.hybrid
        self.device = torch.device(device) if device else pick_device(cfg.runtime.gpus_per_worker)
        data = load_dataset(cfg.data, data_root)
        n = min(hc.fitness_examples, len(data.x_val)) if hc.fitness_examples else len(data.x_val)
        if n == 0:
            raise ValueError("hybrid ES needs a validation split: set data.val_size > 0")
        # Only the validation examples are kept: the training and test splits are never used here.
        self.x, self.y = data.x_val[:n].clone().to(self.device), data.y_val[:n].clone().to(self.device)
        self.num_classes, input_shape = data.num_classes, data.input_shape
        del data
        self.model = build_model(cfg.model, input_shape, self.num_classes).to(self.device).eval()
        self.names = select_parameters(self.model, hc.subset, hc.last_k)
        self.layout = SubsetLayout(self.model, self.names)
        self.noise = CounterNoise(es_noise_seed(cfg.seed), self.layout.size)
        self.phase: Optional[int] = None
        self.head_only = splits_head(self.model, hc.subset)
        self.features_s = 0.0

    def _load_phase(self, pop: PhasePopulation) -> None:
        """Install the phase's base weights (and cache features) once per phase."""
        t0 = time.perf_counter()
        state = {k: torch.as_tensor(np.array(v)) for k, v in pop.base["state"].items()}
        self.model.load_state_dict(state)
        self.model.eval()  # batch norm uses the parent's running statistics
        self.scale = torch.as_tensor(np.array(pop.base["scale"])).to(self.device)
        self.base_subset = self.layout.flatten(self.model).to(self.device)
        if self.head_only:
            self.module = self.model.classifier
            prefix = "classifier."
            self.inputs = cached_features(self.model, self.x)
        else:
            self.module, prefix, self.inputs = self.model, "", self.x
        self.local_names = [n[len(prefix):] for n in self.names]
        fixed = {k: v for k, v in self.module.named_parameters() if k not in self.local_names}
        fixed.update(dict(self.module.named_buffers()))
        module, local_names = self.module, self.local_names

        def one(sub, x):
            return functional_call(module, {**fixed, **dict(zip(local_names, sub))}, (x,))

        self._batched = vmap(one, in_dims=(0, None))
        self.phase = pop.phase
        self.features_s = time.perf_counter() - t0

    @torch.no_grad()
    def scores(self, u: torch.Tensor, kind: str) -> torch.Tensor:
        """Fitness of stacked scaled-coordinate vectors u [K, |S|] on the validation examples."""
        theta = apply_members(self.base_subset, self.scale, u.to(self.device))
        views = self.layout.unflatten(theta)
        sub = [views[n] for n in self.names]
        return mean_fitness(lambda a, b: self._batched(sub, self.inputs[a:b]), self.y, kind,
                            self.cfg.run.eval_batch_size)

    def evaluate(self, pop: PhasePopulation, start: int, stop: int) -> dict:
        """Fitness of members [start, stop), chunk by chunk (the ES evaluator's interface)."""
        t0 = time.perf_counter()
        if pop.phase != self.phase:
            self._load_phase(pop)
        chunk = self.cfg.runtime.chunk_size
        out, noise_s, a = [], 0.0, start
        while a < stop:
            b = min(stop, (a // chunk + 1) * chunk)
            tn = time.perf_counter()
            u = self.noise.members(pop, a, b)
            noise_s += time.perf_counter() - tn
            out.append(self.scores(u, self.cfg.hybrid.fitness))
            a = b
        fitness = torch.cat(out).numpy().astype(np.float32)
        return {"fitness": fitness, "noise_s": noise_s, "total_s": time.perf_counter() - t0}


def es_noise_seed(seed: int) -> int:
    """ES-phase noise keys differ from the backprop order's seed (both derive from the run seed)."""
    return seed * 7 + 1_000_003
