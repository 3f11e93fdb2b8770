"""The ``metarl`` command line.

::

    metarl list                                   # families, variants, algorithms, presets
    metarl train maml-trpo --env HalfCheetahVel --preset quick --iterations 20 --seed 1
    metarl train maml-trpo --resume runs/maml-trpo-HalfCheetahVel-...

Every option of ``train`` is a field of :class:`metarl.train.RunArgs` or of the algorithm's
config dataclass (``metarl train ALGO --help`` lists them with their docs); the preset gives
the defaults and flags override single fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

__all__ = ["main"]

USAGE = """usage: metarl COMMAND ...

commands:
  train ALGO [options]   meta-train an agent (metarl train ALGO --help for options)
  list                   task families, algorithms and presets
"""


class UsageError(ValueError):
    """A command line that cannot run; printed without a traceback."""


def _train(argv: Sequence[str]) -> int:
    import tyro

    from metarl.train import RunArgs, agent_registry, train

    registry = agent_registry()
    if not argv or argv[0].startswith("-"):
        raise UsageError(f"usage: metarl train ALGO [options]; ALGO is one of {sorted(registry)}")
    algo, rest = argv[0], list(argv[1:])
    if algo not in registry:
        raise UsageError(f"unknown algorithm {algo!r}; choose one of {sorted(registry)}")
    agent_cls = registry[algo]
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--env", default=RunArgs.env)
    pre.add_argument("--preset", default=RunArgs.preset)
    known, _ = pre.parse_known_args(rest)
    from metarl.envs import make_family

    make_family(known.env)  # an unknown family fails here, listing the valid ones
    config = agent_cls.preset(known.preset, known.env)  # type: ignore[attr-defined]
    cli_cls = dataclasses.make_dataclass(
        "TrainArgs", [("run", RunArgs), ("config", agent_cls.config_cls)], frozen=True
    )
    default = cli_cls(run=RunArgs(env=known.env, preset=known.preset), config=config)
    args = tyro.cli(
        cli_cls,
        args=rest,
        default=default,
        prog=f"metarl train {algo}",
        description=f"Meta-train {algo}: run settings, then {agent_cls.config_cls.__name__}.",
        config=(tyro.conf.OmitArgPrefixes, tyro.conf.FlagConversionOff),
    )
    explicit = any(a == "--iterations" or a.startswith("--iterations=") for a in rest)
    iterations = args.config.iterations if explicit else None  # type: ignore[attr-defined]
    run_dir = train(algo, args.run, args.config, iterations=iterations)  # type: ignore[attr-defined]
    print(f"run folder: {run_dir}")
    return 0


def _list(argv: Sequence[str]) -> int:
    from metarl.envs import FAMILIES
    from metarl.train import agent_registry

    print("task families (env id metarl/<name>-v0):")
    for name, cls in FAMILIES.items():
        variants = ", ".join(
            f"{v} (H={spec.horizon})" + (" [default]" if v == cls.default_variant else "")
            for v, spec in cls.variants.items()
        )
        print(f"  {name:<18} variants: {variants}")
    print("algorithms and presets:")
    for name, agent_cls in agent_registry().items():
        presets = ", ".join(getattr(agent_cls, "PRESET_NAMES", ()))
        print(f"  {name:<12} presets: {presets}")
    return 0


COMMANDS = {"train": _train, "list": _list}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``metarl`` script; returns the exit status."""
    from metarl.runs import RunError

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command = argv[0]
    if command not in COMMANDS:
        print(f"metarl: unknown command {command!r}; commands are {sorted(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[command](argv[1:])
    except (UsageError, RunError, ValueError) as exc:
        print(f"metarl {command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except SystemExit as exc:  # tyro reports bad flags (and --help) this way
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)


if __name__ == "__main__":
    raise SystemExit(main())
