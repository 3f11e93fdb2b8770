"""The meta-learning algorithms (installed as ``metarl.agents``), one file each.

:data:`AGENTS` maps the command-line name of each algorithm to its class.
"""

from __future__ import annotations

from metarl.agent import MetaAgent
from metarl.agents.maml_trpo import MAMLTRPO, MAMLTRPOConfig
from metarl.agents.reptile_ppo import ReptilePPO, ReptilePPOConfig
from metarl.agents.rl2_ppo import RL2PPO, RL2PPOConfig

AGENTS: dict[str, type[MetaAgent]] = {cls.name: cls for cls in (MAMLTRPO, ReptilePPO, RL2PPO)}

__all__ = [
    "AGENTS",
    "MAMLTRPO",
    "RL2PPO",
    "MAMLTRPOConfig",
    "RL2PPOConfig",
    "ReptilePPO",
    "ReptilePPOConfig",
]
