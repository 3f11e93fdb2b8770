"""Exact curvature products of a Gaussian MLP policy, written out layer by layer.

TRPO on MAML's adapted policies (``agents/maml_trpo.py``) needs, about ten times an iteration,
Hessian-vector products of every task's policy-gradient loss and Fisher-vector products of
the adapted policies, each over every sampled step. Autograd's double backward gets them right
but spends most of its time on elementwise bookkeeping of the second-order graph. Here the
forward pass (and the first-order backward pass) are cached once per set of parameters, and
each product is Pearlmutter's R-operator written out: a forward pass of directional
derivatives, then the backward pass's own directional derivative, a few batched matrix
multiplies per layer.

Everything is batched over tasks: parameters are :class:`~metarl.policies.GaussianMLPPolicy`
parameter dicts stacked on a leading task axis (``[K, ...]``), inputs are task-major
``[K, N, ...]`` and per-step weights ``[K, N]`` make each task's loss a weighted sum over its
steps (a mean over valid steps when they are ``1 / count`` on valid steps, 0 on padding).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from metarl.policies import GaussianMLPPolicy

__all__ = ["FisherProduct", "PolicyGradientCurvature"]

Params = Mapping[str, Tensor]


_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "elu": torch.nn.functional.elu}


def _derivatives(
    activation: str, z: Tensor, h: Tensor, second: bool
) -> tuple[Tensor, Tensor | None]:
    """``(phi'(z), phi''(z))`` of the activation at ``z`` (with ``h = phi(z)``); None for
    ``phi''`` where it is zero or not asked for (``second=False``)."""
    if activation == "tanh":
        d1 = 1.0 - h * h
        return d1, (-2.0 * h * d1 if second else None)
    if activation == "relu":
        return (z > 0).to(z.dtype), None
    if activation == "elu":  # alpha = 1: phi = exp(z) - 1 for z <= 0
        negative = z <= 0
        d = torch.where(negative, h + 1.0, torch.ones_like(h))
        return d, (torch.where(negative, h + 1.0, torch.zeros_like(h)) if second else None)
    raise AssertionError(activation)


def _inverse_variance(params: Params) -> Tensor:
    """``exp(-2 log_std)`` of every task's policy, ``[K, 1, A]``."""
    return torch.exp(-2.0 * params["log_std"].detach()).unsqueeze(1)


class _Linearization:
    """The mean network at per-task parameters on ``obs [K, N, obs_dim]``, forward cached
    (with each activation's second derivative only if ``second_order``)."""

    def __init__(
        self, policy: GaussianMLPPolicy, params: Params, obs: Tensor, second_order: bool
    ) -> None:
        self.keys = [
            (f"mean_net.{i}.weight", f"mean_net.{i}.bias")
            for i, layer in enumerate(policy.mean_net)
            if isinstance(layer, torch.nn.Linear)
        ]
        self.weights = [params[w].detach() for w, _ in self.keys]  # [K, out, in]
        self.inputs: list[Tensor] = []  # the input of each layer, [K, N, in]
        # ... and its transpose, [K, in, N]: weight gradients are inputs_t @ delta, which
        # keeps every large operand of a batched matmul contiguous (no copies).
        self.inputs_t: list[Tensor] = []
        self.d1: list[Tensor] = []  # phi'(z) of each hidden layer
        self.d2: list[Tensor | None] = []  # phi''(z) of each hidden layer (None: zero)
        if policy.activation not in _ACTIVATIONS:
            raise ValueError(
                f"no curvature products for activation {policy.activation!r}; "
                f"supported: {sorted(_ACTIVATIONS)}"
            )
        act = _ACTIVATIONS[policy.activation]
        h = obs
        with torch.no_grad():
            for layer, (_, b_key) in enumerate(self.keys):
                self.inputs.append(h)
                self.inputs_t.append(h.mT.contiguous())
                z = torch.baddbmm(params[b_key].detach().unsqueeze(1), h, self.weights[layer].mT)
                if layer == len(self.keys) - 1:
                    self.mean = z
                    break
                h = act(z)
                d1, d2 = _derivatives(policy.activation, z, h, second_order)
                self.d1.append(d1)
                self.d2.append(d2)

    def jvp(self, v: Params) -> tuple[Tensor, list[Tensor], list[Tensor | None]]:
        """``(R mean, R z of each hidden layer, R input of each layer)`` along ``v`` (the
        observations, the first layer's input, do not move: None)."""
        r_in: list[Tensor | None] = []
        r_z: list[Tensor] = []
        r_h: Tensor | None = None
        for layer, (w_key, b_key) in enumerate(self.keys):
            r_in.append(r_h)
            r = torch.baddbmm(v[b_key].unsqueeze(1), self.inputs[layer], v[w_key].mT)
            if r_h is not None:
                r.baddbmm_(r_h, self.weights[layer].mT)
            if layer == len(self.keys) - 1:
                return r, r_z, r_in
            r_z.append(r)
            r_h = self.d1[layer] * r
        raise AssertionError("the mean network has at least one layer")

    def vjp(self, cotangent: Tensor) -> tuple[dict[str, Tensor], list[Tensor], list[Tensor]]:
        """Parameter gradients of ``sum(cotangent * mean)``, with the backward pass's
        ``delta`` (gradient at each layer's output) and ``e`` (at each layer's input)."""
        grads: dict[str, Tensor] = {}
        deltas: list[Tensor] = [cotangent]
        es: list[Tensor] = []
        delta = cotangent
        for layer in range(len(self.keys) - 1, -1, -1):
            w_key, b_key = self.keys[layer]
            grads[w_key] = torch.bmm(self.inputs_t[layer], delta).mT
            grads[b_key] = delta.sum(1)
            if layer == 0:
                break
            e = torch.bmm(delta, self.weights[layer])
            es.insert(0, e)
            delta = self.d1[layer - 1] * e
            deltas.insert(0, delta)
        return grads, deltas, es

    def second_order_vjp(
        self,
        v: Params,
        r_top: Tensor,
        deltas: list[Tensor],
        d2e: list[Tensor | None],
        r_z: list[Tensor],
        r_in: list[Tensor | None],
    ) -> dict[str, Tensor]:
        """The directional derivative along ``v`` of :meth:`vjp`'s gradients, where the output
        cotangent (``deltas[-1]``) itself changes by ``r_top``; ``d2e[l]`` is ``phi''(z) * e``
        of hidden layer ``l`` (None where ``phi''`` is zero), ``e`` from :meth:`vjp`."""
        out: dict[str, Tensor] = {}
        r_delta = r_top
        for layer in range(len(self.keys) - 1, -1, -1):
            w_key, b_key = self.keys[layer]
            delta = deltas[layer]
            grad_w = torch.bmm(self.inputs_t[layer], r_delta)
            r_input = r_in[layer]
            if r_input is not None:
                grad_w.baddbmm_(r_input.mT, delta)
            out[w_key] = grad_w.mT
            out[b_key] = r_delta.sum(1)
            if layer == 0:
                break
            r_e = torch.bmm(delta, v[w_key]).baddbmm_(r_delta, self.weights[layer])
            r_delta = r_e.mul_(self.d1[layer - 1])
            curvature = d2e[layer - 1]
            if curvature is not None:
                r_delta.addcmul_(curvature, r_z[layer - 1])
        return out


def _policy_gradient(
    net: _Linearization, inv_var: Tensor, actions: Tensor, wa: Tensor
) -> tuple[dict[str, Tensor], list[Tensor], list[Tensor], Tensor]:
    """Gradient of ``-sum_n wa[k, n] * log pi(actions[k, n])`` at ``net``'s parameters, with
    :meth:`_Linearization.vjp`'s ``deltas`` and ``e`` and the residual ``actions - mean``."""
    diff = actions - net.mean
    grads, deltas, es = net.vjp(-wa * diff * inv_var)  # d l / d mean
    grads["log_std"] = (wa * (1.0 - diff * diff * inv_var)).sum(1)
    return grads, deltas, es, diff


class PolicyGradientCurvature:
    """Gradient and Hessian-vector products of every task's policy-gradient loss.

    Task k's loss at its parameters ``params[k]`` is
    ``-sum_n weights[k, n] * advantages[k, n] * log pi(actions[k, n] | obs[k, n])`` (MAML's
    inner loss); products take and return per-task parameter dicts (``[K, ...]``).
    """

    def __init__(
        self,
        policy: GaussianMLPPolicy,
        params: Params,
        obs: Tensor,
        actions: Tensor,
        advantages: Tensor,
        weights: Tensor,
    ) -> None:
        self.net = _Linearization(policy, params, obs, second_order=True)
        inv_var = _inverse_variance(params)
        wa = (weights * advantages).unsqueeze(-1)  # [K, N, 1]
        self.grad, self.deltas, es, diff = _policy_gradient(self.net, inv_var, actions, wa)
        self.mean_hessian = wa * inv_var  # d2 l / d mean2 (diagonal)
        self.cross = 2.0 * wa * diff * inv_var  # d2 l / d mean d log_std
        self.log_std_hessian = (2.0 * wa * diff * diff * inv_var).sum(1)  # [K, A]
        self.d2e = [None if d2 is None else d2 * e for d2, e in zip(self.net.d2, es, strict=True)]

    def gradient(self) -> dict[str, Tensor]:
        """Every task's loss gradient at its parameters (``[K, ...]`` per name)."""
        return dict(self.grad)

    def hvp(self, v: Params) -> dict[str, Tensor]:
        """Every task's loss Hessian times ``v[k]``."""
        r_mean, r_z, r_in = self.net.jvp(v)
        v_log_std = v["log_std"].unsqueeze(1)
        r_top = self.mean_hessian * r_mean + self.cross * v_log_std
        out = self.net.second_order_vjp(v, r_top, self.deltas, self.d2e, r_z, r_in)
        out["log_std"] = (self.cross * r_mean).sum(1) + self.log_std_hessian * v["log_std"]
        return out


class FisherProduct:
    """Fisher-vector products of every task's policy: the Hessian of
    ``sum_n weights[k, n] * KL(pi_old || pi)`` at ``pi = pi_old = params[k]``."""

    def __init__(
        self, policy: GaussianMLPPolicy, params: Params, obs: Tensor, weights: Tensor
    ) -> None:
        self.net = _Linearization(policy, params, obs, second_order=False)
        self.weights = weights
        self.inv_var = _inverse_variance(params)
        self.scale = weights.unsqueeze(-1) * self.inv_var  # [K, N, A]
        self.log_std_scale = 2.0 * weights.sum(1, keepdim=True)  # [K, 1]

    @property
    def mean(self) -> Tensor:
        """The policies' action means on the observations, ``[K, N, A]``."""
        return self.net.mean

    def policy_gradient(self, actions: Tensor, advantages: Tensor) -> dict[str, Tensor]:
        """The gradient of ``-sum_n weights[k, n] * advantages[k, n] * log pi(actions[k, n] |
        obs[k, n])`` at the policies' parameters (TRPO's importance-weighted loss has the same
        gradient there, where the ratio is 1), from the cached forward pass."""
        wa = (self.weights * advantages).unsqueeze(-1)
        return _policy_gradient(self.net, self.inv_var, actions, wa)[0]

    def fvp(self, v: Params) -> dict[str, Tensor]:
        """Every task's Fisher matrix times ``v[k]``."""
        r_mean, _, _ = self.net.jvp(v)
        out, _, _ = self.net.vjp(self.scale * r_mean)
        out["log_std"] = self.log_std_scale * v["log_std"]
        return out
