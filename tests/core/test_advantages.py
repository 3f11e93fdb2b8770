"""Discounted returns, GAE and advantage normalization against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from metarl.advantages import discounted_returns, gae, normalize_advantages

NAN = math.nan
F64 = torch.float64


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=F64)


# Column 0 runs all 3 steps; column 1 ends after 2 steps (the padding holds NaN on purpose).
REWARDS = _t([[1.0, 1.0], [2.0, 1.0], [3.0, NAN]])
VALID = torch.tensor([[1, 1], [1, 1], [1, 0]], dtype=torch.bool)


def test_discounted_returns_by_hand() -> None:
    out = discounted_returns(REWARDS, VALID, gamma=0.5)
    # col 0: R2 = 3, R1 = 2 + 0.5 * 3, R0 = 1 + 0.5 * 3.5; col 1: R1 = 1, R0 = 1 + 0.5 * 1.
    expected = _t([[2.75, 1.5], [3.5, 1.0], [3.0, 0.0]])
    torch.testing.assert_close(out, expected)


def test_discounted_returns_bootstrap_truncated_only() -> None:
    last_values = torch.tensor([10.0, 20.0], dtype=F64)
    terminated = torch.tensor([False, True])
    out = discounted_returns(REWARDS, VALID, 0.5, last_values=last_values, terminated=terminated)
    # col 0 truncated: R2 = 3 + 0.5 * 10, R1 = 2 + 4, R0 = 1 + 3; col 1 terminated: none.
    expected = _t([[4.0, 1.5], [6.0, 1.0], [8.0, 0.0]])
    torch.testing.assert_close(out, expected)
    # The same flags given per step ([T, B]) mean the same thing.
    step_flags = torch.zeros(3, 2, dtype=torch.bool)
    step_flags[1, 1] = True
    out_steps = discounted_returns(REWARDS, VALID, 0.5, last_values, terminated=step_flags)
    torch.testing.assert_close(out_steps, expected)


def test_gae_by_hand_truncated_terminated_and_padding() -> None:
    values = _t([[0.5, 2.0], [1.0, 1.0], [1.5, NAN]])
    last_values = torch.tensor([2.0, 5.0], dtype=F64)
    terminated = torch.tensor([0.0, 1.0], dtype=F64)
    adv, ret = gae(REWARDS, values, VALID, 0.9, 0.8, last_values, terminated)
    # col 0 (truncated, bootstrapped with V = 2): deltas 1.4, 2.35, 3.3; gamma * lambda = 0.72.
    # col 1 (terminated at t = 1, its last value 5 is ignored): deltas -0.1, 0.
    expected_adv = _t(
        [[1.4 + 0.72 * (2.35 + 0.72 * 3.3), -0.1], [2.35 + 0.72 * 3.3, 0.0], [3.3, 0.0]]
    )
    torch.testing.assert_close(adv, expected_adv)
    torch.testing.assert_close(ret, _t([[5.30272, 1.9], [5.726, 1.0], [4.8, 0.0]]))


def test_gae_without_last_values_does_not_bootstrap() -> None:
    values = _t([[0.5, 2.0], [1.0, 1.0], [1.5, 0.0]])
    adv, _ = gae(REWARDS, values, VALID, 0.9, 0.8)
    assert adv[2, 0].item() == pytest.approx(3.0 - 1.5)


def _random_batch(gen: torch.Generator, T: int = 7, B: int = 6) -> tuple[torch.Tensor, ...]:
    rewards = torch.randn(T, B, generator=gen, dtype=F64)
    values = torch.randn(T, B, generator=gen, dtype=F64)
    lengths = torch.randint(1, T + 1, (B,), generator=gen)
    valid = torch.arange(T).unsqueeze(1) < lengths.unsqueeze(0)
    last_values = torch.randn(B, generator=gen, dtype=F64)
    terminated = torch.rand(B, generator=gen) < 0.5
    return rewards, values, valid, last_values, terminated


def test_gae_lambda_one_is_returns_minus_values() -> None:
    gen = torch.Generator().manual_seed(0)
    rewards, values, valid, last_values, terminated = _random_batch(gen)
    adv, ret = gae(rewards, values, valid, 0.95, 1.0, last_values, terminated)
    mc = discounted_returns(rewards, valid, 0.95, last_values, terminated)
    torch.testing.assert_close(adv, (mc - values) * valid)
    torch.testing.assert_close(ret, mc)


def test_gae_lambda_zero_is_td_error() -> None:
    gen = torch.Generator().manual_seed(1)
    rewards, values, valid, last_values, _ = _random_batch(gen)
    adv, _ = gae(rewards, values, valid, 0.9, 0.0, last_values)
    T, B = rewards.shape
    for b in range(B):
        n = int(valid[:, b].sum())
        for t in range(T):
            if t >= n:
                assert adv[t, b].item() == 0.0
                continue
            next_v = values[t + 1, b] if t + 1 < n else last_values[b]
            delta = rewards[t, b] + 0.9 * next_v - values[t, b]
            assert adv[t, b].item() == pytest.approx(delta.item())


def test_float32_in_float32_out_and_no_grad_to_values() -> None:
    rewards = REWARDS.nan_to_num().float()
    values = torch.ones(3, 2, requires_grad=True)
    adv, ret = gae(rewards, values, VALID, 0.99, 0.95)
    assert adv.dtype == ret.dtype == torch.float32
    assert not adv.requires_grad


def test_normalize_advantages_whole_batch_and_groups() -> None:
    gen = torch.Generator().manual_seed(2)
    adv, _, valid, _, _ = _random_batch(gen, T=9, B=6)
    adv = adv * 3.0 + 5.0
    adv[~valid] = NAN
    out = normalize_advantages(adv, valid)
    v = out[valid]
    assert v.mean().item() == pytest.approx(0.0, abs=1e-12)
    assert v.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-6)
    assert (out[~valid] == 0).all()
    grouped = normalize_advantages(adv, valid, groups=3)
    for k in range(3):
        cols = slice(2 * k, 2 * k + 2)
        torch.testing.assert_close(
            grouped[:, cols], normalize_advantages(adv[:, cols], valid[:, cols])
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"valid": torch.tensor([[1, 0], [1, 1], [1, 0]])}, "run of ones then zeros"),
        ({"valid": torch.ones(2, 2)}, "valid must have the shape"),
        ({"gamma": 1.5}, "gamma must be in"),
        ({"gae_lambda": -0.1}, "gae_lambda must be in"),
        ({"last_values": torch.zeros(3, dtype=F64)}, "last_values must have shape"),
        ({"terminated": torch.zeros(3)}, "terminated must have shape"),
    ],
)
def test_bad_input_is_named(kwargs: dict, message: str) -> None:
    args = {"rewards": REWARDS, "values": torch.zeros(3, 2, dtype=F64), "valid": VALID}
    args |= {"gamma": 0.9, "gae_lambda": 0.9}
    args |= kwargs
    with pytest.raises(ValueError, match=message):
        gae(**args)


def test_normalize_rejects_groups_that_do_not_divide() -> None:
    with pytest.raises(ValueError, match="groups must be a positive divisor"):
        normalize_advantages(torch.zeros(3, 4), torch.ones(3, 4), groups=3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    gen = torch.Generator().manual_seed(3)
    rewards, values, valid, last_values, terminated = _random_batch(gen, T=50, B=16)
    cpu = gae(rewards, values, valid, 0.99, 0.95, last_values, terminated)
    cuda = gae(
        *(x.cuda() for x in (rewards, values, valid)),
        0.99,
        0.95,
        last_values.cuda(),
        terminated.cuda(),
    )
    assert cuda[0].device.type == "cuda"
    torch.testing.assert_close(cuda[0].cpu(), cpu[0])
    torch.testing.assert_close(
        normalize_advantages(cuda[0], valid.cuda(), groups=4).cpu(),
        normalize_advantages(cpu[0], valid, groups=4),
    )


def test_rewards_requiring_grad_are_treated_as_constants() -> None:
    rewards = REWARDS.nan_to_num().clone().requires_grad_()
    out = discounted_returns(rewards, VALID, 0.5)
    assert not out.requires_grad
