"""Loggers: TensorBoard event files hold exactly the metrics table (also across a resume); the
terminal gets a progress bar, a log or a pipe plain lines."""
from __future__ import annotations

import io
import math

import pyarrow.parquet as pq
from conftest import synthetic_config

import evoplat
from evoplat.platform.run.loggers import ConsoleLogger, ProgressBar, console_logger, tensorboard_tag


def _scalars(logdir) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc, {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _assert_same_as_metrics(run_dir) -> None:
    table = pq.read_table(run_dir / "metrics.parquet").to_pandas()
    _, scalars = _scalars(run_dir / "tensorboard")
    numeric = [c for c in table.columns if c not in ("step", "final", "phase") and table[c].dtype.kind in "if"]
    assert {"fitness_mean", "test_acc", "wall_time", "generation"} <= set(numeric)
    assert set(scalars) == {tensorboard_tag(c) for c in numeric if table[c].notna().any()}
    for col in numeric:
        present = table[["step", col]].dropna()
        if present.empty:
            continue
        events = scalars[tensorboard_tag(col)]
        assert [s for s, _ in events] == list(present["step"]), col       # no doubled steps
        for (_, got), want in zip(events, present[col]):
            assert math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-30), (col, got, want)


def test_tensorboard_scalars_equal_the_metrics_also_after_a_resume(tmp_path):
    cfg = synthetic_config(runtime={"backend": "local"}, es={"generations": 6},
                           run={"checkpoint_every": 4, "eval_every": 2, "keep_checkpoints": 5})
    run_dir = tmp_path / "run"
    evoplat.run(cfg, run_dir=run_dir)
    _assert_same_as_metrics(run_dir)
    assert tensorboard_tag("test_acc") == "accuracy/test_acc"
    # a crash after generation 6's events but before its checkpoint: the resume redoes 5 and 6,
    # whose first events must not show twice (and wall_time differs between the two sessions)
    sorted((run_dir / "checkpoints").glob("step_*.pt"))[-1].unlink()
    first = _scalars(run_dir / "tensorboard")[1]["time/wall_time"]
    result = evoplat.run(resume=run_dir)
    assert result.summary["steps"] == 6
    assert len(list((run_dir / "tensorboard").iterdir())) == 2        # the same folder, a second file
    _assert_same_as_metrics(run_dir)
    again = _scalars(run_dir / "tensorboard")[1]["time/wall_time"]
    assert again[:4] == first[:4] and again[4:] != first[4:]


def test_tensorboard_off_and_histograms_on(tmp_path):
    base = dict(runtime={"backend": "local"}, es={"generations": 2, "strategy": "snes", "popsize": 12})
    off = evoplat.run(synthetic_config(run={"tensorboard": False}, **base), run_dir=tmp_path / "off")
    assert not (off.run_dir / "tensorboard").exists()
    on = evoplat.run(synthetic_config(run={"tensorboard_histograms": True}, **base), run_dir=tmp_path / "on")
    acc, _ = _scalars(on.run_dir / "tensorboard")
    assert set(acc.Tags()["histograms"]) == {"params/theta", "params/sigma"}
    theta = acc.Histograms("params/theta")
    assert [h.step for h in theta] == [1, 2]
    assert theta[0].histogram_value.num == on.summary["num_params"]
    assert "_histograms" not in on.metrics.columns


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_console_logger_choice():
    cfg = synthetic_config(run={"log_every": 3})
    assert console_logger(cfg, quiet=True, stream=_Terminal()) == []
    assert isinstance(console_logger(cfg, stream=_Terminal())[0], ProgressBar)
    plain = console_logger(cfg, stream=io.StringIO())[0]
    assert isinstance(plain, ConsoleLogger) and plain.every == 3


def test_progress_bar_shows_unit_progress_and_metrics():
    out = _Terminal()
    bar = ProgressBar(out)
    bar.start(2, 10, "epoch")
    for step in range(3, 11):
        row = {"step": step, "phase": "epoch", "train_loss": 1.0 / step, "wall_time": 0.1 * step}
        if step % 5 == 0:
            row["val_acc"] = 0.5 + step / 100
        bar(row)
    bar(dict(row, step=11, phase="final", test_acc=0.75))       # an extra final row: no overshoot
    bar.close()
    text = out.getvalue()
    last = text.rstrip().split("\r")[-1]
    assert "10/10" in last and "epoch" in last and "11/10" not in text
    assert "train_loss=0.1" in last and "val_acc=0.6" in last and "test_acc=0.75" in last


def test_console_lines_include_test_return():
    out = io.StringIO()
    ConsoleLogger(1, out)({"step": 4, "phase": "generation", "test_return": 187.5, "fitness_mean": 12.0})
    assert out.getvalue().startswith("[generation 4]") and "test_return=187.5" in out.getvalue()
