"""The in-process sampler: batch layout and masks, determinism, policies, faults, generic path."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import Tensor, nn

from metarl.envs import FamilyTaskSampler, MetaEnv, make_family
from metarl.envs.base import Array, ParamSpec
from metarl.envs.half_cheetah import HalfCheetahVel
from metarl.policies import GaussianMLPPolicy, gaussian_log_prob, stack_params
from metarl.sampling import EpisodeBatch, InlineSampler, column_rngs, recurrent_inputs
from metarl.tasks import SetTaskEnvSampler, Task

H = 30  # a short horizon keeps the suite fast; the layout does not depend on it


@pytest.fixture(scope="module")
def family() -> HalfCheetahVel:
    return make_family("HalfCheetahVel", horizon=H)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def policy() -> GaussianMLPPolicy:
    torch.manual_seed(0)
    return GaussianMLPPolicy(17, 6, hidden_sizes=(32, 32))


def tasks_of(family: Any, n: int, seed: int = 0) -> list[Task]:
    return family.sample_tasks(n, np.random.default_rng(seed))


def assert_batches_equal(a: EpisodeBatch, b: EpisodeBatch) -> None:
    for name, value in a.tensors().items():
        assert torch.equal(value, getattr(b, name)), name


def assert_layout(batch: EpisodeBatch) -> None:
    """Masks, padding and per-column sums agree, whatever each column's length."""
    T = batch.horizon
    steps = torch.arange(T).unsqueeze(1)
    assert torch.equal(batch.valid, steps < batch.lengths.unsqueeze(0))
    pad = ~batch.valid
    for name in ("obs", "actions"):
        assert getattr(batch, name)[pad].abs().sum() == 0, name
    for name in ("rewards", "log_probs"):
        assert getattr(batch, name)[pad].abs().sum() == 0, name
    assert not (batch.terminated | batch.truncated)[pad].any()
    ends = batch.terminated | batch.truncated
    # Outside trial mode a column has exactly one end, at its last valid step.
    for b in range(batch.batch_size):
        n = int(batch.lengths[b])
        if n > 0:
            assert ends[:, b].nonzero().flatten().tolist() == [n - 1]
    torch.testing.assert_close(batch.returns, batch.rewards.sum(0), rtol=1e-5, atol=1e-4)
    for t in batch.tensors().values():
        if t.is_floating_point():
            assert torch.isfinite(t).all()


# --------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------


def test_batch_shapes_and_task_major_columns(family, policy):
    tasks = tasks_of(family, 3)
    batch = InlineSampler(family, policy).sample(tasks, 4, seed=0)
    K, E, B = 3, 4, 12
    assert batch.obs.shape == (H, B, 17) and batch.obs.dtype == torch.float32
    assert batch.actions.shape == (H, B, 6)
    for name in ("rewards", "log_probs", "terminated", "truncated", "valid"):
        assert getattr(batch, name).shape == (H, B), name
    assert batch.last_obs.shape == (B, 17)
    assert batch.task_index.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert batch.episode_index.tolist() == [0, 1, 2, 3] * 3
    assert (batch.num_tasks, batch.episodes_per_task, batch.tasks) == (K, E, tasks)
    # HalfCheetah never terminates: every column runs the horizon and is truncated there.
    assert batch.num_steps == H * B and batch.valid.all()
    assert batch.truncated[-1].all() and not batch.truncated[:-1].any()
    assert not batch.terminated.any() and not batch.unstable.any()
    assert_layout(batch)
    # obs[t + 1] is the observation after step t; last_obs the one after the final step.
    assert batch.episode_start[0].all() and not batch.episode_start[1:].any()


def test_per_task_views_are_views(family, policy):
    batch = InlineSampler(family, policy).sample(tasks_of(family, 3), 2, seed=1)
    one = batch.for_task(1)
    assert one.obs.data_ptr() == batch.obs[:, 2:4].data_ptr()
    assert one.tasks == [batch.tasks[1]] and one.num_tasks == 1
    assert torch.equal(one.rewards, batch.rewards[:, 2:4])
    assert batch.by_task("rewards").shape == (H, 3, 2)
    assert torch.equal(batch.by_task("rewards")[:, 1], one.rewards)
    assert torch.equal(batch.by_task("returns")[2], batch.returns[4:6])
    with pytest.raises(ValueError, match="not a tensor field"):
        batch.by_task("tasks")
    with pytest.raises(IndexError):
        batch.for_task(3)
    assert batch.to("cpu") is batch


