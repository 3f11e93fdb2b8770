"""Point2DNav: closed-form states and rewards, termination, clipping, batching, rendering."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

import metarl.envs
from metarl.envs.base import MetaEnv
from metarl.envs.point2d import Point2DNav


@pytest.fixture(scope="module")
def family() -> Point2DNav:
    return Point2DNav()


def test_spaces_horizon_and_registration(family):
    assert family.horizon == 100
    assert family.dt == 1.0
    assert family.observation_space.shape == (2,)
    assert family.observation_space.dtype == np.float64
    assert family.action_space == gym.spaces.Box(-0.1, 0.1, (2,), np.float32)
    assert metarl.envs.FAMILIES["Point2DNav"] is Point2DNav
    env = gym.make("metarl/Point2DNav-v0")
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, [0.0, 0.0])
    assert obs.dtype == np.float64
    env.close()


def test_known_actions_give_known_states_rewards_and_termination(family):
    env = MetaEnv(family)
    env.set_task({"goal": [0.25, -0.15]})
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, [0.0, 0.0])

    obs, reward, terminated, truncated, info = env.step(np.array([0.1, -0.1]))
    np.testing.assert_allclose(obs, [0.1, -0.1])
    assert reward == pytest.approx(-math.sqrt(0.15**2 + 0.05**2), abs=1e-15)
    assert info == {"reward_distance": reward}
    assert not terminated and not truncated

    obs, reward, terminated, _, _ = env.step(np.array([5.0, -5.0]))  # clipped to (0.1, -0.1)
    np.testing.assert_allclose(obs, [0.2, -0.2])
    assert reward == pytest.approx(-math.sqrt(0.05**2 + 0.05**2), abs=1e-15)
    assert not terminated

    obs, reward, terminated, _, _ = env.step(np.array([0.05, 0.05]))
    np.testing.assert_allclose(obs, [0.25, -0.15])
    assert reward == pytest.approx(0.0, abs=1e-15)
    assert terminated


def test_termination_needs_both_axes_strictly_within_tolerance(family):
    batch = family.make_batch(4)
    batch.set_tasks([{"goal": [0.0, 0.0]}] * 4)
    batch.reset([np.random.default_rng(i) for i in range(4)])
    actions = np.array([[0.01, 0.0], [0.0099, 0.0], [0.0099, -0.0099], [0.0, 0.02]])
    result = batch.step(actions)
    np.testing.assert_array_equal(result.terminated, [False, True, True, False])
    np.testing.assert_allclose(result.reward, -np.linalg.norm(actions, axis=1), rtol=1e-15)


def test_actions_are_clipped_per_axis(family):
    batch = family.make_batch(1)
    batch.reset([np.random.default_rng(0)])
    rng = np.random.default_rng(1)
    position = np.zeros(2)
    for _ in range(20):
        action = rng.uniform(-1.0, 1.0, size=(1, 2))
        obs = batch.step(action).obs[0]
        position = position + np.clip(action[0], -0.1, 0.1)
        np.testing.assert_allclose(obs, position, rtol=0, atol=1e-12)


def test_batch_equals_singles_with_subsets(family):
    goals = family.sample_tasks(3, np.random.default_rng(5))
    actions = np.random.default_rng(6).uniform(-0.2, 0.2, size=(30, 3, 2))
    batch = family.make_batch(3)
    batch.set_tasks(goals)
    batch.reset([np.random.default_rng(i) for i in range(3)])
    singles = [family.make_batch(1) for _ in range(3)]
    for single, goal in zip(singles, goals, strict=True):
        single.set_tasks([goal])
        single.reset([np.random.default_rng(0)])
    for t in range(30):
        # Every third step only envs 2 and 0 move (in that order), exercising ``indices``.
        idx = [2, 0] if t % 3 == 2 else [0, 1, 2]
        result = batch.step(actions[t, idx], indices=idx)
        for row, i in enumerate(idx):
            one = singles[i].step(actions[t, i : i + 1])
            np.testing.assert_array_equal(result.obs[row], one.obs[0])
            assert result.reward[row] == one.reward[0]
            assert result.terms["reward_distance"][row] == one.reward[0]
            assert result.terminated[row] == one.terminated[0]


def test_reset_selected_envs_only(family):
    batch = family.make_batch(3)
    batch.reset([np.random.default_rng(i) for i in range(3)])
    batch.step(np.full((3, 2), 0.05))
    obs = batch.reset([np.random.default_rng(0)], indices=[1])
    np.testing.assert_array_equal(obs, [[0.0, 0.0]])
    np.testing.assert_allclose(batch.state, [[0.05, 0.05], [0.0, 0.0], [0.05, 0.05]])
    with pytest.raises(ValueError, match="one Generator per env"):
        batch.reset([np.random.default_rng(0)])


def test_truncates_at_horizon(family):
    env = MetaEnv(family)
    env.set_task({"goal": [0.5, 0.5]})
    env.reset(seed=0)
    flags = [env.step(np.array([-0.1, -0.1]))[3] for _ in range(100)]
    assert flags == [False] * 99 + [True]


def test_sampling_is_uniform_in_square_and_seeded(family):
    tasks = family.sample_tasks(500, np.random.default_rng(3))
    goals = np.array([t["goal"] for t in tasks])
    assert goals.shape == (500, 2)
    assert np.all(np.abs(goals) <= 0.5)
    assert np.abs(goals).max() > 0.49
    np.testing.assert_array_equal(goals[0], np.random.default_rng(3).uniform(-0.5, 0.5, 2))
    assert tasks == family.sample_tasks(500, np.random.default_rng(3))
    split = family.task_split("default")
    assert len(split.train) == 100 and len(split.test) == 40


@pytest.mark.parametrize(
    ("goal", "message"),
    [
        ([0.6, 0.0], r"goal must be in"),
        ([0.0, -0.51], r"goal must be in"),
        ([0.1, 0.2, 0.3], r"goal must have shape \(2,\)"),
        ([np.nan, 0.0], r"goal must be finite"),
    ],
)
def test_bad_goals_raise(family, goal, message):
    with pytest.raises(ValueError, match=rf"Point2DNav.*{message}"):
        family.validate_task({"goal": goal})
    with pytest.raises(ValueError, match="Point2DNav"):
        family.make_batch(1).set_tasks([{"goal": goal}])


def test_bad_actions_raise(family):
    batch = family.make_batch(2)
    batch.reset([np.random.default_rng(0), np.random.default_rng(1)])
    with pytest.raises(ValueError, match=r"actions must have shape \(2, 2\)"):
        batch.step(np.zeros((2, 3)))


def _pixel(frame: np.ndarray, point: np.ndarray, half: float) -> np.ndarray:
    height, width, _ = frame.shape
    scale = 0.5 * min(width, height) / half
    col = int(point[0] * scale + 0.5 * width)
    row = int(0.5 * height - point[1] * scale)
    return frame[row, col]


def test_render_draws_goal_agent_and_trajectory(family):
    env = MetaEnv(family, render_mode="rgb_array", width=200, height=160)
    env.set_task({"goal": [0.4, -0.3]})
    env.reset(seed=0)
    for _ in range(4):
        env.step(np.array([-0.05, 0.05]))
    frame = env.render()
    assert frame.shape == (160, 200, 3) and frame.dtype == np.uint8
    half = 0.6  # the default view: [-0.6, 0.6]^2 while everything is inside it
    np.testing.assert_array_equal(_pixel(frame, np.array([0.4, -0.3]), half), [40, 170, 60])
    np.testing.assert_array_equal(_pixel(frame, np.array([-0.2, 0.2]), half), [30, 80, 200])
    np.testing.assert_array_equal(_pixel(frame, np.array([-0.1, 0.1]), half), [150, 180, 230])
    bare = env._batch.render(0, 200, 160, trajectory=False)
    np.testing.assert_array_equal(_pixel(bare, np.array([-0.1, 0.1]), half), [235, 235, 235])
    # The view widens to keep an agent far from the origin in sight.
    for _ in range(20):
        env.step(np.array([0.1, 0.1]))
    far = env.render()
    assert np.any(np.all(far == [30, 80, 200], axis=-1))
    env.close()


def test_trajectory_keeps_the_last_horizon_positions(family):
    small = Point2DNav(horizon=3)
    batch = small.make_batch(1)
    batch.reset([np.random.default_rng(0)])
    np.testing.assert_array_equal(batch.trajectory(0), [[0.0, 0.0]])
    for _ in range(6):
        batch.step(np.array([[0.1, 0.0]]))
    np.testing.assert_allclose(batch.trajectory(0), [[0.3, 0], [0.4, 0], [0.5, 0], [0.6, 0]])
    batch.reset([np.random.default_rng(0)])
    np.testing.assert_array_equal(batch.trajectory(0), [[0.0, 0.0]])


def test_rllab_variant_scales_unit_actions_into_the_step():
    # cbfinn/maml_rl ran the point env under rllab's normalize(): an action a in [-1, 1]
    # moves the point by clip(0.1 * a, -0.1, 0.1); the task and the reward are the same.
    rllab = Point2DNav(variant="maml-rllab")
    assert rllab.horizon == 100
    assert rllab.action_space == gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    env = MetaEnv(rllab)
    env.set_task({"goal": [0.25, -0.15]})
    env.reset(seed=0)
    obs, reward, terminated, _, info = env.step(np.array([1.0, -0.5], dtype=np.float32))
    np.testing.assert_allclose(obs, [0.1, -0.05])
    assert reward == pytest.approx(-math.hypot(0.1 - 0.25, -0.05 + 0.15))
    assert reward == info["reward_distance"] and not terminated
    obs, *_ = env.step(np.array([7.0, -3.0], dtype=np.float32))  # beyond the range: clipped
    np.testing.assert_allclose(obs, [0.2, -0.15])
    # The same displacements through the default variant take the displacement itself.
    plain = MetaEnv(Point2DNav())
    plain.set_task({"goal": [0.25, -0.15]})
    plain.reset(seed=0)
    np.testing.assert_allclose(plain.step(np.array([0.1, -0.05]))[0], [0.1, -0.05])
