"""The robots of Gymnasium's v5 MuJoCo envs, as bases for task families.

Each class reproduces its v5 env exactly where a task does not change it: model file,
``frame_skip``, initial-state noise (drawn in the same order from the same generator),
observation layout and health check. Families add the task's parameters and reward on top, so
with a neutral task the same seed and actions give the same observations as Gymnasium's own env.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from metarl.arrays import copy, namespace
from metarl.envs.base import Array, MujocoTaskFamily

__all__ = ["AntRobot", "HalfCheetahRobot", "HopperRobot", "HumanoidRobot", "Walker2dRobot"]


class HalfCheetahRobot(MujocoTaskFamily):
    """Gymnasium's ``HalfCheetah-v5`` robot: 17-d observation, 6 actuators in [-1, 1].

    A variant with the option ``"rllab": True`` takes rllab's ``MujocoEnv`` conventions instead
    (the MAML paper's cheetahs, cbfinn/maml_rl): the observation appends the robot's centre of
    mass (the torso's subtree, 3 numbers; 20-d), the forward velocity is that centre of mass's
    (``subtree_linvel``) after the step rather than the root's displacement over it, and a
    reset draws ``qpos + N(0, 0.01)`` and ``qvel + N(0, 0.1)``.
    """

    xml_file: ClassVar[str] = "half_cheetah.xml"
    frame_skip: int = 5
    device_functions: ClassVar[bool] = True
    camera_distance: ClassVar[float] = 4.0
    reset_noise_scale: ClassVar[float] = 0.1
    RLLAB_QPOS_NOISE: ClassVar[float] = 0.01
    TORSO: ClassVar[int] = 1
    """Body index of the torso, the root of the robot's kinematic tree."""

    def __init__(self, variant: str | None = None, horizon: int | None = None) -> None:
        spec = self.variants.get(self.default_variant if variant is None else variant)
        self.rllab = bool(spec is not None and spec.options.get("rllab", False))
        self.needs_subtree_state = self.rllab
        super().__init__(variant=variant, horizon=horizon)

    def reset_state(self, rng: np.random.Generator) -> tuple[Array, Array]:
        scale = self.reset_noise_scale
        if self.rllab:
            qpos = self.init_qpos + self.RLLAB_QPOS_NOISE * rng.standard_normal(self.model.nq)
        else:
            qpos = self.init_qpos + rng.uniform(low=-scale, high=scale, size=self.model.nq)
        qvel = self.init_qvel + scale * rng.standard_normal(self.model.nv)
        return qpos, qvel

    def observe(self, state: dict[str, Array]) -> Array:
        xp = namespace(state["qpos"])
        parts = [state["qpos"][:, 1:], state["qvel"]]
        if self.rllab:
            parts.append(state["subtree_com"][:, self.TORSO])
        return xp.concatenate(parts, axis=1)

    def x_velocity(self, before: dict[str, Array], state: dict[str, Array]) -> Array:
        """Forward velocity, ``[n]`` (m/s): of the root over the env step, or (``rllab``) of
        the centre of mass after it."""
        if self.rllab:
            return copy(state["subtree_linvel"][:, self.TORSO, 0])
        return (state["qpos"][:, 0] - before["qpos"][:, 0]) / self.dt


class _PlanarLeggedRobot(MujocoTaskFamily):
    """Shared parts of Gymnasium's v5 ``Hopper`` and ``Walker2d``: reset noise and observation.

    Root joints are ``(x, z, pitch)`` = ``qpos[0:3]``; the observation drops ``x`` and clips the
    velocities to [-10, 10], as v5 does.
    """

    frame_skip: int = 4
    device_functions: ClassVar[bool] = True
    camera_distance: ClassVar[float] = 4.0
    reset_noise_scale: ClassVar[float] = 5e-3
    healthy_z_range: ClassVar[tuple[float, float]]
    healthy_angle_range: ClassVar[tuple[float, float]]

    def reset_state(self, rng: np.random.Generator) -> tuple[Array, Array]:
        # v5 order: uniform qpos noise, then uniform qvel noise, from the same generator.
        scale = self.reset_noise_scale
        qpos = self.init_qpos + rng.uniform(low=-scale, high=scale, size=self.model.nq)
        qvel = self.init_qvel + rng.uniform(low=-scale, high=scale, size=self.model.nv)
        return qpos, qvel

    def observe(self, state: dict[str, Array]) -> Array:
        xp = namespace(state["qpos"])
        return xp.concatenate([state["qpos"][:, 1:], xp.clip(state["qvel"], -10.0, 10.0)], axis=1)

    def x_velocity(self, before: dict[str, Array], state: dict[str, Array]) -> Array:
        """Forward velocity of the root over the env step, ``[n]`` (m/s)."""
        return (state["qpos"][:, 0] - before["qpos"][:, 0]) / self.dt

    def _healthy_z_angle(self, state: dict[str, Array]) -> Array:
        # Strict inequalities on both ends, as in v5's ``min_z < z < max_z``.
        z, angle = state["qpos"][:, 1], state["qpos"][:, 2]
        min_z, max_z = self.healthy_z_range
        min_angle, max_angle = self.healthy_angle_range
        return (min_z < z) & (z < max_z) & (min_angle < angle) & (angle < max_angle)

    def healthy(self, state: dict[str, Array]) -> Array:
        """v5's ``is_healthy`` for each env, ``[n]`` bool."""
        return self._healthy_z_angle(state)


class HopperRobot(_PlanarLeggedRobot):
    """Gymnasium's ``Hopper-v5`` robot: 11-d observation, 3 actuators in [-1, 1].

    Healthy (v5): every entry of ``(qpos[2:], qvel)`` in the open interval (-100, 100),
    ``0.7 < z < inf`` and ``-0.2 < pitch < 0.2``.
    """

    xml_file: ClassVar[str] = "hopper.xml"
    healthy_state_range: ClassVar[tuple[float, float]] = (-100.0, 100.0)
    healthy_z_range: ClassVar[tuple[float, float]] = (0.7, float("inf"))
    healthy_angle_range: ClassVar[tuple[float, float]] = (-0.2, 0.2)

    def healthy(self, state: dict[str, Array]) -> Array:
        # v5: state_vector()[2:] is (qpos[2:], qvel); NaN fails every comparison (unhealthy).
        xp = namespace(state["qpos"])
        rest = xp.concatenate([state["qpos"][:, 2:], state["qvel"]], axis=1)
        low, high = self.healthy_state_range
        healthy_state = xp.all((low < rest) & (rest < high), axis=1)
        return healthy_state & self._healthy_z_angle(state)


class Walker2dRobot(_PlanarLeggedRobot):
    """Gymnasium's ``Walker2d-v5`` robot (``walker2d_v5.xml``): 17-d observation, 6 actuators.

    Healthy (v5): ``0.8 < z < 2.0`` and ``-1 < pitch < 1``.
    """

    xml_file: ClassVar[str] = "walker2d_v5.xml"
    healthy_z_range: ClassVar[tuple[float, float]] = (0.8, 2.0)
    healthy_angle_range: ClassVar[tuple[float, float]] = (-1.0, 1.0)


class AntRobot(MujocoTaskFamily):
    """Gymnasium's ``Ant-v5`` robot: 105-d observation, 8 actuators in [-1, 1].

    Observation (v5 default): ``qpos[2:]`` (13), ``qvel`` (14) and the external contact forces
    ``cfrc_ext[1:]`` clipped to [-1, 1] and flattened (13 bodies x 6 = 78). Gymnasium calls
    ``mj_rnePostConstraint`` after every step but not at reset, so ``cfrc_ext`` is zero in the
    first observation of an episode; :class:`~metarl.envs.base.MujocoBatch` does the same.
    Healthy (v5): ``(qpos, qvel)`` finite and ``0.2 <= z <= 1.0`` (torso height ``qpos[2]``, m).
    """

    xml_file: ClassVar[str] = "ant.xml"
    frame_skip: int = 5
    gather: tuple[str, ...] = ("qpos", "qvel", "cfrc_ext")
    needs_contact_forces: ClassVar[bool] = True
    device_functions: ClassVar[bool] = True
    device_physics_note: ClassVar[str | None] = (
        "MuJoCo Warp 4.0 orients the friction directions of some of a leg's contacts with the "
        "floor differently from C MuJoCo (C MuJoCo aligns them with the capsule, MuJoCo Warp "
        "may take a fixed frame), which turns the Ant's pyramidal friction cone, so its contact "
        "forces and trajectories differ from the C MuJoCo backends' once two legs touch the "
        "floor; compare returns within one backend (docs/training.md)"
    )
    """``benchmarks/warp_contact_frames.py`` shows it. Measured from one and the same state
    with two legs on the floor: the C MuJoCo solvers
    (PGS, CG, Newton) agree with each other on ``qacc``, MuJoCo Warp's CG and Newton with each
    other, and the two sides differ by up to 2.8 (relative) on the same constraint rows with
    other contact frames; with the elliptic cone (rotation-invariant) or frictionless contacts
    they agree to 6e-6. The planar robots (HalfCheetah) keep their pyramid: their legs lie
    in the x-z plane, where both frames give the same four friction directions."""
    camera_distance: ClassVar[float] = 4.0
    reset_noise_scale: ClassVar[float] = 0.1
    contact_force_range: ClassVar[tuple[float, float]] = (-1.0, 1.0)
    contact_cost_weight: ClassVar[float] = 5e-4
    healthy_z_range: ClassVar[tuple[float, float]] = (0.2, 1.0)

    def reset_state(self, rng: np.random.Generator) -> tuple[Array, Array]:
        # v5 order: uniform qpos noise, then Gaussian qvel noise, from the same generator.
        scale = self.reset_noise_scale
        qpos = self.init_qpos + rng.uniform(low=-scale, high=scale, size=self.model.nq)
        qvel = self.init_qvel + scale * rng.standard_normal(self.model.nv)
        return qpos, qvel

    def contact_forces(self, state: dict[str, Array]) -> Array:
        """``cfrc_ext`` of every body clipped to ``contact_force_range``, ``[n, nbody, 6]``."""
        low, high = self.contact_force_range
        return namespace(state["cfrc_ext"]).clip(state["cfrc_ext"], low, high)

    def observe(self, state: dict[str, Array]) -> Array:
        xp = namespace(state["qpos"])
        n = state["qpos"].shape[0]
        contact = self.contact_forces(state)[:, 1:].reshape(n, -1)
        return xp.concatenate([state["qpos"][:, 2:], state["qvel"], contact], axis=1)

    def contact_cost(self, state: dict[str, Array]) -> Array:
        """``5e-4 * sum(clip(cfrc_ext, -1, 1)^2)`` over all bodies, ``[n]`` (positive)."""
        xp = namespace(state["cfrc_ext"])
        return self.contact_cost_weight * xp.sum(xp.square(self.contact_forces(state)), axis=(1, 2))

    def xy_velocity(self, before: dict[str, Array], state: dict[str, Array]) -> Array:
        """Torso velocity in the ground plane over the env step, ``[n, 2]`` (m/s).

        Taken from the free joint's ``qpos[0:2]``: exact at the end of the step, where
        Gymnasium's ``body.xpos`` lags one MuJoCo substep.
        """
        return (state["qpos"][:, 0:2] - before["qpos"][:, 0:2]) / self.dt

    def healthy(self, state: dict[str, Array], z_range: tuple[float, float] | None = None) -> Array:
        """``[n]`` bool: ``(qpos, qvel)`` finite and ``z_range[0] <= z <= z_range[1]``.

        ``z_range`` defaults to v5's ``healthy_z_range`` (0.2, 1.0); both ends are inclusive.
        """
        low, high = self.healthy_z_range if z_range is None else z_range
        qpos, qvel = state["qpos"], state["qvel"]
        xp = namespace(qpos)
        finite = xp.all(xp.isfinite(qpos), axis=1) & xp.all(xp.isfinite(qvel), axis=1)
        z = qpos[:, 2]
        return finite & (low <= z) & (z <= high)


class HumanoidRobot(MujocoTaskFamily):
    """Gymnasium's ``Humanoid-v5`` robot: 348-d observation, 17 actuators in [-0.4, 0.4].

    Observation (v5 default): ``qpos[2:]`` (22), ``qvel`` (23), ``cinert[1:]`` (130),
    ``cvel[1:]`` (78), ``qfrc_actuator[6:]`` (17) and ``cfrc_ext[1:]`` (78), unclipped.
    ``cfrc_ext`` is current after each step (``mj_rnePostConstraint``) and zero at reset, as in
    Gymnasium. Healthy (v5): ``1.0 < z < 2.0`` (torso height ``qpos[2]``, m; NaN is unhealthy).
    """

    xml_file: ClassVar[str] = "humanoid.xml"
    frame_skip: int = 5
    gather: tuple[str, ...] = (
        "qpos",
        "qvel",
        "cinert",
        "cvel",
        "qfrc_actuator",
        "cfrc_ext",
    )
    needs_contact_forces: ClassVar[bool] = True
    camera_distance: ClassVar[float] = 4.0
    reset_noise_scale: ClassVar[float] = 1e-2
    healthy_z_range: ClassVar[tuple[float, float]] = (1.0, 2.0)

    def reset_state(self, rng: np.random.Generator) -> tuple[Array, Array]:
        # v5 order: uniform qpos noise, then uniform qvel noise, from the same generator.
        scale = self.reset_noise_scale
        qpos = self.init_qpos + rng.uniform(low=-scale, high=scale, size=self.model.nq)
        qvel = self.init_qvel + rng.uniform(low=-scale, high=scale, size=self.model.nv)
        return qpos, qvel

    def observe(self, state: dict[str, Array]) -> Array:
        n = state["qpos"].shape[0]
        return np.concatenate(
            [
                state["qpos"][:, 2:],
                state["qvel"],
                state["cinert"][:, 1:].reshape(n, -1),
                state["cvel"][:, 1:].reshape(n, -1),
                state["qfrc_actuator"][:, 6:],
                state["cfrc_ext"][:, 1:].reshape(n, -1),
            ],
            axis=1,
        )

    def xy_displacement(self, before: dict[str, Array], state: dict[str, Array]) -> Array:
        """Torso displacement in the ground plane over the env step, ``[n, 2]`` (m).

        Taken from the free joint's ``qpos[0:2]`` (Gymnasium's v5 reward uses the mass center).
        """
        return state["qpos"][:, 0:2] - before["qpos"][:, 0:2]

    def healthy(self, state: dict[str, Array]) -> Array:
        """``[n]`` bool: ``1.0 < z < 2.0`` (strict, as v5; a NaN height is unhealthy)."""
        low, high = self.healthy_z_range
        z = state["qpos"][:, 2]
        return (low < z) & (z < high)
