"""Task families whose envs are Gymnasium envs stepped one by one (the generic path).

A :class:`GymTaskFamily` is a :class:`~metarl.family.TaskFamily` for what metarl cannot batch
itself (Meta-World, a user's env): its tasks are small mappings that need not be numbers, it
builds one ``gymnasium.Env`` per task (``make_env``) and re-tasks one it has (``retask``), and
its batch (``make_batch``) is the sampler's env pool, :class:`~metarl.sampling.GymEnvBatch`.
The sampler steps it through ``env.step`` (``gym_envs = True``), and everything else that takes
a family (evaluation, rendering, the from-scratch baseline, :class:`~metarl.family.MetaEnv`)
takes it unchanged.

:class:`SamplerFamily` is that family for any task sampler (``sample(n, rng)`` and
``make_env(task)``), e.g. the one a ``--tasks module:callable`` run was trained on.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from metarl.family import ParamSpec, TaskFamily, Variant
from metarl.tasks import Task, TaskSplit, qualified_name

__all__ = ["GymTaskFamily", "SamplerFamily"]


class GymTaskFamily(TaskFamily):
    """A family stepped through ``env.step``: subclasses implement :meth:`make_env` and
    :meth:`_sample`, and may implement :meth:`retask` and :meth:`check_task`.

    Class attributes:
        info_keys: step ``info`` keys kept in the batch (they become metrics and eval curves).
        max_envs: envs a sampler worker keeps at most (None: the sampler's default).
        render_camera: the MuJoCo camera frames are rendered from (-1: the free camera).
    """

    gym_envs: ClassVar[bool] = True
    info_keys: tuple[str, ...] = ()
    max_envs: int | None = None
    render_camera: str | int = -1

    def param_specs(self) -> dict[str, ParamSpec]:
        return {}

    def default_task(self) -> Task:
        return self.sample_tasks(1, np.random.default_rng(0))[0]

    def validate_task(self, task: Mapping[str, Any]) -> Task:
        """``task`` as a :class:`Task`, after :meth:`check_task`.

        Raises:
            ValueError: a task that is not a mapping, or one :meth:`check_task` rejects.
        """
        if not isinstance(task, Mapping):
            raise ValueError(
                f"{self.name}: a task is a mapping of parameters, "
                f"got a {qualified_name(type(task))}"
            )
        clean = task if isinstance(task, Task) else Task(task)
        self.check_task(clean)
        return clean

    def check_task(self, task: Task) -> None:
        """Raise ValueError naming what is wrong with ``task``."""

    @abstractmethod
    def make_env(self, task: Task | None = None, render_mode: str | None = None) -> gym.Env:
        """A fresh env with ``task`` set (None: any task of the family)."""

    def retask(self, env: gym.Env, task: Task) -> bool:
        """Give ``env`` (one of :meth:`make_env`'s) the task ``task`` in place; False where it
        cannot take it (the pool then builds a new env)."""
        return False

    def make_batch(self, num_envs: int) -> Any:
        """The sampler's env pool, :class:`~metarl.sampling.GymEnvBatch` (stepped through
        ``env.step``; not a :class:`~metarl.family.BatchStepper`)."""
        from metarl.sampling.rollout import GymEnvBatch

        return GymEnvBatch(self, num_envs)


def _probe_spaces(sampler: Any) -> tuple[gym.spaces.Box, gym.spaces.Box, Any]:
    env = None
    obs_space = getattr(sampler, "observation_space", None)
    act_space = getattr(sampler, "action_space", None)
    try:
        if obs_space is None or act_space is None:
            env = sampler.make_env(None)
            obs_space, act_space = env.observation_space, env.action_space
        return obs_space, act_space, env
    except BaseException:
        if env is not None:
            env.close()
        raise


class SamplerFamily(GymTaskFamily):
    """Any task sampler as a family, for evaluation and rendering of a run trained on it.

    Args:
        sampler: an object with ``sample(n, rng)`` and ``make_env(task)`` (optionally ``name``,
            ``retask(env, task)``, ``info_keys``, ``max_envs``, ``task_split(name)`` or
            ``split(name)``, ``horizon``).
        horizon: the episode length; default the sampler's ``horizon``, else its env's
            ``max_episode_steps``.
        source: how to build the sampler again (``module:callable``), recorded in its splits.

    Its ``default`` split is the sampler's own where it has one, else 100 training and 40
    test tasks drawn with ``default_rng(1337)`` (a finite task list repeats, so that split
    may share tasks).
    """

    name = "custom"
    variants: ClassVar[Mapping[str, Variant]] = {"default": Variant(horizon=1, source="")}
    default_variant = "default"

    def __init__(self, sampler: Any, horizon: int | None = None, source: str = "") -> None:
        if not (
            callable(getattr(sampler, "sample", None))
            and callable(getattr(sampler, "make_env", None))
        ):
            raise TypeError(
                f"SamplerFamily takes a task sampler with sample(n, rng) and make_env(task), "
                f"got a {qualified_name(type(sampler))}"
            )
        self.sampler = sampler
        self.source = source
        self.name = str(getattr(sampler, "name", type(sampler).__name__))
        self.info_keys = tuple(getattr(sampler, "info_keys", ()))
        self.max_envs = getattr(sampler, "max_envs", None)
        obs_space, act_space, probe = _probe_spaces(sampler)
        try:
            if horizon is None:
                horizon = getattr(sampler, "horizon", None)
            if horizon is None:
                env = probe if probe is not None else sampler.make_env(None)
                probe = env
                horizon = env.spec.max_episode_steps if env.spec is not None else None
            self._dt = float(getattr(probe.unwrapped, "dt", 1.0)) if probe is not None else 1.0
        finally:
            if probe is not None:
                probe.close()
        if horizon is None:
            raise ValueError(
                f"{self.name}: its env has no max_episode_steps; give the run a horizon"
            )
        self.variants = {  # type: ignore[misc]
            "default": Variant(horizon=int(horizon), source=source or qualified_name(type(sampler)))
        }
        super().__init__(variant="default", horizon=int(horizon))
        self.observation_space = obs_space
        self.action_space = act_space

    @property
    def dt(self) -> float:
        return self._dt

    def _sample(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        return list(self.sampler.sample(n, rng))

    def make_env(self, task: Task | None = None, render_mode: str | None = None) -> gym.Env:
        if render_mode is None:
            return self.sampler.make_env(task)
        return self.sampler.make_env(task, render_mode=render_mode)

    def retask(self, env: gym.Env, task: Task) -> bool:
        retask: Callable[[gym.Env, Task], bool] | None = getattr(self.sampler, "retask", None)
        return bool(retask(env, task)) if retask is not None else False

    def task_splits(self) -> dict[str, Callable[[], TaskSplit]]:
        own = getattr(self.sampler, "task_split", None) or getattr(self.sampler, "split", None)
        if callable(own):
            return {"default": lambda: own("default")}
        n_train, n_test = 100, 40
        known = getattr(self.sampler, "tasks", None)
        finite = isinstance(known, list | tuple) and len(known) < n_train + n_test

        def split() -> TaskSplit:
            tasks = self.sample_tasks(n_train + n_test, np.random.default_rng(1337))
            return TaskSplit(
                name="default",
                train=tuple(tasks[:n_train]),
                test=tuple(tasks[n_train:]),
                source=f"{self.name}.sample({n_train + n_test}, default_rng(1337))",
                disjoint=not finite,
            )

        return {"default": split}

    def __repr__(self) -> str:
        return f"SamplerFamily({self.name!r}, horizon={self.horizon})"
