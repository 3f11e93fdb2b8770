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
    """``(phi'(z), phi''(z) / phi'(z))`` of the activation at ``z`` (with ``h = phi(z)``); None
    for the ratio where ``phi''`` is zero or not asked for (``second=False``). The ratio is
    written without a division (tanh: ``-2 h``; elu: 1 where ``z <= 0``, else 0), so it is
    exact where ``phi'`` underflows."""
    if activation == "tanh":
        return 1.0 - h * h, (-2.0 * h if second else None)
    if activation == "relu":
        return (z > 0).to(z.dtype), None
    if activation == "elu":  # alpha = 1: phi = exp(z) - 1 for z <= 0
        negative = z <= 0
        d = torch.where(negative, h + 1.0, torch.ones_like(h))
        return d, (negative.to(z.dtype) if second else None)
    raise AssertionError(activation)


def _inverse_variance(params: Params) -> Tensor:
    """``exp(-2 log_std)`` of every task's policy, ``[K, A, 1]``."""
    return torch.exp(-2.0 * params["log_std"].detach()).unsqueeze(-1)


def _with_bias(weight: Tensor, bias: Tensor) -> Tensor:
    """``[weight | bias]``: ``[K, out, in + 1]``, a layer's affine map as one matrix."""
    return torch.cat([weight, bias.unsqueeze(-1)], -1)


