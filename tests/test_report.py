"""`evoplat report`: PNG curves labelled with the run's unit of work and titled with its name and method."""
from __future__ import annotations

from evoplat.cli import main
from evoplat.platform.run.report import curve_figures, report
from evoplat.platform.run.rundir import RunDirectory


def _run_dir(path, algorithm, unit, name=None, summary=True):
    config = f"algorithm: {algorithm}\n" + (f"name: {name}\n" if name else "")
    run = RunDirectory.create(path, config)
    for step in range(1, 5):
        run.log({"step": step, "phase": unit, "train_loss": 2.0 / step, "fitness_mean": -1.0 / step,
                 "val_acc": 0.1 * step if step % 2 == 0 else None})
    run.log({"step": 5, "phase": "final", "test_acc": 0.42})
    run.flush()
    if summary:
        run.write_summary({"unit": unit, "steps": 4})
    return path


def test_curves_carry_the_unit_and_the_run_name(tmp_path):
    run = _run_dir(tmp_path / "a", "rso", "sweep", name="mnist-rso")
    figures = curve_figures(run)
    assert set(figures) == {"fitness", "loss", "accuracy"}
    for name, fig in figures.items():
        ax = fig.axes[0]
        assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("sweep", name, "mnist-rso (rso)")
    written = report(str(run))
    assert sorted(p.name for p in written) == ["accuracy.png", "fitness.png", "loss.png"]
    assert all(p.stat().st_size > 1000 for p in written)


def test_report_names_the_trained_network_when_there_is_one(tmp_path, capsys):
    import torch
    run = _run_dir(tmp_path / "n", "es", "generation")
    report(str(run))
    assert "load_model" not in capsys.readouterr().out
    RunDirectory(run).save_network(torch.nn.Linear(3, 2), (3,), 2, step=4)
    report(str(run))
    assert f"trained network: evoplat.load_model({str(run)!r})" in capsys.readouterr().out


def test_unit_from_the_phase_column_while_a_run_has_no_summary(tmp_path):
    run = _run_dir(tmp_path / "b", "rec_lra", "epoch", summary=False)
    ax = curve_figures(run)["loss"].axes[0]
    assert (ax.get_xlabel(), ax.get_title()) == ("epoch", "rec_lra")


def test_report_tensorboard_prints_the_command(tmp_path, capsys):
    run = _run_dir(tmp_path / "c", "es", "generation")
    assert main(["report", str(run), "--tensorboard"]) == 2          # this run wrote no event files
    assert "no tensorboard/" in capsys.readouterr().err
    (run / "tensorboard").mkdir()
    assert main(["report", str(run), "--tensorboard"]) == 0
    assert capsys.readouterr().out.strip() == f"tensorboard --logdir {run / 'tensorboard'}"
