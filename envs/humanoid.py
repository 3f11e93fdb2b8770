"""Humanoid task family: walk in a direction in the ground plane (HumanoidDir)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from metarl.envs.base import Array, ParamSpec, Variant
from metarl.envs.robots import HumanoidRobot
from metarl.tasks import Task

__all__ = ["HumanoidDir"]

TWO_PI = 2.0 * math.pi

# PEARL rlkit/envs/humanoid_dir.py (the constants of gym's Humanoid-v1).
FORWARD_WEIGHT = 0.25
CTRL_COST_WEIGHT = 0.1
CONTACT_COST_WEIGHT = 5e-7
CONTACT_COST_MAX = 10.0
SURVIVE_REWARD = 5.0


class HumanoidDir(HumanoidRobot):
    """Walk in the direction ``(cos theta, sin theta)``.

    Reward: ``0.25 * (dir . dxy) / timestep - 0.1 ||ctrl||^2 - min(5e-7 ||cfrc_ext||^2, 10) + 5``
    (terms ``reward_forward``, ``reward_ctrl``, ``reward_contact``, ``reward_survive``), where
    ``dxy`` is the torso's free-joint displacement ``qpos[0:2]`` over the env step (m),
    ``ctrl`` the action as written to ``MjData.ctrl`` and ``cfrc_ext`` the unclipped external
    forces of all bodies after the step. As in the original, the displacement is divided by the
    model timestep (0.003 s), not by the env step ``dt`` (0.015 s): the forward term is
    ``1.25 * velocity``, Gymnasium's ``forward_reward_weight``. (The original measures ``dxy``
    at the mass center; this project uses the torso's free joint, as for every family.)

    Terminates when the torso height ``z = qpos[2]`` leaves the open interval (1, 2) (or is NaN).
    Task: ``{"angle": theta}`` in radians, ``theta ~ U[0, 2pi]``. Default task: ``theta = 0``
    (+x).

    Variants:
        ``pearl``: H = 200 (Rakelly et al. 2019, PEARL ``rlkit/envs/humanoid_dir.py`` and
        ``max_path_length``; ProMP's ``humanoid_rand_direc_2d.py`` uses the same reward).
    """

    name: ClassVar[str] = "HumanoidDir"
    default_variant: ClassVar[str] = "pearl"
    variants: ClassVar[dict[str, Variant]] = {
        "pearl": Variant(
            horizon=200,
            source="Rakelly et al. 2019 (PEARL), max_path_length 200; katerakelly/oyster "
            "rlkit/envs/humanoid_dir.py",
        ),
    }

    def param_specs(self) -> dict[str, ParamSpec]:
        return {
            "angle": ParamSpec(
                low=0.0, high=TWO_PI, doc="walking direction in the ground plane (rad), 0 is +x"
            )
        }

    def default_task(self) -> Task:
        return self.validate_task({"angle": 0.0})

    def _sample(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        return [{"angle": a} for a in rng.uniform(0.0, TWO_PI, size=n)]

    def reward_terms(
        self,
        before: dict[str, Array],
        state: dict[str, Array],
        action: Array,
        params: dict[str, Array],
    ) -> tuple[dict[str, Array], dict[str, Array]]:
        dxy = self.xy_displacement(before, state)
        angle = params["angle"]
        along = dxy[:, 0] * np.cos(angle) + dxy[:, 1] * np.sin(angle)
        # The original divides by the model timestep, not the env dt (kept on purpose).
        forward = FORWARD_WEIGHT * along / float(self.model.opt.timestep)
        contact = np.minimum(
            CONTACT_COST_WEIGHT * np.sum(np.square(state["cfrc_ext"]), axis=(1, 2)),
            CONTACT_COST_MAX,
        )
        terms = {
            "reward_forward": forward,
            "reward_ctrl": -CTRL_COST_WEIGHT * np.sum(np.square(action), axis=1),
            "reward_contact": -contact,
            "reward_survive": np.full(action.shape[0], SURVIVE_REWARD),
        }
        info = {
            "x_velocity": dxy[:, 0] / self.dt,
            "y_velocity": dxy[:, 1] / self.dt,
            "x_position": state["qpos"][:, 0].copy(),
            "y_position": state["qpos"][:, 1].copy(),
        }
        return terms, info

    def terminated(self, state: dict[str, Array], params: dict[str, Array]) -> Array:
        return ~self.healthy(state)
