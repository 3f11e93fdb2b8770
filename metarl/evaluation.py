"""Meta-test evaluation: how well and how fast a meta-trained agent adapts to held-out tasks.

The protocol (:class:`Protocol`) asks every agent the same question through
:meth:`metarl.agent.MetaAgent.adaptation_curve`: the mean return after 0..K adaptation steps
(MAML-TRPO, Reptile-PPO) or of episode 1..K+1 of a trial (RL^2), on the first ``num_tasks``
tasks of the family's held-out test split, once per seed. Each step is summarized over the
``tasks x seeds`` values by their mean and a Student-t 95% confidence interval.

The honest baseline (:func:`sb3_baseline`) gives Stable-Baselines3's PPO the same number of env
steps per adaptation step on the same held-out tasks, learning from scratch. The published
MAML-TRPO numbers (Finn et al. 2017, :data:`PUBLISHED_MAML_TRPO`) are attached where family,
variant, horizon and protocol match the paper's.

A run's evaluation lands in ``RUN_DIR/eval/<name>.{csv,json,png}``, the name saying the settings
that made it (:func:`eval_name`: ``quick``, ``quick_num-tasks=3_seeds=0``,
``paper_no-baseline``), so an evaluation with other settings never replaces another.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import secrets
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from metarl.agent import MetaAgent, config_from_dict
from metarl.runs import RunError, latest_checkpoint, load_checkpoint, read_run_config
from metarl.tasks import Task

if TYPE_CHECKING:
    from metarl.family import TaskFamily

__all__ = [
    "CSV_COLUMNS",
    "PROTOCOLS",
    "PUBLISHED_MAML_TRPO",
    "EvalResult",
    "LoadedRun",
    "Protocol",
    "PublishedCurve",
    "Summary",
    "check_writable",
    "eval_name",
    "evaluate_run",
    "format_table",
    "held_out_tasks",
    "load_run",
    "make_protocol",
    "sb3_baseline",
    "settings_name",
    "steps_per_adaptation",
    "student_t_quantile",
    "summarize",
    "summarize_with_divergence",
    "write_atomically",
    "write_eval",
]

EVAL_DIR = "eval"

BASELINE_TASKS = 3
"""Held-out tasks the SB3 baseline learns by default (``metarl eval --baseline-tasks``)."""
BASELINE_EPISODES = 5
"""Episodes per evaluation of the SB3 baseline by default (``--baseline-episodes``)."""


# --------------------------------------------------------------------------------------------
# Loading a run folder
# --------------------------------------------------------------------------------------------


@dataclass
class LoadedRun:
    """A meta-trained agent rebuilt from its run folder.

    Attributes:
        path: the run folder.
        algo: the agent's registry name (``maml-trpo``, ...).
        agent: the agent with the checkpoint's weights.
        family: the task family with the run's variant and horizon.
        config: the run's whole ``config.json``.
        checkpoint: the checkpoint file that was loaded.
        iteration: meta-iterations the checkpoint had done.
    """

    path: Path
    algo: str
    agent: MetaAgent
    family: TaskFamily
    config: dict[str, Any]
    checkpoint: Path
    iteration: int

    @property
    def name(self) -> str:
        """The run folder's name (used in plots, CSV rows and video names)."""
        return self.path.resolve().name


def _checkpoint_path(run_dir: Path, checkpoint: str | Path | int | None) -> Path:
    if checkpoint is None:
        return latest_checkpoint(run_dir)
    if isinstance(checkpoint, int) or (isinstance(checkpoint, str) and checkpoint.isdigit()):
        path = run_dir / "checkpoints" / f"iter_{int(checkpoint):06d}.pt"
    else:
        path = Path(checkpoint)
        if not path.is_absolute() and not path.exists():
            path = run_dir / "checkpoints" / path
    if not path.is_file():
        kept = sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt"))
        raise RunError(f"checkpoint {checkpoint!r} not found in {run_dir}; it has {kept}")
    return path


