"""Meta-World's meta-learning benchmarks ML1, ML10 and ML45 as task families.

Install with ``pip install 'metarl[metaworld]'``.

Yu et al. 2019, "Meta-World: A Benchmark and Evaluation for Multi-Task and Meta Reinforcement
Learning"; McLean et al. 2025, "Meta-World+" (the v3 envs, ``pip install metaworld``, 3.x).

- ``ML1-<env>`` (e.g. ``ML1-reach-v3``, ``ML1-push-v3``, ``ML1-pick-place-v3``): one
  manipulation env, 50 training and 50 held-out goal positions;
- ``ML10``: 10 training envs, 5 held-out envs, 50 goals each;
- ``ML45``: 45 training envs, 5 held-out envs.

Tasks are Meta-World's own train / test task sets, built once with the benchmark's seed, and
named by small mappings ``{"benchmark", "env_name", "split", "index"}`` (``index``: the goal
within that env's tasks of that split), so they print, pickle, save to JSON and hash like every
task. The goal stays hidden from the observation (Meta-World's ML setting). The horizon is
Meta-World's 500 steps; ``info["success"]`` travels in the batch (``info_keys``) and becomes the
success metrics and meta-test curves.

Envs are Meta-World's env classes, built directly: its benchmark wrappers
(``RandomTaskSelectWrapper``, ``PseudoRandomTaskSelectWrapper``) redraw the task on every reset,
and here a task, once set, stays set. An env of one Meta-World env class is re-tasked in place
(``set_task``); only a task of another class needs a new env.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from metarl.family import Variant
from metarl.gym_family import GymTaskFamily
from metarl.registry import close_matches
from metarl.tasks import Task, TaskSplit, check_num_tasks

__all__ = ["INSTALL", "ML1", "ML10", "ML45", "MetaWorldFamily"]

INSTALL = "pip install 'metarl[metaworld]'"
HORIZON = 500
BENCHMARK_SEED = 0
"""Seed of Meta-World's goal positions (its benchmarks' ``seed``; ML1's test goals use seed + 1)."""
_SOURCE = "Meta-World v3 (Yu et al. 2019; McLean et al. 2025, Meta-World+), metaworld 3.x"
_BENCHMARKS: dict[tuple[str, str | None, int], Any] = {}
"""Meta-World benchmark objects by (name, env, seed), built once per process (ML45: ~1 min)."""


def import_metaworld() -> Any:
    """The ``metaworld`` module, or an ImportError that says how to install it."""
    try:
        import metaworld
    except ImportError as exc:
        raise ImportError(
            f"the Meta-World families need the metaworld package ({exc}); install it with {INSTALL}"
        ) from None
    return metaworld


def _benchmark(name: str, env_name: str | None, seed: int) -> Any:
    key = (name, env_name, seed)
    if key not in _BENCHMARKS:
        metaworld = import_metaworld()
        if name == "ML1":
            _BENCHMARKS[key] = metaworld.ML1(env_name, seed=seed)
        else:
            _BENCHMARKS[key] = getattr(metaworld, name)(seed=seed)
    return _BENCHMARKS[key]


def ml1_env_names() -> list[str]:
    """The env names ``ML1-<env>`` takes (Meta-World's v3 envs)."""
    return sorted(import_metaworld().ML1.ENV_NAMES)


