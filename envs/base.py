"""The task-family machinery: one source of truth per family, a batch stepper, a Gymnasium view.

A :class:`TaskFamily` defines a task distribution: which parameters a task has
(:class:`ParamSpec`), how tasks are sampled, and how a batch of N environments with per-env
tasks is stepped (:class:`BatchStepper`). MuJoCo families (:class:`MujocoTaskFamily`) only write
vectorized numpy functions over a batch of gathered MuJoCo state arrays (observation, reward
terms, termination); :class:`MujocoBatch` steps N ``(MjModel, MjData)`` pairs in a plain loop
and calls those functions once per step for the whole batch.

:class:`MetaEnv` is the registered ``gymnasium.Env`` (``metarl/<Family>-v0``): the N = 1 view of
the same batch stepper, so Gymnasium, Stable-Baselines3 and rendering see an ordinary env.
"""

from __future__ import annotations

import difflib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import mujoco
import numpy as np

from metarl.mujoco_messages import route_mujoco_warnings
from metarl.tasks import Task, TaskSplit, check_num_tasks

__all__ = [
    "BatchStep",
    "BatchStepper",
    "FamilyTaskSampler",
    "MetaEnv",
    "MujocoBatch",
    "MujocoTaskFamily",
    "ParamSpec",
    "TaskFamily",
    "Variant",
    "gymnasium_asset",
]

Array = np.ndarray


def gymnasium_asset(name: str) -> Path:
    """Path of one of Gymnasium's MuJoCo model files (the v5 robots)."""
    import gymnasium.envs.mujoco as gym_mujoco

    path = Path(gym_mujoco.__file__).parent / "assets" / name
    if not path.exists():
        raise FileNotFoundError(
            f"Gymnasium ships no MuJoCo asset {name!r} (looked in {path.parent})"
        )
    return path


route_mujoco_warnings()  # every family compiles and steps MuJoCo models


def load_gymnasium_model(name: str) -> mujoco.MjModel:
    """Compile one of Gymnasium's v5 models (their ``settotalmass`` notice is dropped: see
    :mod:`metarl.mujoco_messages`)."""
    route_mujoco_warnings()
    return mujoco.MjModel.from_xml_path(str(gymnasium_asset(name)))


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

    name: ClassVar[str]
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

    @property
    def dt(self) -> float:
        """Seconds of simulated time per env step."""
        return 1.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(variant={self.variant!r}, horizon={self.horizon})"


