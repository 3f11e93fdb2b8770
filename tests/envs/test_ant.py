"""The Ant families: Gymnasium Ant-v5 equivalence, reward formulas, termination, task checks."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import metarl.envs  # noqa: F401  (registers metarl/<Family>-v0)
from metarl.envs import MetaEnv, make_family
from metarl.envs.ant import AntDir, AntGoal, AntVel
from metarl.tasks import Task

DT = 0.01 * 5  # Ant-v5: timestep 0.01 s, frame_skip 5
CONTACT_WEIGHT = 5e-4


def _data(env: MetaEnv) -> mujoco.MjData:
    return env.unwrapped._batch.datas[0]


def _contact(data: mujoco.MjData) -> float:
    return CONTACT_WEIGHT * float(np.sum(np.clip(data.cfrc_ext, -1.0, 1.0) ** 2))


def _half_range(env: MetaEnv) -> np.ndarray:
    low, high = env.unwrapped.family.model.actuator_ctrlrange.T
    return (high - low) / 2.0


# --------------------------------------------------------------------------------------------
# Same physics and observation as Gymnasium's Ant-v5
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("AntDir", {}), ("AntVel", {}), ("AntGoal", {"variant": "pearl"})],
)
def test_observations_equal_gymnasium_ant_v5(name: str, kwargs: dict[str, Any]) -> None:
    env = MetaEnv(name, **kwargs)
    # Without termination Gymnasium keeps stepping; the observation does not depend on it.
    ref = gym.make("Ant-v5", terminate_when_unhealthy=False)
    obs, _ = env.reset(seed=11)
    ref_obs, _ = ref.reset(seed=11)
    assert env.observation_space.shape == ref.observation_space.shape == (105,)
    assert env.action_space == ref.action_space
    np.testing.assert_array_equal(obs, ref_obs)
    rng = np.random.default_rng(0)
    for _ in range(150):
        action = rng.uniform(-1.0, 1.0, size=8)
        obs, _, _, _, _ = env.step(action)
        ref_obs, _, _, _, _ = ref.step(action)
        np.testing.assert_array_equal(obs, ref_obs)
    # The comparison covered contacts: some clipped force entries are active and nonzero.
    assert np.any(obs[27:] != 0.0)


def test_maml_termination_and_cost_terms_match_gymnasium() -> None:
    """AntDir-maml's fall check is v5's health check; promp's ctrl/contact terms are v5's."""
    maml = MetaEnv("AntDir")
    promp = MetaEnv("AntDir", variant="promp")
    ref = gym.make("Ant-v5", terminate_when_unhealthy=False)
    for env in (maml, promp):
        env.reset(seed=5)
    ref.reset(seed=5)
    rng = np.random.default_rng(1)
    for _ in range(120):
        action = rng.uniform(-1.0, 1.0, size=8)
        _, _, terminated, _, _ = maml.step(action)
        _, _, _, _, info = promp.step(action)
        _, _, _, _, ref_info = ref.step(action)
        assert terminated == (not ref.unwrapped.is_healthy)
        assert info["reward_ctrl"] == pytest.approx(ref_info["reward_ctrl"], rel=1e-12)
        assert info["reward_contact"] == pytest.approx(ref_info["reward_contact"], rel=1e-12)


# --------------------------------------------------------------------------------------------
# Reward formulas, pinned against qpos/cfrc_ext read straight from MjData
# --------------------------------------------------------------------------------------------


def _maml_ctrl(action: np.ndarray, s: np.ndarray) -> float:
    return 0.005 * float(np.sum((action / s) ** 2))


def _expected_reward(
    name: str,
    variant: str,
    task: dict[str, Any],
    q0: np.ndarray,
    q1: np.ndarray,
    action: np.ndarray,
    s: np.ndarray,
    contact: float,
) -> float:
    vx, vy = (q1[0] - q0[0]) / DT, (q1[1] - q0[1]) / DT
    if name == "AntDir" and variant == "maml":
        return task["direction"] * vx - _maml_ctrl(action, s) - contact + 0.05
    if name == "AntDir":
        theta = task["angle"]
        forward = vx * math.cos(theta) + vy * math.sin(theta)
        return forward - 0.5 * float(np.sum(action**2)) - contact + 1.0
    if name == "AntVel":
        return -abs(vx - task["velocity"]) + 1.0 - _maml_ctrl(action, s) - contact + 0.05
    goal = np.asarray(task["goal"])
    l1 = float(np.sum(np.abs(q1[0:2] - goal)))
    if variant == "maml":
        return -l1 + 4.0 - _maml_ctrl(action, s) - contact + 0.05
    return -l1 - 0.1 * float(np.sum(action**2)) - contact


REWARD_CASES = [
    ("AntDir", {"variant": "maml"}, {"direction": -1.0}),
    ("AntDir", {"variant": "maml"}, {"direction": 1.0}),
    ("AntDir", {"variant": "promp"}, {"angle": 2.0}),
    ("AntDir", {"variant": "pearl"}, {"angle": 4.0}),
    ("AntDir", {"variant": "pearl", "forward_backward": True}, {"angle": math.pi}),
    ("AntVel", {"variant": "maml"}, {"velocity": 1.2}),
    ("AntGoal", {"variant": "maml"}, {"goal": [1.5, -2.0]}),
    ("AntGoal", {"variant": "pearl"}, {"goal": [-1.0, 2.0]}),
]


@pytest.mark.parametrize(("name", "kwargs", "task"), REWARD_CASES)
def test_reward_follows_formula(name: str, kwargs: dict[str, Any], task: dict[str, Any]) -> None:
    env = MetaEnv(name, **kwargs)
    env.set_task(task)
    env.reset(seed=3)
    data = _data(env)
    s = _half_range(env)
    assert env.unwrapped.dt == pytest.approx(DT, rel=1e-15)
    rng = np.random.default_rng(2)
    clipped_contact_seen = False
    for _ in range(40):
        # Actions past the control range too: the cost is taken on the action as given.
        action = rng.uniform(-1.3, 1.3, size=8)
        q0 = data.qpos.copy()
        _, reward, _, _, info = env.step(action)
        q1 = data.qpos.copy()
        contact = _contact(data)
        clipped_contact_seen |= bool(np.any(np.abs(data.cfrc_ext) > 1.0))
        expected = _expected_reward(name, kwargs["variant"], task, q0, q1, action, s, contact)
        assert reward == pytest.approx(expected, rel=1e-12, abs=1e-12)
        terms = [v for k, v in info.items() if k.startswith("reward_")]
        assert reward == pytest.approx(sum(terms), rel=1e-13, abs=1e-13)
        assert info["reward_contact"] == pytest.approx(-contact, rel=1e-12, abs=1e-15)
    assert clipped_contact_seen, "the episode never exercised the contact-force clip"


def test_direction_flips_the_forward_term() -> None:
    """Same seed and actions: d = -1 gives exactly minus d = +1's forward term."""
    forward = {}
    for d in (1.0, -1.0):
        env = MetaEnv("AntDir")
        env.set_task({"direction": d})
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        forward[d] = [env.step(rng.uniform(-1, 1, 8))[4]["reward_forward"] for _ in range(10)]
    np.testing.assert_array_equal(forward[1.0], -np.asarray(forward[-1.0]))


