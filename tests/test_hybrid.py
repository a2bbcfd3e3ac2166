"""The hybrid BP/ES trainer and its ES-phase core, on synthetic data."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from evoplat.platform.config import build_config

from conftest import run_in


def hybrid_cfg(tmp=None, **hybrid):
    hc = {"epochs": 3, "batch_size": 64, "lr": 0.05, "augment": False, "es_every": 1, "es_generations": 3,
          "es_popsize": 6, "sigma": 0.1}
    hc.update(hybrid)
    model = hc.pop("model", {"name": "mlp", "hidden": [16]})
    data = {"source": "synthetic", "val_size": 96, "synthetic_train": 480, "synthetic_test": 96}
    data.update(hc.pop("data", {}))
    runtime = {"backend": "local", "num_workers": 1, "chunk_size": 4, **hc.pop("runtime", {})}
    run = {"checkpoint_every": 1, "eval_every": 1, "log_every": 100, **hc.pop("run", {})}
    return build_config({"algorithm": "hybrid", "seed": 2, "data": data, "model": model,
                         "runtime": runtime, "run": run, "hybrid": hc})


def run_trainer(cfg, path: Path, resume_state=None):
    return run_in(cfg, path, resume_state)


def final_state(run) -> dict:
    return run.load_latest()


def assert_same_state(a: dict, b: dict):
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k


VGG_TINY = {"name": "vgg16", "width": 0.0625}
IMG_DATA = {"synthetic_shape": [3, 32, 32], "synthetic_train": 224, "synthetic_test": 64, "val_size": 64}
SMALL_IMAGES = {"synthetic_shape": [3, 8, 8]}   # an MLP on small images: augmentation applies, cheaply


def test_es_off_equals_plain_backprop(tmp_path):
    """ES off is exactly a plain loop of platform.backprop.train_epoch: the baseline."""
    from evoplat.platform.backprop import make_torch_optimizer, train_epoch
    from evoplat.platform.data import load_dataset
    from evoplat.platform.models import build_model
    from evoplat.methods.hybrid.trainer import lr_at
    cfg = hybrid_cfg(es_enabled=False, data=SMALL_IMAGES, augment=True, epochs=2)
    _, run = run_trainer(cfg, tmp_path / "h")
    data = load_dataset(cfg.data)
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    opt = make_torch_optimizer("momentum", model.parameters(), 0.05, 0.9, cfg.hybrid.weight_decay)
    for e in range(cfg.hybrid.epochs):
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg.hybrid, e)
        train_epoch(model, opt, data.x_train, data.y_train, 64, cfg.seed, e, augment=True)
    assert_same_state(final_state(run), {"model": model.state_dict()})


def test_hybrid_pairs_with_baseline_until_es(tmp_path):
    """With ES only after the last epoch, the hybrid's pre-ES weights are the baseline's final weights."""
    base, run_b = run_trainer(hybrid_cfg(es_enabled=False), tmp_path / "b")
    hyb, run_h = run_trainer(hybrid_cfg(es_every=0), tmp_path / "h")
    last_h, last_b = run_h.rows[-1], run_b.rows[-1]
    assert last_h["pre_es_test_acc"] == last_b["test_acc"] and last_h["pre_es_val_loss"] == last_b["val_loss"]
    assert [r["train_loss"] for r in run_h.rows] == [r["train_loss"] for r in run_b.rows]
    assert last_h["es_ran"] == 1 and sum(r["es_ran"] for r in run_b.rows) == 0


@pytest.mark.parametrize("subset", ["classifier", "last_k", "all"])
def test_elitist_phase_never_lowers_fitness(tmp_path, subset):
    """Elitist selection on a fixed validation set: the fitness after a phase is >= before, and the
    reported fitness is the plain model's validation loss (BN in eval mode)."""
    cfg = hybrid_cfg(subset=subset, last_k=1, fitness="neg_loss", es_generations=4, sigma=0.3, epochs=2,
                     lr=0.01, model={"name": "mlp", "hidden": [16, 16]})
    _, run = run_trainer(cfg, tmp_path / "h")
    for row in run.rows:
        assert row["es_fitness_after"] >= row["es_fitness_before"]
        assert row["val_loss"] == pytest.approx(-row["es_fitness_after"], rel=1e-4)
        assert row["pre_es_val_loss"] == pytest.approx(-row["es_fitness_before"], rel=1e-4)
    assert sum(r["es_accepted"] for r in run.rows) > 0


