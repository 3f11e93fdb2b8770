"""metarl: meta-reinforcement learning for robot control.

The core library. Task families live in :mod:`metarl.envs`, the meta-learners in
:mod:`metarl.agents`; ``metarl train|eval|render|list`` is the command line.

Importing metarl registers the Gymnasium id ``metarl/<Family>-v0`` of every installed task
family (``gymnasium.make("metarl/AntDir-v0")``). The names and env classes come from the
``metarl.envs`` entry points of the installed packages, as strings: Gymnasium imports the env
only at ``make``, and the core itself never imports :mod:`metarl.envs`.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

import gymnasium as gym

from metarl.tasks import Task, TaskSampler, TaskSplit

if TYPE_CHECKING:
    from metarl.api import TrainedAgent

__version__ = "0.1.0"

__all__ = ["Task", "TaskSampler", "TaskSplit", "__version__", "load", "register_envs"]


def load(
    run_dir: str | Path, checkpoint: str | Path | int | None = None, device: str = "cpu"
) -> TrainedAgent:
    """The trained agent of a run folder (:class:`metarl.api.TrainedAgent`): its policy and
    config, ``adapt`` on episodes, ``predict`` an action. See :func:`metarl.api.load`."""
    from metarl.api import load as load_run

    return load_run(run_dir, checkpoint=checkpoint, device=device)


def register_envs() -> list[str]:
    """Register ``metarl/<name>-v0`` for every ``metarl.envs`` entry point; returns the ids.

    An id that is already registered (``import metarl.envs`` registers the built-in families
    too) is left as it is.
    """
    ids = []
    for ep in entry_points(group="metarl.envs"):
        env_id = f"metarl/{ep.name}-v0"
        if env_id not in gym.registry:
            # The horizon belongs to the family's variant; the env truncates itself.
            gym.register(
                id=env_id,
                entry_point=ep.value,
                kwargs={"family": ep.name},
                max_episode_steps=None,
            )
        ids.append(env_id)
    return ids


register_envs()
