"""Reptile-PPO: the Reptile step in closed form, PPO's loss by hand, batched == sequential PPO,
learning on Point2DNav, exact resume, and errors for bad input."""

from __future__ import annotations

import copy
import csv
import math
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from metarl.advantages import gae, normalize_advantages
from metarl.agents import AGENTS, ReptilePPO, ReptilePPOConfig
from metarl.agents.reptile_ppo import meta_lr_at, reptile_update
from metarl.launch import launch
from metarl.optim import BatchedAdam
from metarl.policies import gaussian_entropy, gaussian_log_prob
from metarl.ppo import (
    clip_grad_norm_per_task,
    clipped_surrogate,
    entropy_bonus,
    minibatch_plan,
    value_loss,
)
from metarl.runs import latest_checkpoint, load_checkpoint
from metarl.sampling.batch import EpisodeBatch
from metarl.tasks import Task
from metarl.train import RunArgs

OBS_DIM, ACT_DIM, T, K, E = 3, 2, 6, 3, 2


def make_batch(seed: int, dtype: torch.dtype = torch.float64) -> EpisodeBatch:
    """A real-shaped episode batch: padded episodes, one terminated, the others truncated."""
    g = torch.Generator().manual_seed(seed)
    B = K * E
    lengths = torch.tensor([6, 4, 5, 6, 2, 3])
    valid = torch.arange(T).unsqueeze(1) < lengths.unsqueeze(0)
    last = valid & (torch.arange(T).unsqueeze(1) == lengths - 1)
    terminated = last & (torch.arange(B) == 1)
    obs = torch.randn(T, B, OBS_DIM, generator=g, dtype=dtype) * valid.unsqueeze(-1)
    actions = torch.randn(T, B, ACT_DIM, generator=g, dtype=dtype) * valid.unsqueeze(-1)
    rewards = torch.randn(T, B, generator=g, dtype=dtype) * valid
    return EpisodeBatch(
        obs=obs,
        actions=actions,
        rewards=rewards,
        log_probs=torch.zeros(T, B, dtype=dtype),
        terminated=terminated,
        truncated=last & ~terminated,
        valid=valid,
        episode_id=torch.zeros(T, B, dtype=torch.long),
        episode_start=torch.arange(T).unsqueeze(1).expand(T, B) == 0,
        last_obs=torch.randn(B, OBS_DIM, generator=g, dtype=dtype),
        task_index=torch.arange(K).repeat_interleave(E),
        episode_index=torch.arange(E).repeat(K),
        returns=rewards.sum(0),
        lengths=lengths,
        unstable=torch.zeros(B, dtype=torch.bool),
        episode_returns=rewards.sum(0).unsqueeze(1),
        episode_lengths=lengths.unsqueeze(1),
        tasks=[Task(goal=[0.1 * k, 0.0]) for k in range(K)],
        num_tasks=K,
        episodes_per_task=E,
    )


def make_agent(**overrides: object) -> ReptilePPO:
    torch.manual_seed(0)
    settings: dict[str, object] = {
        "hidden_sizes": (5,),
        "value_hidden_sizes": (4,),
        "update_epochs": 2,
        "num_minibatches": 3,
        "adapt_lr": 0.01,
        **overrides,
    }
    config = ReptilePPOConfig(**settings)  # type: ignore[arg-type]
    obs_space = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float64)
    act_space = gym.spaces.Box(-1.0, 1.0, (ACT_DIM,), np.float32)
    agent = ReptilePPO(config, obs_space, act_space)
    agent.policy.double()
    agent.value.double()
    return agent


# -- the Reptile step ------------------------------------------------------------------------
def test_reptile_update_moves_theta_toward_the_mean_of_the_adapted_sets() -> None:
    theta = {"w": torch.tensor([1.0, -2.0]), "b": torch.tensor(3.0)}
    adapted = {"w": torch.tensor([[2.0, 0.0], [4.0, -4.0]]), "b": torch.tensor([1.0, 2.0])}
    new = reptile_update(theta, adapted, 0.25)
    # mean w = (3, -2), mean b = 1.5
    torch.testing.assert_close(new["w"], torch.tensor([1.5, -2.0]))
    torch.testing.assert_close(new["b"], torch.tensor(3.0 - 0.375))
    full = reptile_update(theta, adapted, 1.0)
    torch.testing.assert_close(full["w"], torch.tensor([3.0, -2.0]))
    with pytest.raises(ValueError, match="shape"):
        reptile_update(theta, {"w": adapted["w"][0], "b": adapted["b"]}, 0.5)


