"""MAML-TRPO's inner step, outer loss and meta-gradient against per-task autograd and finite
differences; the written-out kernel against the autograd reference."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import partial

import gymnasium as gym
import numpy as np
import pytest
import torch

from metarl import curvature
from metarl.agents import MAMLTRPO, MAMLTRPOConfig
from metarl.agents.maml_trpo import AutogradMetaObjective, MetaObjective, inner_step, outer_loss
from metarl.curvature import WrittenOutMetaObjective, written_out_meta_objective
from metarl.optim import flat_grad, flatten_params
from metarl.policies import gaussian_log_prob
from metarl.sampling.batch import EpisodeBatch
from metarl.task_steps import TaskSteps

OBS_DIM, ACT_DIM, T, K, E = 3, 2, 6, 3, 2


def make_batch(seed: int, dtype: torch.dtype = torch.float64) -> EpisodeBatch:
    """A real-shaped episode batch with episodes of different lengths (some padded)."""
    g = torch.Generator().manual_seed(seed)
    B = K * E
    lengths = torch.tensor([6, 4, 5, 6, 2, 3])
    valid = torch.arange(T).unsqueeze(1) < lengths.unsqueeze(0)
    obs = torch.randn(T, B, OBS_DIM, generator=g, dtype=dtype) * valid.unsqueeze(-1)
    actions = torch.randn(T, B, ACT_DIM, generator=g, dtype=dtype) * valid.unsqueeze(-1)
    rewards = torch.randn(T, B, generator=g, dtype=dtype) * valid
    zeros_tb = torch.zeros(T, B, dtype=torch.bool)
    return EpisodeBatch(
        obs=obs,
        actions=actions,
        rewards=rewards,
        log_probs=torch.zeros(T, B, dtype=dtype),
        terminated=zeros_tb,
        truncated=valid & (torch.arange(T).unsqueeze(1) == lengths - 1),
        valid=valid,
        episode_id=torch.zeros(T, B, dtype=torch.long),
        episode_start=torch.arange(T).unsqueeze(1).expand(T, B) == 0,
        last_obs=torch.zeros(B, OBS_DIM, dtype=dtype),
        task_index=torch.arange(K).repeat_interleave(E),
        episode_index=torch.arange(E).repeat(K),
        returns=rewards.sum(0),
        lengths=lengths,
        unstable=torch.zeros(B, dtype=torch.bool),
        episode_returns=rewards.sum(0).unsqueeze(1),
        episode_lengths=lengths.unsqueeze(1),
        tasks=[],
        num_tasks=K,
        episodes_per_task=E,
    )


def make_agent(**overrides: object) -> MAMLTRPO:
    torch.manual_seed(0)
    config = MAMLTRPOConfig(hidden_sizes=(5,), adapt_lr=0.3, **overrides)  # type: ignore[arg-type]
    obs_space = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float64)
    act_space = gym.spaces.Box(-1.0, 1.0, (ACT_DIM,), np.float32)
    agent = MAMLTRPO(config, obs_space, act_space)
    agent.policy.double()
    return agent


def packed(agent: MAMLTRPO, seed: int) -> TaskSteps:
    batch = make_batch(seed)
    return TaskSteps.pack(batch, agent.advantages(batch))


def task_columns(k: int) -> slice:
    return slice(k * E, (k + 1) * E)


def as_tasks(theta: dict) -> dict:
    return {n: v.unsqueeze(0).expand(K, *v.shape) for n, v in theta.items()}


def reference_inner_step(
    agent: MAMLTRPO,
    theta: dict,
    batch: EpisodeBatch,
    adv: torch.Tensor,
    create_graph: bool,
    lr: float | None = None,
) -> list[dict]:
    """Per-task inner steps (of ``adapt_lr`` unless ``lr``), one task at a time with
    torch.autograd.grad."""
    lr = agent.config.adapt_lr if lr is None else lr
    out = []
    for k in range(K):
        cols = task_columns(k)
        lp = agent.policy.log_prob(batch.obs[:, cols], batch.actions[:, cols], theta)
        mask = batch.valid[:, cols].double()
        loss = -(lp * adv[:, cols] * mask).sum() / mask.sum()
        grads = torch.autograd.grad(loss, list(theta.values()), create_graph=create_graph)
        out.append({n: p - lr * g for (n, p), g in zip(theta.items(), grads, strict=True)})
    return out


def reference_task_losses(
    agent: MAMLTRPO, adapted: list[dict], valid: EpisodeBatch, valid_adv: torch.Tensor, old: tuple
) -> torch.Tensor:
    """Each task's importance-weighted outer loss at its adapted parameters, one at a time."""
    losses = []
    for k in range(K):
        cols = task_columns(k)
        mean, log_std = agent.policy.functional(valid.obs[:, cols], adapted[k])
        lp = gaussian_log_prob(valid.actions[:, cols], mean, log_std)
        old_lp = gaussian_log_prob(valid.actions[:, cols], old[0][:, cols], old[1][:, cols])
        mask = valid.valid[:, cols].double()
        losses.append(-(torch.exp(lp - old_lp) * valid_adv[:, cols] * mask).sum() / mask.sum())
    return torch.stack(losses)


