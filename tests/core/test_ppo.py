"""PPO's losses against hand-computed values, masking, and minibatch indices."""

from __future__ import annotations

import math

import pytest
import torch

from metarl.ppo import (
    approx_kl,
    clip_fraction,
    clipped_surrogate,
    entropy_bonus,
    masked_mean,
    minibatch_indices,
    value_loss,
)

F64 = torch.float64
# Ratios inside and outside [0.8, 1.2], each with a positive and a negative advantage.
RATIOS = torch.tensor([[0.5, 0.5, 1.5], [1.5, 1.1, 1.1]], dtype=F64)
ADV = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 2.0, -2.0]], dtype=F64)
# min(r A, clip(r) A) by hand: 0.5, -0.8 (clipped), 1.2 (clipped), -1.5, 2.2, -2.2.
SURROGATE = [0.5, -0.8, 1.2, -1.5, 2.2, -2.2]


def _log_probs() -> tuple[torch.Tensor, torch.Tensor]:
    old = torch.tensor([[-1.0, -2.0, -0.5], [-3.0, -1.5, -0.2]], dtype=F64)
    new = (old + RATIOS.log()).requires_grad_()
    return new, old


def test_clipped_surrogate_by_hand() -> None:
    new, old = _log_probs()
    mask = torch.ones(2, 3, dtype=torch.bool)
    loss, metrics = clipped_surrogate(new, old, ADV, 0.2, mask)
    assert loss.item() == pytest.approx(-sum(SURROGATE) / 6)
    assert metrics["policy_loss"].item() == pytest.approx(loss.item())
    assert metrics["clip_fraction"].item() == pytest.approx(4 / 6)
    loss.backward()
    # d(-r A / 6)/d log r = -r A / 6 where the unclipped term is the minimum, else 0.
    expected_grad = torch.tensor([[-0.5 / 6, 0.0, 0.0], [1.5 / 6, -2.2 / 6, 2.2 / 6]], dtype=F64)
    assert new.grad is not None
    torch.testing.assert_close(new.grad, expected_grad)


def test_masked_steps_do_not_contribute() -> None:
    new, old = _log_probs()
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=F64)
    with torch.no_grad():
        new[1, 1] = 1e4  # exp would overflow to inf
        new[1, 2] = math.nan
    loss, metrics = clipped_surrogate(new, old, ADV, 0.2, mask)
    assert loss.item() == pytest.approx(-sum(SURROGATE[:4]) / 4)
    assert metrics["clip_fraction"].item() == pytest.approx(1.0)
    assert math.isfinite(metrics["approx_kl"].item())
    loss.backward()
    assert new.grad is not None and torch.isfinite(new.grad).all()
    assert (new.grad[1, 1:] == 0).all()
    assert masked_mean(torch.tensor([[math.nan, 2.0]]), torch.tensor([[0, 1]])).item() == 2.0
    assert masked_mean(torch.ones(2, 2), torch.zeros(2, 2)).item() == 0.0


def test_approx_kl_by_hand() -> None:
    old = torch.zeros(1, 3, dtype=F64)
    new = torch.log(torch.tensor([[2.0, 0.5, 1.0]], dtype=F64))
    kl = approx_kl(new, old, torch.ones(1, 3))
    # (r - 1) - log r: 1 - log 2, -0.5 + log 2, 0.
    assert kl.item() == pytest.approx((1 - math.log(2) - 0.5 + math.log(2)) / 3)
    assert clip_fraction(new, old, 0.2, torch.ones(1, 3)).item() == pytest.approx(2 / 3)


def test_value_loss_plain_and_clipped_by_hand() -> None:
    values = torch.tensor([[1.0, 2.0, 9.0]], dtype=F64, requires_grad=True)
    old = torch.tensor([[0.5, 2.5, 0.0]], dtype=F64)
    returns = torch.tensor([[2.0, 4.0, 0.0]], dtype=F64)
    mask = torch.tensor([[1, 1, 0]])
    loss, metrics = value_loss(values, old, returns, mask)
    assert loss.item() == pytest.approx(0.5 * (1.0 + 4.0) / 2)
    # Clipped: V_clip = 0.7 and 2.3, so max((V - R)^2, (V_clip - R)^2) = 1.69 and 4.
    clipped, _ = value_loss(values, old, returns, mask, clip_coef=0.2)
    assert clipped.item() == pytest.approx(0.5 * (1.69 + 4.0) / 2)
    assert metrics["value_loss"].item() == pytest.approx(loss.item())
    clipped.backward()
    assert values.grad is not None
    # The first step's maximum is the clipped term, whose gradient in V is 0 (V moved too far).
    torch.testing.assert_close(values.grad, torch.tensor([[0.0, 0.5 * (2 - 4), 0.0]], dtype=F64))
    perfect, m = value_loss(returns, old, returns, mask)
    assert perfect.item() == 0.0 and m["explained_variance"].item() == pytest.approx(1.0)


def test_entropy_bonus_is_negative_mean_entropy() -> None:
    entropy = torch.tensor([[1.0, 3.0], [5.0, 100.0]])
    loss, metrics = entropy_bonus(entropy, torch.tensor([[1, 1], [1, 0]]))
    assert loss.item() == pytest.approx(-3.0)
    assert metrics["entropy"].item() == pytest.approx(3.0)


def test_shape_and_clip_errors_are_named() -> None:
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="advantages must have the shape of mask"):
        clipped_surrogate(x, x, torch.zeros(3, 2), 0.2, torch.ones(2, 3))
    with pytest.raises(ValueError, match="clip_coef must be positive"):
        clipped_surrogate(x, x, x, 0.0, torch.ones(2, 3))
    with pytest.raises(ValueError, match="clip_coef must be positive or None"):
        value_loss(x, x, x, torch.ones(2, 3), clip_coef=-1.0)


def test_minibatch_indices_partition_and_determinism() -> None:
    parts = minibatch_indices(10, 3, torch.Generator().manual_seed(0))
    assert [len(p) for p in parts] == [4, 3, 3]
    assert sorted(torch.cat(parts).tolist()) == list(range(10))
    again = minibatch_indices(10, 3, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(parts, again, strict=True))
    other = minibatch_indices(10, 3, torch.Generator().manual_seed(1))
    assert not torch.equal(torch.cat(parts), torch.cat(other))
    with pytest.raises(ValueError, match="num_minibatches must be in"):
        minibatch_indices(4, 5, torch.Generator())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_losses_match_cpu() -> None:
    new, old = _log_probs()
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    cpu_loss, cpu_metrics = clipped_surrogate(new.detach(), old, ADV, 0.2, mask)
    gpu_loss, gpu_metrics = clipped_surrogate(
        new.detach().cuda(), old.cuda(), ADV.cuda(), 0.2, mask.cuda()
    )
    assert gpu_loss.device.type == "cuda"
    torch.testing.assert_close(gpu_loss.cpu(), cpu_loss)
    for key, value in cpu_metrics.items():
        torch.testing.assert_close(gpu_metrics[key].cpu(), value)
    gen = torch.Generator(device="cuda").manual_seed(0)
    parts = minibatch_indices(10, 2, gen)
    assert parts[0].device.type == "cuda"
    assert sorted(torch.cat(parts).tolist()) == list(range(10))