def test_reptile_with_sgd_on_quadratics_converges_to_the_closed_form_fixed_point() -> None:
    """Tasks ``L_k(x) = a_k / 2 * ||x - c_k||^2``, ``n`` SGD steps of size ``alpha``.

    Then ``x_k = c_k + (1 - alpha a_k)^n (x - c_k)`` and Reptile's fixed point is the average
    of the optima weighted by ``w_k = 1 - (1 - alpha a_k)^n``.
    """
    a = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    c = torch.tensor([[1.0, -1.0], [3.0, 0.0], [-2.0, 4.0]], dtype=torch.float64)
    alpha, n, eps = 0.1, 3, 0.5
    theta = {"x": torch.zeros(2, dtype=torch.float64)}
    for _ in range(300):
        x = theta["x"].expand(3, 2).clone().requires_grad_(True)
        for _ in range(n):
            loss = (0.5 * a * (x - c).pow(2).sum(1)).sum()
            (grad,) = torch.autograd.grad(loss, x)
            x = (x - alpha * grad).detach().requires_grad_(True)
        # One meta-iteration matches the closed form exactly.
        closed = c + ((1 - alpha * a) ** n).unsqueeze(1) * (theta["x"] - c)
        torch.testing.assert_close(x.detach(), closed)
        theta = reptile_update(theta, {"x": x.detach()}, eps)
    w = 1 - (1 - alpha * a) ** n
    fixed = (w.unsqueeze(1) * c).sum(0) / w.sum()
    torch.testing.assert_close(theta["x"], fixed, atol=1e-10, rtol=0)


def test_meta_lr_anneals_linearly_to_the_floor() -> None:
    assert meta_lr_at(0, 10, 1.0, 0.0) == 1.0
    assert meta_lr_at(5, 10, 1.0, 0.0) == pytest.approx(0.5)
    assert meta_lr_at(9, 10, 1.0, 0.2) == pytest.approx(0.28)
    assert meta_lr_at(10, 10, 1.0, 0.2) == pytest.approx(0.2)
    assert meta_lr_at(50, 10, 1.0, 0.2) == pytest.approx(0.2)


# -- PPO's loss by hand ----------------------------------------------------------------------
def test_ppo_loss_equals_hand_computed_values() -> None:
    agent = make_agent(vf_coef=0.5, ent_coef=0.01, clip_coef=0.2, init_std=0.5)
    theta = {k: v.detach() for k, v in agent.meta_params().items()}
    n = 5
    g = torch.Generator().manual_seed(3)
    obs = torch.randn(n, OBS_DIM, generator=g, dtype=torch.float64)
    actions = torch.randn(n, ACT_DIM, generator=g, dtype=torch.float64)
    with torch.no_grad():
        mean, log_std = agent.policy(obs)
        values = agent.value(obs)
    log_prob = gaussian_log_prob(actions, mean, log_std)
    ratios = torch.tensor([1.5, 0.5, 1.1, 0.7, 9.0], dtype=torch.float64)
    old_log_prob = log_prob - ratios.log()
    advantages = torch.tensor([1.0, 1.0, -1.0, -1.0, math.nan], dtype=torch.float64)
    returns = values + torch.tensor([1.0, -2.0, 0.0, 3.0, math.nan], dtype=torch.float64)
    mask = torch.tensor([True, True, True, True, False])  # the last step is padding
    loss, metrics = agent.ppo_loss(
        theta, obs, actions, old_log_prob, advantages, returns, values, mask
    )
    # min(rA, clip(r)A): 1.2, 0.5, -1.1, -0.8 -> mean -0.05
    policy_loss = 0.05
    value_loss_ = 0.5 * (1 + 4 + 0 + 9) / 4
    entropy = ACT_DIM * (math.log(0.5) + 0.5 * (1 + math.log(2 * math.pi)))
    assert float(metrics["policy_loss"]) == pytest.approx(policy_loss, abs=1e-12)
    assert float(metrics["value_loss"]) == pytest.approx(value_loss_, abs=1e-12)
    # log_std was initialised in float32: log(0.5) to float32 precision.
    assert float(metrics["entropy"]) == pytest.approx(entropy, abs=1e-6)
    assert float(metrics["clip_fraction"]) == pytest.approx(0.75)
    expected = policy_loss + 0.5 * value_loss_ - 0.01 * entropy
    assert float(loss) == pytest.approx(expected, abs=1e-8)


