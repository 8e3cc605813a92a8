"""Builders of the Ray Serve application.

- :func:`build_app` — typed: a :class:`~serve.config.ServeConfig` in, the bound application
  (ingress → detector, segmenter) out; used by ``python -m serve``, the tests and the bench.
- :func:`build` — what ``serve run`` / ``serve deploy`` call through ``import_path:
  serve.app:build`` with the ``args`` of ``configs/serve.yaml``: ``config`` (our YAML file)
  and optional ``overrides`` (``a.b=value`` strings).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from ray.serve import Application
from ray.serve.deployment import Deployment

from serve.config import (
    DEFAULT_CONFIG,
    DeploymentConfig,
    ServeConfig,
    check_model_files,
    load_serve_config,
)
from serve.deployments import DetectorDeployment, Ingress, SegmenterDeployment
from weaksam.configlib import to_dict


def deployment_options(
    dep: DeploymentConfig, env_vars: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """``Deployment.options(...)`` keyword arguments of one deployment's config."""
    actor: dict[str, Any] = {"num_cpus": dep.num_cpus, "num_gpus": dep.num_gpus}
    if env_vars:
        actor["runtime_env"] = {"env_vars": dict(env_vars)}
    opts: dict[str, Any] = {
        "ray_actor_options": actor,
        "max_ongoing_requests": dep.max_ongoing_requests,
    }
    auto = dep.autoscaling
    if auto.enabled:
        opts["autoscaling_config"] = {
            "min_replicas": auto.min_replicas,
            "max_replicas": auto.max_replicas,
            "target_ongoing_requests": auto.target_ongoing_requests,
        }
    else:
        opts["num_replicas"] = dep.num_replicas
    return opts


def build_app(cfg: ServeConfig, *, ingress_env: Mapping[str, str] | None = None) -> Application:
    """The service as a Ray Serve application (not yet running: pass it to ``serve.run``).

    Raises ``FileNotFoundError`` (one line: what to do) when a model file is missing, e.g. the
    demo run's detector before ``make demo``.

    Args:
        cfg: the service config (models, limits, replicas and resources per deployment).
        ingress_env: environment variables for the ingress replicas (e.g. the API key
            variable where the cluster's environment lacks it; prefer setting it in the
            cluster or in Ray Serve's ``runtime_env``, as these values are stored by Ray).
    """
    check_model_files(cfg)
    config = to_dict(cfg)
    # @serve.deployment turns the classes into Deployment objects (mypy sees the classes)
    detector = cast(Deployment, DetectorDeployment)
    segmenter = cast(Deployment, SegmenterDeployment)
    ingress = cast(Deployment, Ingress)
    det = detector.options(**deployment_options(cfg.detector.deployment)).bind(config)
    seg = segmenter.options(**deployment_options(cfg.segmenter.deployment)).bind(config)
    return ingress.options(**deployment_options(cfg.ingress, ingress_env)).bind(config, det, seg)


def build(args: Mapping[str, Any]) -> Application:
    """Ray Serve's application builder: ``args = {"config": path, "overrides": [...]}``."""
    unknown = set(args) - {"config", "overrides"}
    if unknown:
        raise ValueError(f"unknown args {sorted(unknown)}; known: config, overrides")
    overrides = args.get("overrides") or []
    if isinstance(overrides, str) or not isinstance(overrides, Sequence):
        raise ValueError("args.overrides must be a list of 'a.b=value' strings")
    cfg = load_serve_config(str(args.get("config") or DEFAULT_CONFIG), [str(o) for o in overrides])
    return build_app(cfg)