@dataclass
class Setup:
    agent: MAMLTRPO
    train: EpisodeBatch
    train_adv: torch.Tensor
    valid: EpisodeBatch
    valid_adv: torch.Tensor
    steps: TaskSteps
    valid_steps: TaskSteps
    old: tuple[torch.Tensor, torch.Tensor]
    """The sampling (adapted) policies on ``valid_steps.obs``, ``[K, N, act_dim]``."""
    old_time_major: tuple[torch.Tensor, torch.Tensor]
    """The same distributions in the sampler's ``[T, B, act_dim]`` layout."""

    def outer(self, theta: dict, create_graph: bool, train: list | None = None) -> tuple:
        lr = self.agent.config.adapt_lr
        train = [self.steps] if train is None else train
        return outer_loss(
            self.agent.policy, theta, train, self.valid_steps, self.old, lr, create_graph
        )


@pytest.fixture()
def setup() -> Setup:
    agent = make_agent()
    train, valid = make_batch(1), make_batch(2)
    train_adv, valid_adv = agent.advantages(train), agent.advantages(valid)
    steps, valid_steps = TaskSteps.pack(train, train_adv), TaskSteps.pack(valid, valid_adv)
    adapted = agent.adapt(agent.exploration_policy(K), train).params
    assert adapted is not None
    with torch.no_grad():
        old = agent.policy.per_task(adapted, valid_steps.obs)
        per_task = [
            agent.policy.functional(
                valid.obs[:, task_columns(k)], {n: v[k] for n, v in adapted.items()}
            )
            for k in range(K)
        ]
        old_time_major = (
            torch.cat([m for m, _ in per_task], dim=1),
            torch.cat([s for _, s in per_task], dim=1),
        )
    return Setup(agent, train, train_adv, valid, valid_adv, steps, valid_steps, old, old_time_major)


def moved(theta: dict, seed: int) -> dict:
    """``theta`` moved away from the sampling policies, so KL and ratios are not trivial."""
    gen = torch.Generator().manual_seed(seed)
    return {
        n: (p + 0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype)).detach().requires_grad_()
        for n, p in theta.items()
    }


def test_packing_keeps_each_tasks_valid_steps_in_order(setup: Setup) -> None:
    valid, adv, packed = setup.valid, setup.valid_adv, setup.valid_steps
    counts = valid.valid.reshape(T, K, E).sum(dim=(0, 2))
    # Padding is dropped: N is the most valid steps of any task.
    assert packed.obs.shape == (K, int(counts.max()), OBS_DIM)
    for k in range(K):
        cols = task_columns(k)
        mask = valid.valid[:, cols].T.reshape(-1)  # episode-major, as packed
        n = int(counts[k])
        torch.testing.assert_close(
            packed.obs[k, :n], valid.obs[:, cols].transpose(0, 1).reshape(-1, OBS_DIM)[mask]
        )
        torch.testing.assert_close(packed.advantages[k, :n], adv[:, cols].T.reshape(-1)[mask])
        assert torch.all(packed.weights[k, n:] == 0)
        # task_mean is the mean over the task's valid steps.
        expected = adv[:, cols][valid.valid[:, cols]].mean()
        torch.testing.assert_close(packed.task_mean(packed.advantages)[k], expected)