class GoalVelocityTasks:
    """Tasks ``{"velocity": v*}``, ``v* ~ U[0, max_velocity]`` (the *Vel families' task half)."""

    max_velocity: float

    def param_specs(self) -> dict[str, ParamSpec]:
        return {
            "velocity": ParamSpec(
                low=0.0, high=self.max_velocity, doc="goal forward velocity (m/s)"
            )
        }

    def _sample(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        return [{"velocity": v} for v in rng.uniform(0.0, self.max_velocity, size=n)]


class MujocoTaskFamily(TaskFamily):
    """A family over one of Gymnasium's v5 MuJoCo robots.

    Subclasses set the class attributes below and write the vectorized functions
    :meth:`reset_state`, :meth:`observe`, :meth:`reward_terms` and :meth:`terminated`. ``state``
    is a dict of ``[n, ...]`` arrays, one per name in ``gather`` (copied from ``MjData`` after
    every step and reset); ``before`` holds the ``before_fields`` of the same envs as they were
    before the step.

    Class attributes:
        xml_file: Gymnasium asset name (``half_cheetah.xml``).
        frame_skip: MuJoCo substeps per env step (Gymnasium v5's value); a variant may set
            its own with the option ``"frame_skip"`` (the simulation rate of another anchor).
        gather: ``MjData`` fields copied into the batch state.
        before_fields: fields kept from before each step (for velocities).
        needs_contact_forces: call ``mj_rnePostConstraint`` after each step, as Gymnasium does,
            so that ``cfrc_ext`` is current (only families that read it pay for it).
        needs_subtree_state: bring ``subtree_com`` and ``subtree_linvel`` (each body's subtree
            centre of mass and its velocity) up to date after each step and reset, and gather
            them: rllab's ``MujocoEnv`` reads them after its own ``forward()``, while after
            ``mj_step`` MuJoCo's are those of the state before the step.
        per_task_model: every env owns a copy of the model that :meth:`configure_model` edits
            (the dynamics families).
        camera_distance: distance of the tracking camera used by :meth:`BatchStepper.render`.
    """

    xml_file: ClassVar[str]
    frame_skip: int
    gather: tuple[str, ...] = ("qpos", "qvel")
    before_fields: ClassVar[tuple[str, ...]] = ("qpos",)
    needs_contact_forces: ClassVar[bool] = False
    needs_subtree_state: bool = False
    per_task_model: ClassVar[bool] = False
    camera_distance: ClassVar[float] = 4.0

    def __init__(self, variant: str | None = None, horizon: int | None = None) -> None:
        super().__init__(variant=variant, horizon=horizon)
        options = self.variants[self.variant].options
        if "frame_skip" in options:
            self.frame_skip = int(options["frame_skip"])
        if self.needs_subtree_state:
            self.gather = (*self.gather, "subtree_com", "subtree_linvel")
        self.model = load_gymnasium_model(self.xml_file)
        data = mujoco.MjData(self.model)
        self.init_qpos = data.qpos.ravel().copy()
        self.init_qvel = data.qvel.ravel().copy()
        bounds = self.model.actuator_ctrlrange.copy().astype(np.float32)
        self.action_space = gym.spaces.Box(low=bounds[:, 0], high=bounds[:, 1], dtype=np.float32)
        probe = _gather_state(self.gather, [data], self.model)
        obs_dim = self.observe(probe).shape[1]
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(obs_dim,), dtype=np.float64)

    @property
    def dt(self) -> float:
        return float(self.model.opt.timestep * self.frame_skip)

    @property
    def action_half_range(self) -> Array:
        """``s`` in the MAML reward formulas: half the actuator control range, ``[nu]``."""
        low, high = self.model.actuator_ctrlrange.T
        return 0.5 * (high - low)

    @abstractmethod
    def reset_state(self, rng: np.random.Generator) -> tuple[Array, Array]:
        """Initial ``(qpos, qvel)`` of one env, drawn from ``rng`` in Gymnasium v5's order."""

    @abstractmethod
    def observe(self, state: dict[str, Array]) -> Array:
        """Observations ``[n, obs_dim]`` (Gymnasium v5's layout)."""

    @abstractmethod
    def reward_terms(
        self,
        before: dict[str, Array],
        state: dict[str, Array],
        action: Array,
        params: dict[str, Array],
    ) -> tuple[dict[str, Array], dict[str, Array]]:
        """``(terms, info)``: named reward terms ``[n]`` that sum to the reward, and diagnostics.

        ``action`` is ``[n, nu]`` as given to the env (unclipped); ``params`` are the rows of
        :meth:`task_params` for these envs.
        """

    def terminated(self, state: dict[str, Array], params: dict[str, Array]) -> Array:
        """``[n]`` bool; the default never terminates."""
        return np.zeros(state["qpos"].shape[0], dtype=bool)

    def configure_model(self, model: mujoco.MjModel, task: Task) -> None:
        """Apply ``task`` to an env's own model copy (only with ``per_task_model``)."""

    def make_batch(self, num_envs: int) -> MujocoBatch:
        return MujocoBatch(self, num_envs)


def _update_subtree_state(model: mujoco.MjModel, data: mujoco.MjData) -> None:
    """``subtree_com`` and ``subtree_linvel`` of ``data``'s current ``qpos`` and ``qvel``:
    the kinematics and centre-of-mass stages of ``mj_forward``, then ``mj_subtreeVel``."""
    mujoco.mj_kinematics(model, data)
    mujoco.mj_comPos(model, data)
    mujoco.mj_comVel(model, data)
    mujoco.mj_subtreeVel(model, data)


def _gather_state(
    names: Sequence[str], datas: Sequence[mujoco.MjData], model: mujoco.MjModel
) -> dict[str, Array]:
    return {name: np.stack([np.array(getattr(d, name)) for d in datas]) for name in names}


