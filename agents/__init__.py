"""The meta-learning algorithms (installed as ``metarl.agents``), one file each.

:data:`AGENTS` maps the command-line name of each algorithm to its class; each is registered in
:mod:`metarl.registry` (by the ``metarl.agents`` entry points in pyproject.toml, and on import),
where the core looks agents up by name.
"""

from __future__ import annotations

from metarl.agent import MetaAgent
from metarl.agents.maml_trpo import MAMLTRPO, MAMLTRPOConfig
from metarl.agents.reptile_ppo import ReptilePPO, ReptilePPOConfig
from metarl.agents.rl2_ppo import RL2PPO, RL2PPOConfig
from metarl.registry import register_agent

AGENTS: dict[str, type[MetaAgent]] = {cls.name: cls for cls in (MAMLTRPO, ReptilePPO, RL2PPO)}

for _cls in AGENTS.values():
    register_agent(_cls)

__all__ = [
    "AGENTS",
    "MAMLTRPO",
    "RL2PPO",
    "MAMLTRPOConfig",
    "RL2PPOConfig",
    "ReptilePPO",
    "ReptilePPOConfig",
]
