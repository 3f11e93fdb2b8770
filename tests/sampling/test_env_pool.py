"""The generic path's env pool: bounded, re-tasked with set_task, the bits of fresh envs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

from metarl.policies import GaussianMLPPolicy
from metarl.sampling import EpisodeBatch, InlineSampler, ProcessSampler
from metarl.tasks import SetTaskEnvSampler, Task

Array = np.ndarray
H = 20


class CountedCheetah(HalfCheetahEnv):
    """HalfCheetah-v5 whose task is the forward reward's weight; counts how often it is built."""

    built: ClassVar[int] = 0

    def __init__(self) -> None:
        super().__init__()
        CountedCheetah.built += 1

    def set_task(self, task: Mapping[str, Any]) -> None:
        self._forward_reward_weight = float(task["forward_reward_weight"])


def cheetah_tasks(weights: list[float]) -> list[Task]:
    return [Task(forward_reward_weight=w) for w in weights]


def assert_same_bits(a: EpisodeBatch, b: EpisodeBatch) -> None:
    for name, value in a.tensors().items():
        other = getattr(b, name)
        assert value.dtype == other.dtype and torch.equal(value, other), name
    assert a.info.keys() == b.info.keys()
    for key in a.info:
        assert torch.equal(a.info[key], b.info[key]), key


def test_pooled_envs_give_the_bits_of_fresh_envs() -> None:
    """A pool of 2 envs runs 4 tasks x 2 columns in 4 waves, re-tasking its envs between
    batches, and every batch equals one sampled with one freshly built env per column."""
    weights = [0.5, 1.0, 2.0, 3.0, 4.0]
    policy = GaussianMLPPolicy(17, 6, hidden_sizes=(8,), init_std=1.0)
    sampler = SetTaskEnvSampler(
        CountedCheetah, tasks=[{"forward_reward_weight": w} for w in weights], max_envs=2
    )
    CountedCheetah.built = 0
    pooled = InlineSampler(sampler, policy, horizon=H)
    rng = np.random.default_rng(0)
    for seed in range(3):
        tasks = sampler.sample(4, rng)
        got = pooled.sample(tasks, 2, seed=seed)
        fresh_sampler = SetTaskEnvSampler(
            CountedCheetah, tasks=[{"forward_reward_weight": w} for w in weights]
        )
        with InlineSampler(fresh_sampler, policy, horizon=H) as fresh:
            assert_same_bits(got, fresh.sample(tasks, 2, seed=seed))
        # The pool's rewards are those of its tasks: the weight scales the forward term.
        assert got.tasks == tasks
    pooled.close()
    # 2 pooled envs in all, against 8 per fresh sampler (and one probe env each).
    assert CountedCheetah.built == 2 + 3 * (1 + 8)


def test_a_pool_smaller_than_one_task_holds_that_task() -> None:
    sampler = SetTaskEnvSampler(
        CountedCheetah, tasks=[{"forward_reward_weight": w} for w in (1.0, 2.0)], max_envs=1
    )
    policy = GaussianMLPPolicy(17, 6, hidden_sizes=(8,))
    with InlineSampler(sampler, policy, horizon=5) as inline:
        CountedCheetah.built = 0
        batch = inline.sample(cheetah_tasks([1.0, 2.0]), 3, seed=0)
        assert batch.valid.all() and CountedCheetah.built == 3
        assert len(inline.worker.waves(_job(inline, 2, 3))) == 2


def _job(sampler: InlineSampler, tasks: int, episodes: int) -> Any:
    from metarl.sampling import Job, prepare_params

    params = prepare_params(sampler.policy, None, tasks)
    return Job(cheetah_tasks([1.0] * tasks), 0, episodes, 1, 0, params)


@pytest.mark.slow
def test_pooled_worker_processes_match_inline() -> None:
    weights = [0.5, 1.0, 2.0]
    sampler = SetTaskEnvSampler(
        CountedCheetah, tasks=[{"forward_reward_weight": w} for w in weights], max_envs=2
    )
    policy = GaussianMLPPolicy(17, 6, hidden_sizes=(8,))
    tasks = cheetah_tasks(weights)
    with InlineSampler(sampler, policy, horizon=H) as inline:
        want = inline.sample(tasks, 2, seed=5)
    with ProcessSampler(sampler, policy, num_workers=2, horizon=H) as processes:
        assert_same_bits(want, processes.sample(tasks, 2, seed=5))


