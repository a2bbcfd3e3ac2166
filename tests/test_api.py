"""The public API: evoplat.run from a dict, a YAML file or a config object; stopping rules and resume;
the tagged-union config; registries and import-string targets; nothing left behind by a failed start."""
from __future__ import annotations

import pytest
import torch
import yaml
from torch import nn

import evoplat
from evoplat.platform.config import ConfigError, build_config, load_config, to_yaml
from evoplat.platform.data import DataError
from evoplat.platform.registry import MODELS, RegistryError
from evoplat.platform.run.rundir import RunDirectory


def es_raw(**es) -> dict:
    return {"algorithm": "es", "seed": 4, "name": "api",
            "data": {"source": "synthetic", "val_size": 64, "synthetic_train": 320, "synthetic_test": 64},
            "model": {"name": "mlp", "hidden": [8]},
            "runtime": {"backend": "local", "chunk_size": 8},
            "run": {"eval_every": 2, "checkpoint_every": 2, "log_every": 100},
            "es": {"popsize": 16, "generations": 6, "batch_size": 64, "sigma": 0.05, "lr": 0.05, **es}}


def center(run_dir) -> torch.Tensor:
    return RunDirectory(run_dir).load_latest()["strategy"]["center"]


def test_dict_yaml_and_object_give_the_same_run(tmp_path):
    raw = es_raw()
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    a = evoplat.run(raw, run_dir=tmp_path / "a")
    b = evoplat.run(str(path), run_dir=tmp_path / "b")
    c = evoplat.run(build_config(raw), run_dir=tmp_path / "c")
    assert torch.equal(center(a.run_dir), center(b.run_dir)) and torch.equal(center(a.run_dir), center(c.run_dir))
    assert a.summary["steps"] == 6 and a.summary["stopped"] == "complete" and a.summary["unit"] == "generation"
    assert list(a.metrics["step"]) == list(range(1, 7))
    assert (a.run_dir / "summary.json").is_file()


def test_max_steps_then_resume_equals_uninterrupted(tmp_path):
    full = evoplat.run(es_raw(), run_dir=tmp_path / "full")
    part = evoplat.run(es_raw(), run_dir=tmp_path / "part", overrides={"run.max_steps": 3})
    assert part.summary["stopped"] == "max_steps" and part.summary["steps"] == 3
    assert part.metrics["final"].iloc[-1] and "test_acc" in part.summary     # evaluated where it stopped
    assert evoplat.run(resume=tmp_path / "part").summary["steps"] == 3    # still within run.max_steps
    done = evoplat.run(resume=tmp_path / "part", overrides={"run.max_steps": None})
    assert done.summary["stopped"] == "complete" and list(done.metrics["step"]) == list(range(1, 7))
    assert torch.equal(center(full.run_dir), center(done.run_dir))


def test_target_metric_and_wall_clock_stop_the_run(tmp_path):
    hit = evoplat.run(es_raw(), run_dir=tmp_path / "t",
                      overrides={"run.target_metric": "val_acc", "run.target_value": 0.0, "run.eval_every": 1})
    assert hit.summary["stopped"] == "target" and hit.summary["steps"] == 1
    never = evoplat.run(es_raw(), run_dir=tmp_path / "n",
                        overrides={"run.target_metric": "val_acc", "run.target_value": 2.0})
    assert never.summary["stopped"] == "complete"
    timed = evoplat.run(es_raw(), run_dir=tmp_path / "w", overrides={"run.max_wall_s": 1e-6})
    assert timed.summary["stopped"] == "max_wall_s" and timed.summary["steps"] == 1


def test_config_holds_only_its_own_method_section():
    cfg = build_config(es_raw())
    dumped = yaml.safe_load(to_yaml(cfg))
    assert "es" in dumped and not {"rso", "hybrid", "rec_lra", "consequential", "grad_instructor"} & set(dumped)
    assert cfg.method is cfg.es
    with pytest.raises(ConfigError, match="section 'rso' belongs to algorithm rso"):
        build_config(es_raw() | {"rso": {"cycles": 2}})
    with pytest.raises(ConfigError, match="unknown method"):
        build_config({"algorithm": "transformer"})
    with pytest.raises(ConfigError, match="unknown strategy 'cma'"):
        build_config(es_raw(strategy="cma"))


def tiny_net(input_shape, num_outputs, width=4):
    return nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), width), nn.Tanh(),
                         nn.Linear(width, num_outputs))


def test_registered_and_targeted_models_are_the_same_model(tmp_path):
    MODELS.register("tiny_test_net", tiny_net)
    try:
        a = evoplat.run(es_raw() | {"model": {"name": "tiny_test_net", "kwargs": {"width": 5}}}, run_dir=tmp_path / "a")
        b = evoplat.run(es_raw() | {"model": {"target": tiny_net, "kwargs": {"width": 5}}}, run_dir=tmp_path / "b")
        c = evoplat.run(es_raw() | {"model": {"target": f"{__name__}:tiny_net", "kwargs": {"width": 5}}},
                        run_dir=tmp_path / "c")
    finally:
        MODELS._items.pop("tiny_test_net")
    assert a.summary["num_params"] == 64 * 5 + 5 + 5 * 4 + 4      # 1x8x8 synthetic inputs, 4 classes
    assert torch.equal(center(a.run_dir), center(b.run_dir)) and torch.equal(center(a.run_dir), center(c.run_dir))
    assert yaml.safe_load((tmp_path / "c" / "config.yaml").read_text())["model"]["target"] == f"{__name__}:tiny_net"