def load_run(
    path: str | Path,
    checkpoint: str | Path | int | None = None,
    device: str | torch.device = "cpu",
) -> LoadedRun:
    """Rebuild the agent and task family of a run folder from a checkpoint.

    A run trained with ``--tasks module:callable`` gets its sampler built again, as a
    :class:`~metarl.gym_family.SamplerFamily`.

    Args:
        path: the run folder (``runs/maml-trpo-HalfCheetahVel-...``).
        checkpoint: None for ``checkpoints/latest.pt``, an iteration number for
            ``checkpoints/iter_XXXXXX.pt``, or a checkpoint file.
        device: where the agent's tensors go.

    Raises:
        RunError: a missing folder, a folder without config or checkpoint, one written by a
            newer metarl, an unknown algorithm, a checkpoint that does not fit the config, or
            a custom sampler that was passed from Python (no ``--tasks``) or fails to build.
    """
    from metarl.registry import agent_classes

    run_dir = Path(path)
    saved = read_run_config(run_dir)
    missing = [k for k in ("algo", "config", "family") if k not in saved]
    if missing:
        raise RunError(f"{run_dir}/config.json is incomplete: it lacks {missing}")
    algo = saved["algo"]
    registry = agent_classes()
    if algo not in registry:
        raise RunError(
            f"{run_dir} was made by {algo!r}, which this metarl does not know; "
            f"it knows {sorted(registry)}"
        )
    agent_cls = registry[algo]
    fam = saved["family"]
    try:
        family = _run_family(run_dir, fam)
        config = config_from_dict(agent_cls.config_cls, saved["config"])
    except RunError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(f"{run_dir}/config.json cannot be used: {exc}") from exc
    ckpt = _checkpoint_path(run_dir, checkpoint)
    state = load_checkpoint(ckpt, map_location=device)
    if state.get("algo", algo) != algo:
        raise RunError(f"{ckpt} is a {state.get('algo')!r} checkpoint, the run is {algo!r}")
    agent = agent_cls(config, family.observation_space, family.action_space, torch.device(device))
    try:
        agent.load_state_dict(state["agent"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise RunError(f"{ckpt} does not fit the run's {algo} config: {exc}") from exc
    return LoadedRun(run_dir, algo, agent, family, saved, ckpt, int(state["iteration"]))


def _run_family(run_dir: Path, fam: dict[str, Any]) -> TaskFamily:
    """The family a run trained on: a built-in one, or its ``--tasks`` sampler built again."""
    from metarl.gym_family import SamplerFamily
    from metarl.registry import make_family
    from metarl.tasks import load_task_sampler

    if not fam.get("custom"):
        return make_family(fam["name"], variant=fam.get("variant"), horizon=fam.get("horizon"))
    spec = fam.get("tasks")
    if spec is None:
        raise RunError(
            f"{run_dir} was trained on a task sampler passed from Python ({fam.get('name')!r}) "
            "and cannot be rebuilt; train with --tasks module:callable (RunArgs.tasks) so that "
            "eval, render and --resume can"
        )
    try:
        sampler = load_task_sampler(spec)
    except ValueError as exc:
        raise RunError(f"{run_dir} was trained on --tasks {spec}, which fails now: {exc}") from exc
    return SamplerFamily(sampler, horizon=fam.get("horizon"), source=spec)


# --------------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------------


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
        for ok, name, rule in checks:
            if not ok:
                raise ValueError(f"Protocol: {name} must be {rule}, got {getattr(self, name)!r}")


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
) -> str:
    """The name of an evaluation's files: the protocol's name (preset and overrides), then
    the other settings that differ from ``metarl eval``'s defaults.

    Args:
        protocol: from :func:`make_protocol`.
        iteration: the evaluated checkpoint's iteration when one was chosen (``--checkpoint``);
            None for the run's latest checkpoint.
        baseline_tasks: tasks of the SB3 baseline (0: none, ``no-baseline``).
        baseline_episodes: episodes per baseline evaluation (named only with a baseline).
    """
    extra: dict[str, Any] = {}
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


def _takes_step_size(agent: MetaAgent) -> bool:
    return agent.takes_step_size


def _is_recurrent(agent: MetaAgent) -> bool:
    return agent.recurrent


def steps_per_adaptation(agent: MetaAgent, protocol: Protocol, horizon: int) -> int:
    """Env steps (at most) the agent sees per adaptation step of one task.

    A gradient agent adapts on ``episodes_per_step`` episodes; RL^2 on one episode of its
    trial (its ``episodes_per_step`` trials are independent repeats).
    """
    return horizon if _is_recurrent(agent) else protocol.episodes_per_step * horizon


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def _student_t_cdf(t: float, dof: float) -> float:
    tail = 0.5 * _betainc(0.5 * dof, 0.5, dof / (dof + t * t))
    return 1.0 - tail if t >= 0 else tail


def student_t_quantile(p: float, dof: int) -> float:
    """The ``p`` quantile of Student's t with ``dof`` degrees of freedom (e.g. 12.706 for
    ``p = 0.975, dof = 1``), by bisection on the exact CDF."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if dof < 1:
        raise ValueError(f"dof must be >= 1, got {dof}")
    if p < 0.5:
        return -student_t_quantile(1.0 - p, dof)
    lo, hi = 0.0, 1.0
    while _student_t_cdf(hi, dof) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _student_t_cdf(mid, dof) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Summary:
    """Mean and two-sided confidence interval of n values.

    Attributes:
        mean, std: sample mean and standard deviation (ddof = 1; 0 for one value).
        ci_low, ci_high: ``mean -/+ t_{(1+level)/2, n-1} * std / sqrt(n)`` (the mean itself
            when n = 1: no interval can be estimated from one value).
        n: number of values.
        diverged: how many of them diverged (non-finite actions, observations or rewards);
            when any did, every statistic is NaN: a diverged step never ranks.
    """

    mean: float
    std: float
    ci_low: float
    ci_high: float
    n: int
    diverged: int = 0


def summarize_with_divergence(values: np.ndarray | Sequence[float], level: float = 0.95) -> Summary:
    """:func:`summarize`, except that NaN values (diverged episodes) are counted, not averaged:
    any of them makes the summary NaN with ``diverged`` set."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        return Summary(math.nan, math.nan, math.nan, math.nan, int(x.size), bad)
    return summarize(x, level)


def summarize(values: np.ndarray | Sequence[float], level: float = 0.95) -> Summary:
    """Mean and Student-t ``level`` confidence interval of ``values`` (any shape, flattened).

    Raises:
        ValueError: no values, a non-finite value, or ``level`` outside (0, 1).
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("summarize needs at least one value")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"summarize got non-finite values: {x[~np.isfinite(x)][:5].tolist()}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    mean = float(x.mean())
    if x.size == 1:
        return Summary(mean, 0.0, mean, mean, 1)
    std = float(x.std(ddof=1))
    half = student_t_quantile(0.5 + 0.5 * level, x.size - 1) * std / math.sqrt(x.size)
    return Summary(mean, std, mean - half, mean + half, int(x.size))


# --------------------------------------------------------------------------------------------
# Published reference
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishedCurve:
    """A published meta-test curve and the setting it was measured in.

    Attributes:
        returns: mean return after 0, 1, 2, ... adaptation steps.
        variants, horizon: the family variants that simulate the paper's setting, and its
            episode length.
        episodes_per_step: rollouts per adaptation step.
        num_tasks: test tasks averaged over.
        step_sizes: the inner step sizes of the test.
        source: where the numbers come from.
    """

    returns: tuple[float, ...]
    variants: tuple[str, ...]
    horizon: int
    episodes_per_step: int
    num_tasks: int = 40
    step_sizes: tuple[float, ...] = (0.1, 0.05, 0.05)
    source: str = "Finn et al. 2017, Fig. 5 (MAML-TRPO, result files of the paper's code)"


CHEETAH_AT_100HZ = ("maml-100hz", "maml-rllab")

PUBLISHED_MAML_TRPO: dict[str, PublishedCurve] = {
    # The paper's cheetah ran at rllab's rate, one MuJoCo step per action: the maml-100hz
    # and maml-rllab variants (Gymnasium's v5 cheetah takes five).
    "HalfCheetahVel": PublishedCurve((-129.5, -78.6, -66.6, -60.8), CHEETAH_AT_100HZ, 200, 20),
    "HalfCheetahDir": PublishedCurve((-50.7, 293.2, 313.5, 315.7), CHEETAH_AT_100HZ, 200, 20),
    "AntVel": PublishedCurve((30.6, 96.7, 100.1, 101.4), ("maml",), 200, 20),
    "AntDir": PublishedCurve(
        (8.7, 499.1, 500.7, 499.1), ("maml",), 200, 40, step_sizes=(0.1, 0.001, 0.001)
    ),
    # The paper's point env ran under rllab's normalize(): unit actions scaled into the 0.1
    # step, the maml-rllab variant (maml takes the displacement itself).
    "Point2DNav": PublishedCurve((-40.4, -11.7, -3.3, -3.2), ("maml-rllab",), 100, 40),
}
"""MAML-TRPO's mean return over 40 test tasks after 0..3 steps (REFERENCE.md). Returns are
comparable only under the same horizon, task range, action scaling and simulation rate."""


def published_reference(
    family: str, variant: str, horizon: int, protocol: Protocol
) -> PublishedCurve | None:
    """The published MAML-TRPO curve for this family if the setting matches, else None.

    Matching means: same family, variant and horizon, the same number of test tasks and
    rollouts per step, and the paper's step sizes (``None`` is accepted only for one step,
    where the agent's own step size is the paper's 0.1 by default).
    """
    ref = PUBLISHED_MAML_TRPO.get(family)
    if ref is None or variant not in ref.variants or ref.horizon != horizon:
        return None
    if protocol.num_tasks != ref.num_tasks or protocol.episodes_per_step != ref.episodes_per_step:
        return None
    k = min(protocol.num_steps, len(ref.step_sizes))
    if protocol.step_sizes is None or tuple(protocol.step_sizes[:k]) != ref.step_sizes[:k]:
        return None
    return ref


# --------------------------------------------------------------------------------------------
# The baseline
# --------------------------------------------------------------------------------------------


def _largest_divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def _rollout_returns(model: Any, env: Any, episodes: int, seed: int) -> list[float]:
    """Returns of ``episodes`` stochastic episodes of an SB3 model in ``env``."""
    out = []
    for e in range(episodes):
        obs, _ = env.reset(seed=seed + e)
        total, done = 0.0, False
        while not done:
            action, _ = model.predict(obs, deterministic=False)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        out.append(total)
    return out


def sb3_baseline(
    family: TaskFamily,
    tasks: Sequence[Task],
    num_steps: int,
    steps_per_step: int,
    eval_episodes: int,
    seed: int,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Stable-Baselines3 PPO learning each task from scratch: ``[len(tasks), num_steps + 1]``.

    Per task, a fresh ``PPO("MlpPolicy")`` with one rollout of ``steps_per_step`` env steps per
    update; entry ``[k, s]`` is the mean return of ``eval_episodes`` stochastic episodes after
    ``s`` updates (``s * steps_per_step`` env steps of learning, the budget the meta-learner
    got for ``s`` adaptation steps). Evaluation episodes are not counted as learning.

    Args:
        family: the task family (variant and horizon as in the run).
        tasks: the tasks to learn.
        num_steps: updates (adaptation steps) K.
        steps_per_step: env steps per update (>= 2).
        eval_episodes: episodes per evaluation.
        seed: seed of the PPO models and evaluation resets (task k uses ``seed + k``).
        progress: called with 1 after every task (for a progress bar counting tasks).
    """
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import Logger

    from metarl.family import MetaEnv

    if steps_per_step < 2:
        raise ValueError(
            f"the baseline needs at least 2 env steps per update, got {steps_per_step}"
        )
    if eval_episodes < 1:
        raise ValueError(f"eval_episodes must be >= 1, got {eval_episodes}")
    out = np.zeros((len(tasks), num_steps + 1))
    batch_size = _largest_divisor_at_most(steps_per_step, 64)
    for k, task in enumerate(tasks):
        env, eval_env = MetaEnv(family), MetaEnv(family)
        env.set_task(task)
        eval_env.set_task(task)
        try:
            model = PPO(
                "MlpPolicy",
                env,
                n_steps=steps_per_step,
                batch_size=batch_size,
                seed=seed + k,
                device="cpu",
                verbose=0,
            )
            # SB3's default logger makes a fresh SB3-<time> folder under /tmp for every model.
            model.set_logger(Logger(folder=None, output_formats=[]))
            for s in range(num_steps + 1):
                if s > 0:
                    model.learn(total_timesteps=steps_per_step, reset_num_timesteps=False)
                returns = _rollout_returns(model, eval_env, eval_episodes, 10_000 * (seed + k))
                out[k, s] = float(np.mean(returns))
        finally:
            env.close()
            eval_env.close()
        if progress is not None:
            progress(1)
    return out


