"""Configuration: typed, validated in one place, one clear message per problem, before any work."""
from __future__ import annotations

import pytest
from pydantic import Field

from evoplat.cli import main
from evoplat.platform.config import (ConfigError, StrictModel, apply_overrides, build_config, describe_options,
                                     load_config)


def test_defaults_validate():
    cfg = build_config({})
    assert cfg.algorithm == "es" and cfg.es.popsize == 256 and cfg.runtime.num_workers == 2


@pytest.mark.parametrize("raw, needle", [
    ({"es": {"popsiz": 10}}, "unknown key 'es.popsiz'"),
    ({"bogus": 1}, "unknown key 'bogus'"),
    ({"es": {"popsize": 1}}, "es.popsize = 1"),
    ({"es": {"sigma": 0}}, "es.sigma = 0"),
    ({"es": {"sigma": -0.1}}, "greater than 0"),
    ({"runtime": {"num_workers": 0}}, "runtime.num_workers = 0"),
    ({"es": {"popsize": "many"}}, "es.popsize = 'many'"),
    ({"model": {"name": "transformer"}}, "model.name = 'transformer'"),
    ({"es": {"popsize": 7}}, "must be even"),
])
def test_bad_values_name_the_key(raw, needle):
    with pytest.raises(ConfigError) as err:
        build_config(raw)
    msg = str(err.value)
    assert needle in msg and "\n" not in msg


def test_dotted_overrides_reach_nested_keys():
    raw = apply_overrides({"es": {"popsize": 8}}, ["es.popsize=64", "model.hidden=[32, 16]", "es.lr=1e-3"])
    cfg = build_config(raw)
    assert cfg.es.popsize == 64 and cfg.model.hidden == [32, 16] and cfg.es.lr == pytest.approx(1e-3)


def test_yaml_file_and_errors(tmp_path):
    p = tmp_path / "exp.yaml"
    p.write_text("es:\n  popsize: 16\n")
    cfg = load_config(p)
    assert cfg.name == "exp" and cfg.es.popsize == 16
    with pytest.raises(ConfigError, match="no config file"):
        load_config(tmp_path / "missing.yaml")
    p.write_text("es: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_every_preset_is_a_valid_config():
    from pathlib import Path
    presets = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.yaml"))
    assert len(presets) > 10
    for path in presets:
        assert load_config(path).algorithm, path.name


def test_every_option_is_documented():
    lines = describe_options()
    assert len(lines) > 40
    undocumented = [line for line in lines if line.endswith("# ")]
    assert not undocumented, undocumented


class _HorizonOptions(StrictModel):
    horizon: int = Field(10, ge=1, description="Steps per episode.")


class _OwnTask:
    """A user's task class that declares its options (never built here: only its config is checked)."""
    options = _HorizonOptions


def test_component_options_are_validated_and_listed():
    lines = describe_options()
    assert any(line.startswith("fitness.kwargs.obs_clip = 5.0  # (fitness.name: gym) ") for line in lines)
    own = lambda kwargs: {"algorithm": "es", "fitness": {"target": _OwnTask, "kwargs": kwargs}}  # noqa: E731
    assert build_config(own({"horizon": 3})).fitness.kwargs == {"horizon": 3}
    for kwargs, message in (({"horizon": 0}, "fitness.kwargs.horizon = 0: Input should be greater than or equal to 1"),
                            ({"horizon": 5, "horizn": 5}, "fitness.kwargs.horizn: not an option of _OwnTask "
                                                          "(its options: horizon)")):
        with pytest.raises(ConfigError) as err:
            build_config(own(kwargs))
        assert message in str(err.value)


def test_cli_bad_input_stops_before_any_work(tmp_path, capsys):
    import ray
    if ray.is_initialized():      # the session's instance (ray_local starts it again when asked)
        ray.shutdown()
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("es:\n  popsize: 1\n")
    run_dir = tmp_path / "run"
    assert main(["run", str(cfg), "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "es.popsize" in err and len(err.strip().splitlines()) == 1
    assert not run_dir.exists()
    assert not ray.is_initialized()


def test_cli_missing_dataset_names_the_path(tmp_path, capsys):
    cfg = tmp_path / "m.yaml"
    cfg.write_text("data:\n  source: mnist\n")
    assert main(["run", str(cfg), "--data-root", str(tmp_path / "nowhere"), "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nowhere") in err and not (tmp_path / "r").exists()


def test_cli_refuses_existing_run_dir(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "precious.txt").write_text("keep me")
    cfg = tmp_path / "ok.yaml"
    cfg.write_text("runtime:\n  backend: local\n")
    assert main(["run", str(cfg), "--run-dir", str(run_dir)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (run_dir / "precious.txt").read_text() == "keep me"


def test_help_documents_every_cli_option(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    for opt in ("--set", "--data-root", "--run-dir", "--resume", "--overwrite"):
        assert opt in out


def test_report_on_a_folder_without_metrics(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no metrics.parquet" in capsys.readouterr().err
