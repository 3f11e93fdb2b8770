"""PPO's losses as pure functions, and PPO for many tasks at once (Reptile-PPO, RL^2-PPO).

Each loss takes time-major ``[T, B]`` tensors and a ``mask [T, B]`` (1 or True for the steps
that count, 0 for padding) and returns ``(loss, metrics)``: ``loss`` a scalar to *minimise*
(masked mean over the valid steps) and ``metrics`` a dict of detached scalar tensors (no
device sync; call ``.item()`` when logging). The total PPO loss (:func:`total_loss`) is
``policy_loss + vf_coef * value_loss + ent_coef * entropy_loss``.

Gradient clipping of one network: use :func:`torch.nn.utils.clip_grad_norm_`
(``max_grad_norm``, 0.5 in cleanrl) between ``backward()`` and ``optimizer.step()``; it is not
reimplemented here.

PPO of ``K`` tasks at once (Reptile-PPO's inner loop): every task has its own policy and value
network, held in one combined parameter dict (names ``policy.*`` and ``value.*``, see
:func:`join_params`) stacked on a leading task axis ``[K, ...]``. :func:`per_task_ppo_data`
turns an episode batch into task-major PPO data, and :func:`per_task_ppo_epochs` runs the
minibatch updates: the ``K`` per-task losses evaluated with ``torch.func.vmap``, every task's
gradient from one backward pass of their (separable) sum, per-task gradient clipping
(:func:`clip_grad_norm_per_task`) and a :class:`~metarl.optim.BatchedAdam`. The result equals
``K`` sequential PPO runs with ``torch.optim.Adam`` (tested to ~1e-6). Minibatches index the
``T * E`` step slots of a task (padding included, masked out of the means), so every task's
minibatches have one shape; a task whose episodes end early has fewer valid steps in each.

References: Schulman et al. 2017 (https://arxiv.org/abs/1707.06347); cleanrl's
``ppo_continuous_action.py``; brax's ``training/agents/ppo/losses.py``; the KL estimator is
from http://joschu.net/blog/kl-approx.html.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields

import torch
from torch import Tensor
from torch.func import vmap

from metarl.advantages import discounted_returns, gae, normalize_advantages
from metarl.baselines import LinearFeatureBaseline
from metarl.optim import BatchedAdam
from metarl.policies import Params, gaussian_entropy, gaussian_log_prob
from metarl.sampling.batch import EpisodeBatch, task_major, time_major

__all__ = [
    "POLICY",
    "VALUE",
    "PPOData",
    "approx_kl",
    "clip_fraction",
    "clip_grad_norm_per_task",
    "clipped_surrogate",
    "entropy_bonus",
    "finite_per_task",
    "join_params",
    "masked_mean",
    "minibatch_indices",
    "minibatch_plan",
    "per_task_ppo_data",
    "per_task_ppo_epochs",
    "split_params",
    "task_ppo_loss",
    "total_loss",
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


def total_loss(
    log_prob: Tensor,
    old_log_prob: Tensor,
    advantages: Tensor,
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    entropy: Tensor,
    mask: Tensor,
    *,
    clip_coef: float,
    vf_coef: float,
    ent_coef: float,
    clip_vloss: bool = False,
) -> tuple[Tensor, Metrics]:
    """PPO's loss ``policy_loss + vf_coef * value_loss + ent_coef * entropy_loss``.

    Args:
        log_prob, old_log_prob, advantages: as :func:`clipped_surrogate` takes them.
        values, old_values, returns: as :func:`value_loss` takes them.
        entropy: as :func:`entropy_bonus` takes it.
        mask: the valid-step mask; every tensor has its shape.
        clip_coef: PPO's epsilon, of the ratio and (with ``clip_vloss``) of the value loss.

    Returns:
        ``(loss, metrics)``: the scalar loss and the three terms' metrics.
    """
    pl, pm = clipped_surrogate(log_prob, old_log_prob, advantages, clip_coef, mask)
    vl, vm = value_loss(values, old_values, returns, mask, clip_coef if clip_vloss else None)
    el, em = entropy_bonus(entropy, mask)
    return pl + vf_coef * vl + ent_coef * el, {**pm, **vm, **em}


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


def finite_per_task(tensors: Mapping[str, Tensor]) -> Tensor:
    """``[K]`` bool: whether every entry of task ``k``'s ``[K, ...]`` tensors is finite."""
    values = list(tensors.values())
    K = values[0].shape[0]
    finite = torch.ones(K, dtype=torch.bool, device=values[0].device)
    for v in values:
        finite &= torch.isfinite(v.reshape(K, -1)).all(dim=1)
    return finite


