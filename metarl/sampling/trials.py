"""Trial mode (RL^2): the recurrent policy's inputs, rebuilt from a batch."""

from __future__ import annotations

import torch
from torch import Tensor

from metarl.sampling.batch import EpisodeBatch

__all__ = ["recurrent_inputs"]


def recurrent_inputs(batch: EpisodeBatch) -> Tensor:
    """The inputs the sampler fed a recurrent policy: ``[T, B, obs_dim + act_dim + 2]``.

    Step ``t`` reads ``[obs_t, a_{t-1}, r_{t-1}, d_{t-1}]``: the previous step's (unclipped)
    action and reward of the same column, and ``d = 1`` where the previous step ended an
    episode of the trial; all three are zero at a trial's first step. Padding steps are zero
    in the previous-step part as well as in ``obs``. Run the policy over these with its
    ``initial_state`` at ``t = 0`` to recompute ``log_probs``.
    """
    obs, actions = batch.obs, batch.actions
    T, B = obs.shape[:2]
    prev_action = torch.zeros_like(actions)
    prev_reward = torch.zeros(T, B, 1, dtype=obs.dtype, device=obs.device)
    prev_done = torch.zeros(T, B, 1, dtype=obs.dtype, device=obs.device)
    if T > 1:
        prev_action[1:] = actions[:-1]
        prev_reward[1:, :, 0] = batch.rewards[:-1]
        prev_done[1:, :, 0] = (batch.terminated[:-1] | batch.truncated[:-1]).to(obs.dtype)
    keep = batch.valid.unsqueeze(-1).to(obs.dtype)
    return torch.cat([obs, prev_action * keep, prev_reward * keep, prev_done * keep], dim=-1)