class TiltCheetah(HalfCheetahVel):
    """HalfCheetahVel that terminates when the torso pitch leaves +-max_pitch (rad)."""

    name: ClassVar[str] = "TiltCheetahTest"

    def param_specs(self) -> dict[str, ParamSpec]:
        return {**super().param_specs(), "max_pitch": ParamSpec(low=0.0, high=1.0)}

    def _sample(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        return [{**t, "max_pitch": 0.2} for t in super()._sample(n, rng)]

    def task_params(self, tasks):
        params = super().task_params(tasks)
        params["max_pitch"] = np.array([t["max_pitch"] for t in tasks])
        return params

    def terminated(self, state: dict[str, Array], params: dict[str, Array]) -> Array:
        return np.abs(state["qpos"][:, 2]) > params["max_pitch"]


def test_masks_on_episodes_of_different_lengths(policy):
    fam = TiltCheetah(horizon=60)
    tasks = [Task(velocity=1.0, max_pitch=p) for p in (0.05, 0.15, 1.0)]
    batch = InlineSampler(fam, policy).sample(tasks, 4, seed=3)
    lengths = batch.lengths
    assert len(set(lengths.tolist())) >= 3, lengths  # really different lengths
    assert_layout(batch)
    ended_early = lengths < 60
    assert ended_early.any()
    last = (lengths - 1).clamp(min=0)
    cols = torch.arange(batch.batch_size)
    assert torch.equal(batch.terminated[last, cols], ended_early)
    assert torch.equal(batch.truncated[last, cols], ~ended_early)
    # The termination is the family's: the torso pitch in last_obs (obs[1]) is past the limit.
    limits = torch.tensor([t["max_pitch"] for t in tasks]).repeat_interleave(4)
    pitch = batch.last_obs[:, 1].abs()
    assert torch.equal(
        pitch[ended_early] > limits[ended_early],
        torch.ones(int(ended_early.sum()), dtype=torch.bool),
    )
    # Returns are the masked sums; episode_returns agree outside trial mode.
    torch.testing.assert_close(batch.episode_returns[:, 0], batch.returns)
    assert torch.equal(batch.episode_lengths[:, 0], lengths)


# --------------------------------------------------------------------------------------------
# Randomness and policies
# --------------------------------------------------------------------------------------------


def test_same_seed_same_bits_other_seed_differs(family, policy):
    tasks = tasks_of(family, 2)
    sampler = InlineSampler(family, policy)
    a = sampler.sample(tasks, 3, seed=7)
    assert_batches_equal(a, sampler.sample(tasks, 3, seed=7))
    assert_batches_equal(a, InlineSampler(family, policy).sample(tasks, 3, seed=7))
    assert not torch.equal(a.obs, sampler.sample(tasks, 3, seed=8).obs)


def test_column_streams_do_not_depend_on_the_batch(family, policy):
    # Task 0's columns are the same whether or not more tasks follow it.
    tasks = tasks_of(family, 3)
    big = InlineSampler(family, policy).sample(tasks, 2, seed=5)
    small = InlineSampler(family, policy).sample(tasks[:1], 2, seed=5)
    assert_batches_equal(small, big.for_task(0))
    # Initial states come from each column's own reset stream, as the family draws them.
    _, reset = column_rngs(5, [1])
    qpos, qvel = family.reset_state(reset[0])
    expected = np.concatenate([qpos[1:], qvel]).astype(np.float32)
    assert torch.equal(big.obs[0, 1], torch.from_numpy(expected))


@pytest.mark.parametrize("fast_path", [True, False])
def test_log_probs_and_actions_match_the_policy(family, policy, fast_path):
    batch = InlineSampler(family, policy, fast_path=fast_path).sample(
        tasks_of(family, 2), 3, seed=2
    )
    with torch.no_grad():
        mean, log_std = policy(batch.obs)
        recomputed = gaussian_log_prob(batch.actions, mean, log_std)
    torch.testing.assert_close(recomputed, batch.log_probs, rtol=1e-4, atol=1e-4)
    # The actions are the mean plus std times the column's pre-drawn noise.
    noise, _ = column_rngs(2, range(6))
    eps = torch.from_numpy(
        np.stack([g.standard_normal((H, 6), dtype=np.float32) for g in noise], axis=1)
    )
    torch.testing.assert_close(batch.actions, mean + log_std.exp() * eps, rtol=1e-5, atol=1e-5)


def test_fast_path_matches_functional_call_at_the_first_step(family, policy):
    tasks = tasks_of(family, 2)
    fast = InlineSampler(family, policy).sample(tasks, 3, seed=4)
    slow = InlineSampler(family, policy, fast_path=False).sample(tasks, 3, seed=4)
    assert torch.equal(fast.obs[0], slow.obs[0])
    torch.testing.assert_close(fast.actions[0], slow.actions[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("fast_path", [True, False])
def test_per_task_parameter_sets(family, policy, fast_path):
    tasks = tasks_of(family, 3)
    own = {k: v.detach().clone() for k, v in policy.named_parameters()}
    last_bias = [k for k in own if k.endswith("bias")][-1]
    shifted = [dict(own), {**own, last_bias: own[last_bias] + 0.5}, dict(own)]
    sampler = InlineSampler(family, policy, fast_path=fast_path)
    base = sampler.sample(tasks, 2, seed=9)
    per_task = sampler.sample(tasks, 2, shifted, seed=9)
    # Same noise and initial states: only task 1's first actions move, by exactly the shift.
    delta = per_task.actions[0] - base.actions[0]
    torch.testing.assert_close(delta[2:4], torch.full((2, 6), 0.5), rtol=0, atol=1e-5)
    assert torch.equal(per_task.for_task(0).obs, base.for_task(0).obs)
    assert torch.equal(per_task.for_task(2).actions, base.for_task(2).actions)
    # A stacked dict is the same request as a list.
    assert_batches_equal(per_task, sampler.sample(tasks, 2, stack_params(shifted), seed=9))
    # params=None and one copy of the own parameters per task give the same bits.
    assert_batches_equal(base, sampler.sample(tasks, 2, [own] * 3, seed=9))


def test_params_may_require_grad_and_the_policy_may_change(family):
    torch.manual_seed(1)
    policy = GaussianMLPPolicy(17, 6, hidden_sizes=(16,))
    sampler = InlineSampler(family, policy)
    tasks = tasks_of(family, 1)
    before = sampler.sample(tasks, 2, seed=0)
    with torch.no_grad():
        policy.log_std.fill_(-3.0)  # the sampler reads the live parameters each batch
    after = sampler.sample(tasks, 2, seed=0)
    assert after.actions[0].std() < before.actions[0].std()
    adapted = [{k: v * 1.0 for k, v in policy.named_parameters()}]  # part of a graph
    assert adapted[0]["log_std"].requires_grad
    assert_batches_equal(after, sampler.sample(tasks, 2, adapted, seed=0))


# --------------------------------------------------------------------------------------------
# Bad input and faults
# --------------------------------------------------------------------------------------------


def test_bad_input_fails_before_stepping(family, policy):
    sampler = InlineSampler(family, policy)
    tasks = tasks_of(family, 2)
    own = {k: v.detach() for k, v in policy.named_parameters()}
    with pytest.raises(ValueError, match="at least one task"):
        sampler.sample([], 2, seed=0)
    with pytest.raises(ValueError, match="episodes_per_task"):
        sampler.sample(tasks, 0, seed=0)
    with pytest.raises(ValueError, match="seed"):
        sampler.sample(tasks, 1, seed=-1)
    with pytest.raises(ValueError, match="3 parameter sets for 2 tasks"):
        sampler.sample(tasks, 1, [own] * 3, seed=0)
    with pytest.raises(ValueError, match="missing"):
        sampler.sample(tasks, 1, [own, {k: v for k, v in own.items() if k != "log_std"}], seed=0)
    with pytest.raises(ValueError, match="shape"):
        sampler.sample(tasks, 1, {k: v.unsqueeze(0) for k, v in own.items()}, seed=0)
    with pytest.raises(ValueError, match="velocity"):
        sampler.sample([Task(velocity=9.0)], 1, seed=0)
    with pytest.raises(ValueError, match=r"action space needs \(6,\)"):
        InlineSampler(family, GaussianMLPPolicy(17, 5))
    with pytest.raises(ValueError, match="cannot read"):
        InlineSampler(family, GaussianMLPPolicy(11, 6))
    with pytest.raises(ValueError, match="task family"):
        InlineSampler(42, policy)  # type: ignore[arg-type]


class GearedCheetah(HalfCheetahVel):
    """HalfCheetahVel whose task scales the actuator gears: a large gear blows the physics up."""

    name: ClassVar[str] = "GearedCheetahTest"
    per_task_model: ClassVar[bool] = True

    def param_specs(self) -> dict[str, ParamSpec]:
        return {**super().param_specs(), "gear": ParamSpec(low=1.0, high=1e6)}

    def _sample(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        return [{**t, "gear": 1.0} for t in super()._sample(n, rng)]

    def configure_model(self, model: Any, task: Task) -> None:
        model.actuator_gear[:, 0] = self.model.actuator_gear[:, 0] * float(task["gear"])


def test_physics_blow_up_ends_the_episode_without_nan():
    fam = GearedCheetah(horizon=H)
    policy = GaussianMLPPolicy(17, 6, hidden_sizes=(8,))
    tasks = [
        Task(velocity=1.0, gear=1.0),
        Task(velocity=1.0, gear=100.0),
        Task(velocity=1.0, gear=1e6),
    ]
    batch = InlineSampler(fam, policy).sample(tasks, 3, seed=0)
    assert batch.unstable.tolist() == [False] * 3 + [True] * 6
    assert (batch.lengths[:3] == H).all()
    assert (batch.lengths[3:] < H).all()
    assert (batch.lengths[6:] == 0).all()  # gear 1e6 blows up at the first step
    assert (batch.lengths[3:6] > 0).all()  # gear 100 runs a few steps first
    assert_layout_unstable(batch)
    # The same tasks, sampled again after the blow-ups, still give the same batch.
    assert_batches_equal(batch, InlineSampler(fam, policy).sample(tasks, 3, seed=0))


def assert_layout_unstable(batch: EpisodeBatch) -> None:
    for t in batch.tensors().values():
        if t.is_floating_point():
            assert torch.isfinite(t).all()
    steps = torch.arange(batch.horizon).unsqueeze(1)
    assert torch.equal(batch.valid, steps < batch.lengths.unsqueeze(0))
    for b in range(batch.batch_size):
        n = int(batch.lengths[b])
        if n:  # the last kept step is marked truncated (bootstrap from last_obs)
            assert batch.truncated[n - 1, b] and not batch.terminated[:, b].any()
            assert batch.truncated[:, b].sum() == 1
    torch.testing.assert_close(batch.returns, batch.rewards.sum(0))


# --------------------------------------------------------------------------------------------
# Trial mode (RL^2) with a small real GRU policy
# --------------------------------------------------------------------------------------------


class GRUPolicy(nn.Module):
    """A GRU Gaussian policy over [obs, previous action, previous reward, done]."""

    recurrent = True

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 16) -> None:
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Linear(obs_dim + act_dim + 2 + hidden, 2 * hidden)
        self.cand = nn.Linear(obs_dim + act_dim + 2 + hidden, hidden)
        self.head = nn.Linear(hidden, act_dim)
        self.log_std = nn.Parameter(torch.full((act_dim,), -0.5))

    def initial_state(self, batch_size: int) -> Tensor:
        return torch.zeros(batch_size, self.hidden)

    def forward(self, inputs: Tensor, state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        z, r = torch.sigmoid(self.gates(torch.cat([inputs, state], -1))).chunk(2, -1)
        n = torch.tanh(self.cand(torch.cat([inputs, r * state], -1)))
        new = (1 - z) * n + z * state
        mean = self.head(new)
        return mean, self.log_std.expand_as(mean), new


def replay_log_probs(policy: GRUPolicy, batch: EpisodeBatch, reset_each_episode: bool) -> Tensor:
    inputs = recurrent_inputs(batch)
    state = policy.initial_state(batch.batch_size)
    out = []
    with torch.no_grad():
        for t in range(batch.horizon):
            if reset_each_episode:
                state = torch.where(batch.episode_start[t].unsqueeze(-1), 0.0, state)
            mean, log_std, state = policy(inputs[t], state)
            out.append(gaussian_log_prob(batch.actions[t], mean, log_std))
    return torch.stack(out) * batch.valid


def test_trial_mode_carries_the_recurrent_state_across_episodes(family):
    torch.manual_seed(0)
    policy = GRUPolicy(17, 6)
    M = 3
    batch = InlineSampler(family, policy).sample(
        tasks_of(family, 2), 2, seed=0, episodes_per_trial=M
    )
    T = M * H
    assert batch.obs.shape == (T, 4, 17) and batch.episodes_per_trial == M
    t = torch.arange(T)
    assert torch.equal(batch.episode_id, (t // H).unsqueeze(1).expand(T, 4))
    assert torch.equal(batch.episode_start, (t % H == 0).unsqueeze(1).expand(T, 4))
    assert torch.equal(batch.truncated, (t % H == H - 1).unsqueeze(1).expand(T, 4))
    assert (batch.episode_lengths == H).all() and (batch.lengths == T).all()
    torch.testing.assert_close(batch.episode_returns.sum(1), batch.returns)
    torch.testing.assert_close(batch.episode_returns[:, 1], batch.rewards[H : 2 * H].sum(0))
    # Every episode starts from a fresh initial state of the column's reset stream.
    _, reset = column_rngs(0, [0])
    family.reset_state(reset[0])  # episode 0
    family.reset_state(reset[0])  # episode 1
    qpos3, qvel3 = family.reset_state(reset[0])
    expected = np.concatenate([qpos3[1:], qvel3]).astype(np.float32)
    assert torch.equal(batch.obs[2 * H, 0], torch.from_numpy(expected))
    # log_probs replay with the state carried through the trial, not with per-episode resets.
    carried = replay_log_probs(policy, batch, reset_each_episode=False)
    torch.testing.assert_close(carried, batch.log_probs, rtol=1e-4, atol=1e-4)
    reset_each = replay_log_probs(policy, batch, reset_each_episode=True)
    assert not torch.allclose(reset_each[H:], batch.log_probs[H:], atol=1e-3)
    torch.testing.assert_close(reset_each[:H], batch.log_probs[:H], rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------------
# The generic Gymnasium path
# --------------------------------------------------------------------------------------------


class Countdown(gym.Env):
    """A tiny real env: reward 1 per step, terminates after ``task["length"]`` steps."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float64)
    action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def __init__(self) -> None:
        self.length, self.t = 5, 0

    def set_task(self, task: Any) -> None:
        self.length = int(task["length"])

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[Array, dict]:
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0, self.np_random.uniform()]), {}

    def step(self, action: Array) -> tuple[Array, float, bool, bool, dict]:
        self.t += 1
        assert np.all(np.abs(action) <= 1.0)  # the sampler clips to the action space
        return np.array([self.t, float(action[0])]), 1.0, self.t >= self.length, False, {}


def test_generic_path_layout_with_exact_lengths():
    sampler = SetTaskEnvSampler(Countdown, tasks=[{"length": n} for n in (3, 7, 12)])
    policy = GaussianMLPPolicy(2, 1, hidden_sizes=(4,), init_std=3.0)
    tasks = [Task(length=n) for n in (3, 7, 12)]
    batch = InlineSampler(sampler, policy, horizon=10).sample(tasks, 2, seed=0)
    assert batch.lengths.tolist() == [3, 3, 7, 7, 10, 10]
    assert batch.returns.tolist() == [3.0, 3.0, 7.0, 7.0, 10.0, 10.0]
    assert batch.terminated.sum(0).tolist() == [1, 1, 1, 1, 0, 0]
    assert batch.truncated[9, 4:].all()
    assert_layout(batch)
    # obs[t + 1] is what the env returned after step t; last_obs after the final one.
    assert batch.obs[1:3, 0, 0].tolist() == [1.0, 2.0] and batch.last_obs[0, 0] == 3.0
    # The env received the clipped action.
    torch.testing.assert_close(batch.obs[1, :, 1], batch.actions[0, :, 0].clamp(-1, 1))


def test_generic_path_replays_through_env_step(family, policy):
    """A MetaEnv stepped via env.step: rewards equal a replay of the recorded actions."""
    sampler = SetTaskEnvSampler(lambda: MetaEnv(family), sample_fn=family.sample_tasks)
    tasks = tasks_of(family, 2)
    batch = InlineSampler(sampler, policy, horizon=H).sample(tasks, 1, seed=3)
    assert batch.valid.all()
    _, reset = column_rngs(3, [1])
    env = sampler.make_env(tasks[1])
    obs, _ = env.reset(seed=int(reset[0].integers(2**31)))
    assert np.allclose(obs.astype(np.float32), batch.obs[0, 1].numpy())
    rewards = []
    for a in batch.actions[:, 1].numpy():
        rewards.append(env.step(np.clip(a, -1, 1))[1])
    np.testing.assert_allclose(np.float32(rewards), batch.rewards[:, 1].numpy(), rtol=1e-6)
    # The family path and FamilyTaskSampler are the same fast path.
    assert_batches_equal(
        InlineSampler(FamilyTaskSampler(family), policy).sample(tasks, 1, seed=3),
        InlineSampler(family, policy).sample(tasks, 1, seed=3),
    )


def test_generic_path_has_no_horizon_without_a_time_limit(policy):
    sampler = SetTaskEnvSampler(Countdown, tasks=[{"length": 3}])
    with pytest.raises(ValueError, match="horizon"):
        InlineSampler(sampler, GaussianMLPPolicy(2, 1))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batch_moves_to_the_gpu_in_one_copy(family, policy):
    batch = InlineSampler(family, policy).sample(tasks_of(family, 2), 2, seed=0)
    moved = batch.to("cuda")
    for name, value in batch.tensors().items():
        got = getattr(moved, name)
        assert got.device.type == "cuda" and got.dtype == value.dtype, name
        assert torch.equal(got.cpu(), value), name
    assert moved.tasks == batch.tasks and moved.for_task(1).obs.is_cuda