# -- batched == sequential -------------------------------------------------------------------
def sequential_ppo(
    agent: ReptilePPO, batches: list[EpisodeBatch], seed: int
) -> list[dict[str, torch.Tensor]]:
    """K independent PPO runs with torch.optim.Adam and the same minibatch order."""
    cfg = agent.config
    n = T * E
    results = []
    for k in range(K):
        policy, value = copy.deepcopy(agent.policy), copy.deepcopy(agent.value)
        params = [*policy.parameters(), *value.parameters()]
        opt = torch.optim.Adam(params, lr=cfg.adapt_lr, eps=cfg.adam_eps)
        gen = torch.Generator().manual_seed(seed)
        for full in batches:
            b = full.for_task(k)
            with torch.no_grad():
                v = value(b.obs)
                last_v = value(b.last_obs)
                mean, log_std = policy(b.obs)
                old_lp = gaussian_log_prob(b.actions, mean, log_std)
            adv, ret = gae(
                b.rewards * cfg.reward_scale,
                v,
                b.valid,
                cfg.gamma,
                cfg.gae_lambda,
                last_values=last_v,
                terminated=b.terminated,
            )
            adv = normalize_advantages(adv, b.valid)

            def flat(x: torch.Tensor) -> torch.Tensor:  # [T, E, ...] -> [T * E, ...]
                return x.reshape(n, *x.shape[2:])

            obs, act, olp, a, r, ov, m = map(flat, (b.obs, b.actions, old_lp, adv, ret, v, b.valid))
            for _ in range(cfg.update_epochs):
                # minibatch_plan draws task 0's split, task 1's, ...: take row k of each.
                for idx_all in minibatch_plan(K, n, cfg.num_minibatches, gen):
                    i = idx_all[k]
                    mean, log_std = policy(obs[i])
                    lp = gaussian_log_prob(act[i], mean, log_std)
                    pl, _ = clipped_surrogate(lp, olp[i], a[i], cfg.clip_coef, m[i])
                    vl, _ = value_loss(value(obs[i]), ov[i], r[i], m[i])
                    el, _ = entropy_bonus(gaussian_entropy(log_std), m[i])
                    opt.zero_grad()
                    (pl + cfg.vf_coef * vl + cfg.ent_coef * el).backward()
                    torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
                    torch.nn.utils.clip_grad_norm_(value.parameters(), cfg.max_grad_norm)
                    opt.step()
            # The next round's batch would be collected by these parameters; here it is given.
        results.append(ReptilePPO.join_params(policy.params(), value.params()))
    return results


def test_batched_ppo_equals_sequential_torch_adam_runs() -> None:
    agent = make_agent(max_grad_norm=0.05, ent_coef=0.01, reward_scale=0.5)
    batches = [make_batch(1), make_batch(2)]
    seed = 1234
    params = agent.theta_as_tasks(K)
    state = agent.new_inner_state(params, seed)
    for batch in batches:
        params, stats = agent.inner_round(params, state, batch)
        assert stats["nonfinite_updates"] == 0
    assert state.rounds == 2
    assert int(state.optimizer.steps[0]) == 2 * 2 * 3  # rounds x epochs x minibatches
    expected = sequential_ppo(agent, batches, seed)
    theta = agent.meta_params()
    for k in range(K):
        for name, p in params.items():
            assert not torch.equal(p[k], theta[name].detach()), f"{name} did not move"
            torch.testing.assert_close(p[k], expected[k][name].detach(), atol=1e-6, rtol=1e-6)


