"""The contracts every task family meets, and the Gymnasium view of any family.

A :class:`TaskFamily` defines a task distribution: which parameters a task has
(:class:`ParamSpec`), how tasks are sampled, which fixed train/test splits it has, and how a
batch of N environments with per-env tasks is stepped (:class:`BatchStepper`, returning a
:class:`BatchStep`; and, for families that can, :class:`DeviceBatchStepper`: the N envs as
worlds of one simulator on a torch device, returning a :class:`DeviceStep`). The sampler,
evaluation and rendering are written against these classes only; the built-in MuJoCo families
(:mod:`metarl.envs`) and the generic Gymnasium path (:mod:`metarl.gym_family`) implement them
and register by name in :mod:`metarl.registry`.

:class:`MetaEnv` is the registered ``gymnasium.Env`` (``metarl/<Family>-v0``): the N = 1 view of
a family's batch stepper, so Gymnasium, Stable-Baselines3 and rendering see an ordinary env.
:class:`FamilyTaskSampler` is a family seen as a task sampler (``sample``, ``make_env``).
"""

from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import gymnasium as gym
import numpy as np

from metarl.tasks import Task, TaskSplit, check_num_tasks

if TYPE_CHECKING:
    import torch

__all__ = [
    "Array",
    "BatchStep",
    "BatchStepper",
    "DeviceBatchStepper",
    "DeviceStep",
    "FamilyTaskSampler",
    "MetaEnv",
    "ParamSpec",
    "TaskFamily",
    "Variant",
    "as_family",
]

Array = np.ndarray


# --------------------------------------------------------------------------------------------
# Task parameters
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamSpec:
    """One named task parameter: its shape and the closed range (or set) of allowed values.

    Attributes:
        shape: ``()`` for a scalar, else the array shape.
        low, high: allowed closed range, elementwise (ignored when ``choices`` is given).
        choices: the allowed values of a discrete scalar parameter (e.g. ``(-1.0, 1.0)``).
        doc: what the parameter means and its unit.
    """

    shape: tuple[int, ...] = ()
    low: float = -math.inf
    high: float = math.inf
    choices: tuple[float, ...] = ()
    doc: str = ""

    def describe(self) -> str:
        if self.choices:
            return "one of {" + ", ".join(f"{c:g}" for c in self.choices) + "}"
        where = f"[{self.low:g}, {self.high:g}]"
        return where if not self.shape else f"shape {self.shape}, each in {where}"


@dataclass(frozen=True)
class Variant:
    """A named variant of a family (where the published anchors disagree).

    Attributes:
        horizon: episode length in env steps for this variant.
        source: where the definition comes from (papers and reference code).
    """

    horizon: int
    source: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class BatchStep:
    """The result of stepping (some of) a batch; every array has one row per stepped env.

    Attributes:
        obs: ``[n, obs_dim]`` observations after the step.
        reward: ``[n]`` rewards; exactly the sum of ``terms`` in their order.
        terminated: ``[n]`` bool, the family's termination condition.
        terms: named reward terms (``reward_forward``, ``reward_ctrl``, ...), each ``[n]``.
        info: other per-env diagnostics (``x_velocity``, ...), each ``[n]`` or ``[n, k]``.
    """

    obs: Array
    reward: Array
    terminated: Array
    terms: dict[str, Array]
    info: dict[str, Array]


