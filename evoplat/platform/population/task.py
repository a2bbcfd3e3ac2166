"""What a population is evaluated on: a task owns the fitness, the data (or environment) behind it, and
the evaluation of a single solution.

Two kinds of fitness plug in through the FITNESS registry (or `fitness.target`):
- a plain function `(logits [K, B, C], labels [B]) -> fitness [K]` (higher is better): wrapped in
  `SupervisedTask`, which feeds every member the generation's minibatch of the configured dataset;
- a task class, constructed as `cls(cfg, data_root, device, **fitness.kwargs)`, with `input_shape`,
  `num_outputs`, `member_fitness(forward, thetas, generation)` and `evaluate(model, generation)`:
  anything else, e.g. episodes of a gymnasium environment (gym_task.py). A task class may also keep a
  running state that the ES driver carries from generation to generation (`initial_state`,
  `load_state`, `take_member_stats`, `merge_state`, and `policy_network` / `export_network` for the
  exported network): gym_task.py's observation statistics.
A member's fitness must depend only on (its parameters, the run seed, the generation): never on the
worker that computes it.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F

from evoplat.platform.data import load_dataset, minibatch_indices
from evoplat.platform.population.forward import accuracy, recalibrate_batch_norm
from evoplat.platform.registry import FITNESS, resolve_target


@FITNESS.register("neg_loss")
def neg_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Negative mean cross-entropy of each member on the batch."""
    k, b, c = logits.shape
    by_class = logits.transpose(1, 2)
    if by_class.is_contiguous():    # the structured forward's layout, [K, C, B] underneath: read as is
        loss = F.cross_entropy(by_class, y.expand(k, b), reduction="none")
    else:
        loss = F.cross_entropy(logits.reshape(k * b, c), y.repeat(k), reduction="none").view(k, b)
    return -loss.mean(-1)


@FITNESS.register("accuracy")
def batch_accuracy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fraction of the batch each member classifies correctly."""
    return (logits.argmax(-1) == y).float().mean(-1)


class SupervisedTask:
    """Members scored by a fitness function of their logits on the generation's minibatch."""

    accepts_chunks = True      # member_fitness takes a MemberChunk (members.py) as well as [K, P]

    def __init__(self, fn, cfg, data_root: Optional[str] = None, device="cpu"):
        self.fn, self.cfg, self.device = fn, cfg, torch.device(device)
        self.data = load_dataset(cfg.data, data_root, self.device)
        self.input_shape, self.num_outputs = self.data.input_shape, self.data.num_classes

    def batch(self, generation: int):
        """The generation's minibatch (kept for the generation: every chunk of it uses the same one)."""
        if getattr(self, "_batch_gen", None) != generation:
            idx = minibatch_indices(len(self.data.x_train), self.cfg.method.batch_size, self.cfg.seed, generation,
                                    self.device)
            self._batch_gen, self._batch = generation, (self.data.x_train[idx], self.data.y_train[idx])
        return self._batch

    def member_fitness(self, forward, thetas: torch.Tensor, generation: int) -> torch.Tensor:
        x, y = self.batch(generation)
        return self.fn(forward.logits(thetas, x), y).float()

    @torch.no_grad()
    def evaluate(self, model, generation: int) -> dict:
        """Train loss on the generation's batch, validation and test accuracy of `model`."""
        x, y = self.batch(generation)
        recalibrate_batch_norm(model, x)
        model.eval()
        bs, d = self.cfg.run.eval_batch_size, self.data
        _, train_loss = accuracy(model, x, y, bs)
        out = {"train_loss": train_loss}
        if len(d.x_val):
            out["val_acc"], out["val_loss"] = accuracy(model, d.x_val, d.y_val, bs)
        out["test_acc"], out["test_loss"] = accuracy(model, d.x_test, d.y_test, bs)
        return out


class RunningState:
    """A task's optional running-state hooks (above), with no-op defaults for a task without them: the
    ES trainer and loops call these and never ask the task what it implements."""

    def __init__(self, task):
        self.initial = getattr(task, "initial_state", lambda: None)
        self.load = getattr(task, "load_state", lambda state: None)
        self.merge = getattr(task, "merge_state", None)
        self.export_network = getattr(task, "export_network", lambda model: model)


def fitness_object(cfg):
    """What `cfg.fitness` names: a task class or a fitness function (registered name or target)."""
    fc = cfg.fitness
    return resolve_target(fc.target, "fitness") if fc.target is not None else FITNESS.get(fc.name)


def make_task(cfg, data_root: Optional[str] = None, device="cpu"):
    """The task of `cfg.fitness`: a registered name or a target, with its kwargs."""
    fc = cfg.fitness
    obj = fitness_object(cfg)
    if isinstance(obj, type):
        return obj(cfg, data_root, device, **fc.kwargs)
    return SupervisedTask(functools.partial(obj, **fc.kwargs) if fc.kwargs else obj, cfg, data_root, device)
from evoplat.platform.population import gym_task  # noqa: E402,F401  (registers the "gym" fitness)
