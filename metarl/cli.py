"""The ``metarl`` command line.

::

    metarl list                                   # families, variants, algorithms, presets
    metarl train maml-trpo --env HalfCheetahVel --preset quick --iterations 20 --seed 1
    metarl train maml-trpo --resume runs/maml-trpo-HalfCheetahVel-...
    metarl eval runs/RUN_A runs/RUN_B --protocol paper   # meta-test: RUN/eval/paper.{csv,json,png}
    metarl render runs/RUN_A --task-index 3 --gif         # videos/RUN_A/<family>-<task>.mp4

Every option of ``train`` is a field of :class:`metarl.train.RunArgs` or of the algorithm's
config dataclass (``metarl train ALGO --help`` lists them with their docs); the preset gives
the defaults and flags override single fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import re
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

__all__ = [
    "RENAMED_FLAGS",
    "SEED_MAX",
    "UsageError",
    "check_flags",
    "check_run_settings",
    "check_torch_threads",
    "given_settings",
    "main",
    "parse_args",
    "parse_train_args",
]

USAGE = """usage: metarl COMMAND ...

commands:
  train ALGO [options]   meta-train an agent (metarl train --help: agents and common options)
  eval RUN [RUN ...]     meta-test on held-out tasks with a from-scratch PPO baseline
  render RUN             video of a held-out task before and after each adaptation step
  list                   task families, algorithms and presets

options:
  -h, --help             show this message
  --version              show metarl's version
"""


class UsageError(ValueError):
    """A command line that cannot run; printed without a traceback."""


RENAMED_FLAGS = {
    "--num-steps": "--num-adapt-steps",
    "--adapt-steps": "--num-adapt-steps",
    "--workers": "--num-workers",
    "--ppo-epochs": "--update-epochs",
    "--clip-value-loss": "--clip-vloss",
    "--no-clip-value-loss": "--no-clip-vloss",
}
"""Flags of earlier versions -> today's: one name per concept in every command, script and
benchmark (the config fields' names, cleanrl's where it has one)."""


def check_flags(argv: Sequence[str]) -> None:
    """Refuse the spellings of earlier versions, naming today's.

    Raises:
        UsageError: a renamed flag (:data:`RENAMED_FLAGS`), or a boolean given a value
            (``--progress False``: booleans are ``--progress`` / ``--no-progress``).
    """
    for i, arg in enumerate(argv):
        flag, _, value = arg.partition("=")
        if flag in RENAMED_FLAGS:
            raise UsageError(f"{flag} is now {RENAMED_FLAGS[flag]}")
        if not flag.startswith("--"):
            continue
        if not value and i + 1 < len(argv):
            value = argv[i + 1]
        if value.lower() in ("true", "false"):
            name = RENAMED_FLAGS.get(flag, flag)
            new = name if value.lower() == "true" else "--no-" + name[2:]
            raise UsageError(f"{flag} {value} is now {new} (booleans are --flag / --no-flag)")


SEED_MAX = 2**64 - 1
"""The largest ``--seed``: torch's generator takes 64 bits (numpy's would take more)."""


def _usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_torch_threads(n: int) -> None:
    """Refuse a ``--torch-threads`` below 1 or above the CPUs this process may use (torch
    would try to start them all: 100000 ran out of threads and crashed).

    Raises:
        UsageError: naming the flag and the most it allows.
    """
    if n < 1:
        raise UsageError(f"--torch-threads must be >= 1, got {n}")
    cpus = _usable_cpus()
    if n > cpus:
        raise UsageError(
            f"--torch-threads {n} exceeds the {cpus} CPUs this process may use: give at most {cpus}"
        )


def check_run_settings(run: Any, iterations: int) -> None:
    """Refuse run settings no run can have, naming the flag and what it allows.

    ``--keep-every`` need not be a multiple of ``--checkpoint-every``: every multiple of
    ``--keep-every`` is kept whatever ``--checkpoint-every`` is (a kept checkpoint is written
    on its own iteration, and refreshes latest.pt too).

    Raises:
        UsageError: a seed outside 0..2**64 - 1; fewer than 1 iteration, checkpoint interval,
            keep interval, worker or torch thread; more worker processes or torch threads than
            this machine has CPUs; or --num-workers above 1 with the inline backend.
    """
    if not 0 <= run.seed <= SEED_MAX:
        raise UsageError(f"--seed must be between 0 and 2**64 - 1, got {run.seed}")
    for flag, value, what in (
        ("--iterations", iterations, "meta-iterations to train"),
        ("--checkpoint-every", run.checkpoint_every, "write latest.pt every N iterations"),
        ("--keep-every", run.keep_every, "keep iter_N.pt every N iterations"),
        ("--num-workers", run.num_workers, "worker processes or Ray actors"),
        ("--torch-threads", run.torch_threads, "CPU threads of the optimization"),
    ):
        if value < 1:
            raise UsageError(f"{flag} must be >= 1 ({what}), got {value}")
    check_torch_threads(run.torch_threads)
    cpus = _usable_cpus()
    if run.backend == "inline" and run.num_workers > 1:
        raise UsageError(
            f"--num-workers {run.num_workers} needs --backend processes or --backend ray "
            "(the inline backend samples in this process)"
        )
    if run.backend == "processes" and run.num_workers > cpus:
        raise UsageError(
            f"--num-workers {run.num_workers} exceeds the {cpus} CPUs this process may use (the "
            f"processes backend runs one worker per CPU): give at most {cpus}, or use "
            "--backend ray with a Ray cluster"
        )


def parse_args(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
) -> argparse.Namespace:
    """``parser.parse_args(argv)`` after :func:`check_flags`: an old spelling exits with
    status 2 and one line naming today's (the benchmarks' scripts parse this way)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        check_flags(argv)
    except UsageError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    return parser.parse_args(argv)