class BatchStepper(ABC):
    """N environments of one family, each with its own task, stepped together.

    The sampler's fast path. ``indices`` selects a subset of the N envs (default: all);
    returned arrays have one row per selected env, in the order of ``indices``.
    """

    family: TaskFamily
    num_envs: int

    def __init__(self, family: TaskFamily, num_envs: int) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int | np.integer) or num_envs < 1:
            raise ValueError(
                f"{family.name}: a batch needs at least one env, got num_envs={num_envs!r}"
            )
        self.family = family
        self.num_envs = int(num_envs)
        default = family.default_task()
        self._tasks: list[Task] = [default] * self.num_envs
        self._params = family.task_params(self._tasks)

    @property
    def tasks(self) -> list[Task]:
        return list(self._tasks)

    def _indices(self, indices: Sequence[int] | Array | None) -> Array:
        if indices is None:
            return np.arange(self.num_envs)
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_envs):
            raise IndexError(f"env indices must lie in [0, {self.num_envs}), got {idx.tolist()}")
        return idx

    def set_tasks(
        self, tasks: Sequence[Mapping[str, Any]], indices: Sequence[int] | None = None
    ) -> None:
        """Give env ``indices[j]`` the task ``tasks[j]`` (validated).

        The reward changes from the next step on; a dynamics task rebuilds the env's model at
        once, so set tasks between episodes.
        """
        idx = self._indices(indices)
        if len(tasks) != len(idx):
            raise ValueError(f"{self.family.name}: {len(tasks)} tasks for {len(idx)} envs")
        for j, i in enumerate(idx):
            task = self.family.validate_task(tasks[j])
            self._tasks[i] = task
            self._on_task_changed(int(i), task)
        self._params = self.family.task_params(self._tasks)

    def _on_task_changed(self, index: int, task: Task) -> None:  # noqa: B027 - optional hook
        """Hook for backends that must rebuild something per task (e.g. a scaled model)."""

    def _check_rngs(self, rngs: Sequence[np.random.Generator], n: int) -> None:
        if len(rngs) != n:
            raise ValueError(
                f"{self.family.name}: reset needs one Generator per env ({n}), got {len(rngs)}"
            )

    def _check_actions(self, actions: Array, n: int) -> Array:
        actions = np.asarray(actions, dtype=np.float64)
        dim = self.family.action_space.shape[0]
        if actions.shape != (n, dim):
            raise ValueError(
                f"{self.family.name}: actions must have shape ({n}, {dim}) for {n} envs, "
                f"got {actions.shape}"
            )
        return actions

    @abstractmethod
    def reset(
        self, rngs: Sequence[np.random.Generator], indices: Sequence[int] | None = None
    ) -> Array:
        """Reset the selected envs, drawing initial-state noise from ``rngs[j]``; returns obs."""

    @abstractmethod
    def step(self, actions: Array, indices: Sequence[int] | None = None) -> BatchStep:
        """Apply ``actions[j]`` to env ``indices[j]`` for one env step (``frame_skip`` substeps)."""

    @abstractmethod
    def render(self, index: int, width: int, height: int, camera: Any = None) -> Array:
        """An ``[height, width, 3]`` uint8 frame of env ``index``."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free rendering resources."""


@dataclass
class DeviceStep:
    """One step of a :class:`DeviceBatchStepper`: torch tensors on its device, one row per env.

    Attributes:
        obs: ``[n, obs_dim]`` float32 observations after the step.
        reward: ``[n]`` float32 rewards; the sum of ``terms`` in their order.
        terminated: ``[n]`` bool, the family's termination condition.
        terms: named reward terms, each ``[n]`` (the same names as the host path's).
        info: other per-env diagnostics, each ``[n]`` or ``[n, k]``.
    """

    obs: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    terms: dict[str, torch.Tensor]
    info: dict[str, torch.Tensor]


