"""Parameterized MuJoCo task families (installed as ``metarl.envs``).

One Gymnasium env per family, ``metarl/<Family>-v0``, registered by ``import metarl`` (from
the ``metarl.envs`` entry points in pyproject.toml; importing this package registers them
too)::

    import gymnasium as gym
    import metarl

    env = gym.make("metarl/HalfCheetahVel-v0", variant="pearl")
    env.set_task(env.sample_tasks(1)[0])

Families are looked up by name with :func:`make_family`; :data:`FAMILIES` lists them.
"""

from __future__ import annotations

from typing import Any

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
    close_matches,
)
from metarl.envs.dynamics import HalfCheetahParams, HopperParams, Walker2dParams
from metarl.envs.half_cheetah import HalfCheetahDir, HalfCheetahVel
from metarl.envs.humanoid import HumanoidDir
from metarl.envs.point2d import Point2DNav

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

__all__ = [
    "FAMILIES",
    "BatchStep",
    "BatchStepper",
    "FamilyTaskSampler",
    "MetaEnv",
    "MujocoBatch",
    "MujocoTaskFamily",
    "ParamSpec",
    "TaskFamily",
    "Variant",
    "env_id",
    "make_family",
]


def make_family(name: str, **kwargs: Any) -> TaskFamily:
    """Build the family called ``name`` (``"HalfCheetahVel"``) with its options."""
    if name not in FAMILIES:
        raise ValueError(
            f"unknown task family {name!r}; families are {sorted(FAMILIES)}."
            + close_matches(name, list(FAMILIES))
        )
    return FAMILIES[name](**kwargs)


def env_id(name: str) -> str:
    """The Gymnasium id registered for a family: ``metarl/<name>-v0``."""
    return f"metarl/{name}-v0"


for _name in FAMILIES:
    if env_id(_name) not in gym.registry:
        gym.register(
            id=env_id(_name),
            entry_point="metarl.envs.base:MetaEnv",
            kwargs={"family": _name},
            # The horizon belongs to the family's variant; MetaEnv truncates itself.
            max_episode_steps=None,
        )
