"""Ant task families: a direction (AntDir), a goal velocity (AntVel) or a goal position (AntGoal).

All three ride on :class:`~metarl.envs.robots.AntRobot` (Gymnasium's ``Ant-v5`` robot and
observation). Conventions shared by every formula below:

- ``v_x``, ``dxy/dt``: the torso's free-joint position ``qpos[0]``, ``qpos[0:2]`` after minus
  before the env step, divided by ``dt = 0.05`` s (exact; the reference code reads
  ``body.xpos``/``com``, which lags one MuJoCo substep).
- ``xy``: the torso's ``qpos[0:2]`` after the step (m).
- ``a``: the action as given to the env (unclipped); ``s``: half the actuator control range
  (:attr:`~metarl.envs.base.MujocoTaskFamily.action_half_range`, all ones for the Ant).
- ``contact = 5e-4 * sum(clip(cfrc_ext, -1, 1)^2)`` over all bodies, after the step.

Reward terms are returned in ``info`` under ``reward_forward`` (or ``reward_goal``),
``reward_ctrl``, ``reward_contact`` and ``reward_survive``; they sum exactly to the reward.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from metarl.arrays import constant, copy, namespace
from metarl.envs.base import Array, GoalVelocityTasks, ParamSpec, Variant
from metarl.envs.robots import AntRobot
from metarl.tasks import Task, TaskSplit

__all__ = ["AntDir", "AntGoal", "AntVel"]

TWO_PI = 2.0 * math.pi

# MAML (cbfinn/maml_rl rllab ant envs): ctrl cost 0.5 * 1e-2 * ||a / s||^2, survive 0.05.
MAML_CTRL_COST_WEIGHT = 0.005
MAML_SURVIVE_REWARD = 0.05
# ProMP / PEARL (ant_rand_direc_2d.py, rlkit ant_dir.py): ctrl cost 0.5 * ||a||^2, survive 1.0.
PROMP_CTRL_COST_WEIGHT = 0.5
PROMP_SURVIVE_REWARD = 1.0
# PEARL ant_goal.py: ctrl cost 0.1 * ||a||^2, no survive bonus.
PEARL_GOAL_CTRL_COST_WEIGHT = 0.1

_MAML_DIR_SOURCE = (
    "Finn et al. 2017 (MAML) Sec. 5.3, H = 200; cbfinn/maml_rl rllab/envs/mujoco/"
    "ant_env_rand_direc.py"
)


def _position_info(
    before: dict[str, Array], state: dict[str, Array], dt: float
) -> dict[str, Array]:
    velocity = (state["qpos"][:, 0:2] - before["qpos"][:, 0:2]) / dt
    return {
        "x_velocity": velocity[:, 0],
        "y_velocity": velocity[:, 1],
        "x_position": copy(state["qpos"][:, 0]),
        "y_position": copy(state["qpos"][:, 1]),
    }


def _never(state: dict[str, Array]) -> Array:
    """``[n]`` False: a variant that never terminates."""
    return namespace(state["qpos"]).zeros_like(state["qpos"][:, 0], dtype=bool)


class _AntFamily(AntRobot):
    """Cost terms shared by the Ant families."""

    def _maml_ctrl_cost(self, action: Array) -> Array:
        """``0.005 * ||a / s||^2`` per env, ``[n]``."""
        xp = namespace(action)
        scaled = action / constant(self.action_half_range, action)
        return MAML_CTRL_COST_WEIGHT * xp.sum(xp.square(scaled), axis=1)

    @staticmethod
    def _ctrl_cost(action: Array, weight: float) -> Array:
        """``weight * ||a||^2`` per env, ``[n]``."""
        xp = namespace(action)
        return weight * xp.sum(xp.square(action), axis=1)

    def _fall_terminated(self, state: dict[str, Array], z_range: tuple[float, float]) -> Array:
        """``[n]`` bool: state non-finite or torso ``z`` outside ``z_range`` (inclusive ends)."""
        return ~self.healthy(state, z_range)


class AntDir(_AntFamily):
    """Run in a direction: forward/backward along x (``maml``) or at an angle in the plane.

    Variants:
        ``maml`` (default): task ``{"direction": d}``, ``d`` in {-1, +1} with probability 0.5
        each; reward ``d * v_x - 0.005 ||a/s||^2 - contact + 0.05``; terminates when the state
        is non-finite or the torso height ``z`` leaves [0.2, 1.0]; H = 200 (Finn et al. 2017,
        cbfinn/maml_rl ``ant_env_rand_direc.py``). Default task ``d = +1``.

        ``promp``: task ``{"angle": theta}`` (radians), ``theta ~ U[0, 2pi]``; reward
        ``(dxy/dt) . (cos theta, sin theta) - 0.5 ||a||^2 - contact + 1.0``; terminates when
        the state is non-finite or ``z`` leaves [0, 1]; H = 100 (Rothfuss et al. 2019,
        ProMP ``ant_rand_direc_2d.py``, which draws a unit direction from a normalized
        Gaussian: the same distribution of angles). Default task ``theta = 0`` (+x).

        ``pearl``: as ``promp`` but never terminates; H = 200 (Rakelly et al. 2019, PEARL
        ``rlkit/envs/ant_dir.py`` reward and ``max_path_length``). PEARL's public ``ant_dir.py``
        also reports ``done`` when ``z`` leaves [0.2, 1.0]; this project's reference table
        defines the PEARL variant without termination.

    Args:
        variant: ``"maml"``, ``"promp"`` or ``"pearl"``.
        horizon: episode length in env steps (default: the variant's).
        forward_backward: ``promp``/``pearl`` only: restrict ``theta`` to {0, pi}, as PEARL's
            ant-dir experiments do (``forward_backward=True``).

    Reward terms: ``reward_forward``, ``reward_ctrl``, ``reward_contact``, ``reward_survive``.
    """

    name: ClassVar[str] = "AntDir"
    default_variant: ClassVar[str] = "maml"
    variants: ClassVar[dict[str, Variant]] = {
        "maml": Variant(
            horizon=200,
            source=_MAML_DIR_SOURCE,
            options={"healthy_z_range": (0.2, 1.0)},
        ),
        "promp": Variant(
            horizon=100,
            source="Rothfuss et al. 2019 (ProMP), H = 100; jonasrothfuss/ProMP "
            "meta_policy_search/envs/mujoco_envs/ant_rand_direc_2d.py",
            options={"healthy_z_range": (0.0, 1.0)},
        ),
        "pearl": Variant(
            horizon=200,
            source="Rakelly et al. 2019 (PEARL), max_path_length 200; katerakelly/oyster "
            "rlkit/envs/ant_dir.py (reward); no termination",
            options={"healthy_z_range": None},
        ),
    }

    def __init__(
        self, variant: str | None = None, horizon: int | None = None, forward_backward: bool = False
    ) -> None:
        if not isinstance(forward_backward, bool | np.bool_):
            raise ValueError(f"AntDir: forward_backward must be a bool, got {forward_backward!r}")
        variant_name = self.default_variant if variant is None else variant
        if forward_backward and variant_name == "maml":
            raise ValueError(
                "AntDir: forward_backward=True restricts the angle of the 'promp' and 'pearl' "
                "variants to {0, pi}; the 'maml' variant is forward/backward already "
                "(task key 'direction')"
            )
        self.forward_backward = bool(forward_backward)
        super().__init__(variant=variant, horizon=horizon)

    @property
    def _uses_angle(self) -> bool:
        return self.variant != "maml"

    def param_specs(self) -> dict[str, ParamSpec]:
        if not self._uses_angle:
            return {"direction": ParamSpec(choices=(-1.0, 1.0), doc="+1 forward (+x), -1 backward")}
        if self.forward_backward:
            return {
                "angle": ParamSpec(
                    choices=(0.0, math.pi), doc="running direction (rad): 0 is +x, pi is -x"
                )
            }
        return {
            "angle": ParamSpec(
                low=0.0, high=TWO_PI, doc="running direction in the ground plane (rad), 0 is +x"
            )
        }

    def default_task(self) -> Task:
        if self._uses_angle:
            return self.validate_task({"angle": 0.0})
        return self.validate_task({"direction": 1.0})

    def _sample(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        if not self._uses_angle:
            return [{"direction": d} for d in 2.0 * rng.binomial(1, 0.5, size=n) - 1.0]
        if self.forward_backward:
            return [{"angle": a} for a in math.pi * rng.integers(0, 2, size=n).astype(np.float64)]
        return [{"angle": a} for a in rng.uniform(0.0, TWO_PI, size=n)]

    def reward_terms(
        self,
        before: dict[str, Array],
        state: dict[str, Array],
        action: Array,
        params: dict[str, Array],
    ) -> tuple[dict[str, Array], dict[str, Array]]:
        xp = namespace(action)
        info = _position_info(before, state, self.dt)
        if self._uses_angle:
            angle = params["angle"]
            forward = info["x_velocity"] * xp.cos(angle) + info["y_velocity"] * xp.sin(angle)
            ctrl = self._ctrl_cost(action, PROMP_CTRL_COST_WEIGHT)
            survive = PROMP_SURVIVE_REWARD
        else:
            forward = params["direction"] * info["x_velocity"]
            ctrl = self._maml_ctrl_cost(action)
            survive = MAML_SURVIVE_REWARD
        terms = {
            "reward_forward": forward,
            "reward_ctrl": -ctrl,
            "reward_contact": -self.contact_cost(state),
            "reward_survive": namespace(forward).full_like(forward, survive),
        }
        return terms, info

    def terminated(self, state: dict[str, Array], params: dict[str, Array]) -> Array:
        z_range = self.variants[self.variant].options["healthy_z_range"]
        if z_range is None:
            return _never(state)
        return self._fall_terminated(state, z_range)

    def task_splits(self) -> dict[str, Callable[[], TaskSplit]]:
        if self._uses_angle and not self.forward_backward:
            return super().task_splits()
        # Only two tasks exist: train and test on both (as MAML and PEARL do).
        if self._uses_angle:
            both = (self.validate_task({"angle": 0.0}), self.validate_task({"angle": math.pi}))
        else:
            both = (
                self.validate_task({"direction": 1.0}),
                self.validate_task({"direction": -1.0}),
            )
        return {
            "default": lambda: TaskSplit(
                "default", train=both, test=both, source="both directions", disjoint=False
            )
        }

    def __repr__(self) -> str:
        extra = ", forward_backward=True" if self.forward_backward else ""
        return f"AntDir(variant={self.variant!r}, horizon={self.horizon}{extra})"


class AntVel(GoalVelocityTasks, _AntFamily):
    """Run forward at a goal velocity ``v*``.

    Reward: ``-|v_x - v*| + 1.0 - 0.005 ||a/s||^2 - contact + 0.05`` (terms ``reward_forward``
    = ``-|v_x - v*| + 1.0`` as in the reference code, ``reward_ctrl``, ``reward_contact``,
    ``reward_survive`` = 0.05). Terminates when the state is non-finite or the torso height
    leaves [0.2, 1.0]. Task: ``{"velocity": v*}`` in m/s, ``v* ~ U[0, 3]``. Default task: 1.5.

    Variants:
        ``maml``: H = 200 (Finn et al. 2017, cbfinn/maml_rl ``ant_env_rand.py``).
    """

    name: ClassVar[str] = "AntVel"
    default_variant: ClassVar[str] = "maml"
    variants: ClassVar[dict[str, Variant]] = {
        "maml": Variant(
            horizon=200,
            source="Finn et al. 2017 (MAML) Sec. 5.3, H = 200; cbfinn/maml_rl "
            "rllab/envs/mujoco/ant_env_rand.py",
        ),
    }
    max_velocity: ClassVar[float] = 3.0

    def reward_terms(
        self,
        before: dict[str, Array],
        state: dict[str, Array],
        action: Array,
        params: dict[str, Array],
    ) -> tuple[dict[str, Array], dict[str, Array]]:
        xp = namespace(action)
        info = _position_info(before, state, self.dt)
        forward = -xp.abs(info["x_velocity"] - params["velocity"]) + 1.0
        terms = {
            "reward_forward": forward,
            "reward_ctrl": -self._maml_ctrl_cost(action),
            "reward_contact": -self.contact_cost(state),
            "reward_survive": xp.full_like(forward, MAML_SURVIVE_REWARD),
        }
        return terms, info

    def terminated(self, state: dict[str, Array], params: dict[str, Array]) -> Array:
        return self._fall_terminated(state, (0.2, 1.0))


class AntGoal(_AntFamily):
    """Walk to a goal position ``g`` in the ground plane.

    Task: ``{"goal": g}``, shape (2,), in m. Default task: ``g = (0, 0)``.

    Variants:
        ``maml`` (default, MAML's "AntPos"): ``g ~ U[-3, 3]^2``; reward
        ``-||xy - g||_1 + 4.0 - 0.005 ||a/s||^2 - contact + 0.05`` (``reward_goal`` =
        ``-||xy - g||_1 + 4.0`` as in the reference code); terminates when the state is
        non-finite or the torso height leaves [0.2, 1.0]; H = 200 (cbfinn/maml_rl
        ``ant_env_rand_goal.py``).

        ``pearl``: ``g`` uniform in the disc of radius 3 (angle ``U[0, 2pi]``, radius
        ``3 sqrt(U)``); reward ``-||xy - g||_1 - 0.1 ||a||^2 - contact``; never terminates;
        H = 200 (PEARL ``rlkit/envs/ant_goal.py``). A goal outside the disc is rejected.
        PEARL draws its 150 + 30 goals from the global numpy stream seeded with the run seed
        (not a fixed 1337), so no published split is reproduced; only ``"default"`` exists.

    Reward terms: ``reward_goal``, ``reward_ctrl``, ``reward_contact`` and (``maml``)
    ``reward_survive``.
    """

    name: ClassVar[str] = "AntGoal"
    default_variant: ClassVar[str] = "maml"
    variants: ClassVar[dict[str, Variant]] = {
        "maml": Variant(
            horizon=200,
            source="Finn et al. 2017 (MAML), H = 200; cbfinn/maml_rl "
            "rllab/envs/mujoco/ant_env_rand_goal.py",
        ),
        "pearl": Variant(
            horizon=200,
            source="Rakelly et al. 2019 (PEARL), max_path_length 200; katerakelly/oyster "
            "rlkit/envs/ant_goal.py",
        ),
    }
    goal_radius: ClassVar[float] = 3.0

    def param_specs(self) -> dict[str, ParamSpec]:
        r = self.goal_radius
        where = "in the disc of radius 3" if self.variant == "pearl" else "in [-3, 3]^2"
        return {"goal": ParamSpec(shape=(2,), low=-r, high=r, doc=f"goal position (m), {where}")}

    def _check_task(self, task: dict[str, Any]) -> None:
        if self.variant != "pearl":
            return
        goal = np.asarray(task["goal"])
        norm = float(np.hypot(goal[0], goal[1]))
        # A goal drawn as r (cos a, sin a) with r < 3 may round to a norm a few ulps above r.
        if norm > self.goal_radius * (1.0 + 1e-12):
            raise ValueError(
                f"{self.name} (variant 'pearl'): goal must lie in the disc of radius "
                f"{self.goal_radius:g} around the origin; got {goal.tolist()!r} (norm {norm:.6g})"
            )

    def _sample(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        if self.variant == "pearl":
            # PEARL's order: all angles, then all radii (r = 3 sqrt(U): uniform in the disc).
            angle = rng.random(n) * TWO_PI
            radius = self.goal_radius * np.sqrt(rng.random(n))
            goals = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)
        else:
            goals = rng.uniform(-self.goal_radius, self.goal_radius, size=(n, 2))
        return [{"goal": g} for g in goals]

    def reward_terms(
        self,
        before: dict[str, Array],
        state: dict[str, Array],
        action: Array,
        params: dict[str, Array],
    ) -> tuple[dict[str, Array], dict[str, Array]]:
        xp = namespace(action)
        info = _position_info(before, state, self.dt)
        distance = xp.sum(xp.abs(state["qpos"][:, 0:2] - params["goal"]), axis=1)
        info["goal_distance_l1"] = distance
        if self.variant == "pearl":
            terms = {
                "reward_goal": -distance,
                "reward_ctrl": -self._ctrl_cost(action, PEARL_GOAL_CTRL_COST_WEIGHT),
                "reward_contact": -self.contact_cost(state),
            }
        else:
            terms = {
                "reward_goal": -distance + 4.0,
                "reward_ctrl": -self._maml_ctrl_cost(action),
                "reward_contact": -self.contact_cost(state),
                "reward_survive": xp.full_like(distance, MAML_SURVIVE_REWARD),
            }
        return terms, info

    def terminated(self, state: dict[str, Array], params: dict[str, Array]) -> Array:
        if self.variant == "pearl":
            return _never(state)
        return self._fall_terminated(state, (0.2, 1.0))
