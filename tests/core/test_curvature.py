"""The written-out curvature products against autograd's double backward, in float64."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, vmap

from metarl.curvature import FisherProduct, PolicyGradientCurvature
from metarl.policies import GaussianMLPPolicy, gaussian_log_prob

K, N, OBS, ACT = 3, 7, 4, 2


def per_task_params(policy: GaussianMLPPolicy, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        name: (p.detach().unsqueeze(0) + 0.3 * torch.randn(K, *p.shape, generator=g, dtype=p.dtype))
        .clone()
        .requires_grad_(True)
        for name, p in policy.named_parameters()
    }


def data(seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(K, N, OBS, generator=g, dtype=torch.float64)
    actions = torch.randn(K, N, ACT, generator=g, dtype=torch.float64)
    advantages = torch.randn(K, N, generator=g, dtype=torch.float64)
    valid = torch.ones(K, N, dtype=torch.float64)
    valid[1, 5:] = 0.0  # a task with padding
    weights = valid / valid.sum(1, keepdim=True)
    return obs, actions, advantages, weights


def distribution(policy: GaussianMLPPolicy, params: dict, obs: torch.Tensor) -> tuple:
    out: tuple = vmap(lambda p, o: functional_call(policy, p, (o,)))(params, obs)
    return out


def directions(params: dict, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in params.items()}


ARCHITECTURES = [("tanh", (5,)), ("tanh", (5, 4)), ("relu", (6, 5)), ("elu", (5, 4))]


def assert_products_match(product, grads: tuple, params: dict, seeds: tuple[int, ...]) -> None:
    """``product(v)`` equals the double backward of ``grads`` (a differentiable gradient)."""
    for seed in seeds:
        v = directions(params, seed)
        expected = torch.autograd.grad(
            grads, list(params.values()), list(v.values()), retain_graph=True
        )
        got = product(v)
        for name, e in zip(params, expected, strict=True):
            torch.testing.assert_close(got[name], e, rtol=1e-9, atol=1e-11)


def policy_gradient_setup(
    activation: str, hidden: tuple[int, ...], init_std: float, seed: int, create_graph: bool
) -> tuple:
    """A policy, per-task parameters (``seed``), data (``seed + 1``), the policies' means and
    autograd's gradient of ``-sum_n w A log pi`` (differentiable with ``create_graph``)."""
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(OBS, ACT, hidden, activation, init_std=init_std).double()
    params = per_task_params(policy, seed)
    obs, actions, advantages, weights = data(seed + 1)
    mean, log_std = distribution(policy, params, obs)
    losses = -(weights * advantages * gaussian_log_prob(actions, mean, log_std)).sum(1)
    grads = torch.autograd.grad(losses.sum(), list(params.values()), create_graph=create_graph)
    return policy, params, (obs, actions, advantages, weights), mean, grads


@pytest.mark.parametrize(("activation", "hidden"), ARCHITECTURES)
def test_policy_gradient_gradient_and_hessian_match_autograd(
    activation: str, hidden: tuple[int, ...]
) -> None:
    policy, params, (obs, actions, advantages, weights), _, grads = policy_gradient_setup(
        activation, hidden, 0.7, 1, create_graph=True
    )
    curvature = PolicyGradientCurvature(policy, params, obs, actions, advantages, weights)
    ours = curvature.gradient()
    for name, g in zip(params, grads, strict=True):
        torch.testing.assert_close(ours[name], g, rtol=1e-10, atol=1e-12)
    assert_products_match(curvature.hvp, grads, params, seeds=(3, 4))
    # First order keeps only the gradient: the same numbers, and no Hessian products.
    gradient_only = PolicyGradientCurvature(
        policy, params, obs, actions, advantages, weights, hessian=False
    )
    for name, g in gradient_only.gradient().items():
        assert torch.equal(g, ours[name])
    with pytest.raises(RuntimeError, match="hessian=False"):
        gradient_only.hvp(directions(params, 3))


@pytest.mark.parametrize(("activation", "hidden"), ARCHITECTURES)
def test_fisher_product_is_the_kl_hessian(activation: str, hidden: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(OBS, ACT, hidden, activation, init_std=1.3).double()
    params = per_task_params(policy, 5)
    obs, _, _, weights = data(6)
    mean, log_std = distribution(policy, params, obs)
    var_ratio = torch.exp(2.0 * (log_std.detach() - log_std))
    mean_term = ((mean.detach() - mean) * torch.exp(-log_std)).pow(2)
    kl = (0.5 * (var_ratio + mean_term - 1.0) - (log_std.detach() - log_std)).sum(-1)
    grads = torch.autograd.grad((weights * kl).sum(), list(params.values()), create_graph=True)
    fisher = FisherProduct(policy, params, obs, weights)
    assert_products_match(fisher.fvp, grads, params, seeds=(7, 8))


@pytest.mark.parametrize(("activation", "hidden"), ARCHITECTURES)
def test_fisher_products_policy_gradient_and_mean_match_autograd(
    activation: str, hidden: tuple[int, ...]
) -> None:
    """The Fisher product's cached forward pass also gives the policies' means and their
    policy gradient (what the MAML outer gradient reads at the sampling policies)."""
    policy, params, (obs, actions, advantages, weights), mean, grads = policy_gradient_setup(
        activation, hidden, 0.8, 9, create_graph=False
    )
    fisher = FisherProduct(policy, params, obs, weights)
    torch.testing.assert_close(fisher.mean, mean.detach(), rtol=1e-12, atol=1e-14)
    ours = fisher.policy_gradient(actions, advantages)
    assert set(ours) == set(params)
    for name, g in zip(params, grads, strict=True):
        torch.testing.assert_close(ours[name], g, rtol=1e-10, atol=1e-12)


def test_unknown_activation_is_refused() -> None:
    policy = GaussianMLPPolicy(OBS, ACT, (3,), "tanh").double()
    policy.activation = "softsign"
    params = per_task_params(policy, 0)
    with pytest.raises(ValueError, match="softsign"):
        FisherProduct(policy, params, *data(0)[:1], data(0)[3])
