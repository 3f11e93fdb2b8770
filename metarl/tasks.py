"""Tasks and task samplers: the small API every task distribution in metarl meets.

A :class:`Task` is an immutable mapping of named parameters (``{"velocity": 1.3}``). A task
sampler draws tasks with a passed-in :class:`numpy.random.Generator` and builds a Gymnasium
environment for a task. Three kinds ship with metarl:

1. the built-in families (:class:`metarl.family.FamilyTaskSampler`, the fast batched path);
2. :class:`SetTaskEnvSampler`: any Gymnasium env with a ``set_task(task)`` method (the
   Meta-World convention), with tasks drawn by a user function or from a fixed list;
3. :class:`GymKwargsTaskSampler`: any registered Gymnasium env id whose task is a set of
   ``gymnasium.make`` keyword arguments drawn from given distributions.

A custom sampler only needs ``sample(n, rng)`` and ``make_env(task)`` (:class:`TaskSampler`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

from metarl.mujoco_messages import route_mujoco_warnings

__all__ = [
    "Choice",
    "Distribution",
    "GymKwargsTaskSampler",
    "LogUniform",
    "SetTaskEnvSampler",
    "Task",
    "TaskSampler",
    "TaskSplit",
    "Uniform",
    "check_num_tasks",
    "load_task_sampler",
    "qualified_name",
]

Scalar = bool | int | float | str
TaskValue = Scalar | np.ndarray


def _normalize_value(key: str, value: Any) -> TaskValue:
    """Turn a parameter value into its canonical, immutable form."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value)
    if isinstance(value, str):
        return value
    try:
        array = np.array(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"task parameter {key!r}: cannot use {value!r} as a value ({exc})") from exc
    if array.dtype.kind == "b":
        array = array.astype(bool)
    elif array.dtype.kind in "iu":
        array = array.astype(np.int64)
    elif array.dtype.kind == "f":
        array = array.astype(np.float64)
    else:
        raise TypeError(
            f"task parameter {key!r}: values are numbers, strings or numeric arrays; "
            f"got {type(value).__name__} with dtype {array.dtype}"
        )
    if array.ndim == 0:
        return _normalize_value(key, array.item())
    array.flags.writeable = False
    return array


def _jsonable(value: TaskValue) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


