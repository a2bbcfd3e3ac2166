"""The rec-LRA trainer (`algorithm: rec_lra`), following the trainer contract of docs/DEVELOPING.md.

* One run (`rec_lra.population` empty): the learner trains on the driver, one metrics row and
  (every `run.checkpoint_every` epochs) one full-state checkpoint per epoch; `ctx.resume_state`
  restores network, optimizer and epoch, and the data order is a function of (seed, epoch), so a
  resumed run ends bitwise where an uninterrupted one would.
* A population (several seeds or settings): members train in lock-step epochs on the Ray pool; each
  work item is (member config, member state) -> one epoch, so any idle worker can take any member
  and a lost worker's item is simply re-run. The checkpoint holds every member's state.
`rec_lra.mode: backprop` trains the same network with autograd: the baseline of the comparison.
"""
from __future__ import annotations

import functools
from typing import Any

from evoplat.platform.data import load_dataset
from evoplat.methods.rec_lra.learner import RecLRALearner, RecLRAMemberHost, build_rec_lra_net
from evoplat.methods.rec_lra.config import RecLRAConfig
from evoplat.platform.config import set_dotted
from evoplat.platform.run.trainer import Trainer, register_method


def _set_existing(raw: dict, key: str, value: Any) -> None:
    """set_dotted, but only for keys the config already has (a population override names a real option)."""
    node = raw
    for p in key.split(".")[:-1]:
        node = node.get(p) if isinstance(node, dict) else None
    if not isinstance(node, dict) or key.split(".")[-1] not in node:
        raise ValueError(f"config error: rec_lra.population override '{key}': unknown key")
    set_dotted(raw, key, value)


def member_configs(cfg) -> list:
    """One validated config per population member (its own `population` emptied).

    An int member is a seed: it sets both `seed` (data order, noise) and `model.init_seed` (weights).
    """
    members = []
    for i, spec in enumerate(cfg.rec_lra.population):
        raw = cfg.model_dump()
        raw["rec_lra"]["population"] = []
        overrides = {"seed": spec, "model.init_seed": spec} if isinstance(spec, int) else spec
        for key, value in overrides.items():
            _set_existing(raw, key, value)
        try:
            members.append(type(cfg).model_validate(raw))
        except Exception as err:  # pydantic ValidationError: name the member
            raise ValueError(f"config error: rec_lra.population[{i}] = {spec!r}: "
                             f"{str(err).splitlines()[-1].strip()}") from None
    return members


@register_method("rec_lra")
class RecLRATrainer(Trainer):
    config_class = RecLRAConfig
    unit = "epoch"


    def setup(self) -> None:
        cfg = self.cfg
        self.learner, self.members = None, None
        if cfg.rec_lra.population:
            self.members = member_configs(cfg)
            if any(m.rec_lra.epochs != cfg.rec_lra.epochs for m in self.members):
                raise ValueError("config error: rec_lra.population members must share rec_lra.epochs")
            self.states: list = [None] * len(self.members)
            self.rows: list = [{} for _ in self.members]
            self.workers = self.pool(functools.partial(RecLRAMemberHost, self.data_root))
        else:
            self.learner = RecLRALearner(cfg, load_dataset(cfg.data, self.data_root, self.device))
            self.epoch_times: list = []

    def step(self):
        if self.learner is not None:
            row = self.learner.train_epoch()
            self.epoch_times.append(row["epoch_time_s"])
            return {"epoch": self.learner.epoch, **row}
        results = self.workers.run("run_epoch", items=[(m, s) for m, s in zip(self.members, self.states)])
        self.states = [r[0] for r in results]
        self.rows = [r[1] for r in results]
        epoch = self.steps_done + 1
        return [{"epoch": epoch, "member": i, "member_seed": self.members[i].seed, **row,
                 "retries": self.workers.stats.retries} for i, row in enumerate(self.rows)]

    def evaluate(self) -> dict:
        return self.learner.evaluate() if self.learner is not None else {}

    def network(self):
        """A single run's network (a population's members are many networks: none)."""
        if self.learner is None:
            return None
        return self.learner.net, self.learner.data.input_shape, self.learner.data.num_classes

    @classmethod
    def build_network(cls, cfg, input_shape: tuple, num_outputs: int):
        return build_rec_lra_net(cfg, tuple(input_shape), int(num_outputs))

    def state_dict(self) -> dict:
        if self.learner is not None:
            return {"learner": self.learner.state_dict()}
        return {"epoch": self.steps_done, "members": self.states}

    def load_state_dict(self, state: dict) -> None:
        if self.learner is not None:
            self.learner.load_state_dict(state["learner"])
        else:
            self.states = list(state["members"])

    def summary(self) -> dict:
        mode = self.cfg.rec_lra.mode
        if self.learner is not None:
            times = self.epoch_times
            return {"epochs": self.learner.epoch, "mode": mode,
                    "mean_epoch_time_s": sum(times) / len(times) if times else None}
        accs = [r.get("test_acc") for r in self.rows]
        done = [a for a in accs if a is not None]
        return {"epochs": self.steps_done, "mode": mode, "members": len(self.members), "member_test_acc": accs,
                "test_acc": sum(done) / len(done) if done else None,
                "best_member_test_acc": max(done) if done else None}