@pytest.mark.parametrize("chunk_steps", [0, 1])
def test_adapt_is_a_per_task_policy_gradient_step(chunk_steps: int) -> None:
    """Meta-test adaptation (in task groups or not) and the batched inner step against one
    autograd step per task; a second adaptation starts from the first one's constants."""
    agent = make_agent(cpu_chunk_steps=chunk_steps)
    first, second = make_batch(1), make_batch(3)
    theta = agent.policy.params()
    once = agent.adapt(agent.exploration_policy(K), first)
    reference = reference_inner_step(agent, theta, first, agent.advantages(first), False)
    batched = inner_step(agent.policy, as_tasks(theta), packed(agent, 1), agent.config.adapt_lr)
    assert once.params is not None
    for k in range(K):
        for name in theta:
            torch.testing.assert_close(
                once.params[name][k], reference[k][name], rtol=1e-10, atol=1e-12
            )
            torch.testing.assert_close(batched[name][k], reference[k][name], rtol=1e-10, atol=1e-12)
    # The step really moved every task, and differently; nothing keeps a graph.
    assert not torch.allclose(
        once.params["mean_net.0.weight"][0], once.params["mean_net.0.weight"][1]
    )
    assert all(not v.requires_grad for v in once.params.values())
    twice = agent.adapt(once, second, lr=0.05)
    assert twice.params is not None
    for k in range(K):
        start = {n: v[k].detach().requires_grad_() for n, v in once.params.items()}
        adv = agent.advantages(second)
        expected = reference_inner_step(agent, start, second, adv, False, lr=0.05)[k]
        for name in theta:
            torch.testing.assert_close(
                twice.params[name][k], expected[name], rtol=1e-10, atol=1e-12
            )
    with pytest.raises(ValueError, match="episodes of 3 tasks for a policy of 2"):
        agent.adapt(agent.exploration_policy(2), first)


def test_outer_loss_at_the_sampling_policies_has_zero_kl(setup: Setup) -> None:
    valid, valid_adv = setup.valid, setup.valid_adv
    loss, kl = setup.outer(setup.agent.policy.params(), True)
    assert kl.item() == pytest.approx(0.0, abs=1e-12)
    # ratio == 1: the loss is minus the mean advantage of each task, averaged over tasks.
    expected = -torch.stack(
        [valid_adv[:, task_columns(k)][valid.valid[:, task_columns(k)]].mean() for k in range(K)]
    ).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)


def test_second_order_meta_gradient_matches_autograd_and_finite_differences(setup: Setup) -> None:
    agent = setup.agent
    theta = agent.policy.params()
    grad = torch.autograd.grad(setup.outer(theta, True)[0], list(theta.values()))
    adapted = reference_inner_step(agent, theta, setup.train, setup.train_adv, True)
    ref_loss = reference_task_losses(
        agent, adapted, setup.valid, setup.valid_adv, setup.old_time_major
    ).mean()
    ref_grad = torch.autograd.grad(ref_loss, list(theta.values()))
    for g, r in zip(grad, ref_grad, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-11)

    # Central finite differences along random directions, in float64.
    flat = torch.cat([g.reshape(-1) for g in grad])
    gen = torch.Generator().manual_seed(3)
    eps = 1e-6
    for _ in range(3):
        direction = torch.randn(flat.numel(), generator=gen, dtype=torch.float64)
        chunks = torch.split(direction, [p.numel() for p in theta.values()])
        plus = {
            n: (p + eps * c.view_as(p)).detach().requires_grad_(True)
            for (n, p), c in zip(theta.items(), chunks, strict=True)
        }
        minus = {
            n: (p - eps * c.view_as(p)).detach().requires_grad_(True)
            for (n, p), c in zip(theta.items(), chunks, strict=True)
        }
        fd = (setup.outer(plus, True)[0].item() - setup.outer(minus, True)[0].item()) / (2 * eps)
        assert float(flat @ direction) == pytest.approx(fd, rel=1e-5, abs=1e-8)


