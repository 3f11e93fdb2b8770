"""The generic task samplers: SetTaskEnvSampler and GymKwargsTaskSampler on real MuJoCo envs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

from metarl.tasks import (
    Choice,
    GymKwargsTaskSampler,
    LogUniform,
    SetTaskEnvSampler,
    Task,
    TaskSampler,
    Uniform,
)

WEIGHTS = (0.5, 1.0, 2.0, 3.0)


class WeightedCheetah(HalfCheetahEnv):
    """Gymnasium's HalfCheetah-v5 with a task: the weight of the forward reward."""

    def set_task(self, task: Mapping[str, Any]) -> None:
        weight = task["forward_reward_weight"]
        if not isinstance(weight, float) or not 0.0 < weight <= 5.0:
            raise ValueError(f"forward_reward_weight must be a float in (0, 5], got {weight!r}")
        self._forward_reward_weight = weight


def weight_tasks(n: int, rng: np.random.Generator) -> list[dict[str, float]]:
    return [{"forward_reward_weight": float(w)} for w in rng.uniform(0.5, 3.0, size=n)]


def one_step_info(env: gym.Env, seed: int = 0) -> dict[str, Any]:
    env.reset(seed=seed)
    action = np.linspace(-0.9, 0.9, env.action_space.shape[0])  # type: ignore[index]
    _, reward, _, _, info = env.step(action)
    return {**info, "reward": reward, "action": action}


# --------------------------------------------------------------------------------------------
# SetTaskEnvSampler
# --------------------------------------------------------------------------------------------


def fixed_list_sampler() -> SetTaskEnvSampler:
    return SetTaskEnvSampler(WeightedCheetah, tasks=[{"forward_reward_weight": w} for w in WEIGHTS])


def test_set_task_sampler_from_a_fixed_list() -> None:
    sampler = fixed_list_sampler()
    assert isinstance(sampler, TaskSampler)
    assert sampler.name == "WeightedCheetah"
    assert sampler.action_space.shape == (6,)
    tasks = sampler.sample(4, np.random.default_rng(3))
    assert all(isinstance(t, Task) for t in tasks)
    # At most the list's length: drawn without replacement, so every task once.
    assert sorted(t["forward_reward_weight"] for t in tasks) == list(WEIGHTS)  # type: ignore[type-var]
    more = sampler.sample(20, np.random.default_rng(3))
    assert len(more) == 20
    assert {t["forward_reward_weight"] for t in more} <= set(WEIGHTS)


def test_set_task_sampler_is_deterministic_per_seed() -> None:
    sampler = fixed_list_sampler()
    assert sampler.sample(3, np.random.default_rng(11)) == sampler.sample(
        3, np.random.default_rng(11)
    )
    draws = {tuple(t.id for t in sampler.sample(3, np.random.default_rng(s))) for s in range(8)}
    assert len(draws) > 1
    fn_sampler = SetTaskEnvSampler(WeightedCheetah, sample_fn=weight_tasks)
    a = fn_sampler.sample(5, np.random.default_rng(4))
    assert a == fn_sampler.sample(5, np.random.default_rng(4))
    assert a != fn_sampler.sample(5, np.random.default_rng(5))
    assert a == [Task(t) for t in weight_tasks(5, np.random.default_rng(4))]


def test_set_task_sampler_make_env_applies_the_task() -> None:
    sampler = SetTaskEnvSampler(WeightedCheetah, sample_fn=weight_tasks)
    low, high = Task(forward_reward_weight=0.5), Task(forward_reward_weight=3.0)
    info_low = one_step_info(sampler.make_env(low))
    info_high = one_step_info(sampler.make_env(high))
    # Same seed and action: same motion, forward reward scaled by the task's weight.
    assert info_low["x_velocity"] == info_high["x_velocity"]
    assert info_low["reward_forward"] == pytest.approx(0.5 * info_low["x_velocity"], rel=1e-12)
    assert info_high["reward_forward"] == pytest.approx(3.0 * info_high["x_velocity"], rel=1e-12)
    default = one_step_info(sampler.make_env())
    assert default["reward_forward"] == pytest.approx(default["x_velocity"], rel=1e-12)


def test_set_task_sampler_accepts_an_env_id_for_a_registered_env() -> None:
    env_id = "metarl-test/WeightedCheetah-v0"
    if env_id not in gym.registry:
        gym.register(id=env_id, entry_point=WeightedCheetah)
    sampler = SetTaskEnvSampler(env_id, sample_fn=weight_tasks)
    env = sampler.make_env(Task(forward_reward_weight=2.0))
    assert env.unwrapped._forward_reward_weight == 2.0  # type: ignore[attr-defined]


