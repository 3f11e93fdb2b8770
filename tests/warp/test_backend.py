"""The warp backend against the C MuJoCo path, on MuJoCo Warp's CPU device.

Both paths get the same tasks, initial states and actions. MuJoCo Warp simulates in float32,
C MuJoCo in float64, so they agree to float32 precision at first and then part ways as chaotic
dynamics (contacts) amplify the difference; the tolerances below are stated as
``|warp - c| <= tol * (1 + |c|)`` (observations) or absolute (rewards), and were measured with
8 worlds of each variant (HalfCheetahVel and HalfCheetahDir share the physics):

- one env step from the same state, over 200 steps of a C MuJoCo trajectory: observations
  within 1.0e-3 at 5 MuJoCo steps per env step (p99 6e-5, median 1e-6), 1.2e-4 at one;
  rewards within 1e-5;
- a free trajectory from the same initial state and actions: observations within 1e-3 for
  the first 11 env steps at 5 MuJoCo steps each (2e-4 at step 10), diverging past 0.1 at step
  14; at 100 Hz (one MuJoCo step each) within 1e-3 for the first 33 steps.

The Ant (4 worlds, AntDir's physics) parts at its first contacts for another reason than
rounding: MuJoCo Warp orients a leg-floor contact's friction directions in another frame, which
turns the pyramidal friction cone (``AntRobot.device_physics_note``). Its own model agrees to
1e-6 for the two airborne env steps; with the elliptic cone, whose forces do not depend on that
frame, its observations agree within 2e-3 (mostly 1e-5) and its rewards within 1e-4 over 30 env
steps with legs on the floor.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from metarl.arrays import namespace
from metarl.envs.base import MujocoTaskFamily
from metarl.envs.half_cheetah import HalfCheetahVel
from metarl.family import BatchStep, DeviceStep
from metarl.policies import GaussianMLPPolicy, RecurrentGaussianPolicy
from metarl.registry import make_family
from metarl.sampling import column_rngs, make_sampler
from metarl.sampling.warp_backend import CPU_DEVICE_WARNING, WarpSampler

pytest.importorskip("mujoco_warp", reason="needs MuJoCo Warp: pip install 'metarl[warp]'")
pytestmark = pytest.mark.filterwarnings("ignore:the warp backend on the CPU:UserWarning")

CPU = torch.device("cpu")
NUM_WORLDS = 4
PHYSICS = ["maml", "maml-100hz", "maml-rllab"]  # 5 MuJoCo steps per env step, 1, 1 + rllab
ONE_STEP_OBS_TOL = 5e-3
ONE_STEP_REWARD_TOL = 1e-4
FREE_OBS_TOL = 1e-3
FREE_REWARD_TOL = 1e-3
FREE_STEPS = {5: 8, 1: 25}  # env steps of agreement asked for, by MuJoCo steps per env step


def _pair(name: str, variant: str, n: int = NUM_WORLDS) -> tuple[MujocoTaskFamily, Any, Any]:
    family = make_family(name, variant=variant)
    assert isinstance(family, MujocoTaskFamily)
    tasks = family.sample_tasks(n, np.random.default_rng(0))
    host = family.make_batch(n)
    host.set_tasks(tasks)
    device = family.make_device_batch(n, CPU)
    device.set_tasks(tasks)
    return family, host, device


def _rel(c: np.ndarray, warp: torch.Tensor) -> float:
    return float(np.max(np.abs(warp.numpy() - c) / (1.0 + np.abs(c))))


def _assert_step_agrees(
    host_step: BatchStep, device_step: DeviceStep, obs_tol: float, reward_tol: float, t: int
) -> None:
    assert _rel(host_step.obs, device_step.obs) <= obs_tol, f"obs at step {t}"
    assert np.max(np.abs(device_step.reward.numpy() - host_step.reward)) <= reward_tol, t
    assert list(device_step.terms) == list(host_step.terms)
    for key, value in host_step.terms.items():
        assert np.max(np.abs(device_step.terms[key].numpy() - value)) <= reward_tol, (key, t)
    assert torch.equal(device_step.terminated, torch.from_numpy(host_step.terminated))
    assert list(device_step.info) == list(host_step.info)


@pytest.mark.parametrize("name", ["HalfCheetahVel", "HalfCheetahDir"])
@pytest.mark.parametrize("variant", PHYSICS)
def test_one_step_from_the_same_state_agrees_with_c_mujoco(name: str, variant: str) -> None:
    _, host, device = _pair(name, variant)
    _, rngs = column_rngs(3, range(NUM_WORLDS))
    host.reset(rngs)
    act_rng = np.random.default_rng(1)
    everyone = torch.ones(NUM_WORLDS, dtype=torch.bool)
    for t in range(20):
        state = {
            k: torch.tensor(np.stack([getattr(d, k) for d in host.datas]), dtype=torch.float32)
            for k in ("qpos", "qvel")
        }
        device.reset(state, everyone)
        actions = np.clip(act_rng.standard_normal((NUM_WORLDS, 6)), -1.0, 1.0)
        _assert_step_agrees(
            host.step(actions),
            device.step(torch.tensor(actions, dtype=torch.float32)),
            ONE_STEP_OBS_TOL,
            ONE_STEP_REWARD_TOL,
            t,
        )


def _start_together(host: Any, device: Any, n: int) -> tuple[np.ndarray, torch.Tensor]:
    """Reset both paths to the same initial states (column rngs of seed 3): their first
    observations."""
    _, host_rngs = column_rngs(3, range(n))
    _, device_rngs = column_rngs(3, range(n))
    host_obs = host.reset(host_rngs)
    starts = device.initial_states(device_rngs, 1)
    everyone = torch.ones(n, dtype=torch.bool)
    return host_obs, device.reset({k: v[:, 0] for k, v in starts.items()}, everyone)


@pytest.mark.parametrize("variant", PHYSICS)
def test_a_trajectory_agrees_with_c_mujoco_until_chaos_sets_in(variant: str) -> None:
    family, host, device = _pair("HalfCheetahVel", variant)
    host_obs, device_obs = _start_together(host, device, NUM_WORLDS)
    # The same initial state, rounded to float32 (the rllab centre of mass recomputed from it).
    assert _rel(host_obs, device_obs) <= 1e-6
    act_rng = np.random.default_rng(1)
    for t in range(FREE_STEPS[family.frame_skip]):
        actions = np.clip(act_rng.standard_normal((NUM_WORLDS, 6)), -1.0, 1.0)
        _assert_step_agrees(
            host.step(actions),
            device.step(torch.tensor(actions, dtype=torch.float32)),
            FREE_OBS_TOL,
            FREE_REWARD_TOL,
            t,
        )


def _ant_pair(cone: int | None, n: int = NUM_WORLDS) -> tuple[MujocoTaskFamily, Any, Any]:
    family = make_family("AntDir")
    assert isinstance(family, MujocoTaskFamily)
    if cone is not None:
        family.model.opt.cone = cone  # this instance's model only
    tasks = family.sample_tasks(n, np.random.default_rng(0))
    host = family.make_batch(n)
    host.set_tasks(tasks)
    with pytest.warns(UserWarning, match="orients the friction directions"):
        device = family.make_device_batch(n, CPU)
    device.set_tasks(tasks)
    host_obs, device_obs = _start_together(host, device, n)
    assert _rel(host_obs, device_obs) <= 1e-6
    # Gymnasium's first observation has no contact forces (mj_rnePostConstraint runs after
    # steps only); the device's has none either.
    assert not device_obs[:, 27:].any() and not host_obs[:, 27:].any()
    return family, host, device


def test_the_ant_agrees_with_c_mujoco_under_a_rotation_invariant_cone() -> None:
    # With the elliptic cone the contact frame's orientation does not matter, so this checks
    # everything but it: contact forces after each step, their cost, the reward and
    # termination, through 30 env steps with legs on the floor (measured: observations within
    # 2e-3, mostly 1e-5, rewards within 1e-4).
    _, host, device = _ant_pair(cone=1)
    act_rng = np.random.default_rng(1)
    touching = 0
    for t in range(30):
        actions = np.clip(act_rng.standard_normal((NUM_WORLDS, 8)), -1.0, 1.0)
        host_step = host.step(actions)
        _assert_step_agrees(
            host_step, device.step(torch.tensor(actions, dtype=torch.float32)), 5e-3, 1e-3, t
        )
        touching += int((np.abs(host_step.obs[:, 27:]) > 1e-3).any(axis=1).sum())
    assert touching >= 30, "the test needs steps with contact forces"


def test_the_ant_with_its_own_cone_agrees_until_its_legs_reach_the_floor() -> None:
    # Under the Ant's pyramidal cone MuJoCo Warp's other contact frame turns the friction
    # pyramid (AntRobot.device_physics_note): the first two env steps, in the air, agree to
    # float32 rounding (measured 1e-6); from the first contacts on they part (6e-2 at step 3).
    _, host, device = _ant_pair(cone=None)
    act_rng = np.random.default_rng(1)
    for t in range(2):
        actions = np.clip(act_rng.standard_normal((NUM_WORLDS, 8)), -1.0, 1.0)
        _assert_step_agrees(
            host.step(actions),
            device.step(torch.tensor(actions, dtype=torch.float32)),
            1e-5,
            1e-5,
            t,
        )


@pytest.mark.parametrize("name", ["HalfCheetahParams", "HopperParams", "Walker2dParams"])
def test_a_dynamics_family_steps_each_world_with_its_own_model(name: str) -> None:
    # Every world has its task's masses, inertias, damping and frictions (and what mj_setConst
    # derives from them). Measured over 16 env steps: within 1e-4 (HalfCheetah), 7e-6 (Hopper),
    # 2e-4 (Walker2d); one model for all, the pristine one, is off by 0.05-6 from the first
    # steps. set_tasks gives the worlds other models.
    family = make_family(name)
    assert isinstance(family, MujocoTaskFamily)
    rng = np.random.default_rng(0)
    host, device = family.make_batch(NUM_WORLDS), family.make_device_batch(NUM_WORLDS, CPU)
    pristine = family.make_device_batch(NUM_WORLDS, CPU)
    nu = family.model.nu
    for round_ in range(2):
        tasks = family.sample_tasks(NUM_WORLDS, rng)
        host.set_tasks(tasks)
        device.set_tasks(tasks)
        _start_together(host, device, NUM_WORLDS)
        _start_together(host, pristine, NUM_WORLDS)
        act_rng = np.random.default_rng(round_)
        apart = 0.0
        for t in range(12):
            actions = np.clip(act_rng.standard_normal((NUM_WORLDS, nu)), -1.0, 1.0)
            host_step = host.step(actions)
            controls = torch.tensor(actions, dtype=torch.float32)
            _assert_step_agrees(host_step, device.step(controls), 1e-3, 1e-3, t)
            apart = max(apart, _rel(host_step.obs, pristine.step(controls).obs))
        assert apart > 0.04, "one model for every world should not agree"


def test_initial_states_are_the_host_paths_draws() -> None:
    family, _, device = _pair("HalfCheetahVel", "maml", n=2)
    _, rngs = column_rngs(7, range(2))
    starts = device.initial_states(rngs, 2)
    _, again = column_rngs(7, range(2))
    for j, rng in enumerate(again):
        for m in range(2):
            qpos, qvel = family.reset_state(rng)
            assert torch.equal(starts["qpos"][j, m], torch.tensor(qpos, dtype=torch.float32))
            assert torch.equal(starts["qvel"][j, m], torch.tensor(qvel, dtype=torch.float32))


def test_a_masked_reset_leaves_the_other_worlds_on_their_trajectory() -> None:
    family = make_family("HalfCheetahDir")
    device, other = family.make_device_batch(3, CPU), family.make_device_batch(3, CPU)
    _, rngs = column_rngs(5, range(3))
    starts = device.initial_states(rngs, 2)
    first = {k: v[:, 0] for k, v in starts.items()}
    everyone = torch.ones(3, dtype=torch.bool)
    device.reset(first, everyone)
    other.reset(first, everyone)
    actions = torch.linspace(-1.0, 1.0, 18).reshape(3, 6)
    for _ in range(3):
        device.step(actions)
        other.step(actions)
    mask = torch.tensor([False, True, False])
    obs = device.reset({k: v[:, 1] for k, v in starts.items()}, mask)
    assert torch.equal(obs[1, :8], starts["qpos"][1, 1, 1:])  # the reset world: its new start
    for _ in range(3):
        a, b = device.step(actions), other.step(actions)
    assert torch.equal(a.obs[[0, 2]], b.obs[[0, 2]])  # the others: bit for bit unchanged


def _cheetah_policy(seed: int = 0) -> GaussianMLPPolicy:
    torch.manual_seed(seed)
    return GaussianMLPPolicy(17, 6)


DISCRETE = (
    "terminated",
    "truncated",
    "valid",
    "episode_id",
    "episode_start",
    "task_index",
    "episode_index",
    "lengths",
    "unstable",
    "episode_lengths",
    "nonfinite",
)


def test_a_batch_matches_the_inline_backends_for_the_same_seed() -> None:
    family = make_family("HalfCheetahDir", horizon=10)
    policy = _cheetah_policy()
    tasks = family.sample_tasks(2, np.random.default_rng(0))
    with make_sampler(family, policy, "inline") as sampler:
        host = sampler.sample(tasks, 2, seed=3, episodes_per_trial=2)
    with make_sampler(family, policy, "warp") as sampler:
        device = sampler.sample(tasks, 2, seed=3, episodes_per_trial=2)
    assert device.device == CPU and device.tasks == host.tasks
    for key in DISCRETE:
        assert torch.equal(device.tensors()[key], host.tensors()[key]), key
    # The same noise: log-densities differ only by float32 rounding.
    torch.testing.assert_close(device.log_probs, host.log_probs, rtol=0, atol=1e-5)
    # The first steps of each episode agree; the policy feeds the difference back after that.
    for start in (0, 10):
        steps = slice(start, start + 4)
        c = host.obs[steps]
        assert float(((device.obs[steps] - c).abs() / (1 + c.abs())).max()) <= 1e-3
        assert float((device.rewards[steps] - host.rewards[steps]).abs().max()) <= 1e-3
    # Episode 2 starts from the same initial state (float32-rounded), whatever came before.
    torch.testing.assert_close(device.obs[10], host.obs[10], rtol=0, atol=1e-6)


def test_the_same_seed_gives_the_same_batch() -> None:
    family = make_family("HalfCheetahVel", horizon=8)
    tasks = family.sample_tasks(2, np.random.default_rng(0))
    policy = _cheetah_policy()
    with make_sampler(family, policy, "warp") as sampler:
        first = sampler.sample(tasks, 2, seed=11)
        again = sampler.sample(tasks, 2, seed=11)
        other = sampler.sample(tasks, 2, seed=12)
    with make_sampler(family, policy, "warp") as fresh:
        anew = fresh.sample(tasks, 2, seed=11)
    for key, value in first.tensors().items():
        assert torch.equal(value, again.tensors()[key]), key
        assert torch.equal(value, anew.tensors()[key]), key
    assert not torch.equal(first.obs, other.obs)


def test_per_task_parameters_and_a_recurrent_policy_run_on_the_device() -> None:
    family = make_family("HalfCheetahVel", horizon=6)
    tasks = family.sample_tasks(2, np.random.default_rng(0))
    torch.manual_seed(0)
    policy = RecurrentGaussianPolicy(17, 6, hidden_size=16, cell="gru")
    params = [{k: v + 0.01 * i for k, v in policy.named_parameters()} for i in range(len(tasks))]
    batches = {}
    for backend in ("inline", "warp"):
        with make_sampler(family, policy, backend) as sampler:
            batches[backend] = sampler.sample(tasks, 2, params, seed=5, episodes_per_trial=2)
    host, device = batches["inline"], batches["warp"]
    for key in DISCRETE:
        assert torch.equal(device.tensors()[key], host.tensors()[key]), key
    torch.testing.assert_close(device.obs[:3], host.obs[:3], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(device.actions[:3], host.actions[:3], rtol=1e-3, atol=1e-3)


def test_the_batch_feeds_an_agents_autograd() -> None:
    family = make_family("HalfCheetahVel", horizon=4)
    policy = _cheetah_policy()
    with make_sampler(family, policy, "warp") as sampler:
        batch = sampler.sample(family.sample_tasks(1, np.random.default_rng(0)), 2, seed=0)
    mean, _ = policy(batch.obs)
    (mean * batch.rewards[..., None]).sum().backward()
    assert policy.mean_net[0].weight.grad is not None


def test_a_cpu_device_is_named_slow(recwarn: pytest.WarningsRecorder) -> None:
    with pytest.warns(UserWarning, match="for development and tests") as caught:
        WarpSampler("HalfCheetahVel", _cheetah_policy(), device="cpu")
    assert str(caught[0].message) == CPU_DEVICE_WARNING


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where CUDA is absent")
def test_a_cuda_device_where_there_is_none_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match=r"torch sees no CUDA device here"):
        WarpSampler("HalfCheetahVel", _cheetah_policy(), device="cuda")


# -- where CUDA exists -----------------------------------------------------------------------


@pytest.mark.gpu
def test_cuda_batches_agree_with_the_cpu_device_and_repeat_bit_for_bit() -> None:
    family = make_family("HalfCheetahVel", horizon=10)
    tasks = family.sample_tasks(4, np.random.default_rng(0))
    policy = _cheetah_policy()
    with make_sampler(family, policy, "warp") as sampler:
        cpu = sampler.sample(tasks, 4, seed=2)
    with make_sampler(family, policy.to("cuda"), "warp") as sampler:
        gpu = sampler.sample(tasks, 4, seed=2)
        again = sampler.sample(tasks, 4, seed=2)
    assert gpu.device.type == "cuda"
    for key, value in gpu.tensors().items():
        assert torch.equal(value, again.tensors()[key]), key
    torch.testing.assert_close(gpu.obs[:4].cpu(), cpu.obs[:4], rtol=1e-3, atol=1e-3)
    for key in DISCRETE:
        assert torch.equal(gpu.tensors()[key].cpu(), cpu.tensors()[key]), key


@pytest.mark.gpu
def test_a_cuda_graph_steps_as_the_launches_do() -> None:
    family = make_family("HalfCheetahDir", horizon=6)
    tasks = family.sample_tasks(2, np.random.default_rng(0))
    policy = _cheetah_policy().to("cuda")
    batches = []
    for graph in (True, False):
        with WarpSampler(family, policy, cuda_graph=graph) as sampler:
            batches.append(sampler.sample(tasks, 2, seed=4))
    for key, value in batches[0].tensors().items():
        assert torch.equal(value, batches[1].tensors()[key]), key


class _StopsAfterFiveCentimetres(HalfCheetahVel):
    """HalfCheetahVel that terminates once the root has moved 5 cm (a family that can end
    early: its resets come when the device says so, not at the horizon)."""

    name = "HalfCheetahVelStop-test"

    def terminated(self, state: dict[str, Any], params: dict[str, Any]) -> Any:
        return namespace(state["qpos"]).abs(state["qpos"][:, 0]) > 0.05


def test_a_family_that_terminates_resets_where_the_inline_backend_does() -> None:
    family = _StopsAfterFiveCentimetres(horizon=12)
    tasks = family.sample_tasks(2, np.random.default_rng(0))
    policy = _cheetah_policy()
    batches = {}
    for backend in ("inline", "warp"):
        with make_sampler(family, policy, backend) as sampler:
            batches[backend] = sampler.sample(tasks, 2, seed=1, episodes_per_trial=3)
    host, device = batches["inline"], batches["warp"]
    assert bool(host.terminated.any()), "the test needs episodes that end early"
    assert int(host.terminated.sum()) >= 4
    for key in DISCRETE:
        assert torch.equal(device.tensors()[key], host.tensors()[key]), key
    starts = host.episode_start & (host.episode_id > 0)
    torch.testing.assert_close(device.obs[starts], host.obs[starts], rtol=0, atol=1e-6)


def test_an_ant_batch_has_the_inline_backends_episodes() -> None:
    family = make_family("AntDir", horizon=6)
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(105, 8)
    tasks = family.sample_tasks(2, np.random.default_rng(0))
    with make_sampler(family, policy, "inline") as sampler:
        host = sampler.sample(tasks, 2, seed=3, episodes_per_trial=2)
    with pytest.warns(UserWarning, match="orients the friction directions"):
        with make_sampler(family, policy, "warp") as sampler:
            device = sampler.sample(tasks, 2, seed=3, episodes_per_trial=2)
    for key in DISCRETE:
        assert torch.equal(device.tensors()[key], host.tensors()[key]), key
    for start in (0, 6):  # each episode's first observation: the same state, no contact forces
        torch.testing.assert_close(device.obs[start], host.obs[start], rtol=0, atol=1e-6)
        assert not device.obs[start, :, 27:].any()
    torch.testing.assert_close(device.rewards[:2], host.rewards[:2], rtol=0, atol=1e-3)


def test_a_dynamics_batch_has_the_inline_backends_episodes() -> None:
    family = make_family("HalfCheetahParams", horizon=8)
    policy = _cheetah_policy()
    tasks = family.sample_tasks(3, np.random.default_rng(0))
    batches = {}
    for backend in ("inline", "warp"):
        with make_sampler(family, policy, backend) as sampler:
            batches[backend] = sampler.sample(tasks, 2, seed=1, episodes_per_trial=2)
    host, device = batches["inline"], batches["warp"]
    for key in DISCRETE:
        assert torch.equal(device.tensors()[key], host.tensors()[key]), key
    torch.testing.assert_close(device.obs[:4], host.obs[:4], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(device.rewards[:4], host.rewards[:4], rtol=0, atol=1e-3)


def test_a_diverged_policy_is_marked_as_the_inline_backend_marks_it() -> None:
    family = make_family("HalfCheetahDir", horizon=6)
    tasks = family.sample_tasks(2, np.random.default_rng(0))
    policy = _cheetah_policy()
    good = dict(policy.named_parameters())
    broken = {k: torch.full_like(v, float("nan")) if k == "log_std" else v for k, v in good.items()}
    batches = {}
    for backend in ("inline", "warp"):
        with make_sampler(family, policy, backend) as sampler:
            batches[backend] = sampler.sample(tasks, 2, [good, broken], seed=2)
    host, device = batches["inline"], batches["warp"]
    assert host.diverged.tolist() == [False, False, True, True]
    for key in DISCRETE:
        assert torch.equal(device.tensors()[key], host.tensors()[key]), key
    assert torch.equal(device.returns.isnan(), host.returns.isnan())
    torch.testing.assert_close(device.last_obs[2:], host.last_obs[2:], rtol=0, atol=1e-6)


def test_a_run_trained_on_warp_is_evaluated_there(tmp_path: Any) -> None:
    from metarl.cli import main

    run = tmp_path / "run"
    train = ["train", "maml-trpo", "--env", "HalfCheetahDir", "--preset", "quick"]
    train += ["--iterations", "1", "--horizon", "5", "--backend", "warp", "--run-dir", str(run)]
    assert main([*train, "--no-progress"]) == 0
    eval_args = ["eval", str(run), "--protocol", "quick", "--num-tasks", "2", "--seeds", "0"]
    eval_args += ["--no-baseline", "--no-progress"]
    assert main([*eval_args, "--backend", "warp"]) == 0
    assert main(eval_args) == 0  # the C MuJoCo path: its own files beside the warp ones
    warp_eval = run / "eval" / "quick_num-tasks=2_seeds=0_backend=warp_no-baseline.json"
    host_eval = run / "eval" / "quick_num-tasks=2_seeds=0_no-baseline.json"
    assert warp_eval.is_file() and host_eval.is_file()


def test_the_contact_frame_diagnostic_compares_both_cones() -> None:
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "warp_contact_frames.py"
    out = subprocess.run(
        [sys.executable, str(script), "--states", "1"],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    rows = [line for line in out.splitlines() if line.startswith("state 0")]
    assert [("pyramidal" in r, "elliptic" in r) for r in rows] == [(True, False), (False, True)]
    elliptic = float(rows[1].split("difference ")[1].split(";")[0])
    assert elliptic < 1e-3  # the frame-independent cone agrees with C MuJoCo