class _Linearization:
    """The mean network at per-task parameters on ``obs [K, N, obs_dim]``, forward cached
    (with each activation's second derivative only if ``second_order``).

    Everything per step is kept feature-major, ``[K, features, N]``: every matrix multiply then
    has the steps as its long output axis (a layer's ``W x``, ``W^T delta``) or as its
    reduction axis (a weight gradient ``delta x^T``), the shapes a BLAS runs fastest, which
    matters most for the narrow action layer. Each layer's input is kept twice: with a row of
    ones (``[K, in + 1, N]``), so that forward-mode products take the bias in the same multiply,
    and step-major (``[K, N, in]``), the other operand of its weight gradients.
    """

    def __init__(
        self, policy: GaussianMLPPolicy, params: Params, obs: Tensor, second_order: bool
    ) -> None:
        self.keys = [
            (f"mean_net.{i}.weight", f"mean_net.{i}.bias")
            for i, layer in enumerate(policy.mean_net)
            if isinstance(layer, torch.nn.Linear)
        ]
        self.weights = [params[w].detach() for w, _ in self.keys]  # [K, out, in]
        self.inputs_ones: list[Tensor] = []  # each layer's input and a ones row, [K, in + 1, N]
        self.inputs_rows: list[Tensor] = []  # each layer's input, step-major, [K, N, in]
        self.d1: list[Tensor] = []  # phi'(z) of each hidden layer, [K, out, N]
        self.q: list[Tensor | None] = []  # phi''(z) / phi'(z) of each hidden layer (None: zero)
        if policy.activation not in _ACTIVATIONS:
            raise ValueError(
                f"no curvature products for activation {policy.activation!r}; "
                f"supported: {sorted(_ACTIVATIONS)}"
            )
        act = _ACTIVATIONS[policy.activation]
        K, N = obs.shape[0], obs.shape[1]
        ones = torch.ones(K, 1, N, dtype=obs.dtype, device=obs.device)
        rows = obs.detach().contiguous()
        x = rows.mT
        with torch.no_grad():
            for layer, (_, b_key) in enumerate(self.keys):
                self.inputs_rows.append(rows)
                self.inputs_ones.append(torch.cat([x, ones], 1))
                z = torch.bmm(
                    _with_bias(self.weights[layer], params[b_key].detach()),
                    self.inputs_ones[layer],
                )
                if layer == len(self.keys) - 1:
                    self.mean_t = z  # [K, A, N]
                    break
                x = act(z)
                d1, q = _derivatives(policy.activation, z, x, second_order)
                self.d1.append(d1)
                self.q.append(q)
                rows = x.mT.contiguous()

    @property
    def mean(self) -> Tensor:
        """The action means, ``[K, N, A]`` (a view)."""
        return self.mean_t.mT

    def jvp(self, v: Params) -> tuple[Tensor, list[Tensor | None]]:
        """``(R mean, R input of each layer)`` along ``v``, feature-major (the observations,
        the first layer's input, do not move: None)."""
        r_in: list[Tensor | None] = []
        r_h: Tensor | None = None
        for layer, (w_key, b_key) in enumerate(self.keys):
            r_in.append(r_h)
            r = torch.bmm(_with_bias(v[w_key], v[b_key]), self.inputs_ones[layer])
            if r_h is not None:
                r.baddbmm_(self.weights[layer], r_h)
            if layer == len(self.keys) - 1:
                return r, r_in
            r_h = r.mul_(self.d1[layer])
        raise AssertionError("the mean network has at least one layer")

    def vjp(
        self, cotangent: Tensor, keep_e: bool = False
    ) -> tuple[dict[str, Tensor], list[Tensor], list[Tensor]]:
        """Parameter gradients of ``sum(cotangent * mean)`` (``cotangent [K, A, N]``), with the
        backward pass's ``delta`` (gradient at each layer's output) and, if ``keep_e``, ``e``
        (at each hidden layer's output, before the activation's derivative)."""
        grads: dict[str, Tensor] = {}
        deltas: list[Tensor] = [cotangent]
        es: list[Tensor] = []
        delta = cotangent
        for layer in range(len(self.keys) - 1, -1, -1):
            w_key, b_key = self.keys[layer]
            grads[w_key] = torch.bmm(delta, self.inputs_rows[layer])
            grads[b_key] = delta.sum(-1)
            if layer == 0:
                break
            e = torch.bmm(self.weights[layer].mT, delta)
            if keep_e:
                es.insert(0, e)
                delta = self.d1[layer - 1] * e
            else:
                delta = e.mul_(self.d1[layer - 1])
            deltas.insert(0, delta)
        return grads, deltas, es

    def second_order_vjp(
        self,
        v: Params,
        r_top: Tensor,
        deltas: list[Tensor],
        qe: list[Tensor | None],
        r_in: list[Tensor | None],
    ) -> dict[str, Tensor]:
        """The directional derivative along ``v`` of :meth:`vjp`'s gradients, where the output
        cotangent (``deltas[-1]``) itself changes by ``r_top``; ``qe[l]`` is
        ``phi''(z) / phi'(z) * e`` of hidden layer ``l`` (None where ``phi''`` is zero), ``e``
        from :meth:`vjp`, and ``r_in`` from :meth:`jvp` along ``v`` (``phi''(z) e R z`` is
        ``qe`` times the next layer's ``R input``, ``phi'(z) R z``)."""
        out: dict[str, Tensor] = {}
        r_delta = r_top
        for layer in range(len(self.keys) - 1, -1, -1):
            w_key, b_key = self.keys[layer]
            delta = deltas[layer]
            grad_w = torch.bmm(r_delta, self.inputs_rows[layer])
            r_input = r_in[layer]
            if r_input is not None:
                grad_w.baddbmm_(delta, r_input.mT)
            out[w_key] = grad_w
            out[b_key] = r_delta.sum(-1)
            if layer == 0:
                break
            r_e = torch.bmm(v[w_key].mT, delta).baddbmm_(self.weights[layer].mT, r_delta)
            r_delta = r_e.mul_(self.d1[layer - 1])
            curvature = qe[layer - 1]
            if curvature is not None:
                r_next = r_in[layer]
                assert r_next is not None
                r_delta.addcmul_(curvature, r_next)
        return out