class MetaWorldFamily(GymTaskFamily):
    """One Meta-World ML benchmark: its env classes, task sets and success metric.

    Args:
        variant: ``v3`` (Meta-World's v3 envs, the only one).
        horizon: episode length; default 500, Meta-World's ``max_path_length``.
        seed: the benchmark's seed, which fixes its goal positions.

    Raises:
        ImportError: metaworld is not installed (naming the command that installs it).
    """

    benchmark: ClassVar[str]
    variants: ClassVar[Mapping[str, Variant]] = {"v3": Variant(horizon=HORIZON, source=_SOURCE)}
    default_variant = "v3"
    info_keys = ("success",)
    # One Meta-World env holds ~20 MiB: 20 per worker (one task of 20 episodes per wave) keep a
    # worker near 0.9 GB; more envs per wave gain nothing measurable (env.step is ~0.3 ms).
    max_envs = 20
    render_camera = "topview"  # its corner cameras render upside down
    dt_seconds: ClassVar[float] = 0.0125  # 5 substeps of 2.5 ms

    def __init__(
        self,
        variant: str | None = None,
        horizon: int | None = None,
        seed: int = BENCHMARK_SEED,
        env_name: str | None = None,
    ) -> None:
        super().__init__(variant=variant, horizon=horizon)
        import_metaworld()
        self.seed = int(seed)
        self.env_name = env_name
        self._task_lists: dict[str, list[Task]] = {}
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(39,), dtype=np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)

    # -- the benchmark, built when first needed ---------------------------------------------
    def _mw(self) -> Any:
        return _benchmark(self.benchmark, self.env_name, self.seed)

    def _classes(self, split: str) -> Mapping[str, type]:
        mw = self._mw()
        return mw.train_classes if split == "train" else mw.test_classes

    def _mw_tasks(self, split: str, env_name: str) -> list[Any]:
        mw = self._mw()
        tasks = mw.train_tasks if split == "train" else mw.test_tasks
        return [t for t in tasks if t.env_name == env_name]

    def tasks_of(self, split: str) -> list[Task]:
        """Every task of ``split`` (``train`` or ``test``), interleaved over its envs (goal 0 of
        each env, then goal 1, ...), so the first few test tasks cover every held-out env."""
        if split not in self._task_lists:
            names = list(self._classes(split))
            per_env = [len(self._mw_tasks(split, n)) for n in names]
            self._task_lists[split] = [
                Task(benchmark=self.benchmark, env_name=n, split=split, index=i)
                for i in range(max(per_env))
                for n, count in zip(names, per_env, strict=True)
                if i < count
            ]
        return list(self._task_lists[split])

    # -- tasks -------------------------------------------------------------------------------
    def check_task(self, task: Task) -> None:
        keys = {"benchmark", "env_name", "split", "index"}
        example = (
            f"{{'benchmark': {self.benchmark!r}, 'env_name': ..., 'split': 'train', 'index': 0}}"
        )
        if set(task) != keys:
            raise ValueError(
                f"{self.name}: a task has exactly the keys {sorted(keys)}, e.g. {example}"
            )
        if task["benchmark"] != self.benchmark:
            raise ValueError(f"{self.name}: the task is of benchmark {task['benchmark']!r}")
        split = task["split"]
        if split not in ("train", "test"):
            raise ValueError(f"{self.name}: split is 'train' or 'test', got {split!r}")
        classes = self._classes(str(split))
        if task["env_name"] not in classes:
            raise ValueError(
                f"{self.name}: {task['env_name']!r} is not one of its {split} envs "
                f"{sorted(classes)}"
            )
        count = len(self._mw_tasks(str(split), str(task["env_name"])))
        index = task["index"]
        if not isinstance(index, int) or not 0 <= index < count:
            raise ValueError(f"{self.name}: index must be in [0, {count}), got {index!r}")

    def _sample(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        """``n`` training tasks, uniformly without replacement (with it past the task count)."""
        n = check_num_tasks(n, f"{self.name}.sample_tasks")
        train = self.tasks_of("train")
        idx = rng.choice(len(train), size=n, replace=n > len(train))
        return [dict(train[int(i)]) for i in idx]

    def task_splits(self) -> dict[str, Callable[[], TaskSplit]]:
        def split() -> TaskSplit:
            return TaskSplit(
                name="default",
                train=tuple(self.tasks_of("train")),
                test=tuple(self.tasks_of("test")),
                source=f"Meta-World {self.benchmark}(seed={self.seed}): its train and test tasks",
            )

        return {"default": split}

    def mw_task(self, task: Task) -> Any:
        """Meta-World's own task object for ``task``."""
        self.check_task(task)
        return self._mw_tasks(str(task["split"]), str(task["env_name"]))[int(task["index"])]

    # -- envs --------------------------------------------------------------------------------
    def make_env(self, task: Task | None = None, render_mode: str | None = None) -> gym.Env:
        if task is None:
            task = self.tasks_of("train")[0]
        task = self.validate_task(task)
        cls = self._classes(str(task["split"]))[str(task["env_name"])]
        env = cls(render_mode=render_mode)
        env.max_path_length = self.horizon  # Meta-World refuses a step past it
        env.set_task(self.mw_task(task))
        return env

    def retask(self, env: gym.Env, task: Task) -> bool:
        cls = self._classes(str(task["split"])).get(str(task["env_name"]))
        if cls is None or type(env.unwrapped) is not cls:
            return False
        env.unwrapped.set_task(self.mw_task(task))  # type: ignore[attr-defined]
        return True

    @property
    def dt(self) -> float:
        return self.dt_seconds

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, horizon={self.horizon}, seed={self.seed})"


class ML1(MetaWorldFamily):
    """``ML1-<env>``: one Meta-World env, 50 training and 50 held-out goals."""

    name = "ML1"
    name_pattern = "ML1-<env> (e.g. ML1-reach-v3, ML1-push-v3)"
    benchmark = "ML1"

    def __init__(
        self,
        env_name: str = "reach-v3",
        variant: str | None = None,
        horizon: int | None = None,
        seed: int = BENCHMARK_SEED,
    ) -> None:
        names = ml1_env_names()
        if env_name not in names:
            raise ValueError(
                f"ML1: unknown Meta-World env {env_name!r}; ML1 takes one of {len(names)} envs "
                f"such as ML1-reach-v3, ML1-push-v3, ML1-pick-place-v3."
                + close_matches(env_name, names)
            )
        super().__init__(variant=variant, horizon=horizon, seed=seed, env_name=env_name)
        self.name = f"ML1-{env_name}"

    @classmethod
    def from_name(cls, name: str, **kwargs: Any) -> ML1:
        """``ML1-reach-v3`` -> ``ML1("reach-v3")``."""
        return cls(name.removeprefix("ML1-"), **kwargs)


class ML10(MetaWorldFamily):
    """ML10: 10 training envs and 5 held-out envs, 50 goals each."""

    name = "ML10"
    benchmark = "ML10"


class ML45(MetaWorldFamily):
    """ML45: 45 training envs and 5 held-out envs, 50 goals each."""

    name = "ML45"
    benchmark = "ML45"
