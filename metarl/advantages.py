"""Discounted returns, generalized advantage estimation and advantage normalization.

Every function works on the sampler's padded, time-major episode batch: tensors ``[T, B]``
whose column ``b`` holds one episode (or one RL^2 trial) starting at ``t = 0``, with a
``valid`` mask ``[T, B]`` that is 1 for real steps and 0 for the padding after the episode
ended (so each column of ``valid`` is a run of ones followed by zeros). Padded steps
contribute nothing and get 0 in every output, whatever the padding holds (NaN included).

Episodes that *terminated* (the MDP reached a terminal state) have value 0 after their last
step; episodes that were *truncated* (time limit, or cut by the batch horizon) are bootstrapped
with ``last_values``, the value of the observation after their last valid step. Without
``last_values`` nothing is bootstrapped (the convention of rllab and pytorch-maml-rl).

The loops run over ``T`` only and are vectorized over ``B``; everything stays on the inputs'
device and dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["discounted_returns", "gae", "normalize_advantages"]


def _check_batch(name: str, x: Tensor, valid: Tensor) -> None:
    if x.dim() != 2:
        raise ValueError(f"{name} must be time-major [T, B], got shape {tuple(x.shape)}")
    if valid.shape != x.shape:
        raise ValueError(
            f"valid must have the shape of {name} {tuple(x.shape)}, got {tuple(valid.shape)}"
        )
    if valid.shape[0] > 1 and bool((valid[1:] > valid[:-1]).any()):
        raise ValueError(
            "valid must be a run of ones then zeros in every column (an episode starts at t=0 "
            "and the padding follows it); a column goes from invalid back to valid"
        )


def _check_gamma(gamma: float, gae_lambda: float = 1.0) -> None:
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    if not 0.0 <= gae_lambda <= 1.0:
        raise ValueError(f"gae_lambda must be in [0, 1], got {gae_lambda}")


def _next_valid(mask: Tensor) -> Tensor:
    """``mask[t + 1]`` (0 after the last row): whether step ``t`` continues at ``t + 1``."""
    return torch.cat([mask[1:], torch.zeros_like(mask[:1])])


def _reverse_scan(base: Tensor, coef: Tensor) -> Tensor:
    """``out[t] = base[t] + coef[t] * out[t + 1]`` backwards over ``T`` (``out[T] = 0``).

    All the per-step algebra is done vectorized beforehand, so the loop is one fused
    multiply-add kernel per step (this matters on a GPU, where launches dominate).
    """
    out = torch.empty_like(base)
    out[-1] = base[-1]
    for t in range(base.shape[0] - 2, -1, -1):
        torch.addcmul(base[t], coef[t], out[t + 1], out=out[t])
    return out


def _bootstrap(
    like: Tensor, mask: Tensor, last_values: Tensor | None, terminated: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Per-step ``(next_value_at_end [T, B], not_terminated [T, B])`` for the recursions.

    ``next_value_at_end[t, b]`` is the value that follows step ``t`` when ``t`` is the last
    valid step of column ``b`` (``last_values[b]``, or 0); ``not_terminated[t, b]`` is 0 where
    the episode terminated at step ``t``, which cuts both the bootstrap and the recursion.
    """
    T, B = like.shape
    if last_values is None:
        end_value = torch.zeros(B, dtype=like.dtype, device=like.device)
    else:
        if last_values.shape != (B,):
            raise ValueError(
                f"last_values must have shape [B] = ({B},), got {tuple(last_values.shape)}"
            )
        end_value = torch.nan_to_num(last_values.to(like.dtype), nan=0.0, posinf=0.0, neginf=0.0)
    if terminated is None:
        not_term = torch.ones_like(like)
    else:
        term = terminated.to(device=like.device, dtype=like.dtype)
        if term.shape == (B,):
            # Per column: the episode terminated at its last valid step.
            last_step = mask * (1.0 - _next_valid(mask))
            term = last_step * term
        elif term.shape != (T, B):
            raise ValueError(
                f"terminated must have shape [B] = ({B},) or [T, B] = ({T}, {B}), "
                f"got {tuple(terminated.shape)}"
            )
        not_term = 1.0 - term
    return end_value.expand(T, B), not_term


