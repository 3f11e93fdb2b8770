"""GaussianMLPPolicy.per_task: K parameter sets at once, as vmap of the functional forward."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, vmap

from metarl.policies import GaussianMLPPolicy


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu"])
def test_per_task_equals_vmap_of_the_functional_forward(activation: str) -> None:
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(3, 2, (5, 4), activation, init_std=0.5).double()
    K = 3
    params = {
        k: (v.detach() + 0.2 * torch.randn(K, *v.shape, dtype=v.dtype)).requires_grad_(True)
        for k, v in policy.named_parameters()
    }
    obs = torch.randn(K, 6, 3, dtype=torch.float64)
    mean, log_std = policy.per_task(params, obs)
    ref_mean, ref_log_std = vmap(lambda p, o: functional_call(policy, p, (o,)))(params, obs)
    torch.testing.assert_close(mean, ref_mean, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(log_std, ref_log_std)
    assert mean.shape == (K, 6, 2)
    # And the gradients (MAML differentiates through it twice).
    ours = torch.autograd.grad((mean**2).sum() + log_std.sum(), list(params.values()))
    theirs = torch.autograd.grad((ref_mean**2).sum() + ref_log_std.sum(), list(params.values()))
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_xavier_init_is_xavier_uniform_with_zero_biases_and_torch_init_is_unchanged() -> None:
    torch.manual_seed(0)
    default = GaussianMLPPolicy(20, 6, (100, 100), "relu")
    torch.manual_seed(0)
    linears = [torch.nn.Linear(20, 100), torch.nn.Linear(100, 100), torch.nn.Linear(100, 6)]
    for layer, ref in zip(default.mean_net[::2], linears, strict=True):
        assert torch.equal(layer.weight, ref.weight) and torch.equal(layer.bias, ref.bias)

    policy = GaussianMLPPolicy(20, 6, (100, 100), "relu", init="xavier")
    for layer in policy.mean_net[::2]:
        fan_out, fan_in = layer.weight.shape
        bound = (6.0 / (fan_in + fan_out)) ** 0.5
        assert bool((layer.bias == 0).all())
        assert layer.weight.abs().max().item() <= bound
        # Uniform on [-bound, bound]: standard deviation bound / sqrt(3).
        assert layer.weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.1)
    with pytest.raises(ValueError, match="init must be one of"):
        GaussianMLPPolicy(3, 2, init="he")