def clean_help(text: str, width: int | None = None) -> str:
    """Help text as a terminal shows it: no RST markup, each paragraph one line, literal
    blocks (indented lines) kept line by line.

    With ``width``, paragraphs are wrapped with a hanging indent (tyro joins a description's
    lines unless the next one starts with a space).
    """
    import textwrap

    out = ""
    for para in re.split(r"\n\s*\n", inspect.cleandoc(text)):
        lines = para.splitlines()
        para = re.sub(r"`+([^`]*)`+", r"\1", para)
        indent = "" if width is None else "  "
        if lines and all(line[:1].isspace() for line in lines):  # a literal block: keep it
            out += "\n" + "\n".join(indent + "  " + line.strip() for line in para.splitlines())
            continue
        para = re.sub(r"::$", ":", " ".join(para.split()))
        if width is not None:
            para = textwrap.fill(para, width, subsequent_indent=indent)
        out += ("\n\n" if out else "") + para
    return out


def _field_help(cls: type) -> dict[str, str]:
    """Each field's docstring (the string after it in the class body), cleaned."""
    import docstring_parser

    return {
        p.arg_name: clean_help(p.description)
        for cls_ in reversed(cls.__mro__)
        if dataclasses.is_dataclass(cls_)
        for p in docstring_parser.parse_from_object(cls_).params
        if p.description
    }


def _help_copy(cls: type, extra: Sequence[tuple[str, Any, str]] = ()) -> type:
    """A frozen copy of dataclass ``cls`` for tyro, its help text cleaned by :func:`clean_help`.

    tyro keeps the source's line breaks inside a docstring and its backticks; the copy gives
    every field its help explicitly. ``extra`` adds ``(name, type, help)`` fields in front.
    """
    import tyro

    hints = typing.get_type_hints(cls)
    docs = _field_help(cls)
    specs: list[tuple[str, Any]] = [
        (name, Annotated[tp, tyro.conf.arg(help=text)]) for name, tp, text in extra
    ]
    specs += [
        (f.name, Annotated[hints[f.name], tyro.conf.arg(help=docs.get(f.name, ""))])
        for f in dataclasses.fields(cls)
    ]
    copy = dataclasses.make_dataclass(cls.__name__, specs, frozen=True)
    copy.__doc__ = clean_help(cls.__doc__ or "")
    return copy


def _as(cls: type, copy: Any) -> Any:
    """The ``cls`` instance with the values of ``copy`` (a :func:`_help_copy` instance)."""
    return cls(**{f.name: getattr(copy, f.name) for f in dataclasses.fields(cls)})


def _help_width() -> int:
    import shutil

    return max(40, min(shutil.get_terminal_size().columns, 100) - 2)


def _agents_line() -> str:
    from metarl.registry import agent_classes

    return ", ".join(
        f"{name} (presets {'/'.join(cls.PRESET_NAMES)})" for name, cls in agent_classes().items()
    )


