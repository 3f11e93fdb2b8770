"""Policies with functional parameters.

A policy's ``forward(obs) -> (mean, log_std)`` is a pure function of its parameters, so the
same module serves as the meta-parameters and, through :func:`torch.func.functional_call`, as
any number of per-task adapted parameter sets (batched over tasks with :func:`torch.func.vmap`).
Sampling noise is drawn outside the network (by the sampler, from per-slot generators), which
keeps the forward pass deterministic and vmappable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

__all__ = [
    "ACTIVATIONS",
    "GaussianMLPPolicy",
    "Params",
    "gaussian_entropy",
    "gaussian_log_prob",
    "stack_params",
]

Params = dict[str, Tensor]

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}

_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_prob(actions: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """Log-density of a diagonal Gaussian, summed over the last (action) axis: ``[...]``."""
    z = (actions - mean) * torch.exp(-log_std)
    return -(0.5 * z.pow(2) + log_std + 0.5 * _LOG_2PI).sum(-1)


def gaussian_entropy(log_std: Tensor) -> Tensor:
    """Entropy of a diagonal Gaussian, summed over the last axis."""
    return (log_std + 0.5 * (1.0 + _LOG_2PI)).sum(-1)


def stack_params(param_sets: Sequence[Mapping[str, Tensor]]) -> Params:
    """Stack K parameter dicts into one dict with a leading task axis ``[K, ...]``."""
    if not param_sets:
        raise ValueError("stack_params needs at least one parameter set")
    keys = list(param_sets[0])
    for i, p in enumerate(param_sets):
        if list(p) != keys:
            raise ValueError(f"parameter set {i} has keys {list(p)}, expected {keys}")
    return {k: torch.stack([p[k] for p in param_sets]) for k in keys}


class GaussianMLPPolicy(nn.Module):
    """A Gaussian policy: MLP mean, state-independent log standard deviation.

    Args:
        obs_dim: observation size.
        act_dim: action size.
        hidden_sizes: widths of the hidden layers ((64, 64) tanh by default; the MAML paper
            uses (100, 100) ReLU).
        activation: ``"tanh"``, ``"relu"`` or ``"elu"``.
        init_std: initial standard deviation of every action dimension.
    """

    recurrent = False

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        init_std: float = 1.0,
    ) -> None:
        super().__init__()
        if obs_dim < 1 or act_dim < 1:
            raise ValueError(f"obs_dim and act_dim must be positive, got {obs_dim}, {act_dim}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if not init_std > 0:
            raise ValueError(f"init_std must be positive, got {init_std}")
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        self.activation = activation
        layers: list[nn.Module] = []
        width = self.obs_dim
        for h in self.hidden_sizes:
            layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
            width = h
        layers.append(nn.Linear(width, self.act_dim))
        self.mean_net = nn.Sequential(*layers)
        self.log_std = nn.Parameter(torch.full((self.act_dim,), math.log(init_std)))

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """``obs [..., obs_dim] -> (mean [..., act_dim], log_std [..., act_dim])``."""
        mean = self.mean_net(obs)
        return mean, self.log_std.expand_as(mean)

    def params(self) -> Params:
        """The meta-parameters as a name -> tensor dict (shared storage, requires grad)."""
        return dict(self.named_parameters())

    def functional(self, obs: Tensor, params: Mapping[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """``forward`` with ``params`` in place of the module's own (None: its own)."""
        if params is None:
            return self(obs)
        return functional_call(self, dict(params), (obs,))

    def log_prob(self, obs: Tensor, actions: Tensor, params: Mapping[str, Tensor] | None = None) -> Tensor:
        """Log-probability of ``actions`` under the policy with ``params``: ``[...]``."""
        mean, log_std = self.functional(obs, params)
        return gaussian_log_prob(actions, mean, log_std)