def _policy_gradient(
    net: _Linearization, inv_var: Tensor, actions: Tensor, wa: Tensor, keep_e: bool = False
) -> tuple[dict[str, Tensor], list[Tensor], list[Tensor], Tensor]:
    """Gradient of ``-sum_n wa[k, n] * log pi(actions[k, n])`` at ``net``'s parameters, with
    :meth:`_Linearization.vjp`'s ``deltas`` and ``e`` and the residual ``actions - mean``, all
    feature-major (``actions [K, A, N]``, ``wa [K, 1, N]``)."""
    diff = actions - net.mean_t
    grads, deltas, es = net.vjp(-wa * diff * inv_var, keep_e)  # d l / d mean
    grads["log_std"] = (wa * (1.0 - diff * diff * inv_var)).sum(-1)
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
        hessian: bool = True,
    ) -> None:
        """``hessian=False`` keeps only what :meth:`gradient` needs (first-order MAML): no
        second derivatives are cached and :meth:`hvp` is refused."""
        self.hessian = hessian
        self.net = _Linearization(policy, params, obs, second_order=hessian)
        inv_var = _inverse_variance(params)
        wa = (weights * advantages).unsqueeze(1)  # [K, 1, N]
        self.grad, self.deltas, es, diff = _policy_gradient(
            self.net, inv_var, actions.mT, wa, keep_e=hessian
        )
        if not hessian:
            return
        self.mean_hessian = wa * inv_var  # d2 l / d mean2 (diagonal), [K, A, N]
        self.cross = 2.0 * wa * diff * inv_var  # d2 l / d mean d log_std, [K, A, N]
        self.log_std_hessian = (2.0 * wa * diff * diff * inv_var).sum(-1)  # [K, A]
        self.qe = [None if q is None else q * e for q, e in zip(self.net.q, es, strict=True)]

    def gradient(self) -> dict[str, Tensor]:
        """Every task's loss gradient at its parameters (``[K, ...]`` per name)."""
        return dict(self.grad)

    def hvp(self, v: Params) -> dict[str, Tensor]:
        """Every task's loss Hessian times ``v[k]``."""
        if not self.hessian:
            raise RuntimeError("this PolicyGradientCurvature was built with hessian=False")
        r_mean, r_in = self.net.jvp(v)
        v_log_std = v["log_std"].unsqueeze(-1)
        log_std = (self.cross * r_mean).sum(-1) + self.log_std_hessian * v["log_std"]
        r_top = r_mean.mul_(self.mean_hessian).addcmul_(self.cross, v_log_std)
        out = self.net.second_order_vjp(v, r_top, self.deltas, self.qe, r_in)
        out["log_std"] = log_std
        return out


class FisherProduct:
    """Fisher-vector products of every task's policy: the Hessian of
    ``sum_n weights[k, n] * KL(pi_old || pi)`` at ``pi = pi_old = params[k]``."""

    def __init__(
        self, policy: GaussianMLPPolicy, params: Params, obs: Tensor, weights: Tensor
    ) -> None:
        self.net = _Linearization(policy, params, obs, second_order=False)
        self.weights = weights.unsqueeze(1)  # [K, 1, N]
        self.inv_var = _inverse_variance(params)
        self.scale = self.weights * self.inv_var  # [K, A, N]
        self.log_std_scale = 2.0 * weights.sum(1, keepdim=True)  # [K, 1]

    @property
    def mean(self) -> Tensor:
        """The policies' action means on the observations, ``[K, N, A]`` (a view)."""
        return self.net.mean

    def policy_gradient(self, actions: Tensor, advantages: Tensor) -> dict[str, Tensor]:
        """The gradient of ``-sum_n weights[k, n] * advantages[k, n] * log pi(actions[k, n] |
        obs[k, n])`` at the policies' parameters (TRPO's importance-weighted loss has the same
        gradient there, where the ratio is 1), from the cached forward pass."""
        wa = self.weights * advantages.unsqueeze(1)
        return _policy_gradient(self.net, self.inv_var, actions.mT, wa)[0]

    def fvp(self, v: Params) -> dict[str, Tensor]:
        """Every task's Fisher matrix times ``v[k]``."""
        r_mean, _ = self.net.jvp(v)
        out, _, _ = self.net.vjp(r_mean.mul_(self.scale))
        out["log_std"] = self.log_std_scale * v["log_std"]
        return out
