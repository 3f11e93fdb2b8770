"""The dynamics families: v5 parity, reward formula, per-env scaled models, termination, errors."""

from __future__ import annotations

import copy

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import metarl.envs
from metarl.envs.base import MetaEnv, gymnasium_asset
from metarl.envs.dynamics import HalfCheetahParams, HopperParams, Walker2dParams
from metarl.tasks import Task

FIELDS = {
    "body_mass_scale": "body_mass",
    "body_inertia_scale": "body_inertia",
    "geom_friction_scale": "geom_friction",
    "dof_damping_scale": "dof_damping",
}
CASES = [
    (HalfCheetahParams, "HalfCheetah-v5", 0.05),
    (HopperParams, "Hopper-v5", 0.008),
    (Walker2dParams, "Walker2d-v5", 0.008),
]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: c[0].name)
def case(request):
    family_cls, gym_id, dt = request.param
    return family_cls(), gym_id, dt


def _random_task(family, seed: int) -> Task:
    return family.sample_tasks(1, np.random.default_rng(seed))[0]


def _rollout(env: MetaEnv, seed: int, steps: int) -> np.ndarray:
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    out = [obs]
    for _ in range(steps):
        obs, _, terminated, _, _ = env.step(rng.uniform(-1, 1, env.action_space.shape))
        out.append(obs)
        if terminated:
            break
    return np.array(out)


def test_registered_and_dt(case):
    family, _, dt = case
    assert metarl.envs.FAMILIES[family.name] is type(family)
    assert family.dt == pytest.approx(dt, abs=1e-15)
    assert family.horizon == 200
    env = gym.make(metarl.envs.env_id(family.name))
    assert isinstance(env.unwrapped, MetaEnv)
    env.close()


def test_neutral_task_matches_gymnasium_v5(case):
    """Same seed and actions: observations, termination and forward reward equal to v5."""
    family, gym_id, _ = case
    env, ref = MetaEnv(family), gym.make(gym_id)
    assert env.get_task() == family.default_task()
    for seed in (0, 7):
        obs, _ = env.reset(seed=seed)
        ref_obs, _ = ref.reset(seed=seed)
        np.testing.assert_array_equal(obs, ref_obs)
        rng = np.random.default_rng(seed)
        for _ in range(150):
            action = rng.uniform(-1.0, 1.0, size=env.action_space.shape)
            obs, _, terminated, _, info = env.step(action)
            ref_obs, _, ref_terminated, _, ref_info = ref.step(action)
            np.testing.assert_array_equal(obs, ref_obs)
            assert terminated == ref_terminated
            assert info["reward_forward"] == ref_info["reward_forward"]
            if ref_terminated:
                break
    env.close()
    ref.close()


def test_reward_terms_pinned_to_formula(case):
    """Each term from x read directly off MjData before and after the step; terms sum to reward."""
    family, _, dt = case
    env = MetaEnv(family)
    env.set_task(_random_task(family, 3))
    env.reset(seed=1)
    data = env._batch.datas[0]
    rng = np.random.default_rng(1)
    for _ in range(20):
        action = rng.uniform(-1.5, 1.5, size=env.action_space.shape)
        x_before = float(data.qpos[0])
        _, reward, terminated, _, info = env.step(action)
        x_after = float(data.qpos[0])
        assert info["reward_forward"] == pytest.approx((x_after - x_before) / dt, rel=1e-12)
        assert info["reward_survive"] == 1.0
        assert info["reward_ctrl"] == pytest.approx(-1e-3 * float(np.sum(action**2)), rel=1e-12)
        terms = info["reward_forward"] + info["reward_survive"] + info["reward_ctrl"]
        assert reward == terms
        if terminated:
            break


def test_task_scales_env_model_only(case):
    """A batch's own models hold base * scale; the family's model and neutral envs stay put."""
    family, _, _ = case
    pristine = mujoco.MjModel.from_xml_path(str(gymnasium_asset(family.xml_file)))
    tasks = [family.default_task(), _random_task(family, 11), _random_task(family, 12)]
    batch = family.make_batch(3)
    batch.set_tasks(tasks)
    assert len({id(m) for m in batch.models} | {id(family.model)}) == 4
    for model, task in zip(batch.models, tasks, strict=True):
        for key, field in FIELDS.items():
            expected = getattr(pristine, field) * task[key]
            np.testing.assert_array_equal(getattr(model, field), expected)
    # mj_setConst ran: subtree mass of the world is the total of the scaled masses.
    for model, task in zip(batch.models, tasks, strict=True):
        total = float(np.sum(pristine.body_mass * task["body_mass_scale"]))
        assert model.body_subtreemass[0] == pytest.approx(total, rel=1e-12)
    assert not np.allclose(batch.models[1].dof_invweight0, pristine.dof_invweight0)
    # The neutral env's model is the pristine one, constants included; so is the family's.
    for field in (*FIELDS.values(), "dof_invweight0", "body_invweight0", "actuator_acc0"):
        np.testing.assert_array_equal(getattr(batch.models[0], field), getattr(pristine, field))
        np.testing.assert_array_equal(getattr(family.model, field), getattr(pristine, field))
    # Re-setting a task scales from the pristine values again (no compounding).
    batch.set_tasks([family.default_task()], indices=[1])
    np.testing.assert_array_equal(batch.models[1].body_mass, pristine.body_mass)
    np.testing.assert_array_equal(batch.models[1].dof_invweight0, pristine.dof_invweight0)
    batch.close()


