"""The robots of Gymnasium's v5 MuJoCo envs, as bases for task families.

Each class reproduces its v5 env exactly where a task does not change it: model file,
``frame_skip``, initial-state noise (drawn in the same order from the same generator),
observation layout and health check. Families add the task's parameters and reward on top, so
with a neutral task the same seed and actions give the same observations as Gymnasium's own env.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from metarl.envs.base import Array, MujocoTaskFamily

__all__ = ["HalfCheetahRobot"]


class HalfCheetahRobot(MujocoTaskFamily):
    """Gymnasium's ``HalfCheetah-v5`` robot: 17-d observation, 6 actuators in [-1, 1]."""

    xml_file: ClassVar[str] = "half_cheetah.xml"
    frame_skip: ClassVar[int] = 5
    camera_distance: ClassVar[float] = 4.0
    reset_noise_scale: ClassVar[float] = 0.1

    def reset_state(self, rng: np.random.Generator) -> tuple[Array, Array]:
        scale = self.reset_noise_scale
        qpos = self.init_qpos + rng.uniform(low=-scale, high=scale, size=self.model.nq)
        qvel = self.init_qvel + scale * rng.standard_normal(self.model.nv)
        return qpos, qvel

    def observe(self, state: dict[str, Array]) -> Array:
        return np.concatenate([state["qpos"][:, 1:], state["qvel"]], axis=1)

    def x_velocity(self, before: dict[str, Array], state: dict[str, Array]) -> Array:
        """Forward velocity of the root over the env step, ``[n]`` (m/s)."""
        return (state["qpos"][:, 0] - before["qpos"][:, 0]) / self.dt