# --------------------------------------------------------------------------------------------
# Evaluating a run
# --------------------------------------------------------------------------------------------

CSV_COLUMNS = (
    "run",
    "algo",
    "family",
    "variant",
    "horizon",
    "protocol",
    "curve",
    "step",
    "label",
    "mean",
    "ci_low",
    "ci_high",
    "std",
    "n",
    "env_steps",
    "diverged",
)
"""Columns of ``eval/<name>.csv``: one row per curve (agent, baseline, published) and step;
``env_steps`` is the adaptation budget spent before that step's episodes, per task;
``diverged`` counts the ``n`` (task, seed) values that diverged (then ``mean`` and the interval
are NaN)."""


@dataclass
class EvalResult:
    """The meta-test of one run.

    Attributes:
        run, algo, family, variant, horizon: what was evaluated.
        protocol: how.
        iteration: meta-iterations of the evaluated checkpoint.
        checkpoint: its file.
        recurrent: True for RL^2 (step s is episode s + 1 of a trial).
        tasks: the held-out tasks.
        returns: ``[seeds, num_steps + 1, tasks]`` mean return per seed, step and task (NaN
            where the task's episodes diverged at that step or before).
        success: ``[seeds, num_steps + 1, tasks]`` fraction of episodes that succeeded, where
            the env reports success (Meta-World's ``info["success"]``), else None (NaN where
            the task diverged).
        steps_per_step: env steps of adaptation budget per step and task.
        baseline: ``[baseline tasks, num_steps + 1]`` SB3 PPO returns, or None.
        baseline_tasks: the tasks the baseline learned.
        reference: the matching published curve, or None.
    """

    run: str
    algo: str
    family: str
    variant: str
    horizon: int
    protocol: Protocol
    iteration: int
    checkpoint: str
    recurrent: bool
    tasks: list[Task]
    returns: np.ndarray
    steps_per_step: int
    baseline: np.ndarray | None = None
    baseline_tasks: list[Task] = field(default_factory=list)
    reference: PublishedCurve | None = None
    success: np.ndarray | None = None

    def step_label(self, step: int) -> str:
        """``"step 2"`` (gradient agents) or ``"episode 3"`` (RL^2)."""
        return f"episode {step + 1}" if self.recurrent else f"step {step}"

    def summaries(self) -> list[Summary]:
        """Per adaptation step, over tasks x seeds (NaN, with the count, where any diverged)."""
        return [
            summarize_with_divergence(self.returns[:, s, :]) for s in range(self.returns.shape[1])
        ]

    def diverged(self) -> list[int]:
        """Per adaptation step, how many (task, seed) values diverged."""
        return [
            int(np.count_nonzero(~np.isfinite(self.returns[:, s, :])))
            for s in range(self.returns.shape[1])
        ]

    def success_summaries(self) -> list[Summary]:
        """Success rate per adaptation step, over tasks x seeds ([] without success info)."""
        if self.success is None:
            return []
        return [summarize(self.success[:, s, :]) for s in range(self.success.shape[1])]

    def baseline_summaries(self) -> list[Summary]:
        """Per step, over the baseline's tasks ([] without a baseline)."""
        if self.baseline is None:
            return []
        return [summarize(self.baseline[:, s]) for s in range(self.baseline.shape[1])]

    def rows(self) -> list[dict[str, Any]]:
        """The CSV rows (:data:`CSV_COLUMNS`)."""
        common = {
            "run": self.run,
            "algo": self.algo,
            "family": self.family,
            "variant": self.variant,
            "horizon": self.horizon,
            "protocol": self.protocol.name,
        }
        rows = []
        curves: list[tuple[str, list[Summary]]] = [("agent", self.summaries())]
        if self.success is not None:
            curves.append(("agent-success-rate", self.success_summaries()))
        if self.baseline is not None:
            curves.append(("sb3-ppo-scratch", self.baseline_summaries()))
        for curve, summaries in curves:
            for s, summ in enumerate(summaries):
                rows.append(
                    {
                        **common,
                        "curve": curve,
                        "step": s,
                        "label": self.step_label(s),
                        "mean": summ.mean,
                        "ci_low": summ.ci_low,
                        "ci_high": summ.ci_high,
                        "std": summ.std,
                        "n": summ.n,
                        "env_steps": s * self.steps_per_step,
                        "diverged": summ.diverged,
                    }
                )
        if self.reference is not None:
            k = min(len(self.reference.returns), self.protocol.num_steps + 1)
            for s, value in enumerate(self.reference.returns[:k]):
                rows.append(
                    {
                        **common,
                        "curve": "published-maml-trpo",
                        "step": s,
                        "label": f"step {s}",
                        "mean": value,
                        "ci_low": "",
                        "ci_high": "",
                        "std": "",
                        "n": self.reference.num_tasks,
                        "env_steps": s * self.reference.episodes_per_step * self.horizon,
                        "diverged": "",
                    }
                )
        return rows

    def to_json(self) -> dict[str, Any]:
        """Everything, raw values included (``returns[seed][step][task]``)."""
        return {
            "run": self.run,
            "algo": self.algo,
            "family": self.family,
            "variant": self.variant,
            "horizon": self.horizon,
            "iteration": self.iteration,
            "checkpoint": self.checkpoint,
            "recurrent": self.recurrent,
            "protocol": asdict(self.protocol),
            "steps_per_step": self.steps_per_step,
            "tasks": [t.to_dict() for t in self.tasks],
            # Diverged values are null (JSON has no NaN); from_json reads them back as NaN.
            "returns": _nan_to_none(self.returns.tolist()),
            "diverged": self.diverged(),
            "success": None if self.success is None else _nan_to_none(self.success.tolist()),
            "baseline": None
            if self.baseline is None
            else {
                "algorithm": "stable-baselines3 PPO('MlpPolicy'), one update per step",
                "tasks": [t.to_dict() for t in self.baseline_tasks],
                "returns": self.baseline.tolist(),
            },
            "reference": None if self.reference is None else asdict(self.reference),
            "rows": _nan_to_none(self.rows()),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvalResult:
        """Inverse of :meth:`to_json`."""
        proto = dict(data["protocol"])
        proto["seeds"] = tuple(proto["seeds"])
        if proto.get("step_sizes") is not None:
            proto["step_sizes"] = tuple(proto["step_sizes"])
        base = data.get("baseline")
        ref = data.get("reference")
        return cls(
            run=data["run"],
            algo=data["algo"],
            family=data["family"],
            variant=data["variant"],
            horizon=int(data["horizon"]),
            protocol=Protocol(**proto),
            iteration=int(data["iteration"]),
            checkpoint=data["checkpoint"],
            recurrent=bool(data["recurrent"]),
            tasks=[Task(t) for t in data["tasks"]],
            returns=np.asarray(data["returns"], dtype=np.float64),
            steps_per_step=int(data["steps_per_step"]),
            baseline=None if base is None else np.asarray(base["returns"], dtype=np.float64),
            baseline_tasks=[] if base is None else [Task(t) for t in base["tasks"]],
            reference=None if ref is None else _published_from_json(ref),
            success=None
            if data.get("success") is None
            else np.asarray(data["success"], dtype=np.float64),
        )


def _nan_to_none(value: Any) -> Any:
    """``value`` with every NaN or infinite float (nested in lists and dicts) as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    return value


def _published_from_json(data: dict[str, Any]) -> PublishedCurve:
    return PublishedCurve(
        returns=tuple(float(v) for v in data["returns"]),
        # Results written before the curves named several variants carry one.
        variants=tuple(str(v) for v in data.get("variants", [data.get("variant")])),
        horizon=int(data["horizon"]),
        episodes_per_step=int(data["episodes_per_step"]),
        num_tasks=int(data["num_tasks"]),
        step_sizes=tuple(float(v) for v in data["step_sizes"]),
        source=str(data["source"]),
    )


def check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and check a file can be written there.

    Raises:
        ValueError: naming the folder and the reason.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"cannot write to {folder}: {exc.strerror or exc}") from exc


def evaluate_run(
    run: LoadedRun,
    protocol: Protocol,
    baseline_tasks: int = BASELINE_TASKS,
    baseline_eval_episodes: int = BASELINE_EPISODES,
    backend: str = "inline",
    num_workers: int = 1,
    progress: bool = False,
) -> EvalResult:
    """Run the meta-test ``protocol`` on ``run`` (and the SB3 baseline on ``baseline_tasks``).

    Args:
        run: from :func:`load_run`.
        protocol: from :func:`make_protocol`.
        baseline_tasks: held-out tasks the from-scratch PPO learns (0: no baseline).
        baseline_eval_episodes: episodes per baseline evaluation.
        backend, num_workers: the sampler (see :func:`metarl.train.make_sampler`).
        progress: show progress bars: the agent's episodes (every task, adaptation step and
            seed), then the baseline's tasks.
    """
    from metarl.family import FamilyTaskSampler
    from metarl.train import make_sampler

    agent, family = run.agent, run.family
    tasks = held_out_tasks(family, protocol)
    if baseline_tasks < 0:
        raise ValueError(f"baseline_tasks must be >= 0, got {baseline_tasks}")
    if baseline_tasks > len(tasks):
        raise ValueError(
            f"baseline_tasks={baseline_tasks} exceeds the protocol's {len(tasks)} held-out tasks"
        )
    step_sizes = list(protocol.step_sizes) if protocol.step_sizes is not None else None
    if not _takes_step_size(agent):
        step_sizes = None  # Reptile adapts with its own optimizer, RL^2 in its hidden state
    per_step = steps_per_adaptation(agent, protocol, family.horizon)
    # Every agent plays episodes_per_step episodes (RL^2: trials of num_steps + 1 episodes)
    # per task and adaptation step.
    episodes = len(protocol.seeds) * len(tasks) * (protocol.num_steps + 1)
    bar = _progress(progress, episodes * protocol.episodes_per_step, f"eval {run.name}", "episode")
    sampler: Any = make_sampler(FamilyTaskSampler(family), agent.policy, backend, num_workers)
    if bar is not None:
        sampler = _CountingSampler(sampler, bar.update)
    try:
        curves, success = [], []
        for seed in protocol.seeds:
            measured = agent.adaptation_curves(
                sampler,
                tasks,
                protocol.num_steps,
                protocol.episodes_per_step,
                int(seed),
                step_sizes=step_sizes,
            )
            curves.append(measured["return"])
            if "success" in measured:
                success.append(measured["success"])
    finally:
        sampler.close()
        if bar is not None:
            bar.close()
    baseline = None
    if baseline_tasks > 0:
        bar = _progress(progress, baseline_tasks, "sb3-ppo-scratch", "task")
        try:
            baseline = sb3_baseline(
                family,
                tasks[:baseline_tasks],
                protocol.num_steps,
                per_step,
                baseline_eval_episodes,
                int(protocol.seeds[0]),
                progress=None if bar is None else bar.update,
            )
        finally:
            if bar is not None:
                bar.close()
    return EvalResult(
        run=run.name,
        algo=run.algo,
        family=family.name,
        variant=family.variant,
        horizon=family.horizon,
        protocol=protocol,
        iteration=run.iteration,
        checkpoint=str(run.checkpoint),
        recurrent=_is_recurrent(agent),
        tasks=tasks,
        returns=np.stack(curves),
        steps_per_step=per_step,
        baseline=baseline,
        baseline_tasks=list(tasks[:baseline_tasks]),
        reference=published_reference(family.name, family.variant, family.horizon, protocol),
        success=np.stack(success) if success else None,
    )


class _CountingSampler:
    """A sampler that reports how many episodes each of its batches held (for a progress bar).

    The agents' meta-test samples one batch per adaptation step (RL^2: one batch of whole
    trials), so the bar moves with every batch, not once per seed. Everything but
    :meth:`sample` is the wrapped sampler's.
    """

    def __init__(self, sampler: Any, count: Callable[[int], object]) -> None:
        self._sampler = sampler
        self._count = count

    def sample(
        self,
        tasks: Sequence[Any],
        episodes_per_task: int,
        params: Any = None,
        *,
        seed: int,
        episodes_per_trial: int = 1,
    ) -> Any:
        batch = self._sampler.sample(
            tasks, episodes_per_task, params, seed=seed, episodes_per_trial=episodes_per_trial
        )
        self._count(len(tasks) * episodes_per_task * episodes_per_trial)
        return batch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sampler, name)


def _progress(enabled: bool, total: int, desc: str, unit: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)


def _cell(summary: Summary, width: int) -> str:
    """``mean [low, high]`` of one summary, padded to ``width`` (one value has no interval)."""
    if summary.diverged:
        return f"{'diverged':>9}  ({summary.diverged} of {summary.n} task-seed values)".ljust(width)
    interval = f"[{summary.ci_low:.2f}, {summary.ci_high:.2f}]" if summary.n > 1 else "(one value)"
    return f"{summary.mean:9.2f}  {interval:<20}".ljust(width)


def format_table(result: EvalResult) -> list[str]:
    """The lines ``metarl eval`` prints for one result: a header row, one row per adaptation
    step (the agent's mean return and 95% interval, the from-scratch baseline's, the published
    curve's and the success rate, where each exists), and a line saying what n is.

    A step where some (task, seed) values diverged shows how many instead of a mean.
    """
    width = 36
    agent = result.summaries()
    base = result.baseline_summaries()
    rates = result.success_summaries()
    ref = result.reference
    head = f"  {'step' if not result.recurrent else 'episode':<10} {'env steps':>9}  "
    head += f"{'agent':>9}  {'95% CI':<20}".ljust(width)
    if base:
        head += f"{'sb3-ppo-scratch':>9}  {'95% CI':<20}".ljust(width)
    if ref is not None:
        head += f"{'published':>9}  "
    if rates:
        head += f"{'success':>9}  95% CI"
    lines = [head.rstrip()]
    for s, summ in enumerate(agent):
        line = f"  {result.step_label(s):<10} {s * result.steps_per_step:>9}  " + _cell(summ, width)
        if base:
            line += _cell(base[s], width)
        if ref is not None:
            value = f"{ref.returns[s]:.1f}" if s < len(ref.returns) else ""
            line += f"{value:>9}  "
        if rates:
            rate = rates[s]
            line += f"{rate.mean:9.1%}  [{rate.ci_low:.1%}, {rate.ci_high:.1%}]"
        lines.append(line.rstrip())
    seeds, tasks = len(result.protocol.seeds), len(result.tasks)

    def count(n: int, what: str) -> str:
        return f"{n} {what}" + ("s" if n != 1 else "")

    note = f"  n = {seeds * tasks} ({count(tasks, 'task')} x {count(seeds, 'seed')})"
    if base:
        note += f", sb3-ppo-scratch n = {count(len(result.baseline_tasks), 'task')}"
    note += "; env steps per task before the step"
    if any(summ.diverged for summ in agent):
        note += "; diverged: non-finite actions, observations or rewards"
    lines.append(note)
    return lines


def write_atomically(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path`` (same suffix), then rename it
    to ``path``: a file appears only complete. Any failure removes the temporary file."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.partial{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_eval(result: EvalResult, folder: Path, name: str | None = None) -> dict[str, Path]:
    """Write ``<name>.csv`` and ``<name>.json`` into ``folder`` (atomically).

    Args:
        result: from :func:`evaluate_run`.
        folder: where the files go (created if needed).
        name: the files' name, :func:`eval_name` of the evaluation's settings; default the
            protocol's name.

    Returns:
        ``{"csv": path, "json": path}``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = result.protocol.name if name is None else name
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(result.rows())
    paths = {"csv": folder / f"{stem}.csv", "json": folder / f"{stem}.json"}
    text = json.dumps(result.to_json(), indent=2) + "\n"
    write_atomically(paths["csv"], lambda tmp: tmp.write_text(buf.getvalue()))
    write_atomically(paths["json"], lambda tmp: tmp.write_text(text))
    return paths


def eval_dir(run_dir: Path) -> Path:
    """Where a run's evaluations go: ``RUN_DIR/eval``."""
    return Path(run_dir) / EVAL_DIR