def test_task_changes_trajectory(case):
    family, _, _ = case
    env = MetaEnv(family)
    neutral = _rollout(env, seed=4, steps=30)
    env.set_task(_random_task(family, 5))
    scaled = _rollout(env, seed=4, steps=30)
    np.testing.assert_array_equal(neutral[0], scaled[0])  # same reset noise
    n = min(len(neutral), len(scaled))
    assert np.max(np.abs(neutral[1:n] - scaled[1:n])) > 1e-3
    env.set_task(family.default_task())
    np.testing.assert_array_equal(_rollout(env, seed=4, steps=30), neutral)


def test_copy_of_mjmodel_is_independent():
    family = HopperParams()
    a, b = copy.copy(family.model), copy.copy(family.model)
    before = family.model.body_mass.copy(), family.model.geom_friction.copy()
    a.body_mass[:] *= 2.0
    a.geom_friction[:] *= 3.0
    a.dof_damping[:] += 1.0
    np.testing.assert_array_equal(family.model.body_mass, before[0])
    np.testing.assert_array_equal(family.model.geom_friction, before[1])
    np.testing.assert_array_equal(b.body_mass, before[0])
    np.testing.assert_array_equal(b.dof_damping, family.model.dof_damping)
    np.testing.assert_array_equal(a.body_mass, 2.0 * before[0])


def test_batch_of_three_equals_three_single_envs(case):
    family, _, _ = case
    tasks = [_random_task(family, s) for s in (21, 22, 23)]
    seeds = (31, 32, 33)
    steps = 25
    actions = np.random.default_rng(0).uniform(-1, 1, size=(steps, 3, family.action_space.shape[0]))
    batch = family.make_batch(3)
    batch.set_tasks(tasks)
    obs = [batch.reset([np.random.default_rng(s) for s in seeds])]
    rewards, dones = [], []
    for t in range(steps):
        result = batch.step(actions[t])
        obs.append(result.obs)
        rewards.append(result.reward)
        dones.append(result.terminated)
    for i, (task, seed) in enumerate(zip(tasks, seeds, strict=True)):
        single = family.make_batch(1)
        single.set_tasks([task])
        np.testing.assert_array_equal(single.reset([np.random.default_rng(seed)])[0], obs[0][i])
        for t in range(steps):
            result = single.step(actions[t, i : i + 1])
            np.testing.assert_array_equal(result.obs[0], obs[t + 1][i])
            assert result.reward[0] == rewards[t][i]
            assert result.terminated[0] == dones[t][i]


@pytest.mark.parametrize(
    ("family_cls", "gym_id"), [(HopperParams, "Hopper-v5"), (Walker2dParams, "Walker2d-v5")]
)
def test_healthy_matches_v5_at_the_boundaries(family_cls, gym_id):
    """The vectorized check agrees with v5's is_healthy, strict inequalities included."""
    family = family_cls()
    ref = gym.make(gym_id).unwrapped
    q0, v0 = family.init_qpos.copy(), family.init_qvel.copy()
    z_lo, z_hi = family.healthy_z_range
    a_lo, a_hi = family.healthy_angle_range
    states = []
    for z in (z_lo, np.nextafter(z_lo, np.inf), 1.25, z_hi, np.nextafter(z_hi, -np.inf), np.nan):
        states.append((np.r_[q0[:1], z, q0[2:]], v0))
    for angle in (a_lo, np.nextafter(a_lo, np.inf), a_hi, np.nextafter(a_hi, -np.inf), np.nan):
        states.append((np.r_[q0[:2], angle, q0[3:]], v0))
    for value in (99.999, 100.0, -100.0, np.nan):
        states.append((q0, np.r_[value, v0[1:]]))  # x velocity: in Hopper's state check
        states.append((np.r_[q0[:3], value, q0[4:]], v0))  # a joint angle
    qpos = np.array([s[0] for s in states], dtype=float)
    qvel = np.array([s[1] for s in states], dtype=float)
    got = family.healthy({"qpos": qpos, "qvel": qvel})
    expected = []
    for p, v in zip(qpos, qvel, strict=True):
        ref.data.qpos[:] = p
        ref.data.qvel[:] = v
        expected.append(bool(ref.is_healthy))
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == bool and not got.all() and got.any()
    np.testing.assert_array_equal(family.terminated({"qpos": qpos, "qvel": qvel}, {}), ~got)