def _train_help(prog: str) -> int:
    """``metarl train --help``: the agents and the options every agent shares."""
    import tyro

    from metarl.train import RunArgs

    description = (
        f"Meta-train an agent on a task family. ALGO is one of: {_agents_line()}.\n\n"
        "The options below are the same for every agent; metarl train ALGO --help adds the "
        "agent's hyperparameters (--iterations, --meta-batch-size, ...). The preset gives "
        "the defaults and a flag overrides one setting."
    )
    run_cls = _help_copy(RunArgs)
    try:
        tyro.cli(
            run_cls,
            args=["--help"],
            default=run_cls(**dataclasses.asdict(RunArgs())),
            prog=prog,
            description=clean_help(description, _help_width()),
        )
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    return 0


def parse_train_args(
    algo: str,
    argv: Sequence[str],
    *,
    prog: str,
    description: str,
    env: str | None = None,
    algo_flag: bool = False,
) -> tuple[Any, Any, int | None]:
    """``(RunArgs, agent config, iterations override)`` from ``train``-style options.

    ``--preset`` (and ``--env``, unless ``env`` fixes the family) choose the defaults; every
    field of :class:`~metarl.train.RunArgs` and of the agent's config is a flag on top. Shared
    by ``metarl train`` and the scripts in ``experiments/`` (``algo_flag``: the script's
    ``--algo`` is shown among the options).

    Raises:
        UsageError: an unknown algorithm, a renamed flag, or a run setting no run can have
            (:func:`check_run_settings`), before any work.
    """
    import tyro

    from metarl.registry import agent_classes, family_class
    from metarl.train import RunArgs

    check_flags(argv)
    registry = agent_classes()
    if algo not in registry:
        raise UsageError(f"unknown algorithm {algo!r}; choose one of {sorted(registry)}")
    agent_cls = registry[algo]
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--env", default=env or RunArgs.env)
    pre.add_argument("--preset", default=RunArgs.preset)
    pre.add_argument("--tasks", default=None)
    known, _ = pre.parse_known_args(argv)
    if env is not None and known.env != env:
        raise UsageError(
            f"this script trains {env}; for {known.env} use its own script or `metarl train`"
        )
    if known.tasks is not None:
        # A factory that does not import or returns no sampler fails here, before any work.
        from metarl.tasks import load_task_sampler
        from metarl.train import sampler_name

        known.env = sampler_name(load_task_sampler(known.tasks))
    else:
        family_class(known.env)  # an unknown family fails here, listing the valid ones
    config = agent_cls.preset(known.preset, known.env)
    extra = []
    if algo_flag:
        choice = Literal.__getitem__(tuple(registry))
        extra = [("algo", choice, "The agent to train (its presets: see --preset).")]
    run_cls = _help_copy(RunArgs, extra)
    config_cls = _help_copy(agent_cls.config_cls)
    cli_cls = dataclasses.make_dataclass(
        "TrainArgs", [("run", run_cls), ("config", config_cls)], frozen=True
    )
    run_values = dataclasses.asdict(RunArgs(env=known.env, preset=known.preset, tasks=known.tasks))
    if algo_flag:
        run_values["algo"] = algo
    default = cli_cls(
        run=run_cls(**run_values),
        config=config_cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config)}),
    )
    args = tyro.cli(
        cli_cls,
        args=list(argv),
        default=default,
        prog=prog,
        description=clean_help(description, _help_width()),
        config=(tyro.conf.OmitArgPrefixes,),
    )
    explicit = any(a == "--iterations" or a.startswith("--iterations=") for a in argv)
    iterations = args.config.iterations if explicit else None
    run = _as(RunArgs, args.run)
    check_run_settings(run, args.config.iterations)
    return run, _as(agent_cls.config_cls, args.config), iterations


def given_settings(argv: Sequence[str]) -> set[str]:
    """The settings named by the flags in ``argv`` (``--meta-batch-size 4`` -> meta_batch_size,
    ``--no-progress`` -> progress)."""
    names = {
        a[2:].split("=", 1)[0].replace("-", "_") for a in argv if a.startswith("--") and len(a) > 2
    }
    return {n[3:] if n.startswith("no_") else n for n in names}