# --------------------------------------------------------------------------------------------
# Termination
# --------------------------------------------------------------------------------------------


def _state_with(family: Any, z: float, qvel_nan: bool = False) -> dict[str, np.ndarray]:
    data = mujoco.MjData(family.model)
    mujoco.mj_forward(family.model, data)
    data.qpos[2] = z
    if qvel_nan:
        data.qvel[3] = np.nan
    return {name: np.array(getattr(data, name))[None] for name in family.gather}


FALL_CASES = [
    # (family, z, qvel NaN, terminated?)
    (AntDir("maml"), 0.55, False, False),
    (AntDir("maml"), 0.2, False, False),
    (AntDir("maml"), 1.0, False, False),
    (AntDir("maml"), 0.19, False, True),
    (AntDir("maml"), 1.01, False, True),
    (AntDir("maml"), np.nan, False, True),
    (AntDir("maml"), 0.55, True, True),
    (AntDir("promp"), 0.1, False, False),
    (AntDir("promp"), 0.0, False, False),
    (AntDir("promp"), -0.01, False, True),
    (AntDir("promp"), 1.01, False, True),
    (AntDir("promp"), 0.55, True, True),
    (AntDir("pearl"), 5.0, False, False),
    (AntDir("pearl"), 0.55, True, False),
    (AntVel(), 0.19, False, True),
    (AntVel(), 0.55, False, False),
    (AntGoal("maml"), 1.01, False, True),
    (AntGoal("maml"), 0.55, False, False),
    (AntGoal("pearl"), 1.5, False, False),
]


