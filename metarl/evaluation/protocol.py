"""The meta-test protocol: which held-out tasks, how many adaptation steps and episodes, which
step sizes and seeds; the presets (:data:`PROTOCOLS`) are data, and an evaluation's file name
says the settings that differ from them (:func:`eval_name`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from metarl.agent import MetaAgent, check_settings
from metarl.tasks import Task

if TYPE_CHECKING:
    from metarl.family import TaskFamily

BASELINE_TASKS = 3
"""Held-out tasks the SB3 baseline learns by default (``metarl eval --baseline-tasks``)."""
BASELINE_EPISODES = 5
"""Episodes per evaluation of the SB3 baseline by default (``--baseline-episodes``)."""


@dataclass(frozen=True)
class Protocol:
    """How a meta-test is run.

    Attributes:
        name: the preset name, followed by the settings that differ from the preset
            (``quick_num-tasks=3_seeds=0``, see :func:`make_protocol`); names the output files.
        num_tasks: held-out tasks used (the first ones of the test split).
        num_steps: adaptation steps K (RL^2: episodes 1..K+1 of a trial).
        episodes_per_step: episodes per task and adaptation step (RL^2: trials per task).
        step_sizes: step size of each adaptation step for agents whose ``adapt`` takes ``lr``
            (MAML-TRPO); None: the agent's own ``adapt_lr``.
        seeds: sampling seeds; every seed repeats the whole protocol.
        task_split: the family's named task split whose test tasks are used.
    """

    name: str = "quick"
    num_tasks: int = 10
    num_steps: int = 2
    episodes_per_step: int = 10
    step_sizes: tuple[float, ...] | None = None
    seeds: tuple[int, ...] = (0, 1)
    task_split: str = "default"

    def __post_init__(self) -> None:
        checks = [
            (self.num_tasks >= 1, "num_tasks", ">= 1"),
            (self.num_steps >= 0, "num_steps", ">= 0"),
            (self.episodes_per_step >= 1, "episodes_per_step", ">= 1"),
            (len(self.seeds) >= 1, "seeds", "at least one seed"),
            (len(set(self.seeds)) == len(self.seeds), "seeds", "distinct"),
        ]
        if self.step_sizes is not None:
            checks.append(
                (
                    len(self.step_sizes) >= self.num_steps,
                    "step_sizes",
                    f"one per adaptation step ({self.num_steps})",
                )
            )
            checks.append((all(s > 0 for s in self.step_sizes), "step_sizes", "positive"))
        check_settings(self, checks)


PROTOCOLS: dict[str, Protocol] = {
    # Finn et al. 2017: 40 test tasks, 20 rollouts per step, step size 0.1 then 0.05.
    "paper": Protocol(
        "paper",
        num_tasks=40,
        num_steps=3,
        episodes_per_step=20,
        step_sizes=(0.1, 0.05, 0.05),
        seeds=(0, 1, 2),
    ),
    "quick": Protocol("quick", num_tasks=10, num_steps=2, episodes_per_step=10, seeds=(0, 1)),
}
"""Protocol presets: ``paper`` (the MAML paper's meta-test) and ``quick`` (seconds to minutes)."""

PAPER_PROTOCOL_CHANGES: dict[str, dict[str, Any]] = {
    # cbfinn/maml_rl maml_examples/test_maml_ant_direc.py: batch_size 8000 (40 rollouts of
    # 200 steps) and a later-step learning rate of 0.01 x 0.1.
    "AntDir": {"episodes_per_step": 40, "step_sizes": (0.1, 0.001, 0.001)},
    # cbfinn/maml_rl maml_examples/test_maml_point.py: batch_size 4000 (40 rollouts of 100).
    "Point2DNav": {"episodes_per_step": 40},
}
"""Families whose paper meta-test differs from the common one."""

PROTOCOL_FLAGS = {
    "num_tasks": "num-tasks",
    "num_steps": "num-adapt-steps",
    "episodes_per_step": "episodes-per-step",
    "step_sizes": "step-sizes",
    "seeds": "seeds",
    "task_split": "task-split",
}
"""Protocol field -> the ``metarl eval`` flag that sets it (the spelling file names use)."""


def settings_name(base: str, settings: Mapping[str, Any]) -> str:
    """``base`` followed by ``_flag=value`` for each setting, as a file name can hold it.

    ``settings_name("quick", {"num-tasks": 3, "seeds": (0, 1)})`` is
    ``"quick_num-tasks=3_seeds=0,1"``; a value of True is the bare flag (``no-baseline``).
    Floats are written with ``%g``; path separators and spaces become ``-``.
    """

    def text(value: Any) -> str:
        if isinstance(value, list | tuple):
            return ",".join(text(v) for v in value)
        if isinstance(value, float):
            return f"{value:g}"
        return str(value)

    parts = [base]
    for flag, value in settings.items():
        parts.append(flag if value is True else f"{flag}={text(value)}")
    name = "_".join(parts)
    for bad in ("/", "\\", " ", "\t", "\n"):
        name = name.replace(bad, "-")
    return name


def make_protocol(name: str, family: str, **overrides: Any) -> Protocol:
    """The preset ``name`` for ``family`` with ``overrides`` (fields of :class:`Protocol`).

    Raises:
        ValueError: an unknown preset or field, or an impossible value.
    """
    if name not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {name!r}; choose one of {sorted(PROTOCOLS)}")
    protocol = PROTOCOLS[name]
    if name == "paper" and family in PAPER_PROTOCOL_CHANGES:
        protocol = replace(protocol, **PAPER_PROTOCOL_CHANGES[family])
    unknown = set(overrides) - set(Protocol.__dataclass_fields__)
    if unknown:
        raise ValueError(f"Protocol has no fields {sorted(unknown)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    if "step_sizes" in given:
        given["step_sizes"] = tuple(float(s) for s in given["step_sizes"])
    if "seeds" in given:
        given["seeds"] = tuple(int(s) for s in given["seeds"])
    if given:
        # A changed protocol is no longer the preset: its name (and so its files) says how.
        changed = {k: v for k, v in given.items() if getattr(protocol, k) != v}
        if changed and "name" not in given:
            flags = {PROTOCOL_FLAGS.get(k, k.replace("_", "-")): v for k, v in changed.items()}
            given["name"] = settings_name(name, flags)
        protocol = replace(protocol, **given)
    return protocol


def eval_name(
    protocol: Protocol,
    iteration: int | None = None,
    baseline_tasks: int = BASELINE_TASKS,
    baseline_episodes: int = BASELINE_EPISODES,
    backend: str = "inline",
) -> str:
    """The name of an evaluation's files: the protocol's name (preset and overrides), then
    the other settings that differ from ``metarl eval``'s defaults.

    Args:
        protocol: from :func:`make_protocol`.
        iteration: the evaluated checkpoint's iteration when one was chosen (``--checkpoint``);
            None for the run's latest checkpoint.
        baseline_tasks: tasks of the SB3 baseline (0: none, ``no-baseline``).
        baseline_episodes: episodes per baseline evaluation (named only with a baseline).
        backend: the agent's sampler. The host backends (inline, processes, ray) give the
            same numbers and share a name; ``warp`` simulates otherwise (float32, and the
            Ant's contacts: see ``docs/training.md``) and is named (``backend=warp``).
    """
    extra: dict[str, Any] = {}
    if backend == "warp":
        extra["backend"] = "warp"
    if iteration is not None:
        extra["iteration"] = int(iteration)
    if baseline_tasks == 0:
        extra["no-baseline"] = True
    else:
        if baseline_tasks != BASELINE_TASKS:
            extra["baseline-tasks"] = baseline_tasks
        if baseline_episodes != BASELINE_EPISODES:
            extra["baseline-episodes"] = baseline_episodes
    return settings_name(protocol.name, extra)


def held_out_tasks(family: TaskFamily, protocol: Protocol) -> list[Task]:
    """The first ``protocol.num_tasks`` test tasks of the family's split.

    A family with a finite task set (a split that is not disjoint, e.g. HalfCheetahDir's two
    directions) repeats its tasks in order: the paper's 40 test tasks there are 40 draws of the
    two directions.

    Raises:
        ValueError: a disjoint split with fewer test tasks than asked for.
    """
    split = family.task_split(protocol.task_split)
    test = list(split.test)
    if protocol.num_tasks > len(test):
        if not split.disjoint:
            return [test[i % len(test)] for i in range(protocol.num_tasks)]
        raise ValueError(
            f"{family.name}: the {protocol.task_split!r} split has {len(test)} test tasks; "
            f"num_tasks={protocol.num_tasks} asks for more (pass --num-tasks {len(test)})"
        )
    return test[: protocol.num_tasks]


def steps_per_adaptation(agent: MetaAgent, protocol: Protocol, horizon: int) -> int:
    """Env steps (at most) the agent sees per adaptation step of one task.

    A gradient agent adapts on ``episodes_per_step`` episodes; RL^2 on one episode of its
    trial (its ``episodes_per_step`` trials are independent repeats).
    """
    return horizon if agent.recurrent else protocol.episodes_per_step * horizon