class Task(Mapping[str, TaskValue]):
    """An immutable, hashable mapping of named task parameters.

    Values are booleans, ints, floats, strings, or numeric arrays (stored read-only as
    ``float64``/``int64``/``bool``). Two tasks are equal when their keys, value types and values
    are equal; :attr:`id` is a stable hash of that canonical form (the same in every process and
    on every machine). Tasks pickle and round-trip through JSON (:meth:`to_json`).

    Example:
        >>> Task(velocity=1.3)
        Task(velocity=1.3)
        >>> Task({"direction": -1}).id  # doctest: +SKIP
        '5f1c0e...'
    """

    __slots__ = ("_canonical", "_id", "_params")
    _canonical: str
    _id: str
    _params: dict[str, TaskValue]

    def __init__(self, params: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        merged: dict[str, Any] = {}
        if params is not None:
            if not isinstance(params, Mapping):
                raise TypeError(
                    f"Task() takes a mapping of parameter names to values, "
                    f"got {type(params).__name__}"
                )
            merged.update(params)
        overlap = set(merged) & set(kwargs)
        if overlap:
            raise TypeError(f"Task() got parameter(s) {sorted(overlap)} twice")
        merged.update(kwargs)
        normalized: dict[str, TaskValue] = {}
        for key in sorted(merged):
            if not isinstance(key, str) or not key:
                raise TypeError(f"task parameter names are non-empty strings, got {key!r}")
            normalized[key] = _normalize_value(key, merged[key])
        object.__setattr__(self, "_params", normalized)
        canonical = json.dumps(
            {
                k: [
                    type(v).__name__ if not isinstance(v, np.ndarray) else f"array[{v.dtype}]",
                    _jsonable(v),
                ]
                for k, v in normalized.items()
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        object.__setattr__(self, "_canonical", canonical)
        object.__setattr__(self, "_id", hashlib.sha256(canonical.encode()).hexdigest()[:16])

    # -- Mapping ---------------------------------------------------------------------------
    def __getitem__(self, key: str) -> TaskValue:
        return self._params[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)

    # -- identity --------------------------------------------------------------------------
    @property
    def id(self) -> str:
        """A stable 16-hex-digit id of the task's canonical form."""
        return self._id

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Task):
            return NotImplemented
        return self._canonical == other._canonical

    def __hash__(self) -> int:
        return hash(self._canonical)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Task is immutable; build a new one with Task({**task, key: value})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Task is immutable; build a new one without the parameter")

    def __reduce__(self) -> tuple[Any, ...]:
        return (Task, (dict(self._params),))

    def __repr__(self) -> str:
        parts = []
        for key, value in self._params.items():
            if isinstance(value, np.ndarray):
                if value.size <= 6:
                    # One line even for 2-d arrays (array2string breaks rows onto new lines).
                    shown = np.array2string(value, separator=", ", precision=4).replace("\n", "")
                else:
                    shown = f"array(shape={value.shape}, mean={value.mean():.4g})"
            else:
                shown = repr(value)
            parts.append(f"{key}={shown}")
        return f"Task({', '.join(parts)})"

    # -- serialization -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (arrays as nested lists), for JSON and configs."""
        return {k: _jsonable(v) for k, v in self._params.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Task:
        """Inverse of :meth:`to_dict` (lists become arrays again)."""
        return cls(data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Task:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"a task's JSON is an object of parameters, got {text[:80]!r}")
        return cls(data)


def qualified_name(cls: type) -> str:
    """``module.Class`` (``float`` for builtins), as errors name a type."""
    module = getattr(cls, "__module__", "")
    name = getattr(cls, "__qualname__", cls.__name__)
    return name if module in ("builtins", "") else f"{module}.{name}"


def check_num_tasks(n: Any, who: str = "sample") -> int:
    """Validate a requested number of tasks (a positive int)."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer):
        raise TypeError(f"{who}: the number of tasks is an int, got {n!r}")
    if n <= 0:
        raise ValueError(f"{who}: the number of tasks must be positive, got {n}")
    return int(n)


def _check_rng(rng: Any, who: str) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"{who}: pass a numpy.random.Generator (e.g. np.random.default_rng(seed)), "
            f"got {type(rng).__name__}"
        )
    return rng


@runtime_checkable
class TaskSampler(Protocol):
    """What metarl needs of a task distribution.

    ``sample(n, rng)`` draws ``n`` tasks using only ``rng``; ``make_env(task)`` returns a
    Gymnasium environment with that task in force.
    """

    def sample(self, n: int, rng: np.random.Generator) -> list[Task]: ...

    def make_env(self, task: Task | None = None) -> gym.Env: ...


@dataclass(frozen=True)
class TaskSplit:
    """A fixed, named set of training and held-out test tasks."""

    name: str
    train: tuple[Task, ...]
    test: tuple[Task, ...]
    source: str = ""
    disjoint: bool = True
    """Whether train and test must share no task (False only for finite families like
    HalfCheetahDir, whose two tasks are both trained on and tested on)."""

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "train", tuple(Task(t) if not isinstance(t, Task) else t for t in self.train)
        )
        object.__setattr__(
            self, "test", tuple(Task(t) if not isinstance(t, Task) else t for t in self.test)
        )
        overlap = {t.id for t in self.train} & {t.id for t in self.test}
        if overlap and self.disjoint:
            raise ValueError(
                f"task split {self.name!r}: {len(overlap)} task(s) are in both train and test"
            )

    @classmethod
    def from_sampler(
        cls, sampler: TaskSampler, n_train: int, n_test: int, seed: int, name: str | None = None
    ) -> TaskSplit:
        """Draw ``n_train + n_test`` tasks from ``sampler`` with ``default_rng(seed)``.

        The first ``n_train`` are the training tasks, the rest the held-out test tasks.
        """
        check_num_tasks(n_train, "TaskSplit.from_sampler(n_train)")
        check_num_tasks(n_test, "TaskSplit.from_sampler(n_test)")
        tasks = sampler.sample(n_train + n_test, np.random.default_rng(seed))
        return cls(
            name=name or f"seed{seed}-{n_train}/{n_test}",
            train=tuple(tasks[:n_train]),
            test=tuple(tasks[n_train:]),
            source=f"{type(sampler).__name__}.sample({n_train + n_test}, default_rng({seed}))",
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "disjoint": self.disjoint,
            "train": [t.to_dict() for t in self.train],
            "test": [t.to_dict() for t in self.test],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskSplit:
        missing = {"name", "train", "test"} - set(data)
        if missing:
            raise ValueError(f"a task split needs keys {sorted(missing)}")
        return cls(
            name=str(data["name"]),
            train=tuple(Task(t) for t in data["train"]),
            test=tuple(Task(t) for t in data["test"]),
            source=str(data.get("source", "")),
            disjoint=bool(data.get("disjoint", True)),
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> TaskSplit:
        return cls.from_dict(json.loads(Path(path).read_text()))


# --------------------------------------------------------------------------------------------
# Distributions for GymKwargsTaskSampler
# --------------------------------------------------------------------------------------------


class Distribution(Protocol):
    """Anything that draws one value with a passed-in generator."""

    def __call__(self, rng: np.random.Generator) -> Any: ...


@dataclass(frozen=True)
class Uniform:
    """``U[low, high]`` (elementwise with ``shape``)."""

    low: float
    high: float
    shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low > self.high:
            raise ValueError(f"Uniform needs finite low <= high, got [{self.low}, {self.high}]")

    def __call__(self, rng: np.random.Generator) -> float | np.ndarray:
        if self.shape:
            return rng.uniform(self.low, self.high, size=self.shape)
        return float(rng.uniform(self.low, self.high))


@dataclass(frozen=True)
class LogUniform:
    """``base ** U[low_exp, high_exp]``, e.g. ``LogUniform(1.5, -3, 3)`` for dynamics scales."""

    base: float
    low_exp: float
    high_exp: float
    shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.base <= 0 or self.low_exp > self.high_exp:
            raise ValueError(
                f"LogUniform needs base > 0 and low_exp <= high_exp, got base={self.base}, "
                f"[{self.low_exp}, {self.high_exp}]"
            )

    def __call__(self, rng: np.random.Generator) -> float | np.ndarray:
        exponent = rng.uniform(self.low_exp, self.high_exp, size=self.shape or None)
        return np.power(self.base, exponent) if self.shape else float(self.base**exponent)


@dataclass(frozen=True)
class Choice:
    """One of ``options``, uniformly."""

    options: tuple[Any, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", tuple(self.options))
        if not self.options:
            raise ValueError("Choice needs at least one option")

    def __call__(self, rng: np.random.Generator) -> Any:
        return self.options[int(rng.integers(len(self.options)))]


# --------------------------------------------------------------------------------------------
# Generic samplers
# --------------------------------------------------------------------------------------------


def _check_env_id(env_id: str, who: str) -> None:
    if env_id in gym.registry:
        return
    close = difflib.get_close_matches(env_id, list(gym.registry), n=5)
    hint = f" Close matches: {', '.join(close)}." if close else ""
    raise ValueError(f"{who}: {env_id!r} is not a registered Gymnasium env id.{hint}")


def _make_env_factory(
    env: str | Callable[[], gym.Env], env_kwargs: Mapping[str, Any] | None, who: str
) -> Callable[[], gym.Env]:
    kwargs = dict(env_kwargs or {})
    if isinstance(env, str):
        _check_env_id(env, who)
        env_id = env
        return lambda: gym.make(env_id, **kwargs)
    if callable(env):
        if kwargs:
            raise ValueError(f"{who}: env_kwargs only apply to an env id, not to a factory")
        return env
    raise TypeError(f"{who}: env is a Gymnasium env id or a zero-argument factory, got {env!r}")


def _find_set_task(env: gym.Env) -> Callable[[Task], Any] | None:
    for candidate in (env, env.unwrapped):
        method = getattr(candidate, "set_task", None)
        if callable(method):
            return method
    return None


def _as_task_list(tasks: Any, n: int | None, who: str) -> list[Task]:
    if isinstance(tasks, Mapping) or not isinstance(tasks, Sequence):
        raise TypeError(
            f"{who} must return a list of task mappings, got {qualified_name(type(tasks))}"
        )
    if n is not None and len(tasks) != n:
        raise ValueError(f"{who} was asked for {n} tasks and returned {len(tasks)}")
    out = []
    for i, task in enumerate(tasks):
        if not isinstance(task, Mapping):
            raise TypeError(
                f"{who}: task {i} is a {qualified_name(type(task))}; tasks are mappings of "
                "parameter names to values (or metarl.Task); opaque task objects go in "
                "tasks=[...], where metarl refers to them by index"
            )
        out.append(task if isinstance(task, Task) else Task(task))
    return out


def _sampler_name(name: str | None, env: Any, probe: gym.Env) -> str:
    """The name a run gets from its sampler: ``name``, else the env id, the factory's name, or
    (for a lambda) the env's class."""
    if name is not None:
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"a sampler's name is a non-empty string without '/', got {name!r}")
        return name
    if isinstance(env, str):
        return env
    factory = getattr(env, "__name__", "")
    if factory and factory.isidentifier():
        return factory
    return type(probe.unwrapped).__name__


class SetTaskEnvSampler:
    """Tasks for any Gymnasium env that has ``set_task(task)`` (the Meta-World convention).

    Args:
        env: a registered env id or a zero-argument factory returning a fresh env.
        tasks: a fixed list of tasks to draw from (without replacement when ``n`` is at most
            its length, with replacement otherwise). Mappings become :class:`Task`; a list of
            other objects (opaque tasks, e.g. Meta-World's own ``Task``) is used as is: metarl
            refers to task ``i`` as ``Task(index=i)`` and hands ``tasks[i]`` unchanged to
            ``set_task``.
        sample_fn: ``sample_fn(n, rng) -> list of task mappings``; exactly one of ``tasks`` and
            ``sample_fn`` is given.
        env_kwargs: keyword arguments for ``gymnasium.make`` when ``env`` is an id.
        name: names runs and results; default the env id, the factory's name, or for a
            lambda the env's class.
        info_keys: keys of the env's step ``info`` to keep in the batch (e.g. ``("success",)``);
            they become metrics and meta-test curves.
        max_envs: envs one sampler worker keeps at most (default
            :data:`metarl.sampling.rollout.DEFAULT_MAX_ENVS`).

    The env is built once at construction to check that it has ``set_task`` and accepts a task.
    Envs are reused across tasks: a new task goes to an env through ``set_task``.
    """

    def __init__(
        self,
        env: str | Callable[[], gym.Env],
        *,
        tasks: Sequence[Any] | None = None,
        sample_fn: Callable[[int, np.random.Generator], Sequence[Mapping[str, Any]]] | None = None,
        env_kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
        info_keys: Sequence[str] = (),
        max_envs: int | None = None,
    ) -> None:
        who = "SetTaskEnvSampler"
        if (tasks is None) == (sample_fn is None):
            raise ValueError(f"{who}: give exactly one of tasks=[...] or sample_fn=f(n, rng)")
        if isinstance(info_keys, str) or not all(isinstance(k, str) for k in info_keys):
            raise TypeError(
                f"{who}: info_keys is a sequence of info key strings, got {info_keys!r}"
            )
        if max_envs is not None and (
            isinstance(max_envs, bool) or not isinstance(max_envs, int) or max_envs < 1
        ):
            raise ValueError(f"{who}: max_envs must be a positive int, got {max_envs!r}")
        self.info_keys = tuple(info_keys)
        self.max_envs = max_envs
        self._factory = _make_env_factory(env, env_kwargs, who)
        self._tasks: list[Task] | None = None
        self._objects: list[Any] | None = None
        self._sample_fn = sample_fn
        if tasks is not None:
            if isinstance(tasks, Mapping) or not isinstance(tasks, Sequence):
                raise TypeError(f"{who}: tasks is a list, got {qualified_name(type(tasks))}")
            if not tasks:
                raise ValueError(f"{who}: the task list is empty")
            if isinstance(tasks[0], Mapping):
                self._tasks = _as_task_list(tasks, None, f"{who}(tasks=...)")
            else:
                self._objects = list(tasks)
                for i, obj in enumerate(self._objects):
                    if isinstance(obj, Mapping):
                        raise TypeError(
                            f"{who}(tasks=...): task {i} is a mapping while task 0 is a "
                            f"{qualified_name(type(self._objects[0]))}; give all tasks as "
                            "mappings, or all as opaque objects"
                        )
                self._tasks = [Task(index=i) for i in range(len(self._objects))]
            probe = self._tasks[0]
        else:
            assert sample_fn is not None
            if not callable(sample_fn):
                raise TypeError(f"{who}: sample_fn must be callable as sample_fn(n, rng)")
            probe = _as_task_list(sample_fn(1, np.random.default_rng(0)), 1, f"{who}: sample_fn")[0]
        probe_env = self._factory()
        if not isinstance(probe_env, gym.Env):
            raise TypeError(
                f"{who}: the factory returned {qualified_name(type(probe_env))}, not a "
                "gymnasium.Env"
            )
        try:
            if _find_set_task(probe_env) is None:
                raise TypeError(
                    f"{who}: {qualified_name(type(probe_env.unwrapped))} has no set_task(task) "
                    "method; use GymKwargsTaskSampler for envs whose task is a set of make() "
                    "kwargs"
                )
            self.name = _sampler_name(name, env, probe_env)
            self.observation_space = probe_env.observation_space
            self.action_space = probe_env.action_space
            self._apply(probe_env, probe)
        finally:
            probe_env.close()

    def _given(self, task: Task) -> Any:
        """What ``set_task`` receives for ``task``: the opaque object it indexes, or the task."""
        if self._objects is None:
            return task
        index = task.get("index") if set(task) == {"index"} else None
        if not isinstance(index, int) or not 0 <= index < len(self._objects):
            raise ValueError(
                f"{self.name}: its tasks are opaque objects referred to as Task(index=i) with "
                f"0 <= i < {len(self._objects)}; got {task}"
            )
        return self._objects[index]

    def _apply(self, env: gym.Env, task: Task) -> None:
        set_task = _find_set_task(env)
        assert set_task is not None
        given = self._given(task)
        try:
            set_task(given)
        except Exception as exc:
            raise ValueError(
                f"{type(env.unwrapped).__name__}.set_task rejected {task}: {exc}"
            ) from exc

    def sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        n = check_num_tasks(n, f"{type(self).__name__}.sample")
        _check_rng(rng, f"{type(self).__name__}.sample")
        if self._tasks is not None:
            idx = rng.choice(len(self._tasks), size=n, replace=n > len(self._tasks))
            return [self._tasks[int(i)] for i in idx]
        assert self._sample_fn is not None
        return _as_task_list(self._sample_fn(n, rng), n, "sample_fn")

    @property
    def tasks(self) -> list[Task] | None:
        """The fixed task list (opaque tasks as ``Task(index=i)``), or None with a sample_fn."""
        return None if self._tasks is None else list(self._tasks)

    def task_object(self, task: Mapping[str, Any]) -> Any:
        """The object ``set_task`` receives for ``task`` (the opaque task it indexes)."""
        return self._given(task if isinstance(task, Task) else Task(task))

    def make_env(self, task: Task | None = None) -> gym.Env:
        route_mujoco_warnings()  # no MuJoCo compile notices on stdout or in MUJOCO_LOG.TXT
        env = self._factory()
        if task is not None:
            self._apply(env, task if isinstance(task, Task) else Task(task))
        return env

    def retask(self, env: gym.Env, task: Task) -> bool:
        """Give an env of this sampler a new task in place (``set_task``); always True."""
        self._apply(env, task)
        return True


class GymKwargsTaskSampler:
    """Tasks that are ``gymnasium.make`` keyword arguments of a registered env id.

    Example:
        >>> sampler = GymKwargsTaskSampler(
        ...     "HalfCheetah-v5", {"ctrl_cost_weight": Uniform(0.05, 0.2)})
        >>> tasks = sampler.sample(4, np.random.default_rng(0))
        >>> env = sampler.make_env(tasks[0])  # HalfCheetah-v5 with that ctrl_cost_weight

    Args:
        env_id: a registered Gymnasium env id.
        distributions: keyword name -> a :class:`Distribution` (``Uniform``, ``LogUniform``,
            ``Choice`` or any ``f(rng) -> value``), drawn in the given order.
        fixed_kwargs: keyword arguments passed unchanged to every ``make``.
        name: names runs and results; default the env id.

    One env is built at construction with a drawn task, so an unknown keyword fails at once.
    """

    def __init__(
        self,
        env_id: str,
        distributions: Mapping[str, Distribution],
        fixed_kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        who = "GymKwargsTaskSampler"
        if not isinstance(env_id, str):
            raise TypeError(f"{who}: env_id is a registered Gymnasium id string, got {env_id!r}")
        _check_env_id(env_id, who)
        if not isinstance(distributions, Mapping) or not distributions:
            raise ValueError(f"{who}: distributions is a non-empty mapping of make() kwargs")
        for key, dist in distributions.items():
            if not callable(dist):
                raise TypeError(
                    f"{who}: distribution for {key!r} must be callable as f(rng) "
                    f"(Uniform, LogUniform, Choice, ...), got {dist!r}"
                )
        self.env_id = env_id
        self.name = env_id if name is None else name
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"{who}: name is a non-empty string, got {name!r}")
        self.distributions = dict(distributions)
        self.fixed_kwargs = dict(fixed_kwargs or {})
        clash = set(self.fixed_kwargs) & set(self.distributions)
        if clash:
            raise ValueError(f"{who}: {sorted(clash)} are both fixed and sampled")
        probe_env = self.make_env(self.sample(1, np.random.default_rng(0))[0])
        self.observation_space = probe_env.observation_space
        self.action_space = probe_env.action_space
        probe_env.close()

    def sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        n = check_num_tasks(n, f"{type(self).__name__}.sample")
        _check_rng(rng, f"{type(self).__name__}.sample")
        return [Task({k: dist(rng) for k, dist in self.distributions.items()}) for _ in range(n)]

    def make_env(self, task: Task | None = None) -> gym.Env:
        kwargs = dict(self.fixed_kwargs)
        if task is not None:
            unknown = set(task) - set(self.distributions)
            if unknown:
                raise ValueError(
                    f"{self.env_id}: task has parameter(s) {sorted(unknown)} that this sampler "
                    f"does not draw; it draws {sorted(self.distributions)}"
                )
            kwargs.update(
                {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in task.items()}
            )
        route_mujoco_warnings()  # no MuJoCo compile notices on stdout or in MUJOCO_LOG.TXT
        try:
            return gym.make(self.env_id, **kwargs)
        except TypeError as exc:
            raise ValueError(
                f"gymnasium.make({self.env_id!r}) rejected the task kwargs {sorted(kwargs)}: {exc}"
            ) from exc


# --------------------------------------------------------------------------------------------
# A sampler named on the command line
# --------------------------------------------------------------------------------------------


def load_task_sampler(spec: str) -> TaskSampler:
    """Call the factory ``"module:callable"`` (importable from the current folder or the
    Python path) and return the task sampler it builds.

    Raises:
        ValueError: a malformed spec, a module that does not import, a missing or
            non-callable attribute, or a result that is not a task sampler (one line each).
    """
    import importlib
    import os
    import sys

    module_name, sep, attr = str(spec).partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(
            f"--tasks {spec!r} must be module:callable (e.g. my_tasks:make_sampler), a factory "
            "that returns a task sampler"
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ValueError(
            f"--tasks {spec}: module {module_name!r} does not import ({type(exc).__name__}: {exc})"
        ) from exc
    factory: Any = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise ValueError(f"--tasks {spec}: module {module_name!r} has no {attr!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise ValueError(
            f"--tasks {spec}: {attr} is a {qualified_name(type(factory))}, not a callable factory"
        )
    sampler = factory()
    if not (
        callable(getattr(sampler, "sample", None)) and callable(getattr(sampler, "make_env", None))
    ):
        raise ValueError(
            f"--tasks {spec}: {attr}() returned a {qualified_name(type(sampler))}, not a task "
            "sampler with sample(n, rng) and make_env(task)"
        )
    return sampler
