"""MAML-TRPO's fast kernel: exact curvature products of a Gaussian MLP policy, written out.

TRPO on MAML's adapted policies (``agents/maml_trpo.py``) needs, about ten times an iteration,
Hessian-vector products of every task's policy-gradient loss and Fisher-vector products of
the adapted policies, each over every sampled step. Autograd's double backward (the agent's
reference path) gets them right but spends most of its time on elementwise bookkeeping of the
second-order graph. Here the forward pass (and the first-order backward pass) are cached once
per set of parameters, and each product is Pearlmutter's R-operator written out: a forward
pass of directional derivatives, then the backward pass's own directional derivative, a few
batched matrix multiplies per layer.

Everything is batched over tasks: parameters are :class:`~metarl.policies.GaussianMLPPolicy`
parameter dicts stacked on a leading task axis (``[K, ...]``), inputs are task-major
``[K, N, ...]`` and per-step weights ``[K, N]`` make each task's loss a weighted sum over its
steps (a mean over valid steps when they are ``1 / count`` on valid steps, 0 on padding).

The agent reaches the kernel through one function, :func:`written_out_meta_objective`. On a
CPU its passes run over cache-sized groups of tasks (``cpu_chunk_steps``), side by side on a
pool of torch's threads when there are several (:func:`_over_groups`); :func:`in_task_groups`
runs the agent's own meta-test step over the same groups.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch
from torch import Tensor

from metarl.activations import ACTIVATIONS, Derivatives
from metarl.optim import flatten_params, unflatten_params
from metarl.policies import GaussianMLPPolicy
from metarl.task_steps import TaskSteps

__all__ = [
    "FisherProduct",
    "PolicyGradientCurvature",
    "WrittenOutMetaObjective",
    "in_task_groups",
    "written_out_meta_objective",
]

Params = Mapping[str, Tensor]
OuterLoss = Callable[
    [Params, list[TaskSteps], TaskSteps, tuple[Tensor, Tensor]], tuple[Tensor, Tensor]
]
"""``(theta, train, valid, (old_mean, old_log_std)) -> (loss, mean KL)``: the agent's outer loss
(autograd through the inner steps, no second-order graph) on the tasks of the batches given."""


def _derivatives(activation: str) -> Derivatives | None:
    """The activation's written-out derivatives (:data:`~metarl.activations.ACTIVATIONS`), or
    None where it has none."""
    spec = ACTIVATIONS.get(activation)
    return None if spec is None else spec.derivatives


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
        derivatives = _derivatives(policy.activation)
        if derivatives is None:
            written_out = sorted(name for name in ACTIVATIONS if _derivatives(name) is not None)
            raise ValueError(
                f"no curvature products for activation {policy.activation!r}; "
                f"supported: {written_out}"
            )
        # The policy's own activation modules, one per hidden layer.
        acts = [m for m in policy.mean_net if not isinstance(m, torch.nn.Linear)]
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
                x = acts[layer](z)
                d1, q = derivatives(z, x, second_order)
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


# -- MAML's outer step on the written-out products -------------------------------------------


def written_out_meta_objective(
    policy: GaussianMLPPolicy,
    adapt_lr: float,
    first_order: bool,
    cpu_chunk_steps: int,
    outer_loss: OuterLoss,
) -> WrittenOutMetaObjective | None:
    """The fast kernel of one MAML-TRPO iteration for ``policy``, or None where the policy's
    activation has no written-out derivatives (the agent then takes its autograd reference).

    ``cpu_chunk_steps``: on a CPU every pass runs over groups of tasks of about this many steps
    each (0: all tasks at once, as always on a GPU). ``outer_loss`` is what the line search's
    candidates are scored with, run group by group."""
    if _derivatives(policy.activation) is None:
        return None
    return WrittenOutMetaObjective(policy, adapt_lr, first_order, cpu_chunk_steps, outer_loss)


def _task_groups(cpu_chunk_steps: int, *steps: TaskSteps) -> list[slice]:
    """The groups of tasks a pass over ``steps`` runs over, one after another: each of about
    ``cpu_chunk_steps`` steps in all on a CPU (exact, as tasks are independent until their
    losses are averaged, and faster once a group's activations fit in the core's cache: 1.4x
    for a curvature product at 40 tasks of 4000 steps); a single group on a GPU or at 0."""
    K = steps[0].num_tasks
    if steps[0].obs.device.type != "cpu" or cpu_chunk_steps == 0:
        return [slice(0, K)]
    per_task = sum(int(s.obs.shape[1]) for s in steps)
    size = max(1, cpu_chunk_steps // max(per_task, 1))
    return [slice(a, min(a + size, K)) for a in range(0, K, size)]


def in_task_groups(
    step: Callable[[dict[str, Tensor], TaskSteps], Mapping[str, Tensor]],
    params: Params,
    steps: TaskSteps,
    cpu_chunk_steps: int,
) -> dict[str, Tensor]:
    """``step(params, steps)`` (per-task parameters ``[K, ...]`` -> ``[K, ...]``) run over the
    task groups of ``steps``, one after another."""
    parts = [
        step({k: v[g] for k, v in params.items()}, steps.tasks(g))
        for g in _task_groups(cpu_chunk_steps, steps)
    ]
    return {k: torch.cat([part[k] for part in parts]) for k in params}


_R = TypeVar("_R")
_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _over_groups(work: Callable[[int], _R], count: int) -> list[_R]:
    """``[work(i) for i in range(count)]`` over the task groups of a pass. With several torch
    threads (and several groups) the groups run side by side on a pool of that many threads,
    each group on one thread: every group's result is then what one thread computes, so the
    numbers do not depend on the thread count, and on a few cores it is faster than splitting
    each of the groups' small multiplies across threads. Each ``work(i)`` must touch only its
    own group's tensors."""
    threads = torch.get_num_threads()
    if threads == 1 or count == 1:
        return [work(i) for i in range(count)]
    with _POOLS_LOCK:
        pool = _POOLS.get(threads)
        if pool is None:
            pool = _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="metarl-group")
    torch.set_num_threads(1)
    try:
        return list(pool.map(work, range(count)))
    finally:
        torch.set_num_threads(threads)


