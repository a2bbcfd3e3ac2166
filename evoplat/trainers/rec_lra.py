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

from ..core.data import load_dataset
from ..core.rec_lra import RecLRALearner, RecLRAMemberHost
from ..runtime.pool import make_pool
from .context import RunContext


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            raise ValueError(f"config error: rec_lra.population override '{key}': '{p}' is not a section")
        node = node[p]
    if parts[-1] not in node:
        raise ValueError(f"config error: rec_lra.population override '{key}': unknown key")
    node[parts[-1]] = value


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
            _set_dotted(raw, key, value)
        try:
            members.append(type(cfg).model_validate(raw))
        except Exception as err:  # pydantic ValidationError: name the member
            raise ValueError(f"config error: rec_lra.population[{i}] = {spec!r}: "
                             f"{str(err).splitlines()[-1].strip()}") from None
    return members


def _summary(row: dict, learner_epochs: int, mode: str) -> dict:
    keys = ("test_acc", "best_test_acc", "val_acc", "train_loss", "train_acc")
    return {"epochs": learner_epochs, "mode": mode, **{k: row.get(k) for k in keys}}


def train_single(ctx: RunContext) -> dict:
    cfg, rc = ctx.cfg, ctx.cfg.rec_lra
    learner = RecLRALearner(cfg, load_dataset(cfg.data, ctx.data_root))
    if ctx.resume_state:
        learner.load_state_dict(ctx.resume_state["learner"])
    row: dict = {}
    epoch_times = []
    while learner.epoch < rc.epochs:
        row = learner.train_epoch()
        epoch_times.append(row["epoch_time_s"])
        row.update(learner.evaluate())
        e = learner.epoch
        final = e == rc.epochs
        ctx.report({"phase": "epoch", "step": e, "epoch": e, **row, "final": final})
        if e % cfg.run.checkpoint_every == 0 or final:
            ctx.checkpoint(e, {"algorithm": "rec_lra", "learner": learner.state_dict()})
    out = _summary(row, learner.epoch, rc.mode)
    out["mean_epoch_time_s"] = sum(epoch_times) / len(epoch_times) if epoch_times else None
    return out


def train_population(ctx: RunContext) -> dict:
    cfg = ctx.cfg
    members = member_configs(cfg)
    epochs = cfg.rec_lra.epochs
    if any(m.rec_lra.epochs != epochs for m in members):
        raise ValueError("config error: rec_lra.population members must share rec_lra.epochs")
    states: list = [None] * len(members)
    epoch = 0
    if ctx.resume_state:
        states, epoch = list(ctx.resume_state["members"]), int(ctx.resume_state["epoch"])
    pool = make_pool(functools.partial(RecLRAMemberHost, ctx.data_root), cfg.runtime)
    rows: list = [{} for _ in members]
    try:
        pool.wait_ready()
        while epoch < epochs:
            results = pool.run("run_epoch", items=[(m, s) for m, s in zip(members, states)])
            states = [r[0] for r in results]
            rows = [r[1] for r in results]
            epoch += 1
            final = epoch == epochs
            for i, row in enumerate(rows):
                ctx.report({"phase": "epoch", "step": epoch, "epoch": epoch, "member": i,
                            "member_seed": members[i].seed, **row, "retries": pool.stats.retries,
                            "final": final})
            if epoch % cfg.run.checkpoint_every == 0 or final:
                ctx.checkpoint(epoch, {"algorithm": "rec_lra", "epoch": epoch, "members": states})
    finally:
        pool.shutdown()
    accs = [r.get("test_acc") for r in rows]
    done = [a for a in accs if a is not None]
    return {"epochs": epoch, "mode": cfg.rec_lra.mode, "members": len(members), "member_test_acc": accs,
            "test_acc": sum(done) / len(done) if done else None,
            "best_member_test_acc": max(done) if done else None}


def train(ctx: RunContext) -> dict:
    if ctx.cfg.rec_lra.population:
        return train_population(ctx)
    return train_single(ctx)
