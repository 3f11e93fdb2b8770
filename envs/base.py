"""The MuJoCo machinery of the built-in families: one source of truth per family.

MuJoCo families (:class:`MujocoTaskFamily`, a :class:`~metarl.family.TaskFamily`) only write
vectorized numpy functions over a batch of gathered MuJoCo state arrays (observation, reward
terms, termination); :class:`MujocoBatch` steps N ``(MjModel, MjData)`` pairs in a plain loop
and calls those functions once per step for the whole batch.

The contracts (:class:`~metarl.family.TaskFamily`, :class:`~metarl.family.BatchStepper`, ...)
and the Gymnasium view (:class:`~metarl.family.MetaEnv`) live in the core, :mod:`metarl.family`;
they are re-exported here for the families' convenience.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import mujoco
import numpy as np

from metarl.arrays import namespace
from metarl.family import (
    Array,
    BatchStep,
    BatchStepper,
    DeviceBatchStepper,
    FamilyTaskSampler,
    MetaEnv,
    ParamSpec,
    TaskFamily,
    Variant,
)
from metarl.mujoco_messages import route_mujoco_warnings
from metarl.registry import close_matches
from metarl.tasks import Task

__all__ = [
    "Array",
    "BatchStep",
    "BatchStepper",
    "FamilyTaskSampler",
    "GoalVelocityTasks",
    "MetaEnv",
    "MujocoBatch",
    "MujocoTaskFamily",
    "ParamSpec",
    "TaskFamily",
    "Variant",
    "close_matches",
    "gymnasium_asset",
    "load_gymnasium_model",
]


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
# MuJoCo families
# --------------------------------------------------------------------------------------------


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
        device_functions: :meth:`observe`, :meth:`reward_terms` and :meth:`terminated` are
            written with :func:`metarl.arrays.namespace`, so they run on torch tensors as well:
            the family can be stepped on a device (:meth:`make_device_batch`, the warp backend).
        camera_distance: distance of the tracking camera used by :meth:`BatchStepper.render`.
    """

    xml_file: ClassVar[str]
    frame_skip: int
    gather: tuple[str, ...] = ("qpos", "qvel")
    before_fields: ClassVar[tuple[str, ...]] = ("qpos",)
    needs_contact_forces: ClassVar[bool] = False
    needs_subtree_state: bool = False
    per_task_model: ClassVar[bool] = False
    device_functions: ClassVar[bool] = False
    per_task_fields: ClassVar[tuple[str, ...]] = ()
    """With :attr:`per_task_model`: the model fields :meth:`configure_model` may change, which
    a device backend batches over its worlds (one value per world)."""
    device_physics_note: ClassVar[str | None] = None
    """Where MuJoCo Warp's physics of this family is known to differ from C MuJoCo's beyond
    float32 rounding; the warp backend warns with it when it builds the family's worlds."""
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
        return namespace(state["qpos"]).zeros_like(state["qpos"][:, 0], dtype=bool)

    def configure_model(self, model: mujoco.MjModel, task: Task) -> None:
        """Apply ``task`` to an env's own model copy (only with ``per_task_model``)."""

    def make_batch(self, num_envs: int) -> MujocoBatch:
        return MujocoBatch(self, num_envs)

    def check_device_backend(self, backend: str) -> None:
        """Raise unless this family runs on ``backend`` (only ``"warp"``: MuJoCo Warp).

        Raises:
            ValueError: another backend; a dynamics family (its model differs per task); a
                family whose functions are numpy-only (one line each, before any work).
            ImportError: MuJoCo Warp is not installed (naming the install command).
        """
        if backend != "warp":
            raise ValueError(f"{self.name}: unknown device backend {backend!r}; the one is 'warp'")
        if self.per_task_model and not self.per_task_fields:
            raise ValueError(
                f"{self.name} changes the model per task without naming the fields it changes "
                "(per_task_fields), which the warp backend needs to give each world its own; "
                "use --backend inline, processes or ray"
            )
        if not self.device_functions:
            raise ValueError(
                f"{self.name} is not supported on the warp backend yet (its observation and "
                "reward functions are numpy-only); use --backend inline, processes or ray"
            )
        from metarl.envs.warp import require_mujoco_warp

        require_mujoco_warp()

    def make_device_batch(
        self, num_envs: int, device: Any, backend: str = "warp", **options: Any
    ) -> DeviceBatchStepper:
        """``num_envs`` envs as the worlds of one MuJoCo Warp data on the torch ``device``
        (:class:`~metarl.envs.warp.WarpBatch`; ``options`` go to it)."""
        self.check_device_backend(backend)
        from metarl.envs.warp import WarpBatch

        return WarpBatch(self, num_envs, device, **options)


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
            self.models = [copy_model(base) for _ in range(self.num_envs)]
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


def copy_model(model: mujoco.MjModel) -> mujoco.MjModel:
    import copy

    return copy.copy(model)
