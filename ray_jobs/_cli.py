"""Shared argument handling for the entry points: ``--config FILE [--set key=value ...]``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from weaksam.config import Config, ConfigError, load_config, load_run_config


def add_config_args(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument("--config", required=required, help="YAML config (e.g. configs/demo.yaml)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set synth.num_train=20 (repeatable)",
    )


def config_from_args(args: argparse.Namespace, *, run: bool = True) -> Config:
    """Load the config named by ``args``; exit with status 2 and a one-line message on error.

    ``run``: the command writes into the run folder, so the config must name the run
    (:func:`weaksam.config.load_run_config`); without, defaults stand in for a missing file.
    """
    try:
        if run:
            return load_run_config(args.config, args.overrides)
        return load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    setup_logging(getattr(args, "verbose", False))
    return args