@pytest.mark.parametrize(("family", "z", "qvel_nan", "expected"), FALL_CASES, ids=repr)
def test_terminated_on_constructed_state(
    family: Any, z: float, qvel_nan: bool, expected: bool
) -> None:
    state = _state_with(family, z, qvel_nan)
    params = family.task_params([family.default_task()])
    assert family.terminated(state, params).tolist() == [expected]


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("AntDir", {"variant": "maml"}, True),
        ("AntDir", {"variant": "promp"}, True),
        ("AntDir", {"variant": "pearl"}, False),
        ("AntVel", {}, True),
        ("AntGoal", {"variant": "maml"}, True),
        ("AntGoal", {"variant": "pearl"}, False),
    ],
)
def test_step_from_torso_above_one_metre(name: str, kwargs: dict[str, Any], expected: bool) -> None:
    env = MetaEnv(name, **kwargs)
    env.reset(seed=0)
    data = _data(env)
    data.qpos[2] = 1.5  # lift the torso: after one 0.05 s step it is still far above 1.0
    mujoco.mj_forward(env.unwrapped.family.model, data)
    _, _, terminated, _, _ = env.step(np.zeros(8))
    assert data.qpos[2] > 1.3
    assert terminated is expected


# --------------------------------------------------------------------------------------------
# Tasks: validation, sampling, variants
# --------------------------------------------------------------------------------------------

BAD_TASKS = [
    (AntDir("maml"), {"direction": 0.5}, "direction"),
    (AntDir("maml"), {"direction": np.nan}, "direction"),
    (AntDir("maml"), {}, "direction"),
    (AntDir("maml"), {"angle": 1.0}, "direction"),
    (AntDir("promp"), {"angle": 7.0}, "angle"),
    (AntDir("promp"), {"angle": -0.1}, "angle"),
    (AntDir("pearl"), {"angle": np.nan}, "angle"),
    (AntDir("pearl", forward_backward=True), {"angle": 1.0}, "angle"),
    (AntVel(), {"velocity": 3.5}, "velocity"),
    (AntVel(), {"velocity": -0.1}, "velocity"),
    (AntVel(), {"velocity": np.inf}, "velocity"),
    (AntVel(), {"velocity": 1.0, "direction": 1.0}, "direction"),
    (AntGoal("maml"), {"goal": [4.0, 0.0]}, "goal"),
    (AntGoal("maml"), {"goal": [1.0, 2.0, 3.0]}, "goal"),
    (AntGoal("maml"), {"goal": [np.nan, 0.0]}, "goal"),
    (AntGoal("pearl"), {"goal": [2.5, 2.5]}, "disc"),
]


@pytest.mark.parametrize(("family", "task", "word"), BAD_TASKS, ids=repr)
def test_bad_tasks_raise_naming_family_and_key(
    family: Any, task: dict[str, Any], word: str
) -> None:
    with pytest.raises(ValueError, match=family.name) as excinfo:
        family.validate_task(task)
    assert word in str(excinfo.value)


def test_bad_task_through_the_env_and_bad_options() -> None:
    env = MetaEnv("AntGoal", variant="pearl")
    with pytest.raises(ValueError, match=r"AntGoal.*disc"):
        env.set_task({"goal": [-2.9, 2.9]})
    assert AntGoal("maml").validate_task({"goal": [-2.9, 2.9]})["goal"].tolist() == [-2.9, 2.9]
    with pytest.raises(ValueError, match=r"AntDir.*forward_backward"):
        AntDir("maml", forward_backward=True)
    with pytest.raises(ValueError, match=r"AntDir.*variant"):
        AntDir("garage")