def test_first_order_gradient_is_gradient_at_adapted_parameters(setup: Setup) -> None:
    agent = setup.agent
    theta = agent.policy.params()
    first_order = torch.autograd.grad(setup.outer(theta, False)[0], list(theta.values()))
    # Reference: d loss / d theta_k evaluated at the (constant) adapted parameters, summed over k.
    adapted = reference_inner_step(agent, theta, setup.train, setup.train_adv, False)
    leaves = [{n: v.detach().requires_grad_(True) for n, v in a.items()} for a in adapted]
    total = reference_task_losses(
        agent, leaves, setup.valid, setup.valid_adv, setup.old_time_major
    ).mean()
    per_task = [
        torch.autograd.grad(total, list(leaf.values()), retain_graph=True) for leaf in leaves
    ]
    for i, g in enumerate(first_order):
        torch.testing.assert_close(g, sum(pt[i] for pt in per_task), rtol=1e-10, atol=1e-12)
    # And it differs from the second-order gradient (the inner Hessian term is real).
    second = torch.autograd.grad(setup.outer(theta, True)[0], list(theta.values()))
    pairs = zip(first_order, second, strict=True)
    assert any(not torch.allclose(a, b, atol=1e-8) for a, b in pairs)


def test_config_rejects_impossible_values() -> None:
    for bad in (
        {"max_kl": 0.0},
        {"meta_batch_size": 0},
        {"adapt_lr": -1.0},
        {"ls_backtrack_ratio": 1.0},
        {"hidden_sizes": ()},
        {"policy_init": "he"},
    ):
        with pytest.raises(ValueError, match="MAMLTRPOConfig"):
            MAMLTRPOConfig(**bad)  # type: ignore[arg-type]


def test_policy_init_reaches_the_policy() -> None:
    biases = [
        p for n, p in make_agent(policy_init="xavier").policy.named_parameters() if "bias" in n
    ]
    assert biases and all(bool((b == 0).all()) for b in biases)
    assert not all(
        bool((b == 0).all()) for n, b in make_agent().policy.named_parameters() if "bias" in n
    )


def objectives(
    agent: MAMLTRPO, train: list[TaskSteps], valid: TaskSteps
) -> tuple[WrittenOutMetaObjective, AutogradMetaObjective]:
    """The written-out kernel and the autograd reference, through ``train`` and ``valid``."""
    cfg = agent.config
    score = partial(outer_loss, agent.policy, lr=cfg.adapt_lr, create_graph=False)
    kernel = written_out_meta_objective(
        agent.policy, cfg.adapt_lr, cfg.first_order, cfg.cpu_chunk_steps, score
    )
    assert isinstance(kernel, WrittenOutMetaObjective)
    reference = AutogradMetaObjective(agent.policy, cfg.adapt_lr, cfg.first_order)
    objective: MetaObjective
    for objective in (kernel, reference):
        for steps in train:
            objective.adapt(steps)
        objective.attach(valid)
    return kernel, reference


def test_the_curvature_kl_is_zero_with_zero_gradient_at_theta(setup: Setup) -> None:
    """The KL whose Hessian TRPO's curvature is: zero at the current theta, with zero gradient
    (the adapted policies there are the sampling ones), and its Hessian positive semidefinite."""
    agent = setup.agent
    reference = objectives(agent, [setup.steps], setup.valid_steps)[1]
    theta = agent.policy.params()
    loss, kl = reference.loss_and_kl(theta)
    assert kl.item() == pytest.approx(0.0, abs=1e-12)
    assert loss.item() == pytest.approx(setup.outer(theta, True)[0].item(), abs=1e-12)
    (grad,) = torch.autograd.grad(setup.outer(theta, True)[1], [theta["log_std"]])
    assert grad.abs().max().item() < 1e-10
    hvp = reference.kl_hvp(0.0)
    n = sum(p.numel() for p in theta.values())
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        v = torch.randn(n, generator=gen, dtype=torch.float64)
        assert float(v @ hvp(v)) >= -1e-10