def test_classifier_cache_matches_full_forward():
    """Features computed once per phase give the same member fitness as full forward passes."""
    from evoplat.methods.hybrid.es_phase import HybridPhaseEvaluator, PhasePopulation, coordinate_scale, make_base
    cfg = hybrid_cfg(subset="classifier", model=VGG_TINY, data=IMG_DATA)
    ev = HybridPhaseEvaluator(cfg)
    assert ev.head_only
    full = HybridPhaseEvaluator(cfg)
    full.head_only = False
    scale = coordinate_scale(ev.model, ev.layout, relative=True)
    base = make_base(ev.model, scale)
    pop = PhasePopulation(center=torch.zeros(ev.layout.size).numpy(), scale=0.2, size=5, generation=3,
                          antithetic=False, parent_first=True, phase=0, base=base)
    a, b = ev.evaluate(pop, 0, 5)["fitness"], full.evaluate(pop, 0, 5)["fitness"]
    assert torch.allclose(torch.from_numpy(a), torch.from_numpy(b), atol=1e-5)
    assert len(set(a.tolist())) > 1  # members differ


def test_subset_selection_and_relative_scale():
    from evoplat.methods.hybrid.es_phase import SubsetLayout, coordinate_scale, layer_groups, select_parameters
    from evoplat.platform.models import build_model
    cfg = hybrid_cfg(model=VGG_TINY)
    model = build_model(cfg.model, (3, 32, 32), 10)
    groups = layer_groups(model)
    assert len(groups) == 14  # 13 conv (+BN) layers and the classifier
    assert select_parameters(model, "classifier") == ["classifier.weight", "classifier.bias"]
    last2 = select_parameters(model, "last_k", 2)
    assert last2[-2:] == ["classifier.weight", "classifier.bias"] and any("features" in n for n in last2)
    assert len(select_parameters(model, "all")) == len(list(model.parameters()))
    layout = SubsetLayout(model, ["classifier.weight"])
    scale = coordinate_scale(model, layout, relative=True)
    assert torch.allclose(scale, torch.full_like(scale, float(model.classifier.weight.detach().std())))
    assert torch.equal(coordinate_scale(model, layout, relative=False), torch.ones(layout.size))


@pytest.mark.parametrize("kind", ["elitist", "openai_es"])
def test_resume_is_exact(tmp_path, kind):
    """A run resumed from its epoch-2 checkpoint ends with the weights of an uninterrupted run."""
    cfg = hybrid_cfg(es_kind=kind, optimizer="adam", lr=0.01, epochs=4, success_rule=True,
                     run={"keep_checkpoints": 4})
    _, full = run_trainer(cfg, tmp_path / "full")
    state2 = torch.load(full.checkpoints()[1], weights_only=True)
    assert state2["epoch"] == 2 and state2["es"]["phases"] == 2
    _, resumed = run_trainer(cfg, tmp_path / "resumed", resume_state=copy.deepcopy(state2))
    assert [r["step"] for r in resumed.rows] == [3, 4]
    assert_same_state(final_state(full), final_state(resumed))
    assert final_state(full)["es"] == final_state(resumed)["es"]
    assert final_state(full)["optimizer"]["state"][0]["exp_avg"].equal(
        final_state(resumed)["optimizer"]["state"][0]["exp_avg"])


def test_one_and_two_workers_agree(ray_local, tmp_path):
    """ES phases on real Ray actors: the result does not depend on the number of workers."""
    out = []
    for w in (1, 2):
        cfg = hybrid_cfg(epochs=2, subset="all", runtime={"backend": "ray", "num_workers": w})
        _, run = run_trainer(cfg, tmp_path / f"w{w}")
        out.append(final_state(run))
    assert_same_state(out[0], out[1])


# -- the control arm: gradient descent on the ES phase's subset and validation examples -------------
def control_phase(cfg):
    from evoplat.methods.hybrid.control_phase import BackpropPhase
    from evoplat.platform.data import load_dataset
    from evoplat.platform.models import build_model
    data = load_dataset(cfg.data)
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    return BackpropPhase(cfg, data, model), model


@pytest.mark.parametrize("subset,model,data", [("classifier", VGG_TINY, IMG_DATA),
                                               ("last_k", {"name": "mlp", "hidden": [16, 16]}, {})])
