"""Bad input to the warp backend: one clear line each, before any work (no simulator needed)."""

from __future__ import annotations

import sys

import pytest

from metarl.policies import GaussianMLPPolicy
from metarl.registry import make_family
from metarl.sampling import make_sampler
from metarl.sampling.warp_backend import WarpSampler


def _policy(family_name: str) -> GaussianMLPPolicy:
    family = make_family(family_name)
    return GaussianMLPPolicy(family.observation_space.shape[0], family.action_space.shape[0])


def test_a_model_per_task_needs_the_fields_it_changes_named() -> None:
    from metarl.envs.dynamics import HalfCheetahParams

    class Unnamed(HalfCheetahParams):
        name = "UnnamedParams-test"
        per_task_fields = ()

    family = Unnamed()
    with pytest.raises(ValueError, match=r"^UnnamedParams-test changes the model per task with"):
        make_sampler(family, _policy("HalfCheetahParams"), "warp")


@pytest.mark.parametrize("name", ["HumanoidDir"])
def test_a_family_with_numpy_only_functions_is_not_supported_yet(name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name} is not supported on the warp backend yet"):
        make_sampler(name, _policy(name), "warp")


def test_a_family_without_a_mujoco_model_has_no_device() -> None:
    with pytest.raises(ValueError, match=r"^Point2DNav has no simulator on a device"):
        make_sampler("Point2DNav", _policy("Point2DNav"), "warp")


def test_a_task_sampler_stepped_through_env_step_is_refused() -> None:
    # The generic Gymnasium path: a task sampler (here one over a family's env).
    class Sampler:
        def __init__(self) -> None:
            self.family = make_family("HalfCheetahVel")
            self.observation_space = self.family.observation_space
            self.action_space = self.family.action_space
            self.horizon = 10

        def sample(self, n, rng):  # type: ignore[no-untyped-def]
            return self.family.sample_tasks(n, rng)

        def make_env(self, task=None):  # type: ignore[no-untyped-def]
            from metarl.family import MetaEnv

            env = MetaEnv(self.family)
            if task is not None:
                env.set_task(task)
            return env

    with pytest.raises(ValueError, match=r"steps a built-in MuJoCo family"):
        WarpSampler(Sampler(), _policy("HalfCheetahVel"))


def test_without_mujoco_warp_the_error_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "mujoco_warp", None)  # import mujoco_warp now fails
    with pytest.raises(ImportError, match=r"needs MuJoCo Warp.*pip install 'metarl\[warp\]'"):
        make_sampler("HalfCheetahVel", _policy("HalfCheetahVel"), "warp")


def test_the_backend_runs_as_one_simulation() -> None:
    with pytest.raises(ValueError, match=r"num_workers must be 1, got 2"):
        make_sampler("HalfCheetahVel", _policy("HalfCheetahVel"), "warp", num_workers=2)


def test_an_unknown_backend_lists_warp() -> None:
    with pytest.raises(ValueError, match=r"choose inline, processes, ray or warp"):
        make_sampler("HalfCheetahVel", _policy("HalfCheetahVel"), "wrap")
