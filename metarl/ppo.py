"""PPO's losses as pure functions (shared by Reptile-PPO and RL^2-PPO).

Each loss takes time-major ``[T, B]`` tensors and a ``mask [T, B]`` (1 or True for the steps
that count, 0 for padding) and returns ``(loss, metrics)``: ``loss`` a scalar to *minimise*
(masked mean over the valid steps) and ``metrics`` a dict of detached scalar tensors (no
device sync; call ``.item()`` when logging). The total PPO loss is
``policy_loss + vf_coef * value_loss + ent_coef * entropy_loss``.

Gradient clipping: use :func:`torch.nn.utils.clip_grad_norm_` (``max_grad_norm``, 0.5 in
cleanrl) between ``backward()`` and ``optimizer.step()``; it is not reimplemented here.

References: Schulman et al. 2017 (https://arxiv.org/abs/1707.06347); cleanrl's
``ppo_continuous_action.py``; brax's ``training/agents/ppo/losses.py``; the KL estimator is
from http://joschu.net/blog/kl-approx.html.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

__all__ = [
    "approx_kl",
    "clip_fraction",
    "clip_grad_norm_per_task",
    "clipped_surrogate",
    "entropy_bonus",
    "masked_mean",
    "minibatch_indices",
    "minibatch_plan",
    "value_loss",
]

Metrics = dict[str, Tensor]


def _check_mask(mask: Tensor, *tensors: tuple[str, Tensor]) -> None:
    for name, t in tensors:
        if t.shape != mask.shape:
            raise ValueError(
                f"{name} must have the shape of mask {tuple(mask.shape)}, got {tuple(t.shape)}"
            )


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` over the entries where ``mask`` is nonzero (0 if there are none).

    Entries outside the mask are ignored whatever they hold (NaN included), and get no gradient.
    """
    _check_mask(mask, ("x", x))
    m = mask > 0
    total = torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum()
    return total / m.sum().clamp_min(1).to(x.dtype)


def _log_ratio(log_prob: Tensor, old_log_prob: Tensor, mask: Tensor) -> Tensor:
    # Zero the padding before exp so it can neither overflow nor poison the gradient.
    diff = log_prob - old_log_prob.detach()
    return torch.where(mask > 0, diff, torch.zeros((), dtype=diff.dtype, device=diff.device))


def approx_kl(log_prob: Tensor, old_log_prob: Tensor, mask: Tensor) -> Tensor:
    """KL(old || new) estimated as the masked mean of ``(r - 1) - log r``, ``r = p_new / p_old``.

    Args:
        log_prob: ``[T, B]`` log-probabilities of the taken actions under the current policy.
        old_log_prob: ``[T, B]`` the same under the policy that collected the data.
        mask: ``[T, B]`` valid-step mask.

    Returns:
        A detached scalar, ``>= 0``.
    """
    _check_mask(mask, ("log_prob", log_prob), ("old_log_prob", old_log_prob))
    with torch.no_grad():
        log_r = _log_ratio(log_prob, old_log_prob, mask)
        return masked_mean(torch.expm1(log_r) - log_r, mask)


def clip_fraction(log_prob: Tensor, old_log_prob: Tensor, clip_coef: float, mask: Tensor) -> Tensor:
    """Fraction of valid steps whose ratio ``r`` lies outside ``[1 - clip_coef, 1 + clip_coef]``.

    Args:
        log_prob: ``[T, B]`` current log-probabilities.
        old_log_prob: ``[T, B]`` log-probabilities at collection time.
        clip_coef: PPO's epsilon.
        mask: ``[T, B]`` valid-step mask.

    Returns:
        A detached scalar in ``[0, 1]``.
    """
    _check_mask(mask, ("log_prob", log_prob), ("old_log_prob", old_log_prob))
    with torch.no_grad():
        ratio = torch.exp(_log_ratio(log_prob, old_log_prob, mask))
        return masked_mean(((ratio - 1.0).abs() > clip_coef).to(ratio.dtype), mask)


