"""The environment contract, checked for every registered family and every variant.

Parametrized over :data:`metarl.envs.FAMILIES`, so a newly registered family is checked without
touching this file. Rollouts are short: the whole file runs in well under two minutes on one core.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import warnings
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from metarl.envs import (
    FAMILIES,
    MetaEnv,
    MujocoTaskFamily,
    ParamSpec,
    TaskFamily,
    env_id,
    make_family,
)
from metarl.tasks import Task

CASES = [
    pytest.param(name, variant, id=f"{name}-{variant}")
    for name, cls in FAMILIES.items()
    for variant in cls.variants
]
"""Every (family, variant) pair."""

ONE_PER_FAMILY = [
    pytest.param(name, cls.default_variant, id=name) for name, cls in FAMILIES.items()
]
"""Each family with its default variant (for the slower checks)."""

# Gymnasium's checker flags unbounded observation spaces; MuJoCo observations are unbounded,
# as in Gymnasium's own v5 envs.
ALLOWED_GYM_WARNINGS = re.compile(r"Box observation space (minimum|maximum) value is -?infinity")


def make_env(name: str, variant: str, **kwargs: Any) -> MetaEnv:
    env = gym.make(env_id(name), variant=variant, **kwargs).unwrapped
    assert isinstance(env, MetaEnv)
    return env


def random_actions(env: MetaEnv, n: int, seed: int) -> np.ndarray:
    """``[n, action_dim]`` float32 actions uniform in the action space."""
    space = env.action_space
    rng = np.random.default_rng(seed)
    return rng.uniform(space.low, space.high, size=(n, *space.shape)).astype(np.float32)


def rollout(env: MetaEnv, seed: int, actions: np.ndarray) -> dict[str, np.ndarray]:
    """Reset with ``seed`` and apply ``actions`` (no reset on termination: the contract is
    about the stepping function itself)."""
    obs, _ = env.reset(seed=seed)
    observations, rewards, terminated = [obs], [], []
    for action in actions:
        obs, reward, term, _, _ = env.step(action)
        observations.append(obs)
        rewards.append(reward)
        terminated.append(term)
    return {
        "obs": np.array(observations),
        "reward": np.array(rewards),
        "terminated": np.array(terminated),
    }


def out_of_range_value(spec: ParamSpec, valid: Any) -> Any | None:
    """A value of the right shape that the spec does not allow (None when every value is)."""
    if spec.choices:
        bad = max(spec.choices) + 0.5
    elif math.isfinite(spec.high):
        bad = spec.high + 1.0
    elif math.isfinite(spec.low):
        bad = spec.low - 1.0
    else:
        return None
    if not spec.shape:
        return bad
    value = np.array(valid, dtype=np.float64)
    value.flat[0] = bad
    return value


# --------------------------------------------------------------------------------------------
# Gymnasium and Stable-Baselines3 see an ordinary env
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "variant"), CASES)
def test_gymnasium_check_env(name: str, variant: str) -> None:
    env = make_env(name, variant)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(env)
    unexpected = [
        str(w.message)
        for w in caught
        if "gymnasium" in w.filename and not ALLOWED_GYM_WARNINGS.search(str(w.message))
    ]
    assert not unexpected, f"{name}/{variant}: Gymnasium's env checker warned: {unexpected}"


# The reference action ranges (Humanoid's [-0.4, 0.4], Point2DNav's [-0.1, 0.1]) are kept.
@pytest.mark.filterwarnings("ignore:We recommend you to use a symmetric and normalized Box")
@pytest.mark.parametrize(("name", "variant"), ONE_PER_FAMILY)
def test_sb3_check_env(name: str, variant: str) -> None:
    sb3_check_env(make_env(name, variant), warn=True)


@pytest.mark.parametrize(("name", "variant"), CASES)
def test_gym_make_builds_the_family(name: str, variant: str) -> None:
    env = gym.make(env_id(name), variant=variant)
    assert env_id(name) == f"metarl/{name}-v0"
    assert isinstance(env.unwrapped, MetaEnv)
    family = env.unwrapped.family
    assert type(family) is FAMILIES[name]
    assert family.variant == variant
    assert env.unwrapped.horizon == FAMILIES[name].variants[variant].horizon
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert info["task"] == family.default_task()
    obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs)
    assert isinstance(reward, float)
    assert isinstance(terminated, bool) and isinstance(truncated, bool)
    env.close()
    plain = gym.make(env_id(name)).unwrapped
    assert isinstance(plain, MetaEnv)
    assert plain.family.variant == FAMILIES[name].default_variant


@pytest.mark.parametrize(("name", "variant"), ONE_PER_FAMILY)
def test_unknown_variant_lists_the_variants(name: str, variant: str) -> None:
    with pytest.raises(ValueError, match=f"{name}: unknown variant 'nope'") as excinfo:
        make_family(name, variant="nope")
    for known in FAMILIES[name].variants:
        assert repr(known) in str(excinfo.value)
    with pytest.raises(ValueError, match="unknown variant 'nope'"):
        gym.make(env_id(name), variant="nope")


# --------------------------------------------------------------------------------------------
# Rewards and determinism
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "variant"), CASES)
def test_reward_is_exactly_the_sum_of_its_terms(name: str, variant: str) -> None:
    env = make_env(name, variant)
    env.reset(seed=1)
    env.set_task(env.sample_tasks(1, np.random.default_rng(1))[0])
    env.reset(seed=1)
    for action in random_actions(env, 30, seed=1):
        _, reward, terminated, _, info = env.step(action)
        terms = {k: v for k, v in info.items() if k.startswith("reward_")}
        assert terms, f"{name}: info has no reward_* terms"
        assert all(isinstance(v, float) for v in terms.values())
        assert math.isfinite(reward)
        assert reward == sum(terms.values()), f"{name}: reward {reward} != sum of {terms}"
        if terminated:
            env.reset()


@pytest.mark.parametrize(("name", "variant"), CASES)
def test_same_seed_gives_same_tasks(name: str, variant: str) -> None:
    family = make_family(name, variant=variant)
    tasks = family.sample_tasks(16, np.random.default_rng(5))
    assert tasks == family.sample_tasks(16, np.random.default_rng(5))
    assert tasks != family.sample_tasks(16, np.random.default_rng(6))
    assert all(isinstance(t, Task) and family.validate_task(t) == t for t in tasks)
    env = make_env(name, variant)
    env.reset(seed=5)
    from_env = env.sample_tasks(4)
    env.reset(seed=5)
    assert env.sample_tasks(4) == from_env


@pytest.mark.parametrize(("name", "variant"), CASES)
def test_same_seed_gives_same_trajectory(name: str, variant: str) -> None:
    task = make_family(name, variant=variant).sample_tasks(1, np.random.default_rng(2))[0]
    runs = []
    for _ in range(2):
        env = make_env(name, variant)
        env.set_task(task)
        runs.append(rollout(env, seed=3, actions=random_actions(env, 25, seed=4)))
    for key in runs[0]:
        np.testing.assert_array_equal(runs[0][key], runs[1][key], err_msg=f"{name}: {key}")


@pytest.mark.parametrize(("name", "variant"), CASES)
def test_batch_matches_single_envs(name: str, variant: str) -> None:
    family = make_family(name, variant=variant)
    tasks = family.sample_tasks(3, np.random.default_rng(7))
    assert len(set(tasks)) == 3 or all(s.choices for s in family.param_specs().values())
    seeds = [10, 11, 12]
    env0 = make_env(name, variant)
    actions = random_actions(env0, 15 * 3, seed=8).reshape(15, 3, -1)
    batch = family.make_batch(3)
    batch.set_tasks(tasks)
    assert batch.tasks == tasks
    batch_obs = [batch.reset([np.random.default_rng(s) for s in seeds])]
    batch_rewards, batch_terminated = [], []
    for step_actions in actions:
        result = batch.step(step_actions)
        batch_obs.append(result.obs)
        batch_rewards.append(result.reward)
        batch_terminated.append(result.terminated)
    for i, (task, seed) in enumerate(zip(tasks, seeds, strict=True)):
        env = make_env(name, variant)
        env.set_task(task)
        single = rollout(env, seed=seed, actions=actions[:, i])
        np.testing.assert_array_equal(np.array(batch_obs)[:, i], single["obs"])
        np.testing.assert_array_equal(np.array(batch_rewards)[:, i], single["reward"])
        np.testing.assert_array_equal(np.array(batch_terminated)[:, i], single["terminated"])


# --------------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "variant"), CASES)
def test_set_task_get_task_round_trip(name: str, variant: str) -> None:
    env = make_env(name, variant)
    assert env.get_task() == env.family.default_task()
    for task in env.family.sample_tasks(3, np.random.default_rng(9)):
        env.set_task(task)
        assert env.get_task() == task
        _, info = env.reset(seed=0)
        assert info["task"] == task
        env.set_task(task.to_dict())  # a plain mapping works too
        assert env.get_task() == task
    other = env.family.sample_tasks(1, np.random.default_rng(10))[0]
    _, info = env.reset(seed=0, options={"task": other})
    assert info["task"] == other == env.get_task()


@pytest.mark.parametrize(("name", "variant"), CASES)
def test_sampled_tasks_pickle_and_json_round_trip(name: str, variant: str) -> None:
    family = make_family(name, variant=variant)
    for task in family.sample_tasks(3, np.random.default_rng(11)):
        for copy in (pickle.loads(pickle.dumps(task)), Task.from_json(task.to_json())):
            assert copy == task
            assert copy.id == task.id
            assert family.validate_task(copy) == task
        assert Task.from_dict(json.loads(json.dumps(task.to_dict()))) == task


@pytest.mark.parametrize(("name", "variant"), CASES)
def test_sample_tasks_rejects_bad_counts(name: str, variant: str) -> None:
    family = make_family(name, variant=variant)
    for n in (0, -1):
        with pytest.raises(ValueError, match=f"{name}.sample_tasks.*positive"):
            family.sample_tasks(n, np.random.default_rng(0))
    with pytest.raises(TypeError, match="Generator"):
        family.sample_tasks(2, np.random.RandomState(0))  # type: ignore[arg-type]


def bad_tasks(family: TaskFamily) -> list[tuple[str, str, dict[str, Any]]]:
    """``(what, key, task)`` for every way a task can be wrong, for every key."""
    valid = family.sample_tasks(1, np.random.default_rng(0))[0].to_dict()
    cases = [("unknown", "bogus_key", {**valid, "bogus_key": 1.0})]
    for key, spec in family.param_specs().items():
        missing = {k: v for k, v in valid.items() if k != key}
        cases.append(("missing", key, missing))
        nan = np.full(spec.shape, np.nan) if spec.shape else math.nan
        cases.append(("nan", key, {**valid, key: nan}))
        cases.append(("string", key, {**valid, key: "fast"}))
        out = out_of_range_value(spec, valid[key])
        if out is not None:
            cases.append(("out of range", key, {**valid, key: out}))
    return cases


@pytest.mark.parametrize(("name", "variant"), CASES)
def test_set_task_rejects_bad_tasks_naming_family_and_key(name: str, variant: str) -> None:
    env = make_env(name, variant)
    before = env.get_task()
    cases = bad_tasks(env.family)
    assert {what for what, _, _ in cases} >= {"unknown", "missing", "nan", "string"}
    for what, key, task in cases:
        with pytest.raises(ValueError) as excinfo:
            env.set_task(task)
        message = str(excinfo.value)
        assert name in message and key in message, f"{what} {key}: unclear message {message!r}"
        assert env.get_task() == before  # a rejected task changes nothing


@pytest.mark.parametrize(("name", "variant"), CASES)
def test_default_task_split(name: str, variant: str) -> None:
    family = make_family(name, variant=variant)
    split = family.task_split("default")
    assert split == family.task_split("default")  # fixed, not re-drawn
    assert split.train and split.test
    for task in (*split.train, *split.test):
        assert family.validate_task(task) == task
    if split.disjoint:
        assert not {t.id for t in split.train} & {t.id for t in split.test}
    else:
        # Only a family with a handful of tasks trains and tests on all of them.
        assert set(split.train) == set(split.test)
        assert len(set(split.train)) <= 8
    with pytest.raises(ValueError, match=r"no task split 'nope'; available: \[.*'default'"):
        family.task_split("nope")


@pytest.mark.parametrize(("name", "variant"), CASES)
def test_episode_truncates_exactly_at_the_horizon(name: str, variant: str) -> None:
    assert make_env(name, variant).horizon == FAMILIES[name].variants[variant].horizon
    env = make_env(name, variant, horizon=5)
    assert env.horizon == 5
    zero = np.zeros(env.action_space.shape, dtype=np.float32)
    for _ in range(2):  # a reset restarts the count
        env.reset(seed=0)
        flags = [env.step(zero)[3] for _ in range(5)]
        assert flags == [False, False, False, False, True]
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match=f"{name}: horizon must be a positive int"):
            make_family(name, variant=variant, horizon=bad)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "variant"), ONE_PER_FAMILY)
def test_render_rgb_array(name: str, variant: str) -> None:
    env = gym.make(env_id(name), variant=variant, render_mode="rgb_array", width=64, height=48)
    env.reset(seed=0)
    for action in random_actions(env.unwrapped, 3, seed=0):  # type: ignore[arg-type]
        env.step(action)
    try:
        frame = env.render()
    except Exception as exc:  # a headless machine without EGL/OSMesa fails here
        pytest.fail(
            f"{name}: render() failed with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}: "
            f"{type(exc).__name__}: {exc}. Install EGL (libegl1) or OSMesa and set MUJOCO_GL."
        )
    assert isinstance(frame, np.ndarray)
    assert frame.shape == (48, 64, 3)
    assert frame.dtype == np.uint8
    assert len(np.unique(frame.reshape(-1, 3), axis=0)) > 1, f"{name}: the frame is constant"
    env.close()


@pytest.mark.parametrize(("name", "variant"), ONE_PER_FAMILY)
def test_the_env_exposes_its_live_mujoco_model_and_data(name: str, variant: str) -> None:
    env = gym.make(env_id(name), variant=variant)
    env.reset(seed=0)
    unwrapped = env.unwrapped
    if not isinstance(unwrapped.family, MujocoTaskFamily):
        with pytest.raises(AttributeError, match="not simulated by MuJoCo"):
            _ = unwrapped.data
        return
    model, data = unwrapped.model, unwrapped.data
    assert isinstance(model, mujoco.MjModel) and isinstance(data, mujoco.MjData)
    before, qpos = data.time, data.qpos.copy()
    env.step(env.action_space.sample())
    assert unwrapped.data is data  # the same live data, stepped in place
    assert data.time == pytest.approx(before + unwrapped.dt)
    assert not np.array_equal(data.qpos, qpos)
    if unwrapped.family.per_task_model:  # a dynamics task changes this env's own model
        masses = model.body_mass.copy()
        task = unwrapped.sample_tasks(1, np.random.default_rng(3))[0]
        unwrapped.set_task(task)
        assert not np.array_equal(unwrapped.model.body_mass, masses)
    env.close()