# -- PPO of K tasks at once -----------------------------------------------------------------
POLICY, VALUE = "policy.", "value."
"""Name prefixes of the policy's and the value network's parameters in a combined dict."""

Forward = Callable[[Params, Tensor], tuple[Tensor, Tensor, Tensor]]
"""One task's ``(combined params, obs [n, obs_dim]) -> (mean, log_std, values)``, the means and
log standard deviations ``[n, act_dim]`` of its Gaussian policy and its values ``[n]``."""


def join_params(policy: Mapping[str, Tensor], value: Mapping[str, Tensor]) -> Params:
    """``(policy params, value params)`` -> one combined dict (the inverse of split)."""
    out = {POLICY + k: v for k, v in policy.items()}
    out.update({VALUE + k: v for k, v in value.items()})
    return out


def split_params(params: Mapping[str, Tensor]) -> tuple[Params, Params]:
    """A combined dict -> ``(policy params, value params)`` with the modules' own names."""
    pol = {k[len(POLICY) :]: v for k, v in params.items() if k.startswith(POLICY)}
    val = {k[len(VALUE) :]: v for k, v in params.items() if k.startswith(VALUE)}
    return pol, val


@dataclass
class PPOData:
    """The PPO data of ``K`` tasks, task-major: every tensor ``[K, n, ...]`` with ``n = T * E``
    step slots per task (``mask`` False on padding)."""

    obs: Tensor
    actions: Tensor
    old_log_prob: Tensor
    advantages: Tensor
    returns: Tensor
    old_values: Tensor
    mask: Tensor

    def take(self, idx: Tensor) -> tuple[Tensor, ...]:
        """The minibatch ``idx [K, b]`` of every field, in field order."""
        rows = torch.arange(idx.shape[0], device=idx.device).unsqueeze(1)
        return tuple(getattr(self, f.name)[rows, idx] for f in fields(self))


def per_task_ppo_data(
    forward: Forward,
    params: Params,
    batch: EpisodeBatch,
    *,
    gamma: float,
    gae_lambda: float,
    reward_scale: float,
    normalize: bool,
    linear_baseline: bool,
) -> PPOData:
    """GAE advantages (normalised per task with ``normalize``), value targets and old
    log-probabilities of ``batch``, collected by the ``[K, ...]`` combined ``params``.

    The advantages subtract the value network's values, bootstrapped at each truncated
    episode's last observation, or with ``linear_baseline`` rllab's linear feature baseline
    fitted per task to the batch's discounted returns (MAML-TRPO's; no bootstrap). Rewards are
    multiplied by ``reward_scale``. The data live on ``params``' device, in their dtype.
    """
    K, T = batch.num_tasks, batch.horizon
    first = next(iter(params.values()))
    dtype = first.dtype
    batch = batch.to(first.device)
    obs = task_major(batch.obs.to(dtype), K)
    actions = task_major(batch.actions.to(dtype), K)
    mask = task_major(batch.valid, K)
    last_obs = batch.last_obs.to(dtype).reshape(K, -1, batch.last_obs.shape[-1])
    with torch.no_grad():
        mean, log_std, values = vmap(forward)(params, obs)
        old_log_prob = gaussian_log_prob(actions, mean, log_std)
        rewards = batch.rewards.to(dtype) * reward_scale
        if linear_baseline:
            rewards64 = rewards.to(torch.float64)
            fitted = LinearFeatureBaseline().fit_predict(
                batch.obs, discounted_returns(rewards64, batch.valid, gamma), batch.valid, groups=K
            )
            adv, returns = gae(rewards64, fitted, batch.valid, gamma, gae_lambda)
            adv, returns = adv.to(dtype), returns.to(dtype)
        else:
            _, _, last_values = vmap(forward)(params, last_obs)
            adv, returns = gae(
                rewards,
                time_major(values, T),
                batch.valid,
                gamma,
                gae_lambda,
                last_values=last_values.reshape(-1),
                terminated=batch.terminated,
            )
        if normalize:
            adv = normalize_advantages(adv, batch.valid, groups=K)
    return PPOData(
        obs, actions, old_log_prob, task_major(adv, K), task_major(returns, K), values, mask
    )