@pytest.mark.parametrize("chunk_steps", [0, 44])
@pytest.mark.parametrize(
    ("activation", "num_steps", "first_order"),
    [
        ("tanh", 1, False),
        ("relu", 1, False),
        ("elu", 1, False),
        ("tanh", 2, False),
        ("tanh", 1, True),
        ("tanh", 2, True),
    ],
)
def test_written_out_kernel_equals_the_autograd_reference(
    setup: Setup, chunk_steps: int, activation: str, num_steps: int, first_order: bool
) -> None:
    """Everything training reads of the kernel (adapted parameters, sampling distributions,
    meta-gradient, the KL's curvature products ``mean_k J_k^T F_k J_k``, the line search's loss
    and KL) equals the autograd reference (``J = I`` first order), in one task group or two."""
    agent = make_agent(cpu_chunk_steps=chunk_steps, activation=activation, first_order=first_order)
    train = [setup.steps, packed(agent, 3)][:num_steps]
    kernel, reference = objectives(agent, train, setup.valid_steps)
    assert len(kernel.groups) == (1 if chunk_steps == 0 else 2)
    for name, value in reference.adapted.items():
        torch.testing.assert_close(kernel.adapted[name], value, rtol=1e-12, atol=1e-14)
    for a, b in zip(
        kernel.attach(setup.valid_steps), reference.attach(setup.valid_steps), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    theta = agent.policy.params()
    loss, kl = kernel.loss_and_kl(theta)
    assert kl.item() == pytest.approx(0.0, abs=1e-12)
    assert loss.item() == pytest.approx(
        -setup.valid_steps.task_mean(setup.valid_steps.advantages).mean().item(), abs=1e-12
    )
    torch.testing.assert_close(
        kernel.meta_gradient(), reference.meta_gradient(), rtol=1e-10, atol=1e-12
    )
    written_out, autograd = kernel.kl_hvp(0.1), reference.kl_hvp(0.1)
    gen = torch.Generator().manual_seed(4)
    for _ in range(3):
        v = torch.randn(flatten_params(theta).numel(), generator=gen, dtype=torch.float64)
        torch.testing.assert_close(written_out(v), autograd(v), rtol=1e-9, atol=1e-11)
    away = moved(theta, 5)
    for a, b in zip(kernel.loss_and_kl(away), reference.loss_and_kl(away), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert kernel.loss_and_kl(away)[1].item() > 1e-4


@pytest.mark.parametrize(("chunk_steps", "groups"), [(0, 1), (1, K), (44, 2)])
def test_task_groups_change_nothing_but_rounding(
    setup: Setup, chunk_steps: int, groups: int
) -> None:
    """Every pass of the kernel run over groups of tasks (``cpu_chunk_steps``; 11 valid steps in
    the longest task of each batch, 22 per task) gives what one pass over all tasks gives."""
    grouped, whole = (
        objectives(make_agent(cpu_chunk_steps=c), [setup.steps], setup.valid_steps)[0]
        for c in (chunk_steps, 0)
    )
    assert len(grouped.groups) == groups and len(whole.groups) == 1
    for name, value in whole.adapted.items():
        torch.testing.assert_close(grouped.adapted[name], value, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(
        grouped.meta_gradient(), whole.meta_gradient(), rtol=1e-10, atol=1e-12
    )
    theta = setup.agent.policy.params()
    gen = torch.Generator().manual_seed(5)
    for _ in range(2):
        v = torch.randn(flatten_params(theta).numel(), generator=gen, dtype=torch.float64)
        torch.testing.assert_close(
            grouped.kl_hvp(0.1)(v), whole.kl_hvp(0.1)(v), rtol=1e-10, atol=1e-12
        )
    away = moved(theta, 5)
    loss, kl = setup.outer(away, False)
    assert kl.item() > 1e-4
    group_loss, group_kl = grouped.loss_and_kl(away)
    torch.testing.assert_close(group_loss, loss.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(group_kl, kl.detach(), rtol=1e-12, atol=1e-14)


def test_groups_on_several_threads_give_the_one_thread_numbers(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With several torch threads the task groups run side by side, one pool thread each: the
    inner step, the outer gradient, the curvature products and the line search's loss and KL
    are then bit for bit what one thread computes, and the thread count is restored."""
    threads_seen: set[str] = set()
    fvp = curvature.FisherProduct.fvp

    def recorded(self: curvature.FisherProduct, v: dict) -> dict:
        threads_seen.add(threading.current_thread().name)
        return fvp(self, v)

    monkeypatch.setattr(curvature.FisherProduct, "fvp", recorded)
    agent = make_agent(cpu_chunk_steps=1)  # a group per task
    theta = agent.policy.params()
    away = {n: (p + 0.1).detach().requires_grad_(True) for n, p in theta.items()}
    v = torch.linspace(-1.0, 1.0, flatten_params(theta).numel(), dtype=torch.float64)

    def passes() -> list[torch.Tensor]:
        kernel = objectives(agent, [setup.steps], setup.valid_steps)[0]
        assert len(kernel.groups) == K
        return [
            *kernel.adapted.values(),
            kernel.meta_gradient(),
            kernel.kl_hvp(0.1)(v),
            *kernel.loss_and_kl(away),
        ]

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = passes()
        assert threads_seen == {threading.current_thread().name}
        threads_seen.clear()
        torch.set_num_threads(3)
        several = passes()
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)
    assert threads_seen and all(name.startswith("metarl-group") for name in threads_seen)
    for a, b in zip(one, several, strict=True):
        assert torch.equal(a, b)


def test_two_inner_steps_meta_gradient_matches_finite_differences(setup: Setup) -> None:
    """Two inner steps (the second on fresh episodes, from the first step's result): the
    written-out second-order gradient (two task groups) against central differences."""
    agent = make_agent(cpu_chunk_steps=44)
    train = [setup.steps, packed(agent, 3)]
    kernel = objectives(agent, train, setup.valid_steps)[0]
    grad = kernel.meta_gradient()
    theta = agent.policy.params()
    gen = torch.Generator().manual_seed(6)
    eps = 1e-6
    for _ in range(2):
        direction = torch.randn(grad.numel(), generator=gen, dtype=torch.float64)
        chunks = torch.split(direction, [p.numel() for p in theta.values()])

        def at(sign: float, chunks: tuple[torch.Tensor, ...] = chunks) -> float:
            moved = {
                n: (p + sign * eps * c.view_as(p)).detach().requires_grad_(True)
                for (n, p), c in zip(theta.items(), chunks, strict=True)
            }
            return kernel.loss_and_kl(moved)[0].item()

        fd = (at(1.0) - at(-1.0)) / (2 * eps)
        assert float(grad @ direction) == pytest.approx(fd, rel=1e-5, abs=1e-8)
    # The two-step gradient is not the one-step one.
    one_step = flat_grad(setup.outer(theta, True)[0], theta)
    assert not torch.allclose(one_step, grad)


def test_an_activation_without_a_written_out_kernel_takes_the_autograd_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The kernel writes out tanh, relu and elu only; any other activation of the policy trains
    by the autograd reference, within the trust region."""
    from metarl import policies
    from metarl.activations import Activation
    from metarl.envs import FamilyTaskSampler, make_family
    from metarl.sampling import make_sampler

    monkeypatch.setitem(policies.ACTIVATIONS, "softplus", Activation(torch.nn.Softplus))
    config = MAMLTRPOConfig(
        meta_batch_size=2, episodes_per_task=2, hidden_sizes=(8,), activation="softplus"
    )
    family = make_family("Point2DNav")
    source = FamilyTaskSampler(family)
    agent = MAMLTRPO(config, family.observation_space, family.action_space)
    score = partial(outer_loss, agent.policy, lr=0.1, create_graph=False)
    assert written_out_meta_objective(agent.policy, 0.1, False, 0, score) is None
    before = flatten_params(agent.policy.params()).detach().clone()
    rng = np.random.default_rng(0)
    with make_sampler(source, agent.policy, horizon=10) as sampler:
        metrics = agent.train_step(sampler, source.sample(2, rng), rng)
    assert metrics["trpo/nonfinite"] == 0.0 and metrics["trpo/accepted"] == 1.0
    assert 0.0 < metrics["trpo/kl"] <= config.max_kl * 1.0001
    assert not torch.equal(flatten_params(agent.policy.params()), before)
