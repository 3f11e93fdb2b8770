"""What every experiment script shares: choose the agent and preset, parse options, train.

Each script in ``experiments/`` fixes one task family and calls :func:`main`. The options are
``--algo`` (any agent of ``metarl.agents.AGENTS``) and ``--preset`` (the agent's presets for
this family: ``quick``, ``default``, ``paper`` for MAML-TRPO, ``varibad`` for RL^2), then every
field of :class:`metarl.train.RunArgs` and of the agent's config as flags (``--iterations``,
``--meta-batch-size``, ``--horizon``, ``--seed``, ``--run-dir``, ``--backend``, ...). The
preset gives the defaults; a flag overrides one field. Nothing in the library imports this.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from metarl.cli import given_settings, parse_train_args
from metarl.launch import launch
from metarl.registry import agent_classes
from metarl.runs import RunError, TrainingError, one_line
from metarl.sampling import DivergedError, WorkerError
from metarl.train import RunArgs


def parse(
    family: str, doc: str, argv: Sequence[str] | None = None
) -> tuple[str, RunArgs, object, int | None]:
    """``(algo, run settings, agent config, iterations)`` from a family script's command line.

    ``iterations`` is set when ``--iterations`` was given (it may extend a resumed run).

    Raises:
        ValueError: an unknown agent or preset, or a ``--env`` other than ``family``.
    """
    registry = agent_classes()
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--algo", default="maml-trpo")
    known, rest = pre.parse_known_args(argv)
    if known.algo not in registry:
        raise ValueError(f"unknown --algo {known.algo!r}; choose one of {sorted(registry)}")
    agents = ", ".join(
        f"{name} ({'/'.join(getattr(cls, 'PRESET_NAMES', ()))})" for name, cls in registry.items()
    )
    run, config, iterations = parse_train_args(
        known.algo,
        rest,
        prog=Path(sys.argv[0]).name,
        description=f"{doc.strip()}\n\nAgents (presets): {agents}.",
        env=family,
        algo_flag=True,
    )
    return known.algo, run, config, iterations


def main(family: str, doc: str, argv: Sequence[str] | None = None) -> int:
    """Train an agent on ``family`` as the command line says; returns the exit status."""
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        algo, run, config, iterations = parse(family, doc, argv)
        # The script fixes the family: a resumed run must be of it.
        given = given_settings(argv) | {"env"}
        run_dir = launch(algo, run, config, iterations=iterations, given=given)
    except (RunError, ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, TrainingError) else 2
    except (MemoryError, OSError, WorkerError, DivergedError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except SystemExit as exc:  # tyro reports bad flags (and --help) this way
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    print(f"run folder: {run_dir}")
    print(f"next: metarl eval {run_dir}   and   metarl render {run_dir}")
    return 0
