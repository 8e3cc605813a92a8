"""The ``weaksam`` command (installed with the package): the same entry points as
``python -m ray_jobs.<...>`` and ``python -m serve``, for people who prefer one command.

    weaksam run --config configs/demo.yaml [--from STAGE | --only STAGE] [--force]
    weaksam <stage> --config configs/demo.yaml [--set key=value ...] [--force]
    weaksam serve [--run runs/demo] [--port 8000] ...
    weaksam evaluate --gt GT --detections DETS --metric voc07 ...

Every stage command resumes by default (a fresh stage is skipped, an interrupted one
continues) and discards outputs only with ``--force``; see :mod:`ray_jobs._stage`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from ray_jobs._stage import run_command


def _stage(name: str) -> Callable[[list[str], str], int]:
    def run(argv: list[str], prog: str) -> int:
        return run_command([name], argv, prog=prog, description=f"run the {name!r} stage")

    return run


def _pipeline(argv: list[str], prog: str) -> int:
    from ray_jobs.pipeline import main

    return main(argv, prog=prog)


def _serve(argv: list[str], prog: str) -> int:
    from serve.__main__ import main

    return main(argv)


def _evaluate(argv: list[str], prog: str) -> int:
    from ray_jobs.evaluate import main

    return main(argv)


def _commands() -> dict[str, tuple[Callable[[list[str], str], int], str]]:
    from weaksam.pipeline.stages import STAGE_NAMES

    out: dict[str, tuple[Callable[[list[str], str], int], str]] = {
        "run": (_pipeline, "run the pipeline: every stage in order, skipping fresh ones")
    }
    for name in STAGE_NAMES:
        out[name] = (_stage(name), f"run the {name!r} stage alone (resumes; --force reruns)")
    out["serve"] = (_serve, "serve a run's detector and segmenter over HTTP (Ray Serve)")
    out["evaluate"] = (_evaluate, "evaluate detections / proposals / PGT files against GT")
    return out


def usage(commands: dict[str, tuple[Callable[[list[str], str], int], str]]) -> str:
    width = max(len(n) for n in commands)
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in commands.items()]
    return "usage: weaksam COMMAND [--config FILE] [options]\n\ncommands:\n" + "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    commands = _commands()
    if not words or words[0] in ("-h", "--help", "help"):
        print(usage(commands))
        return 0 if words else 2
    name, rest = words[0], words[1:]
    if name not in commands:
        print(f"weaksam: unknown command {name!r}\n\n{usage(commands)}", file=sys.stderr)
        return 2
    run, _ = commands[name]
    return run(rest, f"weaksam {name}")


if __name__ == "__main__":
    raise SystemExit(main())