@pytest.mark.parametrize("family_cls", [HopperParams, Walker2dParams])
def test_falling_terminates(family_cls):
    family = family_cls()
    env = MetaEnv(family)
    env.reset(seed=0)
    for _ in range(family.horizon):
        _, _, terminated, _, _ = env.step(np.ones(env.action_space.shape))
        if terminated:
            break
    assert terminated
    state = {"qpos": env._batch.datas[0].qpos[None].copy(), "qvel": env._batch.datas[0].qvel[None]}
    assert not family.healthy(state)[0]


def test_half_cheetah_never_terminates():
    family = HalfCheetahParams()
    env = MetaEnv(family)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    assert not any(env.step(rng.uniform(-1, 1, 6))[2] for _ in range(50))
    flipped = {"qpos": np.full((1, 9), 100.0), "qvel": np.full((1, 9), np.nan)}
    assert not family.terminated(flipped, {})[0]


def test_sampling_range_order_and_determinism():
    family = Walker2dParams()
    tasks = family.sample_tasks(50, np.random.default_rng(0))
    assert tasks == family.sample_tasks(50, np.random.default_rng(0))
    mass = np.array([t["body_mass_scale"] for t in tasks])
    damping = np.array([t["dof_damping_scale"] for t in tasks])
    friction = np.array([t["geom_friction_scale"] for t in tasks])
    assert mass.shape == (50, family.model.nbody)
    assert friction.shape == (50, family.model.ngeom, 3)
    assert np.all(np.abs(np.log(mass) / np.log(1.5)) <= 3.0)
    assert np.all(np.abs(np.log(damping) / np.log(1.3)) <= 3.0)
    assert np.abs(np.log(damping) / np.log(1.3)).max() > 2.5  # the range is really used
    # The reference's draw order: mass, inertia, damping, friction from one stream.
    rng = np.random.default_rng(9)
    nb, nv, ng = family.model.nbody, family.model.nv, family.model.ngeom
    expected = {
        "body_mass_scale": 1.5 ** rng.uniform(-3, 3, nb),
        "body_inertia_scale": 1.5 ** rng.uniform(-3, 3, (nb, 3)),
        "dof_damping_scale": 1.3 ** rng.uniform(-3, 3, nv),
        "geom_friction_scale": 1.5 ** rng.uniform(-3, 3, (ng, 3)),
    }
    (task,) = family.sample_tasks(1, np.random.default_rng(9))
    for key, value in expected.items():
        np.testing.assert_array_equal(task[key], value)


def test_default_task_is_all_ones():
    family = HopperParams()
    task = family.default_task()
    assert set(task) == set(FIELDS)
    for key, field in FIELDS.items():
        np.testing.assert_array_equal(task[key], np.ones(getattr(family.model, field).shape))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("body_mass_scale", 0.0, "body_mass_scale must be in"),
        ("body_mass_scale", -1.0, "body_mass_scale must be in"),
        ("dof_damping_scale", np.nan, "dof_damping_scale must be finite"),
        ("geom_friction_scale", 3.5, "geom_friction_scale must be in"),
        ("dof_damping_scale", 2.3, "dof_damping_scale must be in"),  # > 1.3 ** 3
        ("body_inertia_scale", "wrong shape", "body_inertia_scale must have shape"),
    ],
)
def test_bad_scales_raise(key, value, message):
    family = HopperParams()
    task = dict(family.default_task())
    if isinstance(value, str):
        task[key] = np.ones(3)
    else:
        bad = np.array(task[key], dtype=float)
        bad.flat[1] = value
        task[key] = bad
    with pytest.raises(ValueError, match=rf"HopperParams.*{message}"):
        family.validate_task(task)
    env = MetaEnv(family)
    with pytest.raises(ValueError, match="HopperParams"):
        env.set_task(task)


def test_missing_key_and_pristine_model_guard():
    family = HopperParams()
    task = dict(family.default_task())
    del task["dof_damping_scale"]
    with pytest.raises(ValueError, match=r"HopperParams.*missing \['dof_damping_scale'\]"):
        family.validate_task(task)
    with pytest.raises(ValueError, match="pristine model"):
        family.configure_model(family.model, family.default_task())