def task_ppo_loss(
    forward: Forward,
    params: Params,
    obs: Tensor,
    actions: Tensor,
    old_log_prob: Tensor,
    advantages: Tensor,
    returns: Tensor,
    old_values: Tensor,
    mask: Tensor,
    *,
    clip_coef: float,
    vf_coef: float,
    ent_coef: float,
    clip_vloss: bool = False,
) -> tuple[Tensor, Metrics]:
    """One task's :func:`total_loss` on ``[n]`` steps (``obs [n, obs_dim]``, ``actions
    [n, act_dim]``; the fields of :class:`PPOData` in order) with its combined ``params``."""
    mean, log_std, values = forward(params, obs)
    return total_loss(
        gaussian_log_prob(actions, mean, log_std),
        old_log_prob,
        advantages,
        values,
        old_values,
        returns,
        gaussian_entropy(log_std),
        mask,
        clip_coef=clip_coef,
        vf_coef=vf_coef,
        ent_coef=ent_coef,
        clip_vloss=clip_vloss,
    )


def per_task_ppo_epochs(
    loss: Callable[..., tuple[Tensor, Metrics]],
    params: Params,
    data: PPOData,
    optimizer: BatchedAdam,
    generator: torch.Generator,
    *,
    update_epochs: int,
    num_minibatches: int,
    max_grad_norm: float,
) -> tuple[Params, dict[str, float]]:
    """``update_epochs`` epochs of minibatch PPO updates of every task at once.

    Per minibatch (:func:`minibatch_plan` from ``generator``): the ``K`` losses are evaluated
    with ``vmap``, one backward pass of their sum gives each task's gradient, its policy and
    value parts are clipped to ``max_grad_norm`` separately, and ``optimizer`` steps every task
    whose loss and gradient are finite (the others skip the step; ``nonfinite_updates`` counts
    them).

    Args:
        loss: one task's ``(combined params, *minibatch) -> (loss, metrics)``, the minibatch
            the fields of :class:`PPOData` in order, ``[b, ...]`` each (:func:`task_ppo_loss`).
        params: the ``[K, ...]`` combined parameters the updates start from.

    Returns:
        The new ``[K, ...]`` parameters and the metrics' means over the minibatches (each
        minibatch's over its finite tasks), with ``loss`` and ``nonfinite_updates``.
    """
    K, n = data.mask.shape
    if num_minibatches > n:
        raise ValueError(f"num_minibatches={num_minibatches} exceeds the {n} step slots per task")
    loss_fn = vmap(loss)
    sums: dict[str, float] = {}
    count, skipped = 0, 0
    for _ in range(update_epochs):
        for idx in minibatch_plan(K, n, num_minibatches, generator):
            leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
            losses, metrics = loss_fn(leaves, *data.take(idx.to(data.mask.device)))
            grads = dict(
                zip(leaves, torch.autograd.grad(losses.sum(), list(leaves.values())), strict=True)
            )
            g_pol, g_val = split_params(grads)
            g_pol, _ = clip_grad_norm_per_task(g_pol, max_grad_norm)
            g_val, _ = clip_grad_norm_per_task(g_val, max_grad_norm)
            grads = join_params(g_pol, g_val)
            finite = torch.isfinite(losses.detach()) & finite_per_task(grads)
            params = optimizer.step(params, grads, active=finite)
            skipped += int((~finite).sum())
            count += 1
            for key, value in metrics.items():
                v = value.detach()[finite]
                v = v[torch.isfinite(v)]
                sums[key] = sums.get(key, 0.0) + (float(v.mean()) if v.numel() else 0.0)
            sums["loss"] = sums.get("loss", 0.0) + float(losses.detach().nanmean())
    stats = {k: v / count for k, v in sums.items()}
    stats["nonfinite_updates"] = float(skipped)
    return params, stats
