"""HalfCheetah task families: a goal velocity (HalfCheetahVel) or a direction (HalfCheetahDir)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from metarl.arrays import copy, namespace
from metarl.envs.base import Array, GoalVelocityTasks, ParamSpec, Variant
from metarl.envs.robots import HalfCheetahRobot
from metarl.tasks import TaskSplit

__all__ = ["HalfCheetahDir", "HalfCheetahVel"]

CTRL_COST_WEIGHT = 0.05  # 0.5 * 1e-1 in the MAML reference code

MAML_100HZ_NOTE = """The ``maml-100hz`` variants step the cheetah once per action (dt = 0.01 s).

The MAML paper's numbers come from rllab, whose ``MujocoEnv`` takes one MuJoCo step per action
for this model (its XML sets no ``frame_skip``), while Gymnasium's v5 env takes five
(dt = 0.05 s). An episode of H = 200 actions is then 2 s of motion instead of 10 s, and the
policy's exploration noise is drawn five times as often, which averages it out: the learning
problem differs, and the paper's returns are comparable only at this rate. Everything else is
the ``maml`` variant's (Gymnasium's model, observation and reset noise).

The ``maml-rllab`` variants are ``maml-100hz`` with the rest of rllab's conventions too: the
observation appends the robot's centre of mass (20-d), the reward's forward velocity is the
centre of mass's after the step, and resets draw qpos + N(0, 0.01). Compare with the paper
there; ``maml-100hz`` isolates the simulation rate."""

MAML_100HZ_SOURCE = "Finn et al. 2017 at rllab's rate (one MuJoCo step per action): cbfinn/maml_rl"
RLLAB_SOURCE = (
    "Finn et al. 2017 with rllab's MujocoEnv conventions (rate, centre-of-mass observation and "
    "velocity, reset noise): cbfinn/maml_rl"
)


class HalfCheetahVel(GoalVelocityTasks, HalfCheetahRobot):
    """Run at a goal forward velocity ``v*``.

    Reward: ``-|v_x - v*| - 0.05 ||a||^2`` (terms ``reward_forward``, ``reward_ctrl``); never
    terminates. Task: ``{"velocity": v*}`` in m/s. Default task: the middle of the range.

    Variants:
        ``maml``: ``v* ~ U[0, 2]``, H = 200 (Finn et al. 2017; pytorch-maml-rl and garage use
        the same range with H = 100).
        ``pearl``: ``v* ~ U[0, 3]``, H = 200 (PEARL, ProMP, VariBAD); adds the task split
        ``"pearl"``: PEARL's 130 velocities from ``np.random.seed(1337)``, first 100 train,
        last 30 test.
        ``maml-100hz``: ``maml`` at the MAML paper's simulation rate (see
        :data:`MAML_100HZ_NOTE`).
        ``maml-rllab``: ``maml-100hz`` with rllab's observation, velocity and reset (20-d
        observation; see :data:`MAML_100HZ_NOTE`).
    """

    name: ClassVar[str] = "HalfCheetahVel"
    default_variant: ClassVar[str] = "maml"
    variants: ClassVar[dict[str, Variant]] = {
        "maml": Variant(
            horizon=200,
            source="Finn et al. 2017 (MAML) Sec. 5.3 and cbfinn/maml_rl half_cheetah_env_rand.py",
            options={"max_velocity": 2.0},
        ),
        "pearl": Variant(
            horizon=200,
            source="Rakelly et al. 2019 (PEARL) rlkit/envs/half_cheetah_vel.py; ProMP; VariBAD",
            options={"max_velocity": 3.0},
        ),
        "maml-100hz": Variant(
            horizon=200,
            source=MAML_100HZ_SOURCE + " half_cheetah_env_rand.py",
            options={"max_velocity": 2.0, "frame_skip": 1},
        ),
        "maml-rllab": Variant(
            horizon=200,
            source=RLLAB_SOURCE + " half_cheetah_env_rand.py",
            options={"max_velocity": 2.0, "frame_skip": 1, "rllab": True},
        ),
    }

    @property
    def max_velocity(self) -> float:
        return float(self.variants[self.variant].options["max_velocity"])

    def reward_terms(
        self,
        before: dict[str, Array],
        state: dict[str, Array],
        action: Array,
        params: dict[str, Array],
    ) -> tuple[dict[str, Array], dict[str, Array]]:
        xp = namespace(action)
        v_x = self.x_velocity(before, state)
        terms = {
            "reward_forward": -xp.abs(v_x - params["velocity"]),
            "reward_ctrl": -CTRL_COST_WEIGHT * xp.sum(xp.square(action), axis=1),
        }
        return terms, {"x_velocity": v_x, "x_position": copy(state["qpos"][:, 0])}

    def task_splits(self) -> dict[str, Callable[[], TaskSplit]]:
        splits = super().task_splits()
        if self.variant == "pearl":
            splits["pearl"] = self._pearl_split
        return splits

    def _pearl_split(self) -> TaskSplit:
        # PEARL draws from the legacy global stream after np.random.seed(1337); a private
        # RandomState(1337) gives the same numbers without touching global state.
        velocities = np.random.RandomState(1337).uniform(0.0, 3.0, size=130)
        tasks = [self.validate_task({"velocity": float(v)}) for v in velocities]
        return TaskSplit(
            name="pearl",
            train=tuple(tasks[:100]),
            test=tuple(tasks[100:]),
            source="PEARL cheetah-vel: np.random.seed(1337); uniform(0, 3, 130); "
            "first 100 train, last 30 test",
        )


class HalfCheetahDir(HalfCheetahRobot):
    """Run forward (``d = +1``) or backward (``d = -1``), each with probability 0.5.

    Reward: ``d * v_x - 0.05 ||a||^2`` (terms ``reward_forward``, ``reward_ctrl``); never
    terminates. Task: ``{"direction": d}``. Default task: ``d = +1``.

    Variants:
        ``maml``: H = 200 (Finn et al. 2017; PEARL's cheetah-dir has the same reward).
        ``maml-100hz``: ``maml`` at the MAML paper's simulation rate (see
        :data:`MAML_100HZ_NOTE`).
        ``maml-rllab``: ``maml-100hz`` with rllab's observation, velocity and reset (20-d
        observation; see :data:`MAML_100HZ_NOTE`).
    """

    name: ClassVar[str] = "HalfCheetahDir"
    default_variant: ClassVar[str] = "maml"
    variants: ClassVar[dict[str, Variant]] = {
        "maml": Variant(
            horizon=200,
            source="Finn et al. 2017 (MAML) Sec. 5.3 and cbfinn/maml_rl "
            "half_cheetah_env_rand_direc.py",
        ),
        "maml-100hz": Variant(
            horizon=200,
            source=MAML_100HZ_SOURCE + " half_cheetah_env_rand_direc.py",
            options={"frame_skip": 1},
        ),
        "maml-rllab": Variant(
            horizon=200,
            source=RLLAB_SOURCE + " half_cheetah_env_rand_direc.py",
            options={"frame_skip": 1, "rllab": True},
        ),
    }

    def param_specs(self) -> dict[str, ParamSpec]:
        return {"direction": ParamSpec(choices=(-1.0, 1.0), doc="+1 forward, -1 backward")}

    def _sample(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        return [{"direction": d} for d in 2.0 * rng.binomial(1, 0.5, size=n) - 1.0]

    def reward_terms(
        self,
        before: dict[str, Array],
        state: dict[str, Array],
        action: Array,
        params: dict[str, Array],
    ) -> tuple[dict[str, Array], dict[str, Array]]:
        xp = namespace(action)
        v_x = self.x_velocity(before, state)
        terms = {
            "reward_forward": params["direction"] * v_x,
            "reward_ctrl": -CTRL_COST_WEIGHT * xp.sum(xp.square(action), axis=1),
        }
        return terms, {"x_velocity": v_x, "x_position": copy(state["qpos"][:, 0])}

    def task_splits(self) -> dict[str, Callable[[], TaskSplit]]:
        # Only two tasks exist: train and test on both (as MAML and PEARL do).
        both = (self.validate_task({"direction": 1.0}), self.validate_task({"direction": -1.0}))
        return {
            "default": lambda: TaskSplit(
                "default", train=both, test=both, source="both directions", disjoint=False
            )
        }