def _train(argv: Sequence[str]) -> int:
    from metarl.launch import launch
    from metarl.registry import agent_classes

    if argv and argv[0] in ("-h", "--help"):
        return _train_help("metarl train ALGO")
    if not argv or argv[0].startswith("-"):
        raise UsageError(
            f"usage: metarl train ALGO [options]; ALGO is one of {sorted(agent_classes())} "
            "(metarl train --help lists the options)"
        )
    algo = argv[0]
    run, config, iterations = parse_train_args(
        algo,
        argv[1:],
        prog=f"metarl train {algo}",
        description=f"Meta-train {algo}: run settings, then the agent's hyperparameters.",
    )
    run_dir = launch(algo, run, config, iterations=iterations, given=given_settings(argv[1:]))
    print(f"run folder: {run_dir}")
    return 0


def _list(argv: Sequence[str]) -> int:
    from metarl.registry import agent_classes, family_class, family_names

    print("task families (env id metarl/<name>-v0):")
    gym_families = []
    for name in family_names():
        cls = family_class(name)
        if getattr(cls, "gym_envs", False):
            gym_families.append(name)
            continue
        variants = ", ".join(
            f"{v} (H={spec.horizon})" + (" [default]" if v == cls.default_variant else "")
            for v, spec in cls.variants.items()
        )
        print(f"  {name:<18} variants: {variants}")
    if {"ML1", "ML10", "ML45"} <= set(gym_families):
        print("Meta-World (pip install 'metarl[metaworld]'; stepped through env.step, H=500):")
        print(
            "  ML1-<env>          one env, 50 train / 50 test goals (e.g. ML1-reach-v3, "
            "ML1-push-v3)"
        )
        print("  ML10, ML45         10 or 45 train envs, 5 held-out envs")
    others = [n for n in gym_families if n not in ("ML1", "ML10", "ML45")]
    if others:
        print("other families (stepped through env.step): " + ", ".join(others))
    print("algorithms and presets:")
    for name, agent_cls in agent_classes().items():
        presets = ", ".join(agent_cls.PRESET_NAMES)
        print(f"  {name:<12} presets: {presets}")
    return 0


def _eval_parser() -> argparse.ArgumentParser:
    from metarl.evaluation import BASELINE_EPISODES, BASELINE_TASKS

    parser = argparse.ArgumentParser(
        prog="metarl eval",
        description="Meta-test runs on held-out tasks: mean return after 0..K adaptation steps "
        "(RL^2: episode 1..K+1 of a trial) with 95% confidence intervals over tasks x seeds, "
        "beside Stable-Baselines3 PPO learning the same tasks from scratch with the same env "
        "steps. Writes RUN/eval/NAME.csv, .json and .png, NAME saying the settings: the "
        "protocol (quick), then each override (quick_num-tasks=3_seeds=0), so an eval with "
        "other settings never replaces another.",
    )
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run folders")
    parser.add_argument(
        "--protocol",
        default="quick",
        help="preset: quick or paper (Finn et "
        "al. 2017: 40 tasks, 20 rollouts per step, step size 0.1 then 0.05)",
    )
    parser.add_argument("--num-tasks", type=int, help="held-out tasks (override)")
    parser.add_argument("--num-adapt-steps", type=int, help="adaptation steps K (override)")
    parser.add_argument("--episodes-per-step", type=int, help="episodes per step (override)")
    parser.add_argument("--step-sizes", type=float, nargs="+", help="MAML step size per step")
    parser.add_argument("--seeds", type=int, nargs="+", help="sampling seeds (override)")
    parser.add_argument(
        "--checkpoint", help="iteration number or checkpoint file (default: checkpoints/latest.pt)"
    )
    parser.add_argument(
        "--baseline-tasks",
        type=int,
        default=BASELINE_TASKS,
        help=f"held-out tasks the SB3 PPO baseline learns (default {BASELINE_TASKS})",
    )
    parser.add_argument(
        "--baseline-episodes",
        type=int,
        default=BASELINE_EPISODES,
        help=f"episodes per evaluation of the baseline (default {BASELINE_EPISODES})",
    )
    parser.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train the SB3 PPO baseline (default: yes)",
    )
    parser.add_argument(
        "--figure",
        type=Path,
        help="PNG of all runs together (default with "
        "several runs: eval-NAME.png beside the first run folder)",
    )
    parser.add_argument(
        "--backend",
        default="inline",
        choices=["inline", "processes", "ray", "warp"],
        help="the agent's sampler (warp: MuJoCo Warp, on a CUDA device where torch finds one; "
        "its files are named backend=warp)",
    )
    parser.add_argument(
        "--num-workers", type=int, default=1, help="worker processes or Ray actors (default 1)"
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="CPU threads of torch (default 1: on a busy machine more threads spin and slow "
        "everything down; raise it on an idle many-core machine)",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="show progress bars: the agent's episodes, then the baseline's tasks (default: yes)",
    )
    return parser


