"""Dynamics task families: one robot whose masses, inertias, frictions and damping vary by task.

``HalfCheetahParams``, ``HopperParams`` and ``Walker2dParams`` follow the "rand params" envs of
``rand_param_envs`` as used by PEARL (Rakelly et al. 2019) for ``walker-rand-params`` and
``hopper-rand-params``: every task scales the model's physical parameters elementwise,

* ``body_mass_scale`` ``[nbody]``, ``body_inertia_scale`` ``[nbody, 3]`` and
  ``geom_friction_scale`` ``[ngeom, 3]``, each entry ``1.5 ** U(-3, 3)``;
* ``dof_damping_scale`` ``[nv]``, each entry ``1.3 ** U(-3, 3)``

(``log_scale_limit = 3``), drawn per task in that order: mass, inertia, damping, friction, as
the reference code draws them. A task's scale must lie in its sampling range. The public
originals need MuJoCo 1.31; these run on Gymnasium's v5 robots and modern MuJoCo.

Every env owns a copy of the model (``per_task_model``): :meth:`_DynamicsParams.configure_model`
writes ``base * scale`` into that copy, with the base values read from the family's pristine
model, which is never edited.

After scaling, :func:`mujoco.mj_setConst` recomputes the constants the compiler derives from
masses and inertias (``body_subtreemass``, ``dof_M0``, ``body_invweight0``, ``dof_invweight0``,
``actuator_acc0``). The constraint solver's regularisation reads the inverse weights, so without
this call a heavier robot would keep the contact softness of the original one. On the
unscaled model ``mj_setConst`` reproduces the compiled constants bit for bit, so the neutral
task (all scales 1) steps exactly like Gymnasium's v5 env (``tests/envs/test_dynamics.py``
checks both).

Reward (``rand_param_envs``): ``v_x + 1 - 1e-3 ||a||^2`` (terms ``reward_forward``,
``reward_survive``, ``reward_ctrl``); the survive bonus is 1 on every step, including the one
that ends the episode (v5's Hopper and Walker2d give 0 there instead). Termination: the v5
health check of the robot (HalfCheetah never terminates). Horizon: 200, PEARL's
``max_path_length`` for these envs.
"""

from __future__ import annotations

from typing import Any, ClassVar

import mujoco
import numpy as np

from metarl.arrays import copy, namespace
from metarl.envs.base import Array, MujocoTaskFamily, ParamSpec, Variant
from metarl.envs.robots import HalfCheetahRobot, HopperRobot, Walker2dRobot
from metarl.tasks import Task

__all__ = ["HalfCheetahParams", "HopperParams", "Walker2dParams"]

LOG_SCALE_LIMIT = 3.0
"""Scales are ``base ** U(-LOG_SCALE_LIMIT, LOG_SCALE_LIMIT)`` (rand_param_envs)."""
MASS_INERTIA_FRICTION_BASE = 1.5
DAMPING_BASE = 1.3
CTRL_COST_WEIGHT = 1e-3
SURVIVE_REWARD = 1.0

_SOURCE = (
    "Rakelly et al. 2019 (PEARL) walker-rand-params / hopper-rand-params; "
    "dennisl88/rand_param_envs base2.py (log_scale_limit 3); H = 200 as in PEARL"
)

# Task key -> (MjModel field, base of the log-uniform scale), in the reference's draw order.
_SCALED_FIELDS: dict[str, tuple[str, float]] = {
    "body_mass_scale": ("body_mass", MASS_INERTIA_FRICTION_BASE),
    "body_inertia_scale": ("body_inertia", MASS_INERTIA_FRICTION_BASE),
    "dof_damping_scale": ("dof_damping", DAMPING_BASE),
    "geom_friction_scale": ("geom_friction", MASS_INERTIA_FRICTION_BASE),
}


