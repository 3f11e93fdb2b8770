"""MAML-TRPO's inner step and meta-gradient against plain autograd and finite differences."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pytest
import torch

from metarl.agents import MAMLTRPO, MAMLTRPOConfig
from metarl.agents.maml_trpo import TaskSteps
from metarl.policies import gaussian_log_prob
from metarl.sampling.batch import EpisodeBatch

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


def task_columns(k: int) -> slice:
    return slice(k * E, (k + 1) * E)


def reference_inner_step(
    agent: MAMLTRPO, theta: dict, batch: EpisodeBatch, adv: torch.Tensor, create_graph: bool
) -> list[dict]:
    """Per-task inner steps, one task at a time with torch.autograd.grad."""
    out = []
    for k in range(K):
        cols = task_columns(k)
        lp = agent.policy.log_prob(batch.obs[:, cols], batch.actions[:, cols], theta)
        mask = batch.valid[:, cols].double()
        loss = -(lp * adv[:, cols] * mask).sum() / mask.sum()
        grads = torch.autograd.grad(loss, list(theta.values()), create_graph=create_graph)
        lr = agent.config.adapt_lr
        out.append({n: p - lr * g for (n, p), g in zip(theta.items(), grads, strict=True)})
    return out


def reference_outer_loss(
    agent: MAMLTRPO,
    theta: dict,
    train: EpisodeBatch,
    train_adv: torch.Tensor,
    valid: EpisodeBatch,
    valid_adv: torch.Tensor,
    old: tuple,
    create_graph: bool,
) -> torch.Tensor:
    adapted = reference_inner_step(agent, theta, train, train_adv, create_graph)
    losses = []
    for k in range(K):
        cols = task_columns(k)
        mean, log_std = agent.policy.functional(valid.obs[:, cols], adapted[k])
        lp = gaussian_log_prob(valid.actions[:, cols], mean, log_std)
        old_lp = gaussian_log_prob(valid.actions[:, cols], old[0][:, cols], old[1][:, cols])
        mask = valid.valid[:, cols].double()
        losses.append(-(torch.exp(lp - old_lp) * valid_adv[:, cols] * mask).sum() / mask.sum())
    return torch.stack(losses).mean()


def reference_curvature_kl(
    agent: MAMLTRPO, train: list[TaskSteps], valid: TaskSteps, create_graph: bool
) -> Callable[[dict], torch.Tensor]:
    """``theta -> mean KL`` whose Hessian TRPO's curvature is: the adapted policies on
    ``train`` at the current ``theta`` against those at ``theta`` (autograd throughout)."""
    K = valid.num_tasks
    theta = {k: v.detach().requires_grad_(True) for k, v in agent.policy.params().items()}
    current = agent._adapt_all(agent._theta_as_tasks(theta, K), train, False)
    with torch.no_grad():
        old = agent._distribution(agent._detached(current), valid.obs)
    return lambda p: agent.meta_objective(p, train, valid, old, create_graph)[1]


def sampling_distribution(agent: MAMLTRPO, adapted: dict, valid: TaskSteps) -> tuple:
    with torch.no_grad():
        return agent._distribution(agent._detached(adapted), valid.obs)


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


@pytest.fixture()
def setup() -> Setup:
    agent = make_agent()
    train, valid = make_batch(1), make_batch(2)
    train_adv, valid_adv = agent._advantages(train), agent._advantages(valid)
    steps, valid_steps = TaskSteps.pack(train, train_adv), TaskSteps.pack(valid, valid_adv)
    theta = agent.policy.params()
    adapted = agent._detached(
        agent._inner_step(agent._theta_as_tasks(theta, K), steps, agent.config.adapt_lr, False)
    )
    with torch.no_grad():
        old = agent._distribution(adapted, valid_steps.obs)
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


def test_inner_step_equals_per_task_autograd(setup: Setup) -> None:
    agent = setup.agent
    theta = agent.policy.params()
    batched = agent._inner_step(
        agent._theta_as_tasks(theta, K), setup.steps, agent.config.adapt_lr, False
    )
    reference = reference_inner_step(agent, theta, setup.train, setup.train_adv, False)
    for k in range(K):
        for name in theta:
            torch.testing.assert_close(batched[name][k], reference[k][name], rtol=1e-10, atol=1e-12)
    # The step really moved every task, and differently.
    assert not torch.allclose(batched["mean_net.0.weight"][0], batched["mean_net.0.weight"][1])


def test_objective_at_sampling_policy_has_zero_kl(setup: Setup) -> None:
    agent, valid, valid_adv = setup.agent, setup.valid, setup.valid_adv
    theta = agent.policy.params()
    loss, kl = agent.meta_objective(theta, [setup.steps], setup.valid_steps, setup.old, True)
    assert kl.item() == pytest.approx(0.0, abs=1e-12)
    # ratio == 1: the loss is minus the mean advantage of each task, averaged over tasks.
    expected = -torch.stack(
        [valid_adv[:, task_columns(k)][valid.valid[:, task_columns(k)]].mean() for k in range(K)]
    ).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)


def objective(s: Setup, theta: dict, create_graph: bool) -> torch.Tensor:
    return s.agent.meta_objective(theta, [s.steps], s.valid_steps, s.old, create_graph)[0]


def test_second_order_meta_gradient_matches_autograd_and_finite_differences(setup: Setup) -> None:
    agent = setup.agent
    theta = agent.policy.params()
    loss = objective(setup, theta, True)
    grad = torch.autograd.grad(loss, list(theta.values()))
    ref_loss = reference_outer_loss(
        agent,
        theta,
        setup.train,
        setup.train_adv,
        setup.valid,
        setup.valid_adv,
        setup.old_time_major,
        True,
    )
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
        fd = (objective(setup, plus, True).item() - objective(setup, minus, True).item()) / (
            2 * eps
        )
        assert float(flat @ direction) == pytest.approx(fd, rel=1e-5, abs=1e-8)


def test_first_order_gradient_is_gradient_at_adapted_parameters(setup: Setup) -> None:
    agent, valid, valid_adv = setup.agent, setup.valid, setup.valid_adv
    old = setup.old_time_major
    theta = agent.policy.params()
    first_order = torch.autograd.grad(objective(setup, theta, False), list(theta.values()))
    # Reference: d loss / d theta_k evaluated at the (constant) adapted parameters, summed over k.
    adapted = reference_inner_step(agent, theta, setup.train, setup.train_adv, False)
    leaves = [{n: v.detach().requires_grad_(True) for n, v in a.items()} for a in adapted]
    losses = []
    for k in range(K):
        cols = task_columns(k)
        mean, log_std = agent.policy.functional(valid.obs[:, cols], leaves[k])
        lp = gaussian_log_prob(valid.actions[:, cols], mean, log_std)
        old_lp = gaussian_log_prob(valid.actions[:, cols], old[0][:, cols], old[1][:, cols])
        mask = valid.valid[:, cols].double()
        losses.append(-(torch.exp(lp - old_lp) * valid_adv[:, cols] * mask).sum() / mask.sum())
    total = torch.stack(losses).mean()
    per_task = [
        torch.autograd.grad(total, list(leaf.values()), retain_graph=True) for leaf in leaves
    ]
    for i, g in enumerate(first_order):
        torch.testing.assert_close(g, sum(pt[i] for pt in per_task), rtol=1e-10, atol=1e-12)
    # And it differs from the second-order gradient (the inner Hessian term is real).
    second = torch.autograd.grad(objective(setup, theta, True), list(theta.values()))
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


def test_paper_preset_follows_the_result_files() -> None:
    # The paper's result files: HalfCheetahDir took max KL 0.02 (mlr0.02), the others 0.01.
    assert MAMLTRPO.preset("paper", "HalfCheetahDir").max_kl == 0.02
    assert MAMLTRPO.preset("paper", "HalfCheetahVel").max_kl == 0.01


def test_the_curvature_kl_is_zero_with_zero_gradient_at_theta(setup: Setup) -> None:
    agent = setup.agent
    theta = agent.policy.params()
    kl = reference_curvature_kl(agent, [setup.steps], setup.valid_steps, True)
    # The curvature KL is the training KL itself.
    assert kl(theta).item() == pytest.approx(
        agent.meta_objective(theta, [setup.steps], setup.valid_steps, setup.old, True)[1].item(),
        abs=1e-12,
    )
    value = kl(theta)
    assert value.item() == pytest.approx(0.0, abs=1e-12)
    (grad,) = torch.autograd.grad(value, [theta["log_std"]], create_graph=True)
    assert grad.abs().max().item() < 1e-10
    # Its Hessian is positive semi-definite along random directions.
    from metarl.optim import hessian_vector_product

    hvp = hessian_vector_product(kl, theta, 0.0)
    n = sum(p.numel() for p in theta.values())
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        v = torch.randn(n, generator=gen, dtype=torch.float64)
        assert float(v @ hvp(v)) >= -1e-10


@pytest.mark.parametrize(
    ("num_steps", "first_order"), [(1, False), (2, False), (2, True), (1, True)]
)
def test_written_out_curvature_equals_the_double_backward_hessian(
    num_steps: int, first_order: bool
) -> None:
    """``mean_k J_k^T F_k J_k`` as _InnerSteps writes it out, against autograd's Hessian of the
    KL through the inner steps (``J = I`` first order)."""
    from metarl.optim import hessian_vector_product

    agent = make_agent(num_adapt_steps=num_steps, first_order=first_order)
    batches = [make_batch(seed) for seed in (1, 3)[:num_steps]]
    *train, valid = [TaskSteps.pack(b, agent._advantages(b)) for b in [*batches, make_batch(2)]]
    reference = hessian_vector_product(
        reference_curvature_kl(agent, train, valid, not first_order),
        agent.policy.params(),
        0.1,
    )
    written_out = agent._inner_steps(train, valid).hvp(0.1)
    n = sum(p.numel() for p in agent.policy.params().values())
    gen = torch.Generator().manual_seed(4)
    for _ in range(3):
        v = torch.randn(n, generator=gen, dtype=torch.float64)
        torch.testing.assert_close(written_out(v), reference(v), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize(("chunk_steps", "groups"), [(0, 1), (1, K), (44, 2)])
def test_task_groups_change_nothing_but_rounding(
    setup: Setup, chunk_steps: int, groups: int
) -> None:
    """Every pass run over groups of tasks (``cpu_chunk_steps``) gives what one pass over all
    tasks gives: meta-test inner steps, the line search's outer loss and KL, the cached inner
    step, outer gradient and curvature products."""
    agent = make_agent(cpu_chunk_steps=chunk_steps)
    one_pass = make_agent(cpu_chunk_steps=0)
    steps, valid = setup.steps, setup.valid_steps
    # 11 valid steps in the longest task of each batch: 22 per task for the outer passes.
    assert len(agent._task_groups(steps, valid)) == groups
    theta = agent.policy.params()
    start = agent._theta_as_tasks(theta, K)
    adapted = agent._adapted(start, steps, 0.3)
    expected = agent._inner_step(start, steps, 0.3, False)
    for name in theta:
        torch.testing.assert_close(adapted[name], expected[name].detach(), rtol=1e-12, atol=1e-14)
    old = sampling_distribution(agent, adapted, valid)
    torch.testing.assert_close(old[0], setup.old[0], rtol=1e-12, atol=1e-14)

    # Away from the sampling policies, so that the KL and the ratios are not trivial.
    gen = torch.Generator().manual_seed(5)
    moved = {
        n: (p + 0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        .detach()
        .requires_grad_(True)
        for n, p in theta.items()
    }
    loss, kl = agent.meta_objective(moved, [steps], valid, old, False)
    assert kl.item() > 1e-4
    group_loss, group_kl = agent._outer_by_groups(moved, [steps], valid, old)
    torch.testing.assert_close(group_loss, loss.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(group_kl, kl.detach(), rtol=1e-12, atol=1e-14)

    grouped, whole = agent._inner_steps([steps], valid), one_pass._inner_steps([steps], valid)
    assert len(grouped.groups) == groups and len(whole.groups) == 1
    for name in theta:
        torch.testing.assert_close(
            grouped.adapted[name], whole.adapted[name], rtol=1e-12, atol=1e-14
        )
    torch.testing.assert_close(
        grouped.meta_gradient(), whole.meta_gradient(), rtol=1e-10, atol=1e-12
    )
    n = sum(p.numel() for p in theta.values())
    for _ in range(2):
        v = torch.randn(n, generator=gen, dtype=torch.float64)
        torch.testing.assert_close(grouped.hvp(0.1)(v), whole.hvp(0.1)(v), rtol=1e-10, atol=1e-12)


def test_groups_on_several_threads_give_the_one_thread_numbers(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With several torch threads the task groups run side by side, one pool thread each: the
    inner step, the outer gradient, the curvature products and the line search's loss and KL
    are then bit for bit what one thread computes, and the thread count is restored."""
    import threading

    from metarl.agents import maml_trpo

    threads_seen: set[str] = set()

    class Recorded(maml_trpo.FisherProduct):
        def fvp(self, v: dict) -> dict:
            threads_seen.add(threading.current_thread().name)
            return super().fvp(v)

    monkeypatch.setattr(maml_trpo, "FisherProduct", Recorded)
    agent = make_agent(cpu_chunk_steps=1)  # a group per task
    steps, valid = setup.steps, setup.valid_steps
    theta = agent.policy.params()
    moved = {n: (p + 0.1).detach().requires_grad_(True) for n, p in theta.items()}
    v = torch.linspace(-1.0, 1.0, sum(p.numel() for p in theta.values()), dtype=torch.float64)

    def passes() -> list[torch.Tensor]:
        inner = agent._inner_steps([steps], valid)
        assert len(inner.groups) == K
        return [
            *inner.adapted.values(),
            inner.meta_gradient(),
            inner.hvp(0.1)(v),
            *agent._outer_by_groups(moved, [steps], valid, setup.old),
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


@pytest.mark.parametrize("chunk_steps", [0, 44])
@pytest.mark.parametrize(
    ("activation", "num_steps", "first_order"),
    [("tanh", 1, False), ("relu", 1, False), ("tanh", 2, False), ("tanh", 2, True)],
)
def test_cached_inner_steps_give_what_autograd_gives(
    setup: Setup, chunk_steps: int, activation: str, num_steps: int, first_order: bool
) -> None:
    """What training reads from the cached inner steps (adapted parameters, sampling
    distributions, outer loss and meta-gradient at theta) equals the autograd path."""
    from metarl.optim import flat_grad

    agent = make_agent(cpu_chunk_steps=chunk_steps, activation=activation, first_order=first_order)
    second = TaskSteps.pack(make_batch(3), agent._advantages(make_batch(3)))
    train, valid = [setup.steps, second][:num_steps], setup.valid_steps
    inner = agent._inner_steps(train)
    assert len(inner.groups) == (1 if chunk_steps == 0 else 2)
    theta = agent.policy.params()
    expected = agent._adapt_all(agent._theta_as_tasks(theta, K), train, False)
    for name in theta:
        torch.testing.assert_close(
            inner.adapted[name], expected[name].detach(), rtol=1e-12, atol=1e-14
        )
    mean, log_std = inner.attach(valid)
    old = sampling_distribution(agent, expected, valid)
    torch.testing.assert_close(mean, old[0], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(log_std, old[1], rtol=1e-12, atol=1e-14)
    loss, kl = agent.meta_objective(theta, train, valid, old, not first_order)
    assert kl.item() == pytest.approx(0.0, abs=1e-12)
    assert loss.item() == pytest.approx(-valid.task_mean(valid.advantages).mean().item(), abs=1e-12)
    torch.testing.assert_close(
        inner.meta_gradient(), flat_grad(loss, theta), rtol=1e-10, atol=1e-12
    )


def test_two_inner_steps_meta_gradient_matches_finite_differences(setup: Setup) -> None:
    """Two inner steps (the second on fresh episodes, from the first step's result): the
    written-out second-order gradient (two task groups) against central differences."""
    from metarl.optim import flat_grad

    agent = make_agent(cpu_chunk_steps=44)
    second = TaskSteps.pack(make_batch(3), agent._advantages(make_batch(3)))
    train = [setup.steps, second]
    theta = agent.policy.params()
    inner = agent._inner_steps(train)
    old = inner.attach(setup.valid_steps)
    grad = inner.meta_gradient()
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
            return agent.meta_objective(moved, train, setup.valid_steps, old, False)[0].item()

        fd = (at(1.0) - at(-1.0)) / (2 * eps)
        assert float(grad @ direction) == pytest.approx(fd, rel=1e-5, abs=1e-8)
    # The two-step gradient is not the one-step one.
    one_step = flat_grad(
        agent.meta_objective(theta, [setup.steps], setup.valid_steps, old, True)[0], theta
    )
    assert not torch.allclose(one_step, grad)