class DeviceBatchStepper(ABC):
    """N envs of one family as the worlds of one simulator on a torch device.

    The device twin of :class:`BatchStepper`: every call acts on all N envs at once, its tensors
    stay on ``device``, and nothing is copied to the host per step. The family's own
    observation, reward and termination functions run on the simulator's arrays (see
    :mod:`metarl.arrays`). Initial states are drawn on the host from the same generators, in
    the same order, as the host path draws them, and reach the device once per batch.

    Attributes:
        family: the family.
        num_envs: ``N``, the number of worlds.
        device: the torch device every tensor lives on.
        may_terminate: whether :attr:`DeviceStep.terminated` can ever be True (a family that
            never terminates lets the sampler schedule every reset without looking at the
            device).
    """

    family: TaskFamily
    num_envs: int
    device: torch.device
    may_terminate: bool = True

    def __init__(self, family: TaskFamily, num_envs: int, device: torch.device) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int | np.integer) or num_envs < 1:
            raise ValueError(
                f"{family.name}: a batch needs at least one env, got num_envs={num_envs!r}"
            )
        self.family = family
        self.num_envs = int(num_envs)
        self.device = device
        self._tasks: list[Task] = [family.default_task()] * self.num_envs
        self.params = self._device_params()

    @property
    def tasks(self) -> list[Task]:
        return list(self._tasks)

    def set_tasks(self, tasks: Sequence[Mapping[str, Any]]) -> None:
        """Give env ``j`` the task ``tasks[j]`` (validated), for all N envs; the reward
        changes from the next step on."""
        if len(tasks) != self.num_envs:
            raise ValueError(f"{self.family.name}: {len(tasks)} tasks for {self.num_envs} envs")
        self._tasks = [self.family.validate_task(t) for t in tasks]
        self.params = self._device_params()

    def _device_params(self) -> dict[str, torch.Tensor]:
        import torch

        return {
            k: torch.as_tensor(v, dtype=torch.float32).to(self.device)
            for k, v in self.family.task_params(self._tasks).items()
        }

    def running(self) -> AbstractContextManager[None]:
        """The scope of one batch's work (e.g. the device stream it runs on); the default is
        no scope at all."""
        return contextlib.nullcontext()

    @abstractmethod
    def initial_states(
        self, rngs: Sequence[np.random.Generator], count: int
    ) -> dict[str, torch.Tensor]:
        """``count`` initial states of every env, each ``[N, count, ...]`` on the device.

        Env ``j``'s come from ``rngs[j]``, drawn in the order its host batch would draw them
        over ``count`` consecutive resets.
        """

    @abstractmethod
    def reset(self, states: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """Reset the envs where ``mask [N]`` is True to ``states`` (each ``[N, ...]``, rows
        of the others ignored); returns every env's observation ``[N, obs_dim]``."""

    @abstractmethod
    def step(self, actions: torch.Tensor) -> DeviceStep:
        """Apply ``actions [N, act_dim]`` (already inside the action space) for one env step."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free the simulator's memory."""


# --------------------------------------------------------------------------------------------
# Families
# --------------------------------------------------------------------------------------------


class TaskFamily(ABC):
    """A task distribution: parameter specs, sampling, validation and a batch stepper.

    Subclasses set ``name``, ``variants`` and ``default_variant`` and implement
    :meth:`param_specs`, :meth:`_sample` and :meth:`make_batch`.

    Args:
        variant: which published definition to use (see ``variants``).
        horizon: episode length in env steps; defaults to the variant's.
    """

    name: str
    """The family's name (a class attribute; instances may refine it: ``ML1-reach-v3``)."""
    variants: ClassVar[Mapping[str, Variant]]
    default_variant: ClassVar[str]

    observation_space: gym.spaces.Box
    action_space: gym.spaces.Box

    def __init__(self, variant: str | None = None, horizon: int | None = None) -> None:
        variant = self.default_variant if variant is None else variant
        if variant not in self.variants:
            raise ValueError(
                f"{self.name}: unknown variant {variant!r}; choose one of {sorted(self.variants)}"
            )
        self.variant = variant
        spec = self.variants[variant]
        if horizon is None:
            horizon = spec.horizon
        if isinstance(horizon, bool) or not isinstance(horizon, int | np.integer) or horizon < 1:
            raise ValueError(f"{self.name}: horizon must be a positive int, got {horizon!r}")
        self.horizon = int(horizon)

    # -- what a task is ----------------------------------------------------------------------
    @abstractmethod
    def param_specs(self) -> dict[str, ParamSpec]:
        """Task parameter name -> spec, for this variant."""

    def default_task(self) -> Task:
        """The task an env has before ``set_task`` (documented per family)."""
        return self.validate_task(
            {k: self._default_value(s) for k, s in self.param_specs().items()}
        )

    @staticmethod
    def _default_value(spec: ParamSpec) -> Any:
        if spec.choices:
            return max(spec.choices)
        mid = 0.5 * (spec.low + spec.high)
        return np.full(spec.shape, mid) if spec.shape else mid

    def validate_task(self, task: Mapping[str, Any]) -> Task:
        """Check ``task`` against :meth:`param_specs` and return it in canonical form.

        Raises:
            ValueError: naming the family, the key and the allowed range, for a missing or
                unknown key, a wrong type or shape, a non-finite value or one out of range.
        """
        specs = self.param_specs()
        if not isinstance(task, Mapping):
            raise ValueError(
                f"{self.name}: a task is a mapping like {self._example()}, got {task!r}"
            )
        missing = [k for k in specs if k not in task]
        unknown = [k for k in task if k not in specs]
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing {missing}")
            if unknown:
                parts.append(f"unknown {unknown}")
            raise ValueError(
                f"{self.name}: task keys {' and '.join(parts)}; expected exactly "
                f"{sorted(specs)} (e.g. {self._example()})"
            )
        clean: dict[str, Any] = {}
        for key, spec in specs.items():
            clean[key] = self._check_value(key, task[key], spec)
        self._check_task(clean)
        return Task(clean)

    def _check_value(self, key: str, value: Any, spec: ParamSpec) -> Any:
        allowed = spec.describe()
        if isinstance(value, str | bytes | Mapping) or value is None:
            raise ValueError(f"{self.name}: {key} must be numeric, {allowed}; got {value!r}")
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                f"{self.name}: {key} must be numeric, {allowed}; got {value!r}"
            ) from None
        if array.shape != spec.shape:
            raise ValueError(
                f"{self.name}: {key} must have shape {spec.shape} ({allowed}); "
                f"got shape {array.shape}"
            )
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{self.name}: {key} must be finite, {allowed}; got {value!r}")
        if spec.choices:
            if float(array) not in spec.choices:
                raise ValueError(f"{self.name}: {key} must be {allowed}; got {float(array)!r}")
        elif np.any(array < spec.low) or np.any(array > spec.high):
            bad = array if array.ndim == 0 else array[(array < spec.low) | (array > spec.high)]
            raise ValueError(
                f"{self.name} (variant {self.variant!r}): {key} must be in {allowed}; "
                f"got {np.asarray(bad).tolist()!r}"
            )
        return float(array) if array.ndim == 0 else array

    def _check_task(self, task: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Extra joint checks (e.g. a goal inside a disc); raise ValueError naming the key."""

    def _example(self) -> str:
        return repr(dict(self.default_task().to_dict()))

    # -- sampling ----------------------------------------------------------------------------
    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        """Draw ``n`` tasks from this variant's distribution using only ``rng``."""
        n = check_num_tasks(n, f"{self.name}.sample_tasks")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(
                f"{self.name}.sample_tasks: rng is a numpy.random.Generator, "
                f"got {type(rng).__name__}"
            )
        return [self.validate_task(t) for t in self._sample(n, rng)]

    @abstractmethod
    def _sample(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        """Draw ``n`` raw task dicts."""

    def task_splits(self) -> dict[str, Callable[[], TaskSplit]]:
        """Named, fixed train/test splits for this variant (name -> builder).

        Every family has ``"default"``: 100 training and 40 held-out test tasks drawn with
        ``default_rng(1337)``. Families add the published splits (e.g. PEARL's).
        """
        return {"default": lambda: self._seeded_split("default", 100, 40, 1337)}

    def _seeded_split(self, name: str, n_train: int, n_test: int, seed: int) -> TaskSplit:
        tasks = self.sample_tasks(n_train + n_test, np.random.default_rng(seed))
        return TaskSplit(
            name=name,
            train=tuple(tasks[:n_train]),
            test=tuple(tasks[n_train:]),
            source=f"{self.name}(variant={self.variant!r}).sample_tasks({n_train + n_test}, "
            f"default_rng({seed})): first {n_train} train, last {n_test} test",
        )

    def task_split(self, name: str = "default") -> TaskSplit:
        splits = self.task_splits()
        if name not in splits:
            raise ValueError(
                f"{self.name} (variant {self.variant!r}) has no task split {name!r}; "
                f"available: {sorted(splits)}"
            )
        return splits[name]()

    # -- stepping ----------------------------------------------------------------------------
    def task_params(self, tasks: Sequence[Task]) -> dict[str, Array]:
        """Every parameter of ``tasks`` stacked on a leading batch axis: ``[n, *shape]`` float64."""
        return {
            key: np.stack([np.asarray(t[key], dtype=np.float64) for t in tasks])
            for key in self.param_specs()
        }

    @abstractmethod
    def make_batch(self, num_envs: int) -> BatchStepper:
        """A batch of ``num_envs`` envs, each with :meth:`default_task` until ``set_tasks``."""

    def check_device_backend(self, backend: str) -> None:
        """Raise if this family cannot run on the device backend ``backend`` (``"warp"``).

        Called by the sampler before any work; the default: no family can.

        Raises:
            ValueError: one line naming the family, why, and what to use instead.
        """
        raise ValueError(
            f"{self.name} has no simulator on a device: the {backend} backend steps built-in "
            "MuJoCo families only; use --backend inline, processes or ray"
        )

    def make_device_batch(
        self, num_envs: int, device: torch.device, backend: str = "warp"
    ) -> DeviceBatchStepper:
        """``num_envs`` envs as worlds of one simulator on ``device`` (see
        :meth:`check_device_backend` for which families and backends can)."""
        self.check_device_backend(backend)
        raise NotImplementedError(
            f"{type(self).__name__} passes check_device_backend but builds no device batch"
        )

    @property
    def dt(self) -> float:
        """Seconds of simulated time per env step."""
        return 1.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(variant={self.variant!r}, horizon={self.horizon})"


# --------------------------------------------------------------------------------------------
# The Gymnasium view and the task sampler of a family
# --------------------------------------------------------------------------------------------


def as_family(family: str | TaskFamily, **family_kwargs: Any) -> TaskFamily:
    """``family`` itself, or the registered family of that name built with ``family_kwargs``.

    Raises:
        ValueError: options given beside an instance, or an unknown name.
    """
    if isinstance(family, TaskFamily):
        if family_kwargs:
            raise ValueError("pass family options to the family, not beside an instance")
        return family
    from metarl.registry import make_family

    return make_family(family, **family_kwargs)


class MetaEnv(gym.Env):
    """A single environment of a task family: the registered ``metarl/<Family>-v0``.

    Args:
        family: a family name (``"HalfCheetahVel"``) or a :class:`TaskFamily` instance.
        render_mode: ``"rgb_array"`` or None.
        width, height: frame size for ``render()``.
        **family_kwargs: ``variant=...``, ``horizon=...`` and family options.

    The episode is truncated after the family's ``horizon`` steps. ``info`` of every step holds
    the reward terms, which sum exactly to the reward.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}  # noqa: RUF012 - gym API

    def __init__(
        self,
        family: str | TaskFamily,
        render_mode: str | None = None,
        width: int = 480,
        height: int = 480,
        **family_kwargs: Any,
    ) -> None:
        self.family = as_family(family, **family_kwargs)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}"
            )
        self.render_mode = render_mode
        self.width, self.height = int(width), int(height)
        self.observation_space = self.family.observation_space
        self.action_space = self.family.action_space
        self._batch = self.family.make_batch(1)
        self._steps = 0
        self.metadata = {**self.metadata, "render_fps": max(1, round(1.0 / self.family.dt))}

    @property
    def dt(self) -> float:
        return self.family.dt

    @property
    def horizon(self) -> int:
        return self.family.horizon

    @property
    def model(self) -> Any:
        """The env's ``mujoco.MjModel``, as Gymnasium's MuJoCo envs expose it (a dynamics task
        changes this env's own copy)."""
        return self._mujoco("models")

    @property
    def data(self) -> Any:
        """The env's ``mujoco.MjData`` (``env.unwrapped.data.qpos``, ...), live: stepping the env
        steps it."""
        return self._mujoco("datas")

    def _mujoco(self, what: str) -> Any:
        values = getattr(self._batch, what, None)
        if values is None:
            raise AttributeError(
                f"{self.family.name} is not simulated by MuJoCo here: its env has no model or data"
            )
        return values[0]

    def sample_tasks(self, n: int, rng: np.random.Generator | None = None) -> list[Task]:
        """Draw ``n`` tasks; with no ``rng``, from this env's ``np_random`` (seeded by reset)."""
        return self.family.sample_tasks(n, self.np_random if rng is None else rng)

    def set_task(self, task: Mapping[str, Any]) -> None:
        """Use ``task`` from the next ``reset`` on (validated now)."""
        self._batch.set_tasks([task])

    def get_task(self) -> Task:
        return self._batch.tasks[0]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Array, dict[str, Any]]:
        super().reset(seed=seed)
        if options and "task" in options:
            self.set_task(options["task"])
        obs = self._batch.reset([self.np_random])[0]
        self._steps = 0
        return obs, {"task": self.get_task()}

    def step(self, action: Array) -> tuple[Array, float, bool, bool, dict[str, Any]]:
        result = self._batch.step(np.asarray(action, dtype=np.float64).reshape(1, -1))
        self._steps += 1
        info: dict[str, Any] = {k: _scalar(v[0]) for k, v in result.terms.items()}
        info.update({k: _scalar(v[0]) for k, v in result.info.items()})
        truncated = self._steps >= self.family.horizon
        return result.obs[0], float(result.reward[0]), bool(result.terminated[0]), truncated, info

    def render(self) -> Array | None:
        if self.render_mode is None:
            gym.logger.warn("render() was called without render_mode='rgb_array'")
            return None
        return self._batch.render(0, self.width, self.height)

    def close(self) -> None:
        self._batch.close()


def _scalar(value: Any) -> Any:
    value = np.asarray(value)
    return float(value) if value.ndim == 0 else value.copy()


class FamilyTaskSampler:
    """The task sampler of a built-in family (the fast path for metarl's sampler).

    Args:
        family: a family name or instance.
        **family_kwargs: ``variant=...``, ``horizon=...`` when ``family`` is a name.
    """

    def __init__(self, family: str | TaskFamily, **family_kwargs: Any) -> None:
        self.family = as_family(family, **family_kwargs)
        self.name = self.family.name
        self.observation_space = self.family.observation_space
        self.action_space = self.family.action_space

    def sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        return self.family.sample_tasks(n, rng)

    def make_env(self, task: Task | None = None, render_mode: str | None = None) -> MetaEnv:
        env = MetaEnv(self.family, render_mode=render_mode)
        if task is not None:
            env.set_task(task)
        return env

    def make_batch(self, num_envs: int) -> BatchStepper:
        return self.family.make_batch(num_envs)

    def split(self, name: str = "default") -> TaskSplit:
        return self.family.task_split(name)