def test_set_task_sampler_rejects_env_without_set_task() -> None:
    with pytest.raises(TypeError, match=r"HalfCheetahEnv has no set_task.*GymKwargsTaskSampler"):
        SetTaskEnvSampler("HalfCheetah-v5", tasks=[{"forward_reward_weight": 1.0}])


def test_set_task_sampler_rejects_a_task_the_env_refuses() -> None:
    with pytest.raises(ValueError, match=r"WeightedCheetah\.set_task rejected.*\(0, 5\]"):
        SetTaskEnvSampler(WeightedCheetah, tasks=[{"forward_reward_weight": 9.0}])


@pytest.mark.parametrize(
    ("sample_fn", "error", "message"),
    [
        (lambda n, rng: {"forward_reward_weight": 1.0}, TypeError, "must return a list"),
        (lambda n, rng: 1.0, TypeError, "must return a list"),
        (lambda n, rng: [1.0] * n, TypeError, "task 0 is a float"),
        (lambda n, rng: weight_tasks(n + 1, rng), ValueError, "asked for 1 tasks and returned 2"),
        (lambda n, rng: [], ValueError, "asked for 1 tasks and returned 0"),
    ],
    ids=["mapping", "scalar", "floats", "too-many", "none"],
)
def test_set_task_sampler_rejects_bad_sample_fn(
    sample_fn: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        SetTaskEnvSampler(WeightedCheetah, sample_fn=sample_fn)


def test_set_task_sampler_rejects_bad_task_lists_and_arguments() -> None:
    with pytest.raises(ValueError, match="task list is empty"):
        SetTaskEnvSampler(WeightedCheetah, tasks=[])
    with pytest.raises(TypeError, match="task 1 is a float"):
        SetTaskEnvSampler(WeightedCheetah, tasks=[{"forward_reward_weight": 1.0}, 2.0])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="exactly one of tasks"):
        SetTaskEnvSampler(WeightedCheetah)
    with pytest.raises(ValueError, match="exactly one of tasks"):
        SetTaskEnvSampler(
            WeightedCheetah, tasks=[{"forward_reward_weight": 1.0}], sample_fn=weight_tasks
        )
    with pytest.raises(ValueError, match="env_kwargs only apply to an env id"):
        SetTaskEnvSampler(WeightedCheetah, sample_fn=weight_tasks, env_kwargs={"x": 1})
    with pytest.raises(TypeError, match=r"not a gymnasium\.Env"):
        SetTaskEnvSampler(lambda: object(), sample_fn=weight_tasks)  # type: ignore[arg-type,return-value]


def test_set_task_sampler_sample_checks_its_arguments() -> None:
    sampler = fixed_list_sampler()
    with pytest.raises(ValueError, match="positive"):
        sampler.sample(0, np.random.default_rng(0))
    with pytest.raises(TypeError, match=r"numpy\.random\.Generator"):
        sampler.sample(2, np.random.RandomState(0))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# GymKwargsTaskSampler
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ctrl_sampler() -> GymKwargsTaskSampler:
    return GymKwargsTaskSampler("HalfCheetah-v5", {"ctrl_cost_weight": Uniform(0.05, 0.2)})


def test_kwargs_sampler_tasks_in_range_and_deterministic(
    ctrl_sampler: GymKwargsTaskSampler,
) -> None:
    assert isinstance(ctrl_sampler, TaskSampler)
    tasks = ctrl_sampler.sample(50, np.random.default_rng(0))
    weights = np.array([t["ctrl_cost_weight"] for t in tasks])
    assert set(tasks[0]) == {"ctrl_cost_weight"}
    assert np.all((weights >= 0.05) & (weights <= 0.2))
    assert weights.std() > 0.02  # spread over the range, not a constant
    assert tasks == ctrl_sampler.sample(50, np.random.default_rng(0))
    assert tasks != ctrl_sampler.sample(50, np.random.default_rng(1))
    np.testing.assert_array_equal(weights, np.random.default_rng(0).uniform(0.05, 0.2, size=50))


def test_kwargs_sampler_make_env_applies_the_kwarg(ctrl_sampler: GymKwargsTaskSampler) -> None:
    low, high = Task(ctrl_cost_weight=0.05), Task(ctrl_cost_weight=0.2)
    env_low, env_high = ctrl_sampler.make_env(low), ctrl_sampler.make_env(high)
    assert env_low.unwrapped._ctrl_cost_weight == 0.05  # type: ignore[attr-defined]
    info_low, info_high = one_step_info(env_low), one_step_info(env_high)
    sq = float(np.sum(np.square(info_low["action"])))
    assert info_low["reward_ctrl"] == pytest.approx(-0.05 * sq, rel=1e-12)
    assert info_high["reward_ctrl"] == pytest.approx(-0.2 * sq, rel=1e-12)
    assert info_low["reward_forward"] == info_high["reward_forward"]
    assert info_low["reward"] - info_high["reward"] == pytest.approx(0.15 * sq, rel=1e-9)