def test_variant_horizons_and_defaults() -> None:
    assert [AntDir(v).horizon for v in ("maml", "promp", "pearl")] == [200, 100, 200]
    assert AntVel().horizon == AntGoal("maml").horizon == AntGoal("pearl").horizon == 200
    assert AntDir().default_task() == Task(direction=1.0)
    assert AntDir("promp").default_task() == Task(angle=0.0)
    assert AntVel().default_task() == Task(velocity=1.5)
    assert AntGoal("pearl").default_task()["goal"].tolist() == [0.0, 0.0]
    env = gym.make("metarl/AntDir-v0", variant="pearl", forward_backward=True)
    assert env.unwrapped.family.forward_backward
    assert env.unwrapped.get_task() == Task(angle=0.0)


def test_sampling_distributions() -> None:
    rng = np.random.default_rng(0)
    d = np.array([t["direction"] for t in AntDir("maml").sample_tasks(2000, rng)])
    assert set(d.tolist()) == {-1.0, 1.0} and abs(d.mean()) < 0.1
    fb = {t["angle"] for t in AntDir("pearl", forward_backward=True).sample_tasks(50, rng)}
    assert fb == {0.0, math.pi}
    angles = np.array([t["angle"] for t in AntDir("promp").sample_tasks(4000, rng)])
    assert angles.min() >= 0.0 and angles.max() < 2 * math.pi
    assert angles.mean() == pytest.approx(math.pi, abs=0.1)
    v = np.array([t["velocity"] for t in AntVel().sample_tasks(4000, rng)])
    assert v.min() >= 0.0 and v.max() <= 3.0 and v.mean() == pytest.approx(1.5, abs=0.05)
    box = np.array([t["goal"] for t in AntGoal("maml").sample_tasks(4000, rng)])
    assert np.abs(box).max() <= 3.0 and np.any(np.hypot(*box.T) > 3.0)
    disc = np.array([t["goal"] for t in AntGoal("pearl").sample_tasks(4000, rng)])
    r2 = np.sum(disc**2, axis=1)
    assert r2.max() <= 9.0 + 1e-9
    # Uniform in the disc of radius 3: E[r^2] = 9/2, E[x] = E[y] = 0.
    assert r2.mean() == pytest.approx(4.5, abs=0.15)
    assert np.abs(disc.mean(axis=0)).max() < 0.1
    # The same seed gives the same tasks.
    again = AntGoal("pearl").sample_tasks(3, np.random.default_rng(7))
    assert again == AntGoal("pearl").sample_tasks(3, np.random.default_rng(7))


def test_task_splits() -> None:
    split = AntDir("maml").task_split()
    assert (
        set(split.train)
        == set(split.test)
        == {AntDir("maml").validate_task({"direction": d}) for d in (1.0, -1.0)}
    )
    split = AntGoal("pearl").task_split()
    assert len(split.train) == 100 and len(split.test) == 40
    assert set(AntGoal("pearl").task_splits()) == {"default"}


# --------------------------------------------------------------------------------------------
# The batch stepper equals single envs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs", "tasks"),
    [
        ("AntDir", {"variant": "promp"}, [{"angle": 0.3}, {"angle": 3.0}, {"angle": 5.5}]),
        ("AntGoal", {"variant": "maml"}, [{"goal": [1, 1]}, {"goal": [-2, 0]}, {"goal": [0, 3]}]),
    ],
)
def test_batch_of_three_equals_single_envs(
    name: str, kwargs: dict[str, Any], tasks: list[dict[str, Any]]
) -> None:
    family = make_family(name, **kwargs)
    seeds = [4, 5, 6]
    batch = family.make_batch(3)
    batch.set_tasks(tasks)
    obs = batch.reset([np.random.default_rng(s) for s in seeds])
    singles = [MetaEnv(family) for _ in range(3)]
    for env, task, seed, row in zip(singles, tasks, seeds, obs, strict=True):
        env.set_task(task)
        np.testing.assert_array_equal(env.reset(seed=seed)[0], row)
    rng = np.random.default_rng(9)
    for _ in range(25):
        actions = rng.uniform(-1.0, 1.0, size=(3, 8))
        result = batch.step(actions)
        for i, env in enumerate(singles):
            obs_i, reward_i, term_i, _, info_i = env.step(actions[i])
            np.testing.assert_array_equal(result.obs[i], obs_i)
            assert result.reward[i] == reward_i
            assert bool(result.terminated[i]) == term_i
            for key, value in result.terms.items():
                assert value[i] == info_i[key]
    assert len(set(result.reward.tolist())) == 3  # the tasks really differ
