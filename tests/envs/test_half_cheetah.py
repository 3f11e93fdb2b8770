"""HalfCheetahVel and HalfCheetahDir against Gymnasium's HalfCheetah-v5 and REFERENCE.md's formulas.

Rewards are recomputed from ``qpos[0]`` read straight from the env's ``MjData`` before and after
each step, not from the family's own reward functions.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from metarl.envs import MetaEnv, env_id
from metarl.envs.half_cheetah import HalfCheetahDir, HalfCheetahVel
from metarl.tasks import Task

DT = 0.05  # half_cheetah.xml's timestep 0.01 s x Gymnasium v5's frame_skip 5
CTRL = 0.05  # control cost weight of the MAML/PEARL cheetah rewards


def make(name: str, **kwargs: object) -> MetaEnv:
    env = gym.make(env_id(name), **kwargs).unwrapped
    assert isinstance(env, MetaEnv)
    return env


def actions(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=(n, 6)).astype(np.float32)


def step_with_x(env: MetaEnv, action: np.ndarray) -> tuple[float, float, dict[str, float]]:
    """Step once; return ``(reward, v_x, info)`` with ``v_x`` from ``MjData.qpos[0]``."""
    data = env._batch.datas[0]  # type: ignore[attr-defined]
    x_before = float(data.qpos[0])
    _, reward, terminated, _, info = env.step(action)
    assert not terminated  # the cheetah families never terminate
    return reward, (float(data.qpos[0]) - x_before) / DT, info


def test_dt_is_gymnasiums() -> None:
    assert make("HalfCheetahVel").dt == pytest.approx(DT, rel=1e-15)
    assert make("HalfCheetahVel").dt == gym.make("HalfCheetah-v5").unwrapped.dt  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["HalfCheetahVel", "HalfCheetahDir"])
def test_observations_equal_gymnasium_half_cheetah_v5(name: str) -> None:
    ours = make(name)
    theirs = gym.make("HalfCheetah-v5", ctrl_cost_weight=CTRL).unwrapped
    obs_ours, _ = ours.reset(seed=42)
    obs_theirs, _ = theirs.reset(seed=42)
    assert ours.observation_space.shape == theirs.observation_space.shape == (17,)
    np.testing.assert_array_equal(obs_ours, obs_theirs)
    for action in actions(200, seed=0):
        obs_ours, _, _, _, info_ours = ours.step(action)
        # float64 for Gymnasium too: it takes the control cost in the action's dtype, while
        # metarl takes it in float64. The physics sees the same float64 ctrl either way.
        obs_theirs, _, _, _, info_theirs = theirs.step(action.astype(np.float64))
        np.testing.assert_array_equal(obs_ours, obs_theirs)
        assert info_ours["x_velocity"] == pytest.approx(info_theirs["x_velocity"], rel=1e-12)
        assert info_ours["reward_ctrl"] == pytest.approx(info_theirs["reward_ctrl"], rel=1e-12)


def test_direction_plus_one_is_gymnasiums_reward() -> None:
    """With d = +1 and ctrl_cost_weight 0.05, HalfCheetahDir's reward is HalfCheetah-v5's."""
    ours = make("HalfCheetahDir")
    ours.set_task({"direction": 1.0})
    theirs = gym.make("HalfCheetah-v5", ctrl_cost_weight=CTRL).unwrapped
    ours.reset(seed=3)
    theirs.reset(seed=3)
    for action in actions(50, seed=1):
        reward_ours = ours.step(action)[1]
        reward_theirs = theirs.step(action.astype(np.float64))[1]
        assert reward_ours == pytest.approx(reward_theirs, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("variant", ["maml", "pearl"])
def test_vel_reward_follows_the_formula(variant: str) -> None:
    env = make("HalfCheetahVel", variant=variant)
    goal = 1.7 if variant == "maml" else 2.6
    env.set_task({"velocity": goal})
    env.reset(seed=5)
    for action in actions(100, seed=2):
        reward, v_x, info = step_with_x(env, action)
        ctrl = CTRL * float(np.sum(np.square(action.astype(np.float64))))
        assert reward == pytest.approx(-abs(v_x - goal) - ctrl, rel=1e-12, abs=1e-12)
        assert info["reward_forward"] == pytest.approx(-abs(v_x - goal), rel=1e-12, abs=1e-12)
        assert info["reward_ctrl"] == pytest.approx(-ctrl, rel=1e-12)


@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_dir_reward_follows_the_formula(direction: float) -> None:
    env = make("HalfCheetahDir")
    env.set_task({"direction": direction})
    env.reset(seed=6)
    for action in actions(100, seed=3):
        reward, v_x, _ = step_with_x(env, action)
        ctrl = CTRL * float(np.sum(np.square(action.astype(np.float64))))
        assert reward == pytest.approx(direction * v_x - ctrl, rel=1e-12, abs=1e-12)


def run_task(name: str, task: dict[str, float], seed: int = 9) -> tuple[np.ndarray, ...]:
    env = make(name)
    env.set_task(task)
    env.reset(seed=seed)
    obs, rewards, v_x = [], [], []
    for action in actions(60, seed=4):
        o, r, _, _, info = env.step(action)
        obs.append(o)
        rewards.append(r)
        v_x.append(info["x_velocity"])
    return np.array(obs), np.array(rewards), np.array(v_x)


def test_set_task_changes_the_vel_reward_as_the_formula_says() -> None:
    obs_a, rewards_a, v_x = run_task("HalfCheetahVel", {"velocity": 0.3})
    obs_b, rewards_b, v_x_b = run_task("HalfCheetahVel", {"velocity": 1.9})
    # The task changes the reward only: the same seed and actions give the same motion.
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(v_x, v_x_b)
    np.testing.assert_allclose(
        rewards_a - rewards_b, -np.abs(v_x - 0.3) + np.abs(v_x - 1.9), rtol=0, atol=1e-12
    )


def test_set_task_changes_the_dir_reward_as_the_formula_says() -> None:
    obs_f, rewards_f, v_x = run_task("HalfCheetahDir", {"direction": 1.0})
    obs_b, rewards_b, _ = run_task("HalfCheetahDir", {"direction": -1.0})
    np.testing.assert_array_equal(obs_f, obs_b)
    np.testing.assert_allclose(rewards_f - rewards_b, 2.0 * v_x, rtol=0, atol=1e-12)


def test_episode_never_terminates_and_truncates_at_200() -> None:
    env = make("HalfCheetahVel")
    env.reset(seed=0)
    for t, action in enumerate(actions(200, seed=5), start=1):
        _, _, terminated, truncated, _ = env.step(4.0 * action)  # beyond the ctrl range
        assert not terminated
        assert truncated == (t == 200)


# --------------------------------------------------------------------------------------------
# Task distributions and splits
# --------------------------------------------------------------------------------------------


def test_pearl_split_is_pearls_130_velocities() -> None:
    split = HalfCheetahVel(variant="pearl").task_split("pearl")
    expected = np.random.RandomState(1337).uniform(0, 3, 130)
    assert [t["velocity"] for t in split.train] == expected[:100].tolist()
    assert [t["velocity"] for t in split.test] == expected[100:].tolist()
    assert (len(split.train), len(split.test)) == (100, 30)
    assert split.name == "pearl"
    assert split.disjoint


def test_pearl_split_exists_only_for_the_pearl_variant() -> None:
    assert sorted(HalfCheetahVel(variant="pearl").task_splits()) == ["default", "pearl"]
    with pytest.raises(ValueError, match=r"variant 'maml'.*'pearl'; available: \['default'\]"):
        HalfCheetahVel(variant="maml").task_split("pearl")


def test_variants_have_their_velocity_ranges() -> None:
    maml, pearl = HalfCheetahVel(variant="maml"), HalfCheetahVel(variant="pearl")
    with pytest.raises(ValueError, match=r"HalfCheetahVel.*'maml'.*velocity.*\[0, 2\].*2\.5"):
        maml.validate_task({"velocity": 2.5})
    with pytest.raises(ValueError, match="velocity"):
        make("HalfCheetahVel").set_task({"velocity": 2.5})
    assert pearl.validate_task({"velocity": 2.5})["velocity"] == 2.5
    assert maml.default_task()["velocity"] == 1.0
    rng = np.random.default_rng(0)
    for family, high in ((maml, 2.0), (pearl, 3.0)):
        v = np.array([t["velocity"] for t in family.sample_tasks(500, rng)])
        assert v.min() >= 0.0 and v.max() <= high
        assert v.max() > 0.9 * high  # the whole range is used
    assert HalfCheetahVel(variant="maml").sample_tasks(5, np.random.default_rng(1)) == [
        Task(velocity=v) for v in np.random.default_rng(1).uniform(0.0, 2.0, size=5)
    ]


def test_dir_tasks_are_plus_or_minus_one_with_equal_odds() -> None:
    family = HalfCheetahDir()
    d = np.array([t["direction"] for t in family.sample_tasks(2000, np.random.default_rng(0))])
    assert set(d.tolist()) == {-1.0, 1.0}
    assert abs(np.mean(d == 1.0) - 0.5) < 0.05
    assert family.default_task()["direction"] == 1.0
    with pytest.raises(ValueError, match=r"direction must be one of \{-1, 1\}"):
        family.validate_task({"direction": 0.5})


@pytest.mark.parametrize("name", ["HalfCheetahVel", "HalfCheetahDir"])
def test_100hz_variant_takes_one_mujoco_step_per_action(name: str) -> None:
    """``maml-100hz``: rllab's rate. The same start and controls in a bare MuJoCo loop with one
    ``mj_step`` per action give the same states, and the reward's velocity is over 0.01 s."""
    import mujoco

    env = make(name, variant="maml-100hz")
    assert env.dt == pytest.approx(0.01, rel=1e-15)
    env.reset(seed=3)
    task = env.sample_tasks(1)[0] if name == "HalfCheetahVel" else Task({"direction": -1.0})
    env.set_task(task)
    data = env._batch.datas[0]  # type: ignore[attr-defined]
    model = env._batch.models[0]  # type: ignore[attr-defined]
    bare = mujoco.MjData(model)
    bare.qpos[:], bare.qvel[:] = data.qpos, data.qvel
    mujoco.mj_forward(model, bare)
    for action in actions(50, seed=1):
        x_before = float(bare.qpos[0])
        bare.ctrl[:] = action
        mujoco.mj_step(model, bare)
        obs, reward, _, _, info = env.step(action)
        np.testing.assert_array_equal(obs, np.concatenate([bare.qpos[1:], bare.qvel]))
        v_x = (float(bare.qpos[0]) - x_before) / 0.01
        forward = -abs(v_x - task["velocity"]) if name == "HalfCheetahVel" else -v_x
        ctrl = -CTRL * float(np.sum(np.square(action.astype(np.float64))))
        assert reward == pytest.approx(forward + ctrl, rel=1e-9, abs=1e-9)
        assert info["x_velocity"] == pytest.approx(v_x, rel=1e-12)
    # The default variant keeps Gymnasium's rate.
    assert make(name).dt == pytest.approx(DT, rel=1e-15)


