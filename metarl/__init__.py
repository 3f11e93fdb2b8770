"""metarl: meta-reinforcement learning for robot control.

The core library. Task families live in :mod:`metarl.envs`, the meta-learners in
:mod:`metarl.agents`; ``metarl train|eval|render|list`` is the command line.
"""

from metarl.tasks import Task, TaskSampler, TaskSplit

__version__ = "0.1.0"

__all__ = ["Task", "TaskSampler", "TaskSplit", "__version__"]
