"""One source of truth: a family's observation, reward and termination functions give the same
numbers on numpy arrays (the C MuJoCo path) and on torch tensors (the warp backend).

These need no simulator: random states go through both array libraries.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metarl.envs.base import MujocoTaskFamily
from metarl.registry import make_family

FAMILIES = [
    (name, variant)
    for name in (
        "HalfCheetahVel",
        "HalfCheetahDir",
        "AntDir",
        "AntVel",
        "AntGoal",
        "HalfCheetahParams",
        "HopperParams",
        "Walker2dParams",
    )
    for variant in make_family(name).variants
]


def _random_inputs(
    family: MujocoTaskFamily, n: int, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]]:
    model = family.model
    shapes = {
        "qpos": (model.nq,),
        "qvel": (model.nv,),
        "subtree_com": (model.nbody, 3),
        "subtree_linvel": (model.nbody, 3),
        "cfrc_ext": (model.nbody, 6),
    }
    state = {k: rng.normal(size=(n, *shapes[k])) for k in family.gather}
    before = {k: rng.normal(size=(n, *shapes[k])) for k in family.before_fields}
    action = rng.uniform(-1.0, 1.0, size=(n, family.action_space.shape[0]))
    params = family.task_params(family.sample_tasks(n, rng))
    return before, state, action, params


def _evaluate(family: MujocoTaskFamily, before: dict, state: dict, action, params: dict) -> dict:
    terms, info = family.reward_terms(before, state, action, params)
    return {
        "obs": family.observe(state),
        "terminated": family.terminated(state, params),
        **{f"terms/{k}": v for k, v in terms.items()},
        **{f"info/{k}": v for k, v in info.items()},
    }


def _torch(values: dict[str, np.ndarray], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v, dtype=dtype) for k, v in values.items()}


@pytest.mark.parametrize(("name", "variant"), FAMILIES, ids=[f"{n}-{v}" for n, v in FAMILIES])
def test_torch_float64_gives_numpys_numbers(name: str, variant: str) -> None:
    family = make_family(name, variant=variant)
    before, state, action, params = _random_inputs(family, 16, np.random.default_rng(0))
    host = _evaluate(family, before, state, action, params)
    f64 = torch.float64
    device = _evaluate(
        family,
        _torch(before, f64),
        _torch(state, f64),
        torch.as_tensor(action),
        _torch(params, f64),
    )
    assert host.keys() == device.keys()
    for key, value in host.items():
        assert isinstance(device[key], torch.Tensor), key
        assert device[key].shape == value.shape, key
        assert device[key].dtype == (torch.bool if value.dtype == bool else f64), key
        # Same formulas in the same order: equal up to the summation order of a sum.
        np.testing.assert_allclose(device[key].numpy(), value, rtol=1e-14, atol=1e-14, err_msg=key)


@pytest.mark.parametrize(("name", "variant"), FAMILIES, ids=[f"{n}-{v}" for n, v in FAMILIES])
def test_torch_float32_is_numpy_to_float32_rounding(name: str, variant: str) -> None:
    family = make_family(name, variant=variant)
    before, state, action, params = _random_inputs(family, 16, np.random.default_rng(1))
    host = _evaluate(family, before, state, action, params)
    f32 = torch.float32
    device = _evaluate(
        family,
        _torch(before, f32),
        _torch(state, f32),
        torch.as_tensor(action, dtype=f32),
        _torch(params, f32),
    )
    for key, value in host.items():
        assert device[key].dtype in (torch.bool, f32), key
        # The velocity is a difference over dt: float32's 6e-8 relative, divided by dt = 0.01.
        np.testing.assert_allclose(device[key].numpy(), value, rtol=1e-5, atol=1e-5, err_msg=key)


def test_host_results_stay_numpy() -> None:
    family = make_family("HalfCheetahVel")
    before, state, action, params = _random_inputs(family, 3, np.random.default_rng(2))
    for key, value in _evaluate(family, before, state, action, params).items():
        assert isinstance(value, np.ndarray), key


def test_only_families_with_shared_functions_claim_a_device() -> None:
    for name, _ in FAMILIES:
        assert make_family(name).device_functions, name
    assert not make_family("HumanoidDir").device_functions
