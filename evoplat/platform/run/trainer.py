"""The shape every method has: a `Trainer` that the one run loop (loop.py) drives step by step.

A method subclasses `Trainer`, names its config section (`config_class`) and its unit of work (`unit`:
generation, epoch, sweep, RL update), and registers itself:

    @register_method("es")
    class ESTrainer(Trainer):
        config_class = ESConfig
        unit = "generation"
        def setup(self): ...                  # data, model, strategy, pools (self.pool(factory))
        def step(self) -> dict: ...           # one unit of work; returns its metrics row
        def evaluate(self) -> dict: ...       # validation/test metrics of the current solution
        def state_dict(self) -> dict: ...     # everything needed to continue bit for bit
        def load_state_dict(self, state): ...

The loop owns everything around those calls: resume, evaluation and checkpoint cadence, best-so-far,
stopping (step budget, wall clock, target metric), the worker pools' lifetime, loggers and the summary.
A trainer never imports Ray: it asks the loop for a pool of workers hosting a factory's object.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Optional

from evoplat.platform.registry import METHODS


class Trainer:
    config_class: ClassVar[type] = None          # the method's pydantic section (StrictModel)
    unit: ClassVar[str] = "step"                 # what one step is called, for logs and plots
    default_eval_every: ClassVar[int] = 1        # evaluation cadence when run.eval_every is not set
    default_search_space: ClassVar[dict] = {}    # Tune's space when tune.search_space is empty
    budget_option: ClassVar[str] = "epochs"      # the section's option that counts the run's steps
    supports_worker_loop: ClassVar[bool] = False  # can run with runtime.loop: workers

    def __init__(self, cfg, data_root: Optional[str] = None, run_path=None,
                 pool_opener: Optional[Callable] = None):
        self.cfg = cfg
        self.section = cfg.method
        self.data_root = data_root
        self.run_path = run_path                 # the run directory (artefacts), or None
        self.steps_done = 0                      # steps completed; the loop's position
        self.evaluating = False                  # set by the loop: will this step be evaluated?
        self.horizon = 1                         # set by the loop: the last step before it next needs the
                                                 # trainer's state (evaluation, checkpoint, end); a trainer
                                                 # may compute steps ahead up to it
        self.next_horizon = 0                    # set by the loop: the horizon after that one (0: none,
                                                 # the run ends there), for work queued ahead
        self._pool_opener = pool_opener

    # -- what a method provides ---------------------------------------------------------------------
    @classmethod
    def budget(cls, cfg) -> int:
        """Steps in a complete run, from the config alone (Tune's max_t, progress bars)."""
        return int(getattr(cfg.method, cls.budget_option))

    def setup(self) -> None:
        """Build data, model, optimizer/strategy and pools. Called once, before load_state_dict."""

    def begin(self) -> None:
        """A new run starts (called after setup instead of load_state_dict): state that is costly to build
        and that a checkpoint would replace belongs here rather than in setup."""

    def step(self) -> dict | list[dict]:
        """One unit of work. Returns its metrics row (or one row per population member)."""
        raise NotImplementedError

    def evaluate(self) -> dict:
        """Validation/test metrics of the current solution ({} if the step rows already hold them)."""
        return {}

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError

    def summary(self) -> dict:
        """Numbers for summary.json beyond the last row's metrics and the best-so-far."""
        return {}

    def finish(self) -> Optional[dict]:
        """After the last step of a complete run: an optional extra final row (e.g. a deployment)."""
        return None

    def save_artifacts(self) -> None:
        """Called with every checkpoint: write method artefacts (files other tools read) to run_path."""

    def network(self) -> Optional[tuple]:
        """(module, input_shape, num_outputs): the network this run trains, holding the current solution's
        weights, and what it was built for. The loop saves it with every checkpoint as model.pt, which
        `evoplat.load_model` reads back. None when the result is not one network that `build_network`
        makes (the default)."""
        return None

    @classmethod
    def build_network(cls, cfg, input_shape: tuple, num_outputs: int):
        """A freshly built network of the kind `network()` returns, for `evoplat.load_model` to fill in."""
        from evoplat.platform.models import build_model
        return build_model(cfg.model, tuple(input_shape), int(num_outputs))

    # -- what the platform provides -----------------------------------------------------------------
    @property
    def device(self):
        """Where driver-side training runs (`run.device` resolved): backprop-based methods use it."""
        from evoplat.platform.device import driver_device
        return driver_device(self.cfg.run.device)

    def data_and_model(self, device="cpu"):
        """The configured dataset and a freshly initialised model sized for it, both on `device`
        (the weights are drawn on the CPU first, so they do not depend on the device)."""
        from evoplat.platform.data import load_dataset
        from evoplat.platform.models import build_model
        data = load_dataset(self.cfg.data, self.data_root, device)
        return data, build_model(self.cfg.model, data.input_shape, data.num_classes).to(device)

    def pool(self, factory: Callable[[], Any]):
        """A pool of workers, each hosting `factory()`; the loop shuts it down when the run ends."""
        return self._pool_opener(factory)


def register_method(name: str):
    """Class decorator: make a Trainer available as `algorithm: <name>`."""
    def deco(cls):
        cls.name = name
        METHODS.register(name, cls)
        return cls
    return deco