def test_bad_targets_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        build_config(es_raw() | {"model": {"name": "nope"}})
    with pytest.raises(ConfigError, match="import string"):
        build_config(es_raw() | {"model": {"target": "no_colon_here"}})
    with pytest.raises(RegistryError, match="cannot import 'no_such_module_xyz'"):
        evoplat.run(es_raw() | {"model": {"target": "no_such_module_xyz:net"}}, run_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def user_fitness(logits, y):
    return (logits.argmax(-1) == y).float().mean(-1) - 0.01 * logits.pow(2).mean((-1, -2))


def test_user_fitness_and_data_callables(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 3, generator=g), torch.randint(0, 3, (300,), generator=g)
    res = evoplat.run(es_raw() | {"data": {"target": lambda: (x[:250], y[:250], x[250:], y[250:]), "val_size": 50},
                                  "fitness": {"target": user_fitness}}, run_dir=tmp_path / "u")
    assert res.summary["num_params"] == 3 * 8 + 8 + 8 * 3 + 3
    assert res.metrics["fitness_max"].max() <= 1.0     # the user's fitness, not a cross-entropy


def failing_data():
    raise DataError("data error: the test's loader fails on purpose")


def test_failed_start_leaves_nothing_and_restores_an_overwritten_run(tmp_path):
    bad = es_raw() | {"data": {"target": failing_data}}
    with pytest.raises(DataError):
        evoplat.run(bad, run_dir=tmp_path / "new")
    assert not (tmp_path / "new").exists()
    old = evoplat.run(es_raw(), run_dir=tmp_path / "old")
    before = {p.relative_to(old.run_dir): p.read_bytes() for p in old.run_dir.rglob("*") if p.is_file()}
    with pytest.raises(DataError):
        evoplat.run(bad, run_dir=tmp_path / "old", overwrite=True)
    after = {p.relative_to(old.run_dir): p.read_bytes() for p in old.run_dir.rglob("*") if p.is_file()}
    assert before == after
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]


def test_user_module_by_import_string_reaches_ray_workers(ray_local, tmp_path, monkeypatch):
    pkg = tmp_path / "userpkg_api"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(
        "from torch import nn\n"
        "def net(input_shape, num_outputs):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 6), nn.ReLU(), nn.Linear(6, num_outputs))\n")
    monkeypatch.chdir(tmp_path)
    raw = es_raw(generations=2) | {"model": {"target": "userpkg_api.nets:net"},
                                   "runtime": {"backend": "ray", "num_workers": 2, "chunk_size": 8}}
    res = evoplat.run(raw, run_dir=tmp_path / "r")
    assert res.summary["num_params"] == 64 * 6 + 6 + 6 * 4 + 4 and res.summary["steps"] == 2


def test_tune_length_is_the_methods_budget():
    from evoplat.platform.run.tune import run_length
    gi = load_config({"algorithm": "grad_instructor", "grad_instructor": {"epochs": 2, "rl_updates": 7}})
    assert run_length(gi) == 7
    rso = load_config({"algorithm": "rso", "model": {"name": "rso_mnist"}, "rso": {"cycles": 3}})
    assert run_length(rso) == 3 * 7          # FC + 6 blocks per cycle
    assert run_length(load_config(es_raw())) == 6


def test_resuming_a_complete_run_changes_nothing(tmp_path):
    done = evoplat.run(es_raw(generations=2), run_dir=tmp_path / "d")
    before = {p.name: p.read_bytes() for p in (tmp_path / "d").iterdir() if p.is_file() and p.suffix == ".parquet"}
    again = evoplat.run(resume=tmp_path / "d")
    assert again.summary["test_acc"] == done.summary["test_acc"] and again.summary["steps"] == 2
    assert before == {p.name: p.read_bytes() for p in (tmp_path / "d").iterdir() if p.suffix == ".parquet"}


def test_a_config_yaml_from_before_the_tagged_union_still_loads(tmp_path):
    """evoplat 0.1 wrote every method's section, the sweep under hybrid.tune and es.fitness."""
    old = es_raw(fitness="accuracy") | {"rso": {"cycles": 50}, "consequential": {},
                                        "hybrid": {"epochs": 3, "tune": {"scheduler": "fifo"}}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old))
    cfg = load_config(path)
    assert cfg.algorithm == "es" and not hasattr(cfg, "rso") and not hasattr(cfg, "hybrid")
    assert cfg.fitness.name == "accuracy" and cfg.tune.scheduler == "fifo" and cfg.es.popsize == 16
    with pytest.raises(ConfigError, match="belongs to algorithm rso"):
        load_config(es_raw() | {"rso": {}})      # a new mapping with a foreign section is still an error
