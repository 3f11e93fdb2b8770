"""Parameterized MuJoCo task families (installed as ``metarl.envs``).

One Gymnasium env per family, ``metarl/<Family>-v0``, registered by ``import metarl`` (from
the ``metarl.envs`` entry points in pyproject.toml; importing this package registers them
too)::

    import gymnasium as gym
    import metarl

    env = gym.make("metarl/HalfCheetahVel-v0", variant="pearl")
    env.set_task(env.sample_tasks(1)[0])

Families are looked up by name with :func:`metarl.registry.make_family` (re-exported here as
:func:`make_family`); :data:`FAMILIES` lists the built-in ones. The contracts they implement
(:class:`~metarl.family.TaskFamily`, ...) live in the core, :mod:`metarl.family`.
Meta-World's ML1 / ML10 / ML45 (:data:`GYM_FAMILIES`, ``metarl[metaworld]``) are looked up the
same way (``make_family("ML1-reach-v3")``) and stepped through ``env.step``; they register no
``metarl/`` env id (Meta-World registers its own).
"""

from __future__ import annotations

import gymnasium as gym

from metarl.envs.ant import AntDir, AntGoal, AntVel
from metarl.envs.base import (
    BatchStep,
    BatchStepper,
    FamilyTaskSampler,
    MetaEnv,
    MujocoBatch,
    MujocoTaskFamily,
    ParamSpec,
    TaskFamily,
    Variant,
)
from metarl.envs.dynamics import HalfCheetahParams, HopperParams, Walker2dParams
from metarl.envs.half_cheetah import HalfCheetahDir, HalfCheetahVel
from metarl.envs.humanoid import HumanoidDir
from metarl.envs.metaworld import ML1, ML10, ML45
from metarl.envs.point2d import Point2DNav
from metarl.gym_family import GymTaskFamily, SamplerFamily
from metarl.registry import make_family, register_family

FAMILIES: dict[str, type[TaskFamily]] = {
    cls.name: cls
    for cls in (
        HalfCheetahVel,
        HalfCheetahDir,
        AntDir,
        AntVel,
        AntGoal,
        HumanoidDir,
        HalfCheetahParams,
        HopperParams,
        Walker2dParams,
        Point2DNav,
    )
}

GYM_FAMILIES: dict[str, type[TaskFamily]] = {cls.name: cls for cls in (ML1, ML10, ML45)}
"""Families stepped through ``env.step`` (Meta-World); ``ML1`` takes its env: ``ML1-reach-v3``."""

__all__ = [
    "FAMILIES",
    "GYM_FAMILIES",
    "BatchStep",
    "BatchStepper",
    "FamilyTaskSampler",
    "GymTaskFamily",
    "MetaEnv",
    "MujocoBatch",
    "MujocoTaskFamily",
    "ParamSpec",
    "SamplerFamily",
    "TaskFamily",
    "Variant",
    "env_id",
    "make_family",
]


def env_id(name: str) -> str:
    """The Gymnasium id registered for a family: ``metarl/<name>-v0``."""
    return f"metarl/{name}-v0"


for _cls in (*FAMILIES.values(), *GYM_FAMILIES.values()):
    register_family(_cls)

for _name in FAMILIES:
    if env_id(_name) not in gym.registry:
        gym.register(
            id=env_id(_name),
            entry_point="metarl.envs.base:MetaEnv",
            kwargs={"family": _name},
            # The horizon belongs to the family's variant; MetaEnv truncates itself.
            max_episode_steps=None,
        )
