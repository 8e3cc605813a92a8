"""serve.config, the config files and the application builders (nothing is started)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from serve_helpers import save_small_detector

from serve.__main__ import main, parse_args
from serve.app import build, build_app, deployment_options
from serve.config import (
    DeploymentConfig,
    DetectorConfig,
    ServeConfig,
    load_serve_config,
)
from weaksam.configlib import ConfigError, from_dict, to_dict
from weaksam.runs import model_path

ROOT = Path(__file__).resolve().parents[2]


def test_default_file_loads_and_serves_the_demo_run() -> None:
    cfg = load_serve_config(str(ROOT / "configs/serve_app.yaml"))
    assert (cfg.host, cfg.port) == ("127.0.0.1", 8000)
    assert (cfg.detector.kind, cfg.detector.run) == ("run", "runs/demo")
    assert cfg.detector == DetectorConfig(
        batching=cfg.detector.batching, deployment=cfg.detector.deployment
    )  # the file's detector is the defaults'
    assert cfg.auth.api_key_env == ""
    assert cfg.segmenter.sam.model_type == "demo" and cfg.segmenter.sam.checkpoint == "builtin"
    assert cfg.segmenter.engine.points_per_side == 16
    assert from_dict(to_dict(cfg), ServeConfig) == cfg  # what the deployments receive


def test_partial_sections_keep_the_service_defaults() -> None:
    cfg = load_serve_config(None, ["segmenter.sam.checkpoint=''"])
    assert cfg.segmenter.sam.model_type == "demo"  # not SamConfig's vit_h


def test_strict_loading(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("detector:\n  kind: demo\n  batchig: {}\n")
    with pytest.raises(ConfigError, match="batchig"):
        load_serve_config(str(bad))
    with pytest.raises(ConfigError, match="unknown detector kind"):
        load_serve_config(None, ["detector.kind=yolo"])
    with pytest.raises(ConfigError, match="unknown detector kind 'torchvision'"):
        load_serve_config(None, ["detector.kind=torchvision"])
    with pytest.raises(ConfigError, match="needs a checkpoint"):
        load_serve_config(None, ["detector.kind=retrain"])
    with pytest.raises(ConfigError, match="unknown SAM model type"):
        load_serve_config(None, ["segmenter.sam.model_type=vit_z"])
    with pytest.raises(ConfigError, match="max_batch_size"):
        load_serve_config(None, ["detector.batching.max_batch_size=0"])
    with pytest.raises(ValueError, match="takes no checkpoint"):
        DetectorConfig(checkpoint="x.pt")


def test_deployment_options() -> None:
    fixed = deployment_options(DeploymentConfig(num_replicas=2, num_gpus=1.0))
    assert fixed["num_replicas"] == 2 and "autoscaling_config" not in fixed
    assert fixed["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 1.0}
    cfg = load_serve_config(
        None,
        [
            "detector.deployment.autoscaling.enabled=true",
            "detector.deployment.max_ongoing_requests=8",
        ],
    )
    auto = deployment_options(cfg.detector.deployment, {"K": "v"})
    assert "num_replicas" not in auto and auto["max_ongoing_requests"] == 8
    assert auto["autoscaling_config"] == {
        "min_replicas": 1,
        "max_replicas": 2,
        "target_ongoing_requests": 2.0,
    }
    assert auto["ray_actor_options"]["runtime_env"] == {"env_vars": {"K": "v"}}


def test_ray_serve_config_file_and_builder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from ray.serve import Application
    from ray.serve.schema import ServeDeploySchema

    doc = yaml.safe_load((ROOT / "configs/serve.yaml").read_text())
    schema = ServeDeploySchema.model_validate(doc)  # what `serve deploy` checks
    (app,) = schema.applications
    assert app.import_path == "serve.app:build"
    assert schema.http_options.host == "127.0.0.1"
    # the shipped files serve the demo run of the project root: none here
    monkeypatch.setattr("serve.config.PROJECT_ROOT", tmp_path)
    monkeypatch.chdir(tmp_path)  # the config path resolves against the project root too
    args = {**app.args, "config": str(ROOT / app.args["config"])}
    with pytest.raises(FileNotFoundError, match="run `make demo` first") as err:
        build(args)
    assert "\n" not in str(err.value) and "detector.kind=untrained" in str(err.value)
    save_small_detector(Path(model_path(str(tmp_path / "runs/demo"), "wsis")))
    assert isinstance(build(args), Application)
    assert isinstance(build_app(ServeConfig()), Application)
    with pytest.raises(ValueError, match="unknown args"):
        build({"config": "configs/serve_app.yaml", "extra": 1})
    assert os.getcwd() == str(tmp_path)


def test_main_arguments() -> None:
    args = parse_args(["--port", "8123", "--set", "detector.min_score=0.1"])
    assert args.port == 8123 and args.config == "configs/serve_app.yaml"
    assert args.set == ["detector.min_score=0.1"] and args.address == ""


def test_main_without_a_trained_run_stops_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing starts (no Ray) when the run has no detector: one line, exit status 2."""
    assert main(["--run", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"no trained detector in {tmp_path}" in err and "make demo" in err
    assert main(["--set", "detector.kind=yolo"]) == 2
    assert "unknown detector kind" in capsys.readouterr().err
