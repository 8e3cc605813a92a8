"""``python -m serve [--port PORT] [--config FILE] [--run runs/<name>] [--set a.b=value ...]``

Serves a pipeline run's trained detector (its ``wsis`` Mask R-CNN, else its ``retrain`` Faster
R-CNN) and the committed demo SAM: the demo run (``runs/demo``, what ``make demo`` writes) by
default, ``--run`` another one. When the run has no trained detector it stops at once with a
one-line message (exit status 2); the untrained model is served only when asked for
(``--set detector.kind=untrained``). Starts a private local Ray instance (every listener on
127.0.0.1), or joins ``--address``; runs the service with Ray Serve's HTTP proxy on
``--host``/``--port`` (127.0.0.1:8000 by default); blocks until SIGINT or SIGTERM; then shuts
Serve down and stops the Ray instance it started (never anyone else's).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence

from serve.config import DEFAULT_CONFIG, ServeConfig, check_model_files, load_serve_config
from weaksam import storage
from weaksam.configlib import ConfigError

log = logging.getLogger("serve")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m serve", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=DEFAULT_CONFIG, help="service YAML (ServeConfig)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override")
    p.add_argument(
        "--run",
        default="",
        help="serve this pipeline run's detector (runs/<name>: wsis, else retrain); "
        "default: the config's detector (runs/demo)",
    )
    p.add_argument("--host", default=None, help="HTTP host (default: the config's, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="HTTP port (default: the config's)")
    p.add_argument(
        "--address", default="", help="join this Ray cluster instead of starting a local one"
    )
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray instance")
    return p.parse_args(argv)


def start_ray(address: str = "", num_cpus: int | None = None) -> None:
    """Join the cluster at ``address``, else start a private local Ray instance whose
    listeners (GCS, raylet, object manager, agents) all bind 127.0.0.1."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback listeners
    import ray

    if address:
        ray.init(address=address)
    else:
        ray.init(
            address="local",
            num_cpus=num_cpus,
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            configure_logging=True,
        )


def start(cfg: ServeConfig, address: str = "", num_cpus: int | None = None) -> str:
    """Start Ray (local unless ``address``) and the service; return its base URL."""
    from ray import serve

    from serve.app import build_app

    start_ray(address, num_cpus)
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    serve.run(build_app(cfg), name=cfg.app_name, route_prefix=cfg.route_prefix)
    return f"http://{cfg.host}:{cfg.port}{cfg.route_prefix.rstrip('/')}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    overrides = []
    if args.run:  # a path on the command line is relative to the working directory
        overrides = ["detector.kind=run", f"detector.run={storage.absolute(args.run)}"]
    overrides += args.set
    if args.host is not None:
        overrides.append(f"host={args.host}")
    if args.port is not None:
        overrides.append(f"port={args.port}")
    try:
        cfg = load_serve_config(args.config, overrides)
        check_model_files(cfg)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"python -m serve: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s; shutting down", signal.Signals(signum).name)
        stop.set()

    import ray
    from ray import serve

    previous: dict[int, object] = {}
    try:
        url = start(cfg, args.address, args.num_cpus)
        # after ray.init, which installs its own SIGTERM handler (sys.exit) in the driver
        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        log.info("serving on %s (docs: %s/docs); Ctrl-C to stop", url, url)
        print(f"READY {url}", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        t0 = time.monotonic()
        if ray.is_initialized():
            try:
                serve.shutdown()
            finally:
                ray.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        log.info("stopped in %.1f s", time.monotonic() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