def test_control_moves_only_the_subset(subset, model, data):
    """The control changes the subset's weights only (BN buffers included), lowers the validation loss,
    and reports the ES phase's fitness (cached features for the classifier, full forward otherwise)."""
    from evoplat.platform.population.forward import accuracy
    cfg = hybrid_cfg(phase_kind="backprop", subset=subset, last_k=1, model=model, data=data)
    phase, net = control_phase(cfg)
    assert phase.head_only == (subset == "classifier")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    es_state = {"generation": 0, "sigma_factor": 1.0, "phases": 0, "accepted": 0}
    row = phase.run(net, 0, es_state)
    moved = {k for k, v in net.state_dict().items() if not torch.equal(v, before[k])}
    assert moved == set(phase.names)
    assert row["es_fitness_after"] > row["es_fitness_before"]
    assert row["es_dims"] == sum(before[n].numel() for n in phase.names)
    assert es_state == {"generation": 0, "sigma_factor": 1.0, "phases": 1, "accepted": 0}
    assert net.training  # the backprop replica's mode is restored
    with torch.no_grad():
        val_loss = accuracy(net.eval(), phase.x, phase.y)[1]
    assert row["es_fitness_after"] == pytest.approx(-val_loss, rel=1e-4)


def test_control_cache_matches_full_forward():
    """Gradient steps on cached features move the classifier as steps through the whole network do."""
    cfg = hybrid_cfg(phase_kind="backprop", subset="classifier", model=VGG_TINY, data=IMG_DATA)
    (cached, a), (full, b) = control_phase(cfg), control_phase(cfg)
    full.head_only = False
    state = {"generation": 0, "sigma_factor": 1.0, "phases": 0, "accepted": 0}
    ra, rb = cached.run(a, 0, dict(state)), full.run(b, 0, dict(state))
    assert ra["es_fitness_after"] == pytest.approx(rb["es_fitness_after"], abs=1e-5)
    for k, v in a.state_dict().items():
        assert torch.allclose(v, b.state_dict()[k], atol=1e-5), k


def test_control_budget_matches_es_phase():
    """round(forward passes of the ES phase / 3), at least 1, unless control_steps says otherwise."""
    from evoplat.methods.hybrid.control_phase import control_steps, es_forward_passes
    cases = [({"es_kind": "elitist", "es_generations": 3, "es_popsize": 6}, 21, 7),
             ({"es_kind": "openai_es", "es_generations": 10, "es_popsize": 10}, 100, 33),
             ({"es_kind": "elitist", "es_generations": 10, "es_popsize": 10}, 110, 37),
             ({"es_kind": "openai_es", "es_generations": 1, "es_popsize": 2}, 2, 1)]
    for opts, passes, steps in cases:
        hc = hybrid_cfg(phase_kind="backprop", **opts).hybrid
        assert (es_forward_passes(hc), control_steps(hc)) == (passes, steps)
    assert control_steps(hybrid_cfg(phase_kind="backprop", control_steps=5).hybrid) == 5


def test_control_run_is_deterministic_and_reports_like_es(tmp_path):
    """Same seed, same bits; the rows carry the ES phase's fields, and the pre-phase metrics pair up
    with the ES arm's (both start from the same backprop weights)."""
    quick = {"es_every": 2, "epochs": 3, "run": {"checkpoint_every": 3, "tensorboard": False}}
    cfg = hybrid_cfg(phase_kind="backprop", **copy.deepcopy(quick))
    _, a = run_trainer(cfg, tmp_path / "a")
    _, b = run_trainer(cfg, tmp_path / "b")
    assert_same_state(final_state(a), final_state(b))
    _, es = run_trainer(hybrid_cfg(**quick), tmp_path / "es")
    for row, es_row in zip(a.rows, es.rows):
        ran = row["step"] % 2 == 0
        assert row["es_ran"] == es_row["es_ran"] == int(ran) and row["es_phases"] == es_row["es_phases"]
        if ran:
            assert row["phase_kind"] == "backprop" and es_row["phase_kind"] == "es"
            assert row["es_steps"] == 7 and row["es_s"] >= row["es_eval_s"] > 0
            assert row["pre_es_val_loss"] == pytest.approx(-row["es_fitness_before"], rel=1e-4)
            assert row["val_loss"] == pytest.approx(-row["es_fitness_after"], rel=1e-4)
    assert a.rows[1]["pre_es_test_acc"] == es.rows[1]["pre_es_test_acc"]
    assert [r["es_fitness_after"] for r in a.rows if r["es_ran"]] == [r["es_fitness_after"] for r in b.rows
                                                                      if r["es_ran"]]


def test_control_without_es_phases_is_refused():
    """The control replaces ES phases: with es_enabled false there is none, and the config says so."""
    from evoplat.platform.config import ConfigError
    with pytest.raises(ConfigError, match="phase_kind backprop") as err:
        hybrid_cfg(phase_kind="backprop", es_enabled=False)
    assert "\n" not in str(err.value)
