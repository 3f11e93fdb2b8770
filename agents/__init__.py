"""The meta-learning algorithms (installed as ``metarl.agents``), one file each.

:data:`AGENTS` maps the command-line name of each algorithm to its class.
"""

from __future__ import annotations

from metarl.agent import MetaAgent
from metarl.agents.maml_trpo import MAMLTRPO, MAMLTRPOConfig
from metarl.agents.reptile_ppo import ReptilePPO, ReptilePPOConfig

AGENTS: dict[str, type[MetaAgent]] = {cls.name: cls for cls in (MAMLTRPO, ReptilePPO)}

__all__ = ["AGENTS", "MAMLTRPO", "MAMLTRPOConfig", "ReptilePPO", "ReptilePPOConfig"]
