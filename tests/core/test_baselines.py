"""The linear feature baseline: exact fits, per-task batching, padding and errors."""

from __future__ import annotations

import math

import pytest
import torch

from metarl.baselines import LinearFeatureBaseline, linear_features


def _batch(
    gen: torch.Generator, T: int = 40, B: int = 6, D: int = 3, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    obs = (torch.rand(T, B, D, generator=gen, dtype=dtype) - 0.5) * 4.0
    lengths = torch.randint(T // 2, T + 1, (B,), generator=gen)
    valid = torch.arange(T).unsqueeze(1) < lengths.unsqueeze(0)
    return obs, valid


def test_features_layout_clip_and_padding() -> None:
    obs = torch.tensor([[[50.0, -1.0]], [[2.0, -30.0]], [[7.0, 7.0]]])  # [T=3, B=1, D=2]
    valid = torch.tensor([[1], [1], [0]])
    f = linear_features(obs, valid)
    assert f.shape == (3, 1, 2 * 2 + 4)
    torch.testing.assert_close(f[0, 0], torch.tensor([10.0, -1.0, 100.0, 1.0, 0.0, 0.0, 0.0, 1.0]))
    s = 0.01
    torch.testing.assert_close(f[1, 0], torch.tensor([2.0, -10.0, 4.0, 100.0, s, s**2, s**3, 1.0]))
    assert (f[2] == 0).all()


def test_fits_a_target_linear_in_its_features() -> None:
    # The MAML paper's batch shape: H = 200 steps, 20 episodes. The ridge term biases the fit
    # a little (the time features are nearly collinear), so the default reg gives ~3e-7 here
    # and a tiny one recovers the target to round-off.
    gen = torch.Generator().manual_seed(0)
    obs, valid = _batch(gen, T=200, B=20)
    w = torch.randn(2 * 3 + 4, generator=gen, dtype=torch.float64)
    target = linear_features(obs, valid) @ w
    values = LinearFeatureBaseline().fit_predict(obs, target, valid)
    assert (values - target).abs().max().item() < 1e-6
    assert (values[~valid] == 0).all()
    exact = LinearFeatureBaseline(reg_coeff=1e-12).fit_predict(obs, target, valid)
    assert (exact - target).abs().max().item() < 1e-8


def test_per_group_fits_equal_separate_fits() -> None:
    gen = torch.Generator().manual_seed(1)
    obs, valid = _batch(gen, B=8)
    returns = torch.randn(40, 8, generator=gen, dtype=torch.float64).cumsum(0)
    baseline = LinearFeatureBaseline()
    together = baseline.fit_predict(obs, returns, valid, groups=4)
    assert baseline.coeffs is not None and baseline.coeffs.shape == (4, 10)
    for k in range(4):
        cols = slice(2 * k, 2 * k + 2)
        alone = LinearFeatureBaseline().fit_predict(obs[:, cols], returns[:, cols], valid[:, cols])
        torch.testing.assert_close(together[:, cols], alone, rtol=0, atol=1e-9)
    # One model for the whole batch is a different (worse) fit than one per task.
    single = baseline.fit_predict(obs, returns, valid, groups=1)
    err = lambda v: ((v - returns)[valid] ** 2).sum().item()  # noqa: E731
    assert err(together) < err(single)


def test_padding_content_is_ignored_and_dtype_kept() -> None:
    gen = torch.Generator().manual_seed(2)
    obs, valid = _batch(gen, dtype=torch.float32)
    returns = torch.randn(40, 6, generator=gen).cumsum(0)
    clean = LinearFeatureBaseline().fit_predict(obs, returns * valid, valid, groups=2)
    dirty_obs, dirty_ret = obs.clone(), returns.clone()
    dirty_obs[~valid] = math.nan
    dirty_ret[~valid] = 1e30
    dirty = LinearFeatureBaseline().fit_predict(dirty_obs, dirty_ret, valid, groups=2)
    assert dirty.dtype == torch.float32
    torch.testing.assert_close(dirty, clean)


def test_non_finite_targets_raise_after_retries() -> None:
    gen = torch.Generator().manual_seed(3)
    obs, valid = _batch(gen)
    returns = torch.zeros(40, 6, dtype=torch.float64)
    returns[0, 3] = math.nan  # column 3 is in group 1 of 2
    with pytest.raises(RuntimeError, match=r"not finite for groups \[1\]"):
        LinearFeatureBaseline().fit_predict(obs, returns, valid, groups=2)


def test_bad_input_and_state_round_trip() -> None:
    obs = torch.zeros(5, 4, 2)
    valid = torch.ones(5, 4)
    baseline = LinearFeatureBaseline(reg_coeff=1e-3, max_tries=3)
    with pytest.raises(ValueError, match="groups must be a positive divisor"):
        baseline.fit_predict(obs, torch.zeros(5, 4), valid, groups=3)
    with pytest.raises(ValueError, match="returns must have shape"):
        baseline.fit_predict(obs, torch.zeros(5, 3), valid)
    with pytest.raises(ValueError, match="obs must be time-major"):
        baseline.fit_predict(obs[0], torch.zeros(5, 4), valid)
    with pytest.raises(ValueError, match="reg_coeff must be positive"):
        LinearFeatureBaseline(reg_coeff=0.0)
    restored = LinearFeatureBaseline()
    restored.load_state_dict(baseline.state_dict())
    assert restored.state_dict() == {"reg_coeff": 1e-3, "max_tries": 3}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    gen = torch.Generator().manual_seed(4)
    obs, valid = _batch(gen, T=100, B=12, dtype=torch.float32)
    returns = torch.randn(100, 12, generator=gen).cumsum(0)
    cpu = LinearFeatureBaseline().fit_predict(obs, returns, valid, groups=3)
    cuda = LinearFeatureBaseline().fit_predict(obs.cuda(), returns.cuda(), valid.cuda(), groups=3)
    assert cuda.device.type == "cuda" and cuda.dtype == torch.float32
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-5, atol=1e-4)