def test_batched_adam_equals_torch_adam_and_skips_inactive_tasks() -> None:
    g = torch.Generator().manual_seed(0)
    p0 = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    grads = [torch.randn(2, 3, 4, generator=g, dtype=torch.float64) for _ in range(4)]
    opt = BatchedAdam({"p": p0}, lr=0.1, eps=1e-6)
    p = {"p": p0}
    active = [None, torch.tensor([True, False]), None, None]
    for grad, on in zip(grads, active, strict=True):
        p = opt.step(p, {"p": grad}, active=on)
    assert opt.steps.tolist() == [4, 3]
    for k in range(2):
        ref = p0[k].clone().requires_grad_(True)
        torch_opt = torch.optim.Adam([ref], lr=0.1, eps=1e-6)
        for grad, on in zip(grads, active, strict=True):
            if on is not None and not bool(on[k]):
                continue
            ref.grad = grad[k].clone()
            torch_opt.step()
        torch.testing.assert_close(p["p"][k], ref.detach(), atol=1e-12, rtol=1e-12)


def test_per_task_clipping_equals_clip_grad_norm() -> None:
    g = torch.Generator().manual_seed(0)
    grads = {"a": torch.randn(3, 4, generator=g), "b": torch.randn(3, 2, 2, generator=g) * 0.01}
    grads["a"][2] *= 0.001  # task 2 is under the limit
    clipped, norms = clip_grad_norm_per_task(grads, 0.5)
    for k in range(3):
        ts = [grads["a"][k].clone(), grads["b"][k].clone()]
        for t in ts:
            t.grad = t.clone()
        norm = torch.nn.utils.clip_grad_norm_(ts, 0.5)
        assert float(norms[k]) == pytest.approx(float(norm), rel=1e-6)
        torch.testing.assert_close(clipped["a"][k], ts[0].grad)
        torch.testing.assert_close(clipped["b"][k], ts[1].grad)
    torch.testing.assert_close(clipped["a"][2], grads["a"][2])


def test_a_nonfinite_task_skips_its_updates_and_the_others_learn() -> None:
    agent = make_agent()
    batch = make_batch(1)
    batch.rewards[0, 2] = math.nan  # task 1 (columns 2, 3) gets a NaN reward on a valid step
    params = agent.theta_as_tasks(K)
    state = agent.new_inner_state(params, 0)
    new, stats = agent.inner_round(params, state, batch)
    assert stats["nonfinite_updates"] == agent.config.update_epochs * agent.config.num_minibatches
    assert state.optimizer.steps.tolist() == [6, 0, 6]
    for name, p in new.items():
        assert torch.equal(p[1], params[name][1])
        assert torch.isfinite(p).all()
    assert not torch.equal(
        new["policy.mean_net.0.weight"][0], params["policy.mean_net.0.weight"][0]
    )
    assert math.isfinite(stats["policy_loss"])


# -- meta-test -------------------------------------------------------------------------------
def test_adapt_continues_the_inner_loop_and_leaves_its_input_unchanged() -> None:
    agent = make_agent()
    batches = [make_batch(1), make_batch(2)]
    first = agent.adapt(agent.exploration_policy(K), batches[0], seed=7)
    assert first.params is not None and set(first.params) == set(agent.policy.params())
    saved = {k: v.clone() for k, v in first.params.items()}
    second = agent.adapt(first, batches[1])
    again = agent.adapt(first, batches[1])
    for k in saved:
        assert torch.equal(first.params[k], saved[k])  # adapt is pure
        assert second.params is not None and again.params is not None
        assert torch.equal(second.params[k], again.params[k])
    # The same as two inner rounds of meta-training.
    params = agent.theta_as_tasks(K)
    state = agent.new_inner_state(params, 7)
    for batch in batches:
        params, _ = agent.inner_round(params, state, batch)
    pol, _ = agent.split_params(params)
    for k, v in pol.items():
        assert second.params is not None
        torch.testing.assert_close(second.params[k], v, atol=0, rtol=0)
    with pytest.raises(ValueError, match="tasks of episodes"):
        agent.adapt(agent.exploration_policy(K + 1), batches[0])