def test_kwargs_sampler_make_env_rejects_unknown_task_keys(
    ctrl_sampler: GymKwargsTaskSampler,
) -> None:
    with pytest.raises(ValueError, match=r"\['healthy_reward'\].*draws \['ctrl_cost_weight'\]"):
        ctrl_sampler.make_env(Task(ctrl_cost_weight=0.1, healthy_reward=1.0))


def test_kwargs_sampler_unknown_kwarg_fails_at_construction() -> None:
    with pytest.raises(ValueError, match=r"HalfCheetah-v5.*rejected.*\['bogus_weight'\]"):
        GymKwargsTaskSampler("HalfCheetah-v5", {"bogus_weight": Uniform(0.0, 1.0)})


def test_kwargs_sampler_unknown_env_id_lists_close_matches() -> None:
    with pytest.raises(ValueError, match="'HalfCheetahh-v5' is not a registered") as excinfo:
        GymKwargsTaskSampler("HalfCheetahh-v5", {"ctrl_cost_weight": Uniform(0.05, 0.2)})
    assert "Close matches: HalfCheetah-v5" in str(excinfo.value)


def test_kwargs_sampler_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="non-empty mapping"):
        GymKwargsTaskSampler("HalfCheetah-v5", {})
    with pytest.raises(TypeError, match="'ctrl_cost_weight' must be callable"):
        GymKwargsTaskSampler("HalfCheetah-v5", {"ctrl_cost_weight": 0.1})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match=r"\['ctrl_cost_weight'\] are both fixed and sampled"):
        GymKwargsTaskSampler(
            "HalfCheetah-v5",
            {"ctrl_cost_weight": Uniform(0.05, 0.2)},
            fixed_kwargs={"ctrl_cost_weight": 0.1},
        )


def test_kwargs_sampler_log_uniform_and_choice() -> None:
    sampler = GymKwargsTaskSampler(
        "HalfCheetah-v5",
        {
            "ctrl_cost_weight": LogUniform(10.0, -2.0, -1.0),
            "forward_reward_weight": Choice((0.5, 2.0)),
        },
        fixed_kwargs={"reset_noise_scale": 0.0},
    )
    tasks = sampler.sample(40, np.random.default_rng(2))
    ctrl = np.array([t["ctrl_cost_weight"] for t in tasks])
    assert np.all((ctrl >= 0.01) & (ctrl <= 0.1))
    # Log-uniform: the exponents are uniform, so about half the draws lie below 10^-1.5.
    assert 0.25 < np.mean(ctrl < 10**-1.5) < 0.75
    forward = {t["forward_reward_weight"] for t in tasks}
    assert forward == {0.5, 2.0}
    assert tasks == sampler.sample(40, np.random.default_rng(2))
    task = next(t for t in tasks if t["forward_reward_weight"] == 2.0)
    env = sampler.make_env(task)
    assert env.unwrapped._reset_noise_scale == 0.0  # type: ignore[attr-defined]
    info = one_step_info(env)
    assert info["reward_forward"] == pytest.approx(2.0 * info["x_velocity"], rel=1e-12)
    sq = float(np.sum(np.square(info["action"])))
    assert info["reward_ctrl"] == pytest.approx(-task["ctrl_cost_weight"] * sq, rel=1e-12)


# --------------------------------------------------------------------------------------------
# Distributions
# --------------------------------------------------------------------------------------------


def test_distributions_draw_from_the_passed_generator() -> None:
    uniform = Uniform(-1.0, 1.0, shape=(3,))
    a = uniform(np.random.default_rng(0))
    assert a.shape == (3,)  # type: ignore[union-attr]
    np.testing.assert_array_equal(a, uniform(np.random.default_rng(0)))
    scales = LogUniform(1.5, -3.0, 3.0, shape=(4,))(np.random.default_rng(1))
    assert scales.shape == (4,)  # type: ignore[union-attr]
    assert np.all((scales >= 1.5**-3) & (scales <= 1.5**3))
    assert isinstance(Uniform(0.0, 1.0)(np.random.default_rng(0)), float)
    assert Choice(["a"])(np.random.default_rng(0)) == "a"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Uniform(1.0, 0.0), r"finite low <= high, got \[1.0, 0.0\]"),
        (lambda: Uniform(0.0, float("inf")), "finite low <= high"),
        (lambda: LogUniform(0.0, -1.0, 1.0), "base > 0"),
        (lambda: LogUniform(2.0, 1.0, -1.0), "low_exp <= high_exp"),
        (lambda: Choice(()), "at least one option"),
    ],
    ids=["uniform-order", "uniform-inf", "log-base", "log-order", "choice-empty"],
)
def test_distributions_reject_bad_parameters(make: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()