def _sum_parts(parts: list[list[Tensor]]) -> list[Tensor]:
    """Per-group tensor lists summed group by group, in group order (deterministic)."""
    total = list(parts[0])
    for part in parts[1:]:
        total = [t + p for t, p in zip(total, part, strict=True)]
    return total


class WrittenOutMetaObjective:
    """One MAML-TRPO iteration's inner steps and outer derivatives, on the written-out
    products, task group by task group: the agent's :class:`MetaObjective`, fast.

    Each :meth:`adapt` takes one policy-gradient step of every task and keeps the inner loss's
    derivatives there (a :class:`PolicyGradientCurvature` per group); :meth:`attach` caches the
    adapted policies' forward pass on the post-adaptation episodes (a :class:`FisherProduct`
    per group). The outer gradient and the KL's curvature products then read those caches:
    each inner loss's forward and backward pass and the adapted policies' forward pass run
    once an iteration.

    At the current ``theta`` the adapted policies are the sampling ones, so the importance
    ratios are 1 and the KL's gradient in the adapted parameters is 0: the outer gradient is
    ``mean_k J_k^T g_k`` and the KL's Hessian ``mean_k J_k^T F_k J_k``. ``g_k`` is task k's
    policy gradient at its adapted parameters on its fresh episodes, ``F_k`` the adapted
    policy's Fisher matrix there and ``J_k`` the Jacobian of the adapted parameters in
    ``theta``: the product over the steps of ``I - adapt_lr * (Hessian of that step's inner
    loss at the step's start)``, or ``I`` first order.
    """

    def __init__(
        self,
        policy: GaussianMLPPolicy,
        adapt_lr: float,
        first_order: bool,
        cpu_chunk_steps: int,
        outer_loss: OuterLoss,
    ) -> None:
        self.policy, self.lr, self.first_order = policy, adapt_lr, first_order
        self.cpu_chunk_steps, self.outer_loss = cpu_chunk_steps, outer_loss
        self.like = {k: v.detach() for k, v in policy.params().items()}
        self.adapted: dict[str, Tensor] = {}
        """Every task's parameters after the steps so far, ``[K, ...]``."""
        self.groups: list[slice] = []
        """The task groups of the inner steps and curvature products (sized at the first
        step for it and the post-adaptation batch, which is as large before it is sampled)."""
        self.train: list[TaskSteps] = []
        self.inner: list[list[PolicyGradientCurvature]] = []  # [group][step]
        self.fisher: list[FisherProduct] = []
        self.valid: TaskSteps | None = None
        self.old_dist: tuple[Tensor, Tensor] | None = None

    def adapt(self, train: TaskSteps) -> dict[str, Tensor]:
        """One inner step of every task on ``train``; the adapted parameters ``[K, ...]``."""
        if not self.groups:
            self.groups = _task_groups(self.cpu_chunk_steps, train, train)
            self.inner = [[] for _ in self.groups]
            self.adapted = {
                k: v.unsqueeze(0).expand(train.num_tasks, *v.shape) for k, v in self.like.items()
            }
        self.train.append(train)

        def group(i: int) -> tuple[dict[str, Tensor], PolicyGradientCurvature]:
            g = self.groups[i]
            start = {k: v[g] for k, v in self.adapted.items()}
            t = train.tasks(g)
            inner = PolicyGradientCurvature(
                self.policy, start, t.obs, t.actions, t.advantages, t.weights, not self.first_order
            )
            gradient = inner.gradient()
            return {k: start[k] - self.lr * gradient[k] for k in start}, inner

        results = _over_groups(group, len(self.groups))
        if not self.first_order:
            for i, (_, inner) in enumerate(results):
                self.inner[i].append(inner)
        self.adapted = {k: torch.cat([part[k] for part, _ in results]) for k in self.like}
        return self.adapted

    def attach(self, valid: TaskSteps) -> tuple[Tensor, Tensor]:
        """Cache the adapted policies' forward pass on ``valid``; their ``(mean, log_std)`` on
        ``valid.obs`` (each ``[K, N, act_dim]``), the outer loss's sampling distributions."""
        self.valid = valid

        def group(i: int) -> FisherProduct:
            g = self.groups[i]
            adapted = {k: v[g] for k, v in self.adapted.items()}
            return FisherProduct(self.policy, adapted, valid.obs[g], valid.weights[g])

        self.fisher = _over_groups(group, len(self.groups))
        mean = torch.cat([f.mean for f in self.fisher])
        self.old_dist = mean, self.adapted["log_std"].unsqueeze(1).expand_as(mean)
        return self.old_dist

    def _attached(self) -> tuple[TaskSteps, tuple[Tensor, Tensor]]:
        if self.valid is None or self.old_dist is None:
            raise RuntimeError("attach the post-adaptation episodes first")
        return self.valid, self.old_dist

    def _push_forward(self, group: int, v: Params) -> Params:
        """``J_k v[k]`` for a group's tasks: the steps' factors, first step first."""
        for inner in self.inner[group]:
            inner_v = inner.hvp(v)
            v = {k: v[k] - self.lr * inner_v[k] for k in v}
        return v

    def _pull_back(self, group: int, u: Params) -> list[Tensor]:
        """``sum_k J_k^T u[k]`` over a group's tasks (last step's factor first), one tensor per
        parameter."""
        for inner in reversed(self.inner[group]):
            inner_u = inner.hvp(u)
            u = {k: u[k] - self.lr * inner_u[k] for k in u}
        return [u[k].sum(0) for k in self.like]

    def meta_gradient(self) -> Tensor:
        """The outer loss's flat gradient in ``theta`` at the current ``theta``."""
        valid, _ = self._attached()

        def group(i: int) -> list[Tensor]:
            g = self.groups[i]
            outer = self.fisher[i].policy_gradient(valid.actions[g], valid.advantages[g])
            return self._pull_back(i, outer)

        return flatten_params(_sum_parts(_over_groups(group, len(self.groups)))) / valid.num_tasks

    def kl_hvp(self, damping: float) -> Callable[[Tensor], Tensor]:
        """``v -> (H + damping I) v``, ``H = mean_k J_k^T F_k J_k``: per task and step two
        inner Hessian-vector products, and one Fisher-vector product."""
        K = self._attached()[0].num_tasks

        def product(v: Tensor) -> Tensor:
            directions = unflatten_params(v, self.like)

            def group(i: int) -> list[Tensor]:
                n = self.groups[i].stop - self.groups[i].start
                parts = {k: p.unsqueeze(0).expand(n, *p.shape) for k, p in directions.items()}
                return self._pull_back(i, self.fisher[i].fvp(self._push_forward(i, parts)))

            total = _sum_parts(_over_groups(group, len(self.groups)))
            return flatten_params(total) / K + damping * v

        return product

    def loss_and_kl(self, theta: Params) -> tuple[Tensor, Tensor]:
        """The outer loss and mean KL at ``theta`` (detached), ``outer_loss`` run group by
        group over the tasks of every batch (each group's share is its part of the means; the
        sum differs from one pass over every task only by rounding)."""
        valid, old_dist = self._attached()
        K = valid.num_tasks
        groups = _task_groups(self.cpu_chunk_steps, *self.train, valid)

        def group(i: int) -> tuple[Tensor, Tensor]:
            g = groups[i]
            train = [t.tasks(g) for t in self.train]
            part_loss, part_kl = self.outer_loss(
                theta, train, valid.tasks(g), (old_dist[0][g], old_dist[1][g])
            )
            return part_loss.detach(), part_kl.detach()

        loss = torch.zeros((), dtype=valid.obs.dtype, device=valid.obs.device)
        kl = torch.zeros_like(loss)
        for g, (part_loss, part_kl) in zip(groups, _over_groups(group, len(groups)), strict=True):
            share = (g.stop - g.start) / K
            loss = loss + share * part_loss
            kl = kl + share * part_kl
        return loss, kl
