"""HumanoidDir: Gymnasium Humanoid-v5 equivalence, reward formula, termination, task checks."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import metarl.envs  # noqa: F401  (registers metarl/<Family>-v0)
from metarl.envs import MetaEnv
from metarl.envs.humanoid import HumanoidDir
from metarl.tasks import Task

TIMESTEP = 0.003  # humanoid.xml's model timestep (s); the env step is 5 of them
NU = 17


def _data(env: MetaEnv) -> mujoco.MjData:
    return env.unwrapped._batch.datas[0]


def test_observations_equal_gymnasium_humanoid_v5() -> None:
    env = MetaEnv("HumanoidDir")
    # Without termination Gymnasium keeps stepping after the fall; the observation is the same.
    ref = gym.make("Humanoid-v5", terminate_when_unhealthy=False)
    obs, _ = env.reset(seed=21)
    ref_obs, _ = ref.reset(seed=21)
    assert env.observation_space.shape == ref.observation_space.shape == (348,)
    assert env.action_space == ref.action_space
    np.testing.assert_array_equal(obs, ref_obs)
    rng = np.random.default_rng(0)
    fell = False
    for _ in range(150):
        action = rng.uniform(-0.4, 0.4, size=NU)
        obs, _, terminated, _, info = env.step(action)
        ref_obs, _, _, _, ref_info = ref.step(action)
        np.testing.assert_array_equal(obs, ref_obs)
        # Same health check as v5, and v5's ctrl and (capped) contact costs.
        assert terminated == (not ref.unwrapped.is_healthy)
        assert info["reward_ctrl"] == pytest.approx(ref_info["reward_ctrl"], rel=1e-12)
        assert info["reward_contact"] == pytest.approx(ref_info["reward_contact"], rel=1e-12)
        fell |= terminated
    assert fell, "the comparison should cover the fall (contacts and termination)"
    assert np.any(obs[-78:] != 0.0)


@pytest.mark.parametrize("angle", [0.0, 1.0, math.pi, 5.0])
def test_reward_follows_formula(angle: float) -> None:
    env = MetaEnv("HumanoidDir")
    env.set_task({"angle": angle})
    env.reset(seed=1)
    data = _data(env)
    assert env.unwrapped.family.model.opt.timestep == TIMESTEP
    rng = np.random.default_rng(round(angle * 1000))
    direction = np.array([math.cos(angle), math.sin(angle)])
    for _ in range(40):
        action = rng.uniform(-0.5, 0.5, size=NU)
        xy0 = data.qpos[0:2].copy()
        _, reward, _, _, info = env.step(action)
        xy1 = data.qpos[0:2].copy()
        # Divided by the model timestep, not the env dt: the original's quirk, kept.
        forward = 0.25 * float(direction @ (xy1 - xy0)) / TIMESTEP
        ctrl = 0.1 * float(np.sum(np.square(data.ctrl)))
        contact = min(5e-7 * float(np.sum(np.square(data.cfrc_ext))), 10.0)
        expected = forward - ctrl - contact + 5.0
        assert reward == pytest.approx(expected, rel=1e-12, abs=1e-12)
        terms = [v for k, v in info.items() if k.startswith("reward_")]
        assert reward == pytest.approx(sum(terms), rel=1e-13, abs=1e-13)
        assert info["reward_forward"] == pytest.approx(forward, rel=1e-12, abs=1e-12)


def test_contact_cost_is_capped_at_ten() -> None:
    family = HumanoidDir()
    data = mujoco.MjData(family.model)
    mujoco.mj_forward(family.model, data)
    state = {name: np.array(getattr(data, name))[None] for name in family.gather}
    before = {"qpos": state["qpos"].copy()}
    params = family.task_params([family.default_task()])
    action = np.zeros((1, NU))
    state["cfrc_ext"] = np.full_like(state["cfrc_ext"], 1e3)  # 5e-7 * 84 * 1e6 = 42 > 10
    terms, _ = family.reward_terms(before, state, action, params)
    assert terms["reward_contact"].tolist() == [-10.0]
    state["cfrc_ext"] = np.full_like(state["cfrc_ext"], 10.0)  # 5e-7 * 84 * 100 = 0.0042
    terms, _ = family.reward_terms(before, state, action, params)
    assert terms["reward_contact"][0] == pytest.approx(-5e-7 * state["cfrc_ext"].size * 100.0)


@pytest.mark.parametrize(
    ("z", "expected"),
    [
        (1.4, False),
        (1.0001, False),
        (1.9999, False),
        (1.0, True),
        (2.0, True),
        (0.5, True),
        (2.5, True),
        (np.nan, True),
    ],
)
def test_terminated_outside_open_interval(z: float, expected: bool) -> None:
    family = HumanoidDir()
    data = mujoco.MjData(family.model)
    mujoco.mj_forward(family.model, data)
    data.qpos[2] = z
    state = {name: np.array(getattr(data, name))[None] for name in family.gather}
    params = family.task_params([family.default_task()])
    assert family.terminated(state, params).tolist() == [expected]


def test_falls_and_terminates_without_control() -> None:
    env = MetaEnv("HumanoidDir")
    env.reset(seed=0)
    data = _data(env)
    steps, terminated = 0, False
    while not terminated and steps < 200:
        _, _, terminated, truncated, _ = env.step(np.zeros(NU))
        assert not truncated
        steps += 1
    assert terminated, "a humanoid without control falls well within the horizon"
    assert steps > 5 and data.qpos[2] <= 1.0


def test_lifted_torso_terminates() -> None:
    env = MetaEnv("HumanoidDir")
    env.reset(seed=0)
    data = _data(env)
    data.qpos[2] = 2.5
    mujoco.mj_forward(env.unwrapped.family.model, data)
    assert env.step(np.zeros(NU))[2] is True


@pytest.mark.parametrize(
    ("task", "word"),
    [
        ({"angle": -0.1}, "angle"),
        ({"angle": 6.3}, "angle"),
        ({"angle": np.nan}, "angle"),
        ({"angle": [0.0, 1.0]}, "angle"),
        ({}, "angle"),
        ({"angle": 1.0, "direction": 1.0}, "direction"),
    ],
)
def test_bad_tasks_raise_naming_family_and_key(task: dict[str, Any], word: str) -> None:
    with pytest.raises(ValueError, match="HumanoidDir") as excinfo:
        HumanoidDir().validate_task(task)
    assert word in str(excinfo.value)


def test_variant_sampling_and_registration() -> None:
    family = HumanoidDir()
    assert family.variant == "pearl" and family.horizon == 200
    assert family.default_task() == Task(angle=0.0)
    angles = np.array([t["angle"] for t in family.sample_tasks(4000, np.random.default_rng(0))])
    assert angles.min() >= 0.0 and angles.max() < 2 * math.pi
    assert angles.mean() == pytest.approx(math.pi, abs=0.1)
    env = gym.make("metarl/HumanoidDir-v0")
    env.unwrapped.set_task({"angle": 2.0})
    assert env.unwrapped.get_task() == Task(angle=2.0)
    with pytest.raises(ValueError, match=r"HumanoidDir.*variant"):
        HumanoidDir("maml")


def test_batch_of_three_equals_single_envs() -> None:
    family = HumanoidDir()
    tasks = [{"angle": 0.5}, {"angle": 2.5}, {"angle": 4.5}]
    seeds = [1, 2, 3]
    batch = family.make_batch(3)
    batch.set_tasks(tasks)
    obs = batch.reset([np.random.default_rng(s) for s in seeds])
    singles = [MetaEnv(family) for _ in range(3)]
    for env, task, seed, row in zip(singles, tasks, seeds, obs, strict=True):
        env.set_task(task)
        np.testing.assert_array_equal(env.reset(seed=seed)[0], row)
    rng = np.random.default_rng(9)
    for _ in range(20):
        actions = rng.uniform(-0.4, 0.4, size=(3, NU))
        result = batch.step(actions)
        for i, env in enumerate(singles):
            obs_i, reward_i, term_i, _, info_i = env.step(actions[i])
            np.testing.assert_array_equal(result.obs[i], obs_i)
            assert result.reward[i] == reward_i
            assert bool(result.terminated[i]) == term_i
            for key, value in result.terms.items():
                assert value[i] == info_i[key]
    assert len(set(result.reward.tolist())) == 3
