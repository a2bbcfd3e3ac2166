"""Every method's trainer runs under the generic Ray Tune trainable: a 2-trial grid completes, each
trial reports every step, and the table names the swept values."""
from __future__ import annotations

import pytest

SYNTHETIC = {"source": "synthetic", "val_size": 32, "synthetic_train": 192, "synthetic_test": 64}
SWEEP = {"scheduler": "fifo", "num_samples": 1, "max_failures": 0}


def raw_for(algorithm: str) -> tuple[dict, str, list]:
    base = {"algorithm": algorithm, "seed": 1, "name": f"tune_{algorithm}", "data": dict(SYNTHETIC),
            "model": {"name": "mlp", "hidden": [16]}, "run": {"log_every": 100},
            "runtime": {"backend": "local"}}
    if algorithm == "rec_lra":
        base["model"] = {"name": "mlp", "hidden": [16, 16], "activation": "tanh"}
        base["rec_lra"] = {"epochs": 2, "batch_size": 32, "lr": 0.01}
        return base, "rec_lra.lr", [0.01, 0.003]
    if algorithm == "consequential":
        base["consequential"] = {"optimizer": "sgd", "lr": 0.05, "epochs": 2, "batch_size": 32}
        return base, "consequential.strength", [0.5, 0.9]
    if algorithm == "grad_instructor":
        base["grad_instructor"] = {"mode": "deploy", "epochs": 2, "batch_size": 32, "lr": 0.05}
        return base, "grad_instructor.lr", [0.05, 0.02]
    base["es"] = {"popsize": 8, "generations": 2, "batch_size": 64}
    return base, "es.sigma", [0.05, 0.02]


@pytest.mark.parametrize("algorithm", ["es", "rec_lra", "consequential", "grad_instructor"])
def test_two_trial_grid_for_each_method(ray_local, tmp_path, algorithm):
    from evoplat.platform.run.tune import run_tune
    raw, key, values = raw_for(algorithm)
    raw["tune"] = dict(SWEEP, search_space={key: {"grid": values}})
    out = run_tune(raw, storage=str(tmp_path), verbose=False)
    assert out["grid"].num_errors == 0
    table = out["table"]
    assert sorted(table[f"config/{key}"]) == sorted(values)
    for result in out["grid"]:
        steps = list(result.metrics_dataframe["step"])
        assert steps == list(range(1, len(steps) + 1)) and len(steps) == 2
        assert result.metrics["val_acc"] is not None
