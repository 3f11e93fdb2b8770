"""The one interface every meta-learner in ``metarl.agents`` meets.

Meta-training: :meth:`MetaAgent.train_step` runs one meta-iteration on a batch of tasks and
returns namespaced metrics. Meta-test, the same question for every algorithm (as in garage):
start from :meth:`MetaAgent.exploration_policy`, sample episodes with it, and call
:meth:`MetaAgent.adapt` with those episodes to get the policy for the next round — a gradient
step for MAML-TRPO and Reptile-PPO, a hidden-state update for RL^2.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from metarl.policies import Params
from metarl.tasks import Task

if TYPE_CHECKING:
    from metarl.sampling import EpisodeBatch, Sampler

__all__ = ["AdaptedPolicy", "MetaAgent", "config_from_dict"]


@dataclass
class AdaptedPolicy:
    """How to act on each of K tasks during meta-test.

    Attributes:
        params: per-task parameters stacked on a leading task axis ``[K, ...]``, or None for
            the agent's meta-parameters on every task.
        state: what a recurrent agent carries into the next episodes (RL^2), else None.
        num_tasks: K.
    """

    params: Params | None
    num_tasks: int
    state: Any = None


class MetaAgent(ABC):
    """Base class of the meta-learners.

    Subclasses set ``name`` (the CLI name, e.g. ``"maml-trpo"``) and ``config_cls`` (a frozen
    dataclass of hyperparameters) and own a policy module in :attr:`policy`.
    """

    name: ClassVar[str]
    config_cls: ClassVar[type]
    policy: nn.Module

    def __init__(
        self,
        config: Any,
        observation_space: gym.spaces.Box,
        action_space: gym.spaces.Box,
        device: torch.device,
    ) -> None:
        if not isinstance(config, self.config_cls):
            raise TypeError(f"{self.name} takes a {self.config_cls.__name__}, got {type(config).__name__}")
        for space, what in ((observation_space, "observation"), (action_space, "action")):
            if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
                raise ValueError(f"{self.name} needs a flat Box {what} space, got {space}")
        self.config = config
        self.observation_space = observation_space
        self.action_space = action_space
        self.device = torch.device(device)

    @abstractmethod
    def train_step(self, sampler: Sampler, tasks: list[Task], rng: np.random.Generator) -> dict[str, float]:
        """One meta-iteration on ``tasks``; sampling seeds come from ``rng``.

        Returns metrics with namespaced keys (``meta/return_pre_adapt``, ``losses/...``,
        ``time/...``, ``env_steps``).
        """

    @abstractmethod
    def exploration_policy(self, num_tasks: int) -> AdaptedPolicy:
        """The policy that collects the first episodes on ``num_tasks`` new tasks."""

    @abstractmethod
    def adapt(self, policy: AdaptedPolicy, episodes: EpisodeBatch) -> AdaptedPolicy:
        """The policy after adapting on ``episodes`` (sampled with ``policy``)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly (tensors and plain values only)."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


def config_from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    """Rebuild a config dataclass from its JSON form (lists back to tuples), strictly."""
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ValueError(f"{cls.__name__} has no settings {sorted(unknown)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**values)