class Reacher1D(gym.Env):
    """A point on a line that must reach ``goal``; ``info["success"]`` within 0.1 of it."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(1,), dtype=np.float64)
    action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def __init__(self) -> None:
        self.goal, self.x = 0.0, 0.0

    def set_task(self, task: Any) -> None:
        self.goal = float(task["goal"])

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[Array, dict]:
        super().reset(seed=seed)
        self.x = 0.0
        return np.array([self.x]), {}

    def step(self, action: Array) -> tuple[Array, float, bool, bool, dict]:
        self.x += 0.5 * float(action[0])
        success = abs(self.x - self.goal) < 0.1
        return np.array([self.x]), -abs(self.x - self.goal), False, False, {"success": success}


def test_info_keys_travel_in_the_batch() -> None:
    """Goal 0 is reached at the first reset (success at once); goal 50 is out of reach."""
    sampler = SetTaskEnvSampler(
        Reacher1D, tasks=[{"goal": 0.0}, {"goal": 50.0}], info_keys=("success",), max_envs=2
    )
    policy = GaussianMLPPolicy(1, 1, hidden_sizes=(4,), init_std=0.01)
    with torch.no_grad():
        for p in policy.mean_net.parameters():
            p.zero_()
    with InlineSampler(sampler, policy, horizon=8) as inline:
        batch = inline.sample([Task(goal=0.0), Task(goal=50.0)], 3, seed=0)
    success = batch.info["success"]
    assert success.shape == (8, 6) and success.dtype == torch.float32
    assert batch.episode_info("success")[:, 0].tolist() == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert batch.for_task(1).info["success"].sum() == 0
    with pytest.raises(KeyError, match=r"no info 'reward_ctrl'.*\['success'\]"):
        batch.episode_info("reward_ctrl")


def test_a_named_info_key_the_env_lacks_is_a_clear_error() -> None:
    sampler = SetTaskEnvSampler(Reacher1D, tasks=[{"goal": 1.0}], info_keys=("is_success",))
    with InlineSampler(sampler, GaussianMLPPolicy(1, 1), horizon=3) as inline:
        with pytest.raises(KeyError, match=r"Reacher1D.step returned no info\['is_success'\]"):
            inline.sample([Task(goal=1.0)], 1, seed=0)


class LeftCheetah(CountedCheetah):
    """A second kind of env of one sampler (the same spaces, another class)."""


class KindSampler:
    """Tasks of two env classes; an env takes a new task only of its own class (Meta-World's
    rule), so a pool must match envs to tasks across slots to avoid rebuilding."""

    name = "KindSampler"
    info_keys = ()
    max_envs = 2

    def __init__(self) -> None:
        probe = CountedCheetah()
        self.observation_space, self.action_space = probe.observation_space, probe.action_space
        probe.close()

    def sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        return [Task(kind=int(k), forward_reward_weight=1.0) for k in rng.integers(2, size=n)]

    def make_env(self, task: Task | None = None) -> gym.Env:
        env = (LeftCheetah if task is not None and task["kind"] == 1 else CountedCheetah)()
        if task is not None:
            env.set_task(task)
        return env

    def retask(self, env: gym.Env, task: Task) -> bool:
        if type(env.unwrapped) is not (LeftCheetah if task["kind"] == 1 else CountedCheetah):
            return False
        env.unwrapped.set_task(task)  # type: ignore[attr-defined]
        return True


def test_the_pool_hands_an_env_to_the_slot_whose_task_it_takes() -> None:
    sampler = KindSampler()
    policy = GaussianMLPPolicy(17, 6, hidden_sizes=(8,))
    a, b = Task(kind=0, forward_reward_weight=1.0), Task(kind=1, forward_reward_weight=2.0)
    with InlineSampler(sampler, policy, horizon=5) as inline:
        CountedCheetah.built = 0
        first = inline.sample([a, b], 1, seed=0)
        assert CountedCheetah.built == 2
        swapped = inline.sample([b, a], 1, seed=0)
        assert CountedCheetah.built == 2  # the two envs changed slots, none was rebuilt
        pool = inline.worker._pool
        assert pool is not None and [type(e) for e in pool.envs] == [LeftCheetah, CountedCheetah]
        # Column 0 of the swapped batch is task b with column 0's seed: not the first batch's.
        assert not torch.equal(swapped.rewards[:, 0], first.rewards[:, 1])
        with InlineSampler(KindSampler(), policy, horizon=5) as fresh:
            assert_same_bits(swapped, fresh.sample([b, a], 1, seed=0))