def discounted_returns(
    rewards: Tensor,
    valid: Tensor,
    gamma: float,
    last_values: Tensor | None = None,
    terminated: Tensor | None = None,
) -> Tensor:
    """Discounted returns-to-go ``R_t = r_t + gamma * R_{t+1}`` within each episode.

    Args:
        rewards: ``[T, B]`` rewards (constants: no gradient flows).
        valid: ``[T, B]`` mask, 1 (or True) for real steps, 0 for padding.
        gamma: discount factor in ``[0, 1]``.
        last_values: optional ``[B]`` value of the observation after each episode's last valid
            step, added (discounted) to the return of episodes that did not terminate.
        terminated: optional ``[B]`` (the episode in column ``b`` terminated) or ``[T, B]``
            (terminated at step ``t``) flags; terminated episodes are not bootstrapped.

    Returns:
        ``[T, B]`` returns, 0 at padded steps.
    """
    _check_batch("rewards", rewards, valid)
    _check_gamma(gamma)
    mask = valid.to(rewards.dtype)
    r = torch.where(mask > 0, rewards.detach(), torch.zeros_like(rewards))
    end_value, not_term = _bootstrap(r, mask, last_values, terminated)
    next_valid = _next_valid(mask)
    # After the last valid step the "next return" is the bootstrap value.
    base = mask * (r + gamma * not_term * (1.0 - next_valid) * end_value)
    return _reverse_scan(base, mask * gamma * not_term * next_valid)


def gae(
    rewards: Tensor,
    values: Tensor,
    valid: Tensor,
    gamma: float,
    gae_lambda: float,
    last_values: Tensor | None = None,
    terminated: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016, https://arxiv.org/abs/1506.02438).

    ``delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)`` and ``A_t = delta_t + gamma * lambda *
    A_{t+1}`` within each episode, with ``V`` after the last valid step equal to
    ``last_values`` (0 if not given or if the episode terminated).

    Args:
        rewards: ``[T, B]`` rewards (constants).
        values: ``[T, B]`` value estimates ``V(s_t)`` (constants: no gradient flows).
        valid: ``[T, B]`` mask, 1 (or True) for real steps, 0 for padding.
        gamma: discount factor in ``[0, 1]``.
        gae_lambda: GAE lambda in ``[0, 1]`` (1: Monte-Carlo returns minus values; 0: TD(0)).
        last_values: optional ``[B]`` value of the observation after each episode's last valid
            step, used to bootstrap episodes that were truncated rather than terminated.
        terminated: optional ``[B]`` or ``[T, B]`` termination flags (see
            :func:`discounted_returns`).

    Returns:
        ``(advantages [T, B], returns [T, B])`` with ``returns = advantages + values`` (the
        lambda-returns, the usual value-function targets); both 0 at padded steps.
    """
    _check_batch("rewards", rewards, valid)
    if values.shape != rewards.shape:
        raise ValueError(
            f"values must have the shape of rewards {tuple(rewards.shape)}, "
            f"got {tuple(values.shape)}"
        )
    _check_gamma(gamma, gae_lambda)
    mask = valid.to(rewards.dtype)
    zeros = torch.zeros_like(rewards)
    r = torch.where(mask > 0, rewards.detach(), zeros)
    v = torch.where(mask > 0, values.detach().to(rewards.dtype), zeros)
    lv = None if last_values is None else last_values.detach()
    end_value, not_term = _bootstrap(r, mask, lv, terminated)
    next_valid = _next_valid(mask)
    next_v = torch.cat([v[1:], torch.zeros_like(v[:1])])
    next_value = next_valid * next_v + (1.0 - next_valid) * end_value
    delta = mask * (r + gamma * not_term * next_value - v)
    adv = _reverse_scan(delta, mask * (gamma * gae_lambda) * not_term * next_valid)
    return adv, adv + v


def normalize_advantages(
    adv: Tensor, valid: Tensor, eps: float = 1e-8, groups: int | None = None
) -> Tensor:
    """Shift and scale advantages to mean 0 and standard deviation 1 over the valid steps.

    Args:
        adv: ``[T, B]`` advantages.
        valid: ``[T, B]`` mask, 1 (or True) for real steps, 0 for padding.
        eps: added to the (population) standard deviation before dividing.
        groups: None to normalize over the whole batch; an int ``K`` that divides ``B`` to
            normalize each of ``K`` contiguous column groups on its own (task-major batches:
            columns ``k * E .. k * E + E - 1`` are task ``k``, so this is per-task
            normalization in one call).

    Returns:
        ``[T, B]`` normalized advantages, 0 at padded steps.
    """
    _check_batch("adv", adv, valid)
    T, B = adv.shape
    k = 1 if groups is None else int(groups)
    if k < 1 or B % k != 0:
        raise ValueError(
            f"groups must be a positive divisor of the batch width B={B}, got {groups}"
        )
    if eps < 0:
        raise ValueError(f"eps must be non-negative, got {eps}")
    mask = valid.to(adv.dtype).reshape(T, k, B // k)
    a = torch.where(mask > 0, adv.reshape(T, k, B // k), torch.zeros_like(mask))
    count = mask.sum(dim=(0, 2), keepdim=True).clamp_min(1.0)
    mean = a.sum(dim=(0, 2), keepdim=True) / count
    centered = (a - mean) * mask
    std = (centered.pow(2).sum(dim=(0, 2), keepdim=True) / count).sqrt()
    return (centered / (std + eps)).reshape(T, B)