def test_the_linear_baseline_leaves_the_value_network_untrained() -> None:
    batch = make_batch(3)
    adapted = {}
    for baseline in ("value", "linear"):
        agent = make_agent(baseline=baseline)
        params = agent.theta_as_tasks(K)
        state = agent.new_inner_state(params, 7)
        params, _ = agent.inner_round(params, state, batch)
        pol, val = agent.split_params(params)
        start = dict(agent.value.named_parameters())
        moved = [not torch.equal(val[k], start[k].expand_as(val[k])) for k in start]
        assert all(moved) if baseline == "value" else not any(moved), baseline
        adapted[baseline] = pol
    # The policy still adapts, on other advantages than the value network's.
    assert not all(torch.equal(adapted["value"][k], adapted["linear"][k]) for k in adapted["value"])


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("meta_lr", 1.5),
        ("meta_lr_final", 2.0),
        ("num_adapt_steps", 0),
        ("num_minibatches", 0),
        ("clip_coef", 0.0),
        ("activation", "sigmoid"),
        ("hidden_sizes", ()),
        ("baseline", "critic"),
    ],
)
def test_impossible_configs_fail_at_once(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        ReptilePPOConfig(**{field: value})  # type: ignore[arg-type]


def test_unknown_preset_lists_the_valid_ones_and_registry_has_the_agent() -> None:
    assert AGENTS["reptile-ppo"] is ReptilePPO
    with pytest.raises(ValueError, match=r"presets are \['quick', 'default'\]"):
        ReptilePPO.preset("paper", "HalfCheetahVel")
    with pytest.raises(ValueError, match="unknown algorithm 'reptile'"):
        launch("reptile", RunArgs(env="Point2DNav", progress=False), ReptilePPOConfig())


def test_too_many_minibatches_fail_before_sampling(tmp_path: Path) -> None:
    config = replace(ReptilePPO.preset("quick", "Point2DNav"), num_minibatches=50)
    run = RunArgs(env="Point2DNav", horizon=4, progress=False, run_dir=tmp_path / "run")
    with pytest.raises(ValueError, match="num_minibatches=50 exceeds the 20 step slots"):
        launch("reptile-ppo", run, replace(config, episodes_per_task=5))


# -- learning and resume ---------------------------------------------------------------------
def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_quick_preset_learns_to_adapt_on_point2dnav(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    config = ReptilePPO.preset("quick", "Point2DNav")
    run_dir = launch(
        "reptile-ppo",
        RunArgs(env="Point2DNav", progress=False, run_dir=tmp_path / "run", seed=0),
        config,
    )
    rows = read_metrics(run_dir)[-10:]
    pre = np.mean([float(r["meta/return_pre_adapt"]) for r in rows])
    post = np.mean([float(r["meta/return_post_adapt"]) for r in rows])
    assert post > pre + 5.0, (pre, post)
    first = read_metrics(run_dir)[0]
    assert pre > float(first["meta/return_pre_adapt"]) + 20.0  # the initialization improved


def test_resume_is_exact(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    config = replace(
        ReptilePPO.preset("quick", "Point2DNav"),
        iterations=4,
        anneal_iterations=4,
        meta_batch_size=3,
        episodes_per_task=2,
        hidden_sizes=(8,),
        value_hidden_sizes=(8,),
    )

    def run(**kw: object) -> RunArgs:
        return RunArgs(env="Point2DNav", horizon=15, progress=False, seed=3, **kw)  # type: ignore[arg-type]

    whole = launch("reptile-ppo", run(run_dir=tmp_path / "whole"), config)
    half = launch("reptile-ppo", run(run_dir=tmp_path / "half"), config, iterations=2)
    assert launch("reptile-ppo", run(resume=half), config, iterations=4) == half
    a = load_checkpoint(latest_checkpoint(whole))
    b = load_checkpoint(latest_checkpoint(half))
    assert a["iteration"] == b["iteration"] == 4
    assert a["agent"]["iteration"] == b["agent"]["iteration"] == 4
    for net in ("policy", "value"):
        for name, value in a["agent"][net].items():
            assert torch.equal(value, b["agent"][net][name]), name
    rows_a, rows_b = read_metrics(whole), read_metrics(half)
    assert len(rows_a) == len(rows_b) == 4
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert {k: v for k, v in ra.items() if not k.startswith("time/")} == {
            k: v for k, v in rb.items() if not k.startswith("time/")
        }