def _earlier_eval(path: Path, iteration: int) -> str:
    """A note when ``path`` (an eval JSON about to be replaced) holds another iteration's
    evaluation with the same settings: the one thing its name does not say."""
    try:
        earlier = json.loads(path.read_text()).get("iteration")
    except (OSError, ValueError, AttributeError):
        return ""
    if earlier is None or earlier == iteration:
        return ""
    return f" (replacing the evaluation of iteration {earlier})"


def _eval(argv: Sequence[str]) -> int:
    check_flags(argv)
    args = _eval_parser().parse_args(list(argv))
    check_torch_threads(args.torch_threads)
    from metarl.train import torch_threads

    with torch_threads(args.torch_threads):
        return _eval_with(args)


def _eval_with(args: argparse.Namespace) -> int:
    from metarl.evaluation import (
        check_writable,
        eval_dir,
        eval_name,
        evaluate_run,
        format_table,
        held_out_tasks,
        load_run,
        make_protocol,
        write_eval,
    )
    from metarl.plots import plot_adaptation

    if args.num_workers < 1:
        raise UsageError(f"--num-workers must be >= 1, got {args.num_workers}")
    if args.baseline_tasks < 0 or args.baseline_episodes < 1:
        raise UsageError(
            "--baseline-tasks must be >= 0 and --baseline-episodes >= 1, got "
            f"{args.baseline_tasks} and {args.baseline_episodes}"
        )
    baseline_tasks = args.baseline_tasks if args.baseline else 0
    # Everything that can fail is checked before the first (long) evaluation starts.
    jobs = []
    for path in args.runs:
        run = load_run(path, checkpoint=args.checkpoint, device=_eval_device(args.backend))
        protocol = make_protocol(
            args.protocol,
            run.family.name,
            num_tasks=args.num_tasks,
            num_steps=args.num_adapt_steps,
            episodes_per_step=args.episodes_per_step,
            step_sizes=args.step_sizes,
            seeds=args.seeds,
        )
        if baseline_tasks > min(protocol.num_tasks, len(held_out_tasks(run.family, protocol))):
            raise UsageError(
                f"--baseline-tasks {baseline_tasks} exceeds the protocol's "
                f"{protocol.num_tasks} held-out tasks"
            )
        check_writable(eval_dir(run.path))
        name = eval_name(
            protocol,
            iteration=None if args.checkpoint is None else run.iteration,
            baseline_tasks=baseline_tasks,
            baseline_episodes=args.baseline_episodes,
            backend=args.backend,
        )
        jobs.append((run, protocol, name))
    figure = args.figure
    if figure is None and len(jobs) > 1:
        figure = Path(args.runs[0]).resolve().parent / f"eval-{jobs[0][2]}.png"
    if figure is not None:
        if Path(figure).suffix.lower() != ".png":
            raise UsageError(f"--figure must end in .png, got {figure}")
        check_writable(Path(figure).parent)
    results = []
    for run, protocol, name in jobs:
        result = evaluate_run(
            run,
            protocol,
            baseline_tasks=baseline_tasks,
            baseline_eval_episodes=args.baseline_episodes,
            backend=args.backend,
            num_workers=args.num_workers,
            progress=args.progress,
        )
        note = _earlier_eval(eval_dir(run.path) / f"{name}.json", run.iteration)
        paths = write_eval(result, eval_dir(run.path), name)
        png = plot_adaptation([result], eval_dir(run.path) / f"{name}.png")
        results.append(result)
        print(
            f"{run.name} ({run.algo}, {run.family.name}, iteration {run.iteration}, "
            f"protocol {protocol.name}):"
        )
        for line in format_table(result):
            print(line)
        print(f"  wrote {paths['csv']}, {paths['json'].name}, {png.name}{note}")
    if figure is not None:
        print(f"figure: {plot_adaptation(results, figure)}")
    return 0


def _eval_device(backend: str) -> Any:
    """Where ``metarl eval`` puts the agent: the warp backend simulates on the policy's device,
    a CUDA device where torch finds one (as ``--device auto``); the host backends sample on
    CPU workers."""
    from metarl.runs import resolve_device

    return resolve_device("auto" if backend == "warp" else "cpu")