def clipped_surrogate(
    log_prob: Tensor,
    old_log_prob: Tensor,
    advantages: Tensor,
    clip_coef: float,
    mask: Tensor,
) -> tuple[Tensor, Metrics]:
    """PPO's clipped surrogate, as a loss: ``-mean(min(r A, clip(r, 1 - eps, 1 + eps) A))``.

    Args:
        log_prob: ``[T, B]`` log-probabilities of the taken actions under the current policy
            (differentiable).
        old_log_prob: ``[T, B]`` the same at collection time (treated as a constant).
        advantages: ``[T, B]`` advantages (treated as constants; normalise them beforehand).
        clip_coef: PPO's epsilon, ``> 0``.
        mask: ``[T, B]`` valid-step mask.

    Returns:
        ``(loss, metrics)``: the scalar loss and ``{"policy_loss", "approx_kl",
        "clip_fraction"}``.
    """
    _check_mask(
        mask, ("log_prob", log_prob), ("old_log_prob", old_log_prob), ("advantages", advantages)
    )
    if not clip_coef > 0:
        raise ValueError(f"clip_coef must be positive, got {clip_coef}")
    ratio = torch.exp(_log_ratio(log_prob, old_log_prob, mask))
    adv = advantages.detach()
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1.0 - clip_coef, 1.0 + clip_coef) * adv)
    loss = -masked_mean(surrogate, mask)
    metrics = {
        "policy_loss": loss.detach(),
        "approx_kl": approx_kl(log_prob, old_log_prob, mask),
        "clip_fraction": clip_fraction(log_prob, old_log_prob, clip_coef, mask),
    }
    return loss, metrics


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    clip_coef: float | None = None,
) -> tuple[Tensor, Metrics]:
    """Squared-error value loss ``0.5 * mean((V - R)^2)``, optionally clipped around the old values.

    With ``clip_coef`` the loss is ``0.5 * mean(max((V - R)^2, (V_clip - R)^2))`` with
    ``V_clip = V_old + clamp(V - V_old, -clip_coef, clip_coef)`` (the PPO2 / cleanrl variant).

    Args:
        values: ``[T, B]`` current value predictions (differentiable).
        old_values: ``[T, B]`` predictions at collection time (constants; used only when
            clipping).
        returns: ``[T, B]`` targets (constants).
        mask: ``[T, B]`` valid-step mask.
        clip_coef: None for no clipping, else ``> 0``.

    Returns:
        ``(loss, metrics)``: the scalar loss and ``{"value_loss", "explained_variance"}``
        (``1 - Var(R - V) / Var(R)`` over the valid steps; NaN if ``Var(R)`` is 0).
    """
    _check_mask(mask, ("values", values), ("old_values", old_values), ("returns", returns))
    if clip_coef is not None and not clip_coef > 0:
        raise ValueError(f"clip_coef must be positive or None, got {clip_coef}")
    target = returns.detach()
    err = (values - target).pow(2)
    if clip_coef is not None:
        old = old_values.detach()
        clipped = old + (values - old).clamp(-clip_coef, clip_coef)
        err = torch.maximum(err, (clipped - target).pow(2))
    loss = 0.5 * masked_mean(err, mask)
    with torch.no_grad():
        ret_mean = masked_mean(target, mask)
        var_r = masked_mean((target - ret_mean).pow(2), mask)
        resid = target - values
        var_resid = masked_mean((resid - masked_mean(resid, mask)).pow(2), mask)
        explained = 1.0 - var_resid / var_r
    return loss, {"value_loss": loss.detach(), "explained_variance": explained}


def entropy_bonus(entropy: Tensor, mask: Tensor) -> tuple[Tensor, Metrics]:
    """The entropy term as a loss: ``-mean(entropy)`` over the valid steps.

    Args:
        entropy: ``[T, B]`` policy entropy at each step (nats, differentiable).
        mask: ``[T, B]`` valid-step mask.

    Returns:
        ``(loss, metrics)``: the scalar loss (add ``ent_coef * loss`` to the total, so that
        minimising it raises the entropy) and ``{"entropy"}``, the mean entropy.
    """
    _check_mask(mask, ("entropy", entropy))
    mean_entropy = masked_mean(entropy, mask)
    return -mean_entropy, {"entropy": mean_entropy.detach()}


def minibatch_indices(n: int, num_minibatches: int, generator: torch.Generator) -> list[Tensor]:
    """A random split of ``range(n)`` into ``num_minibatches`` near-equal index tensors.

    Call once per epoch. For feed-forward policies index flattened valid steps; for recurrent
    ones index the columns (whole trials) so the hidden state stays consistent.

    Args:
        n: number of items.
        num_minibatches: how many minibatches, in ``[1, n]``; sizes differ by at most one.
        generator: the source of randomness (its device is the indices' device).

    Returns:
        A list of ``num_minibatches`` int64 tensors that together hold each of ``0..n-1`` once.
    """
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    if not 1 <= num_minibatches <= n:
        raise ValueError(f"num_minibatches must be in [1, n={n}], got {num_minibatches}")
    perm = torch.randperm(n, generator=generator, device=generator.device)
    return list(torch.tensor_split(perm, num_minibatches))


def minibatch_plan(
    num_tasks: int, n: int, num_minibatches: int, generator: torch.Generator
) -> list[Tensor]:
    """One epoch's minibatches for ``num_tasks`` tasks: each task's own shuffle of ``range(n)``.

    Task ``k``'s split is :func:`minibatch_indices` drawn in the order
    ``k = 0..K-1`` from ``generator``.

    Returns:
        ``num_minibatches`` int64 tensors ``[K, size_m]``, row ``k`` holding task ``k``'s indices.
    """
    splits = [minibatch_indices(n, num_minibatches, generator) for _ in range(num_tasks)]
    return [torch.stack([s[m] for s in splits]) for m in range(num_minibatches)]


def clip_grad_norm_per_task(
    grads: Mapping[str, Tensor], max_norm: float
) -> tuple[dict[str, Tensor], Tensor]:
    """Scale each task's gradient to norm at most ``max_norm``, as ``clip_grad_norm_`` does.

    Args:
        grads: name -> ``[K, ...]`` gradients of ``K`` tasks.
        max_norm: the largest allowed L2 norm over all of a task's tensors.

    Returns:
        ``(clipped, norms)``: the scaled gradients and ``[K]`` norms before clipping.
    """
    per_tensor = [g.reshape(g.shape[0], -1).norm(dim=1) for g in grads.values()]
    norms = torch.stack(per_tensor, dim=1).norm(dim=1)
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    clipped = {k: g * coef.view(-1, *(1,) * (g.dim() - 1)) for k, g in grads.items()}
    return clipped, norms
