"""The valid steps of a meta-batch, task by task: what MAML's inner and outer losses read."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from metarl.sampling.batch import EpisodeBatch, task_major

__all__ = ["TaskSteps"]


@dataclass(frozen=True)
class TaskSteps:
    """The valid steps of a meta-batch, task-major.

    Packed once per batch, so every forward and backward pass of an iteration runs on
    contiguous ``[K, N, ...]`` tensors (``N``: the most valid steps of any task) instead of
    regathering the sampler's time-major ``[T, B, ...]`` layout on every pass. Padding (steps
    past an episode's end, and the tail of a task with fewer valid steps) has weight 0.
    """

    obs: Tensor
    """``[K, N, obs_dim]``."""
    actions: Tensor
    """``[K, N, act_dim]``: the sampled (unclipped) actions."""
    advantages: Tensor
    """``[K, N]``."""
    weights: Tensor
    """``[K, N]``: ``1 / (valid steps of task k)`` on its valid steps, 0 on padding."""

    @property
    def num_tasks(self) -> int:
        return int(self.obs.shape[0])

    @classmethod
    def pack(cls, batch: EpisodeBatch, advantages: Tensor) -> TaskSteps:
        """Gather ``batch``'s valid steps and their ``advantages [T, B]``, task by task, each
        task's episodes one after another."""
        K = batch.num_tasks
        valid = task_major(batch.valid, K, order="episode")
        fields = [task_major(t, K, order="episode") for t in (batch.obs, batch.actions, advantages)]
        counts = valid.sum(1)
        if not bool(valid.all()):
            # Each task's valid steps first (a stable sort keeps episode and time order).
            order = torch.sort((~valid).to(torch.uint8), dim=1, stable=True).indices
            order = order[:, : max(int(counts.max()), 1)]
            valid = torch.gather(valid, 1, order)
            fields = [
                torch.gather(
                    f,
                    1,
                    order.view(*order.shape, *[1] * (f.dim() - 2)).expand_as(
                        f[:, : order.shape[1]]
                    ),
                )
                for f in fields
            ]
        obs, actions, adv = (f.contiguous() for f in fields)
        weights = valid.to(obs.dtype) / counts.clamp_min(1).to(obs.dtype).unsqueeze(1)
        return cls(obs=obs, actions=actions, advantages=adv, weights=weights)

    def tasks(self, which: slice) -> TaskSteps:
        """The steps of the tasks ``which`` (views, no copy)."""
        return TaskSteps(
            obs=self.obs[which],
            actions=self.actions[which],
            advantages=self.advantages[which],
            weights=self.weights[which],
        )

    def task_mean(self, x: Tensor) -> Tensor:
        """Each task's mean of ``x [K, N]`` over its valid steps: ``[K]``."""
        return (x * self.weights).sum(1)
