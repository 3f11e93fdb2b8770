"""The MLPs' activation functions, each named once with what every path that evaluates it needs.

An MLP of :func:`metarl.policies.mlp` runs three ways: as torch modules (training, autograd),
in float32 numpy on the sampler's fast path (:class:`metarl.sampling.policy_step.MLPStep`),
and inside MAML-TRPO's written-out curvature products (:mod:`metarl.curvature`), which need
the activation's first two derivatives. :data:`ACTIVATIONS` holds all three per name. An
activation given with its torch module only still trains everywhere: the sampler then steps
the policy with torch and MAML-TRPO takes its autograd curvature.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["ACTIVATIONS", "Activation", "Derivatives"]

Array = np.ndarray

Derivatives = Callable[[Tensor, Tensor, bool], tuple[Tensor, Tensor | None]]
"""``(z, h, second) -> (phi'(z), phi''(z) / phi'(z))`` at the pre-activations ``z`` (with
``h = phi(z)``); the ratio is None where ``phi''`` is zero or not asked for (``second=False``)."""


@dataclass(frozen=True)
class Activation:
    """One activation function, as each MLP path evaluates it."""

    module: type[nn.Module]
    """The torch module (built once per hidden layer)."""
    numpy: Callable[[Array], Array] | None = None
    """The function on a float32 array, float32 out, in place where it can be (the sampler's
    fast path); None: the sampler runs the policy in torch."""
    derivatives: Derivatives | None = None
    """Its derivatives for the written-out curvature products; None: autograd's curvature."""


def _tanh(x: Array) -> Array:
    return np.tanh(x, out=x)


def _relu(x: Array) -> Array:
    return np.maximum(x, 0.0, out=x)


def _elu(x: Array) -> Array:
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))).astype(np.float32)


# The ratio phi'' / phi' is written without a division (tanh: -2 h; elu: 1 where z <= 0, else 0),
# so it is exact where phi' underflows.
def _tanh_derivatives(z: Tensor, h: Tensor, second: bool) -> tuple[Tensor, Tensor | None]:
    return 1.0 - h * h, (-2.0 * h if second else None)


def _relu_derivatives(z: Tensor, h: Tensor, second: bool) -> tuple[Tensor, Tensor | None]:
    return (z > 0).to(z.dtype), None


def _elu_derivatives(z: Tensor, h: Tensor, second: bool) -> tuple[Tensor, Tensor | None]:
    negative = z <= 0  # alpha = 1: phi = exp(z) - 1 there
    d = torch.where(negative, h + 1.0, torch.ones_like(h))
    return d, (negative.to(z.dtype) if second else None)


ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation(nn.Tanh, _tanh, _tanh_derivatives),
    "relu": Activation(nn.ReLU, _relu, _relu_derivatives),
    "elu": Activation(nn.ELU, _elu, _elu_derivatives),
}
"""Activation name (a policy's or config's ``activation``) -> its :class:`Activation`."""