class MujocoBatch(BatchStepper):
    """N ``(MjModel, MjData)`` pairs stepped in a plain loop, with vectorized numpy on top."""

    family: MujocoTaskFamily

    def __init__(self, family: MujocoTaskFamily, num_envs: int) -> None:
        super().__init__(family, num_envs)
        base = family.model
        if family.per_task_model:
            self.models = [_copy_model(base) for _ in range(self.num_envs)]
        else:
            self.models = [base] * self.num_envs
        self.datas = [mujoco.MjData(m) for m in self.models]
        self._state = _gather_state(family.gather, self.datas, base)
        self._before = {k: self._state[k].copy() for k in family.before_fields}
        # Per env: its model, data, control view and (buffer, view) pairs into its MjData,
        # bound once, so the step loop only calls MuJoCo and copies.
        self._slots = [
            (m, d, d.ctrl, [(self._state[name], getattr(d, name)) for name in family.gather])
            for m, d in zip(self.models, self.datas, strict=True)
        ]
        for i, task in enumerate(self._tasks):
            self._on_task_changed(i, task)
        self._renderer: mujoco.Renderer | None = None
        self._renderer_size: tuple[int, int] = (0, 0)

    def _on_task_changed(self, index: int, task: Task) -> None:
        if self.family.per_task_model:
            self.family.configure_model(self.models[index], task)

    def _copy_rows(self, i: int) -> None:
        for buf, view in self._slots[i][3]:
            buf[i] = view

    def _select(self, arrays: dict[str, Array], idx: Array, full: bool) -> dict[str, Array]:
        return arrays if full else {k: v[idx] for k, v in arrays.items()}

    def reset(
        self, rngs: Sequence[np.random.Generator], indices: Sequence[int] | None = None
    ) -> Array:
        idx = self._indices(indices)
        self._check_rngs(rngs, len(idx))
        fam = self.family
        for j, i in enumerate(idx):
            model, data = self.models[i], self.datas[i]
            mujoco.mj_resetData(model, data)
            qpos, qvel = fam.reset_state(rngs[j])
            data.qpos[:] = qpos
            data.qvel[:] = qvel
            mujoco.mj_forward(model, data)
            if fam.needs_subtree_state:
                mujoco.mj_subtreeVel(model, data)
            self._copy_rows(int(i))
        full = indices is None
        return fam.observe(self._select(self._state, idx, full))

    def step(self, actions: Array, indices: Sequence[int] | None = None) -> BatchStep:
        idx = self._indices(indices)
        actions = self._check_actions(actions, len(idx))
        fam = self.family
        full = indices is None
        for name, buf in self._before.items():
            if full:
                np.copyto(buf, self._state[name])
            else:
                buf[idx] = self._state[name][idx]
        slots, frame_skip = self._slots, fam.frame_skip
        mj_step, rne = mujoco.mj_step, mujoco.mj_rnePostConstraint
        contact, subtree = fam.needs_contact_forces, fam.needs_subtree_state
        for i, action in zip(idx.tolist(), actions, strict=True):
            model, data, ctrl, pairs = slots[i]
            ctrl[:] = action
            mj_step(model, data, frame_skip)
            if contact:
                rne(model, data)
            if subtree:
                _update_subtree_state(model, data)
            for buf, view in pairs:
                buf[i] = view
        state = self._select(self._state, idx, full)
        before = self._select(self._before, idx, full)
        params = self._select(self._params, idx, full)
        terms, info = fam.reward_terms(before, state, actions, params)
        reward = np.zeros(len(idx))
        for value in terms.values():
            reward = reward + value
        return BatchStep(
            obs=fam.observe(state),
            reward=reward,
            terminated=fam.terminated(state, params),
            terms=terms,
            info=info,
        )

    def render(self, index: int, width: int = 480, height: int = 480, camera: Any = None) -> Array:
        model, data = self.models[index], self.datas[index]
        if self._renderer is None or self._renderer_size != (width, height):
            if self._renderer is not None:
                self._renderer.close()
            model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
            model.vis.global_.offheight = max(model.vis.global_.offheight, height)
            self._renderer = mujoco.Renderer(model, height=height, width=width)
            self._renderer_size = (width, height)
        if camera is None:
            camera = mujoco.MjvCamera()
            camera.type = mujoco.mjtCamera.mjCAMERA_TRACKING
            camera.trackbodyid = 1
            camera.distance = self.family.camera_distance
            camera.elevation = -20.0
        self._renderer.update_scene(data, camera=camera)
        return self._renderer.render().copy()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def _copy_model(model: mujoco.MjModel) -> mujoco.MjModel:
    import copy

    return copy.copy(model)


# --------------------------------------------------------------------------------------------
# The Gymnasium view and the task sampler of a family
# --------------------------------------------------------------------------------------------


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
        if isinstance(family, TaskFamily):
            if family_kwargs:
                raise ValueError("pass family options to the family, not beside an instance")
            self.family = family
        else:
            from metarl.envs import make_family

            self.family = make_family(family, **family_kwargs)
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
        if isinstance(family, TaskFamily):
            if family_kwargs:
                raise ValueError("pass family options to the family, not beside an instance")
            self.family = family
        else:
            from metarl.envs import make_family

            self.family = make_family(family, **family_kwargs)
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


def close_matches(name: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=3)
    return f" Did you mean {', '.join(close)}?" if close else ""
