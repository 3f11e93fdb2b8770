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
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

import tyro

from metarl.runs import RunError
from metarl.train import RunArgs, agent_registry, train


def parse(family: str, doc: str, argv: Sequence[str] | None = None) -> tuple[str, RunArgs, object]:
    """``(algo, run settings, agent config)`` from the command line of a family's script.

    Raises:
        ValueError: an unknown agent or preset, or a ``--env`` other than ``family``.
    """
    registry = agent_registry()
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--algo", default="maml-trpo")
    pre.add_argument("--preset", default="quick")
    known, rest = pre.parse_known_args(argv)
    if known.algo not in registry:
        raise ValueError(f"unknown --algo {known.algo!r}; choose one of {sorted(registry)}")
    agent_cls = registry[known.algo]
    presets = tuple(getattr(agent_cls, "PRESET_NAMES", ()))
    if known.preset not in presets:
        raise ValueError(
            f"{known.algo} has no preset {known.preset!r}; its presets are {list(presets)}"
        )
    config = agent_cls.preset(known.preset, family)  # type: ignore[attr-defined]
    cli_cls = dataclasses.make_dataclass(
        "ExperimentArgs", [("run", RunArgs), ("config", agent_cls.config_cls)], frozen=True
    )
    default = cli_cls(run=RunArgs(env=family, preset=known.preset), config=config)
    prog = Path(sys.argv[0]).name
    agents = ", ".join(
        f"{name} ({'/'.join(getattr(cls, 'PRESET_NAMES', ()))})" for name, cls in registry.items()
    )
    args = tyro.cli(
        cli_cls,
        args=rest,
        default=default,
        prog=f"{prog} --algo ALGO --preset PRESET",
        description=f"{doc.strip()}\n\nAgents (presets): {agents}.",
        config=(tyro.conf.OmitArgPrefixes, tyro.conf.FlagConversionOff),
    )
    run: RunArgs = args.run  # type: ignore[attr-defined]
    if run.env != family:
        raise ValueError(
            f"{prog} trains {family}; for {run.env} use its own script or `metarl train`"
        )
    return known.algo, run, args.config  # type: ignore[attr-defined]


def main(family: str, doc: str, argv: Sequence[str] | None = None) -> int:
    """Train an agent on ``family`` as the command line says; returns the exit status."""
    try:
        algo, run, config = parse(family, doc, argv)
        run_dir = train(algo, run, config)
    except (RunError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(f"run folder: {run_dir}")
    print(f"next: metarl eval {run_dir}   and   metarl render {run_dir}")
    return 0