class _DynamicsParams(MujocoTaskFamily):
    """Task = elementwise scales of the robot's masses, inertias, frictions and damping.

    Mixed into a robot class (``class HopperParams(_DynamicsParams, HopperRobot)``). Default
    task: every scale 1 (the unmodified v5 robot).
    """

    default_variant: ClassVar[str] = "pearl"
    variants: ClassVar[dict[str, Variant]] = {"pearl": Variant(horizon=200, source=_SOURCE)}
    per_task_model: ClassVar[bool] = True
    device_functions: ClassVar[bool] = True
    per_task_fields: ClassVar[tuple[str, ...]] = (
        *(field for field, _ in _SCALED_FIELDS.values()),
        # What mj_setConst derives from them (and MuJoCo Warp reads; its model has no dof_M0).
        "body_subtreemass",
        "body_invweight0",
        "dof_invweight0",
        "actuator_acc0",
    )
    """The model fields :meth:`configure_model` changes: the warp backend gives each world its
    own values of these (MuJoCo Warp batches model fields over worlds)."""

    def param_specs(self) -> dict[str, ParamSpec]:
        specs = {}
        for key, (field, base) in _SCALED_FIELDS.items():
            specs[key] = ParamSpec(
                shape=tuple(getattr(self.model, field).shape),
                low=base**-LOG_SCALE_LIMIT,
                high=base**LOG_SCALE_LIMIT,
                doc=f"elementwise multiplier of the model's {field} (dimensionless)",
            )
        return specs

    def default_task(self) -> Task:
        """All scales 1: the robot exactly as Gymnasium's v5 env builds it."""
        return self.validate_task(
            {
                key: np.ones(getattr(self.model, field).shape)
                for key, (field, _) in _SCALED_FIELDS.items()
            }
        )

    def _sample(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        tasks = []
        for _ in range(n):
            task = {}
            for key, (field, base) in _SCALED_FIELDS.items():
                shape = getattr(self.model, field).shape
                task[key] = np.power(
                    base, rng.uniform(-LOG_SCALE_LIMIT, LOG_SCALE_LIMIT, size=shape)
                )
            tasks.append(task)
        return tasks

    def configure_model(self, model: mujoco.MjModel, task: Task) -> None:
        """Set ``model``'s fields to the pristine values times ``task``'s scales.

        Args:
            model: an env's own copy of :attr:`model` (never the family's model itself).
            task: a validated task of this family.
        """
        if model is self.model:
            raise ValueError(
                f"{self.name}: configure_model edits an env's own model copy, not the family's "
                "pristine model (copy it with copy.copy(family.model))"
            )
        for key, (field, _) in _SCALED_FIELDS.items():
            getattr(model, field)[:] = getattr(self.model, field) * np.asarray(task[key])
        # Recompute mass-derived constants (invweights, subtree masses, actuator_acc0); it
        # overwrites the state of the data it is given, hence a scratch MjData.
        mujoco.mj_setConst(model, mujoco.MjData(model))

    def reward_terms(
        self,
        before: dict[str, Array],
        state: dict[str, Array],
        action: Array,
        params: dict[str, Array],
    ) -> tuple[dict[str, Array], dict[str, Array]]:
        xp = namespace(action)
        v_x = (state["qpos"][:, 0] - before["qpos"][:, 0]) / self.dt
        terms = {
            "reward_forward": v_x,
            "reward_survive": xp.full_like(v_x, SURVIVE_REWARD),
            "reward_ctrl": -CTRL_COST_WEIGHT * xp.sum(xp.square(action), axis=1),
        }
        return terms, {"x_velocity": v_x, "x_position": copy(state["qpos"][:, 0])}


class HalfCheetahParams(_DynamicsParams, HalfCheetahRobot):
    """HalfCheetah (v5) with per-task masses, inertias, frictions and damping.

    Reward ``v_x + 1 - 1e-3 ||a||^2``, the hopper/walker rand-params reward applied to the
    cheetah; never terminates; H = 200. See the module docstring for the task.
    """

    name: ClassVar[str] = "HalfCheetahParams"


class HopperParams(_DynamicsParams, HopperRobot):
    """Hopper (v5) with per-task masses, inertias, frictions and damping (PEARL).

    Reward ``v_x + 1 - 1e-3 ||a||^2``; terminates when v5's health check fails; H = 200.
    """

    name: ClassVar[str] = "HopperParams"

    def terminated(self, state: dict[str, Array], params: dict[str, Array]) -> Array:
        return ~self.healthy(state)


class Walker2dParams(_DynamicsParams, Walker2dRobot):
    """Walker2d (v5, ``walker2d_v5.xml``) with per-task dynamics (PEARL walker-rand-params).

    Reward ``v_x + 1 - 1e-3 ||a||^2``; terminates when v5's health check fails; H = 200.
    """

    name: ClassVar[str] = "Walker2dParams"

    def terminated(self, state: dict[str, Array], params: dict[str, Array]) -> Array:
        return ~self.healthy(state)