def _render_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metarl render",
        description="Render a held-out task (or --task) before adaptation and after each "
        "adaptation step (RL^2: each episode of a trial), side by side, to an MP4. Each panel "
        "shows its stage and return, the task and the robot's live speed or distance to the "
        "goal.",
    )
    parser.add_argument("run", type=Path, metavar="RUN", help="run folder")
    parser.add_argument(
        "--task",
        help="task as JSON, e.g. '{\"velocity\": 1.5}' (default: held-out task --task-index)",
    )
    parser.add_argument("--task-index", type=int, default=0, help="which held-out test task")
    parser.add_argument(
        "--out",
        type=Path,
        help="MP4 path (default videos/RUN/FAMILY-TASK.mp4, e.g. "
        "HalfCheetahVel-velocity-0.28-test3.mp4, with any setting given here appended)",
    )
    parser.add_argument(
        "--gif",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also write a GIF beside the MP4 (default: no)",
    )
    parser.add_argument("--num-adapt-steps", type=int, help="adaptation steps K (K + 1 panels)")
    parser.add_argument("--episodes-per-step", type=int, help="episodes per adaptation step")
    parser.add_argument("--step-sizes", type=float, nargs="+", help="MAML step size per step")
    parser.add_argument("--width", type=int, default=320, help="panel width in pixels")
    parser.add_argument("--height", type=int, default=240, help="panel height in pixels")
    parser.add_argument("--fps", type=int, help="frames per second (default: real time)")
    parser.add_argument(
        "--camera", help="MuJoCo camera name or id (default: one tracking the robot)"
    )
    parser.add_argument(
        "--overlay",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write the task and the live speed or distance on each panel and draw the target "
        "(goal marker, direction arrow) in the scene (default: yes)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds resets and adaptation")
    parser.add_argument("--checkpoint", help="iteration number or checkpoint file")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="CPU threads of torch (default 1: on a busy machine more threads spin and slow "
        "everything down; raise it on an idle many-core machine)",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="show a progress bar (default: yes)",
    )
    return parser


def _render(argv: Sequence[str]) -> int:
    check_flags(argv)
    args = _render_parser().parse_args(list(argv))
    check_torch_threads(args.torch_threads)
    from metarl.train import torch_threads
    from metarl.video import RenderError, render_adaptation, select_gl_backend

    try:
        # Before MuJoCo is imported; a family that needs no OpenGL renders without one, and
        # one that does asks again and reports what was tried.
        select_gl_backend()
    except RenderError:
        pass
    from metarl.evaluation import load_run
    from metarl.tasks import Task

    task = None
    if args.task is not None:
        try:
            task = Task.from_json(args.task)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--task is not valid JSON ({exc}): {args.task!r}") from exc
    run = load_run(args.run, checkpoint=args.checkpoint)
    try:
        with torch_threads(args.torch_threads):
            path = render_adaptation(
                run,
                task=task,
                task_index=args.task_index,
                out=args.out,
                num_steps=args.num_adapt_steps,
                episodes_per_step=args.episodes_per_step,
                step_sizes=args.step_sizes,
                width=args.width,
                height=args.height,
                fps=args.fps,
                camera=args.camera,
                seed=args.seed,
                gif=args.gif,
                progress=args.progress,
                overlay=args.overlay,
            )
    except RenderError as exc:
        raise UsageError(str(exc)) from exc
    print(f"video: {path}" + (f" (and {path.with_suffix('.gif')})" if args.gif else ""))
    return 0


COMMANDS = {"train": _train, "eval": _eval, "render": _render, "list": _list}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``metarl`` script; returns the exit status."""
    from metarl.runs import RunError, TrainingError, one_line
    from metarl.sampling import DivergedError, WorkerError

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] == "--version":
        from metarl import __version__

        print(f"metarl {__version__}")
        return 0
    command = argv[0]
    if command not in COMMANDS:
        print(
            f"metarl: unknown command {command!r}; commands are {sorted(COMMANDS)}", file=sys.stderr
        )
        return 2
    try:
        return COMMANDS[command](argv[1:])
    except (UsageError, RunError, ValueError, ImportError) as exc:
        print(f"metarl {command}: error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, TrainingError) else 2
    except (MemoryError, OSError, WorkerError, DivergedError) as exc:
        # Circumstances (a dead worker, no memory, a full disk), not a bad command line: one
        # line, exit status 1. Training has kept its last completed iteration by then.
        print(f"metarl {command}: error: {one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except SystemExit as exc:  # tyro reports bad flags (and --help) this way
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)


if __name__ == "__main__":
    raise SystemExit(main())
