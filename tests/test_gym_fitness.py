"""The gym fitness: members playing in lock-step score what each scores alone; results do not depend on
the number of workers; a bad environment id is a one-line error."""
from __future__ import annotations

import pytest
import torch

import evoplat
from evoplat.platform.config import build_config
from evoplat.platform.models import build_model
from evoplat.platform.population.forward import ParamLayout, PopulationForward
from evoplat.platform.population.gym_task import GymTask
from evoplat.platform.run.rundir import RunDirectory


def cartpole_raw(**runtime) -> dict:
    return {"algorithm": "es", "seed": 1, "model": {"name": "mlp", "hidden": [8]},
            "fitness": {"name": "gym", "kwargs": {"env": "CartPole-v1", "episodes": 2, "eval_episodes": 3,
                                                  "max_episode_steps": 60}},
            "runtime": {"chunk_size": 4, **runtime}, "run": {"eval_every": 2, "log_every": 100},
            "es": {"popsize": 12, "generations": 3, "sigma": 0.1, "lr": 0.05, "weight_decay": 0.0}}


def test_lock_step_members_score_as_alone():
    cfg = build_config(cartpole_raw(backend="local"))
    task = GymTask(cfg, **cfg.fitness.kwargs)
    assert task.input_shape == (4,) and task.num_outputs == 2
    model = build_model(cfg.model, task.input_shape, task.num_outputs)
    forward = PopulationForward(model, chunk_size=4)
    theta = ParamLayout(model).flatten(model)
    thetas = theta + 0.5 * torch.randn(4, theta.numel(), generator=torch.Generator().manual_seed(0))
    together = task.member_fitness(forward, thetas, generation=5)
    alone = torch.cat([task.member_fitness(forward, thetas[i:i + 1], generation=5) for i in range(4)])
    assert torch.equal(together, alone) and together.min() >= 1 and together.max() <= 60
    assert len(set(together.tolist())) > 1          # the members differ: real episodes were played


def test_results_do_not_depend_on_workers(ray_local, tmp_path):
    local = evoplat.run(cartpole_raw(backend="local"), run_dir=tmp_path / "local")
    ray2 = evoplat.run(cartpole_raw(backend="ray", num_workers=2), run_dir=tmp_path / "ray")
    a, b = (RunDirectory(r.run_dir).load_latest()["strategy"]["center"] for r in (local, ray2))
    assert torch.equal(a, b)
    assert "test_return" in local.summary and local.metrics["fitness_max"].max() >= 1


def test_unknown_environment_is_one_line():
    cfg = build_config(cartpole_raw(backend="local") | {"fitness": {"name": "gym", "kwargs": {"env": "NoSuchEnv-v9"}}})
    from evoplat.platform.config import ConfigError
    with pytest.raises(ConfigError, match="gymnasium cannot make 'NoSuchEnv-v9'"):
        GymTask(cfg, **cfg.fitness.kwargs)