@pytest.mark.parametrize("name", ["HalfCheetahVel", "HalfCheetahDir"])
def test_rllab_variant_observes_and_rewards_the_centre_of_mass(name: str) -> None:
    """``maml-rllab``: rllab's ``MujocoEnv``. A bare MuJoCo loop with one ``mj_step`` per action
    followed by ``mj_forward`` (rllab's ``model.forward()``) and ``mj_subtreeVel`` gives the
    observation ``[qpos[1:], qvel, torso subtree com]`` and the reward's forward velocity as the
    subtree's centre-of-mass velocity."""
    import mujoco

    env = make(name, variant="maml-rllab")
    assert env.dt == pytest.approx(0.01, rel=1e-15)
    assert env.observation_space.shape == (20,)
    obs, _ = env.reset(seed=4)
    task = Task({"velocity": 1.3}) if name == "HalfCheetahVel" else Task({"direction": -1.0})
    env.set_task(task)
    data = env._batch.datas[0]  # type: ignore[attr-defined]
    model = env._batch.models[0]  # type: ignore[attr-defined]
    torso = model.body("torso").id
    bare = mujoco.MjData(model)
    bare.qpos[:], bare.qvel[:] = data.qpos, data.qvel
    mujoco.mj_forward(model, bare)
    np.testing.assert_array_equal(obs[-3:], bare.subtree_com[torso])
    gaps = []
    for action in actions(60, seed=2):
        root_x = float(bare.qpos[0])
        bare.ctrl[:] = action
        mujoco.mj_step(model, bare)
        mujoco.mj_forward(model, bare)
        mujoco.mj_subtreeVel(model, bare)
        obs, reward, _, _, info = env.step(action)
        expected = np.concatenate([bare.qpos[1:], bare.qvel, bare.subtree_com[torso]])
        np.testing.assert_allclose(obs, expected, rtol=1e-12, atol=1e-12)
        v_com = float(bare.subtree_linvel[torso, 0])
        forward = -abs(v_com - 1.3) if name == "HalfCheetahVel" else -v_com
        ctrl = -CTRL * float(np.sum(np.square(action.astype(np.float64))))
        assert reward == pytest.approx(forward + ctrl, rel=1e-9, abs=1e-9)
        assert info["x_velocity"] == pytest.approx(v_com, rel=1e-12, abs=1e-12)
        gaps.append(abs(v_com - (float(bare.qpos[0]) - root_x) / 0.01))
    # The centre of mass is not the root: the velocities the two variants reward differ.
    assert max(gaps) > 0.05


def test_rllab_variant_resets_with_rllabs_noise() -> None:
    """qpos + N(0, 0.01) (Gymnasium: U(-0.1, 0.1)) and qvel + N(0, 0.1), per coordinate."""
    family = HalfCheetahDir(variant="maml-rllab")
    rng = np.random.default_rng(0)
    draws = [family.reset_state(rng) for _ in range(2000)]
    qpos = np.stack([q for q, _ in draws]) - family.init_qpos
    qvel = np.stack([v for _, v in draws]) - family.init_qvel
    assert qpos.std() == pytest.approx(0.01, rel=0.05)
    assert np.abs(qpos).max() > 0.03  # Gaussian tails, never reached by U(-0.01, 0.01)
    assert qvel.std() == pytest.approx(0.1, rel=0.05)
    assert HalfCheetahDir().observation_space.shape == (17,)
