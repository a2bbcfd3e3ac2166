"""The ES trainer (`algorithm: es`): a strategy over the worker pool, driven generation by generation,
or run by the workers themselves in spans of generations (`runtime.loop: workers`, worker_loop.py)."""
from __future__ import annotations

import functools

import torch

from evoplat.methods.es.config import ESConfig
from evoplat.platform.models import build_model
from evoplat.platform.population.evaluator import ESEvaluator, make_es_noise
from evoplat.platform.population.forward import ParamLayout
from evoplat.platform.population.generation import ESGeneration
from evoplat.platform.population.worker_loop import ESLoopHost, ESWorkerLoop
from evoplat.platform.population.task import RunningState, fitness_object, make_task
from evoplat.platform.run.context import HISTOGRAMS
from evoplat.platform.run.trainer import Trainer, register_method
from evoplat.platform.runtime.cluster import worker_nodes
from evoplat.platform.strategies import StrategyState, build_strategy


@register_method("es")
class ESTrainer(Trainer):
    config_class = ESConfig
    unit = "generation"
    default_eval_every = 10

    budget_option = "generations"
    supports_worker_loop = True

    def setup(self) -> None:
        cfg = self.cfg
        self.task = make_task(cfg, self.data_root)      # the driver's copy: evaluation of the center
        self.running = RunningState(self.task)          # its running state's hooks, no-ops if it has none
        self.model = build_model(cfg.model, self.task.input_shape, self.task.num_outputs)
        self.layout = ParamLayout(self.model)
        self.strategy = build_strategy(cfg.es)
        self.noise = make_es_noise(cfg, self.layout)
        self.ahead = None                 # the workers' loop, when they run it
        self.loop = self._which_loop(cfg.runtime)
        if self.loop == "workers":
            self.workers = self.pool(functools.partial(ESLoopHost, cfg, self.data_root))
            self.ahead = ESWorkerLoop(self.workers, self.strategy, self.noise, cfg.runtime.loop_span_s,
                                      merge_task_state=self.running.merge)
        else:
            self.workers = self.pool(functools.partial(ESEvaluator, cfg, self.data_root))
            self.generation = ESGeneration(self.workers, self.strategy, self.noise, cfg.runtime.chunk_size,
                                           merge_task_state=self.running.merge)
        self.state = self.strategy.init(self.layout.flatten(self.model))

    @staticmethod
    def _which_loop(runtime) -> str:
        if runtime.loop != "auto":
            return runtime.loop
        # Across nodes the driver loop is kept: it goes on with the workers left when a node is lost,
        # where the workers' loop needs every worker back before its group can run again
        return "workers" if runtime.backend == "ray" and worker_nodes(runtime) == 1 else "driver"

    def begin(self) -> None:
        self.state = self._with_task_state(self.state)

    def _with_task_state(self, state: StrategyState) -> StrategyState:
        """`state` carrying the task's running state (e.g. observation statistics), fresh if it has none
        yet (a new run, or one resumed with the option newly turned on)."""
        if "task" in state.extra:         # resumed: building a fresh one (warm-up episodes) would be wasted
            return state
        task_state = self.running.initial()
        if task_state is not None:
            state.extra = {**state.extra, "task": task_state}
        return state

    @property
    def state(self) -> StrategyState:
        return self.ahead.current() if self.ahead is not None else self._state

    @state.setter
    def state(self, value: StrategyState) -> None:
        self._state = value
        self._made_here = False           # a state from elsewhere (the start, a checkpoint) may be held there
        if self.ahead is not None:
            self.ahead.reset(value)

    def step(self) -> dict:
        histograms = self.cfg.run.tensorboard and self.cfg.run.tensorboard_histograms
        if self.ahead is not None:
            # histograms need every generation's center: no running ahead then
            if histograms:
                info = self.ahead.next_row(1, 1)
            else:
                nxt = self.next_horizon - self.horizon if self.next_horizon else 0
                info = self.ahead.next_row(self.horizon - self.steps_done, nxt)
            g = self.steps_done + 1
        else:
            # A state this loop made is held by nothing else (checkpoints take copies), unless a histogram
            # row keeps its center: then the strategy may update it in place
            self._state, info, _ = self.generation.step(self._state, owned=self._made_here and not histograms)
            self._made_here = True
            g = self.state.generation
        row = {"generation": g, **info, "retries": self.workers.stats.retries,
               "timeouts": self.workers.stats.timeouts}
        if histograms:
            sigma = self.state.sigma          # a per-parameter tensor with SNES, else one number
            row[HISTOGRAMS] = {"theta": self.state.center}
            if torch.is_tensor(sigma) and sigma.numel() > 1:
                row[HISTOGRAMS]["sigma"] = sigma
        return row

    def _load_solution(self) -> None:
        """The center into the driver's model, and the task's running state (if any) into its task."""
        self.layout.load_into(self.model, self.state.center)
        self.running.load(self.state.extra.get("task"))

    def evaluate(self) -> dict:
        self._load_solution()
        return self.task.evaluate(self.model, self.state.generation - 1)

    def state_dict(self) -> dict:
        return {"strategy": self.state.to_dict()}

    def network(self):
        self._load_solution()
        return self.running.export_network(self.model), self.task.input_shape, self.task.num_outputs

    @classmethod
    def build_network(cls, cfg, input_shape: tuple, num_outputs: int):
        net = super().build_network(cfg, input_shape, num_outputs)
        wrap = getattr(fitness_object(cfg), "policy_network", None)
        return wrap(net, tuple(input_shape), **cfg.fitness.kwargs) if wrap else net

    def load_state_dict(self, state: dict) -> None:
        self.state = self._with_task_state(StrategyState.from_dict(state["strategy"]))

    def summary(self) -> dict:
        return {"generations": self.state.generation, "num_params": self.layout.size, "loop": self.loop}
