"""The policy-facing step: one batched policy call per env step for every column of a worker.

Columns come in groups: one group is the ``E`` columns of one task, and every group may have
its own parameter set (MAML's adapted policies). The policy is always evaluated group by group
with a fixed group shape ``[E, ...]`` (one matrix product per group), so a column's
floating-point work does not depend on which or how many other groups a worker owns: the same
seed gives the same bits on any backend and with any number of workers.

Two evaluators share that contract:

- :class:`MLPStep`, the fast path for :class:`~metarl.policies.GaussianMLPPolicy`: the MLP in
  batched numpy matmuls (``[G, E, in] @ [G, in, out]``), a few microseconds per env step where
  ``torch.func.vmap`` costs a fixed ~200 us (measured), which would dominate 20 HalfCheetahs.
- :class:`TorchStep`, any policy module (recurrent ones included): the module once per group,
  under ``inference_mode``.

Action noise is drawn outside both: ``action = mean + exp(log_std) * eps`` with ``eps`` pre-drawn
per column for the whole horizon.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from metarl.activations import ACTIVATIONS
from metarl.policies import GaussianMLPPolicy

__all__ = [
    "MLPStep",
    "PolicyParams",
    "PolicyStep",
    "TorchStep",
    "check_policy",
    "make_policy_step",
    "prepare_params",
]

Array = np.ndarray
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass
class PolicyParams:
    """The parameters a worker evaluates, as CPU numpy arrays (cheap to pickle).

    Attributes:
        values: parameter name -> array; ``[K, ...]`` when ``per_task``, else the shared set.
        buffers: the module's buffers (always shared).
        per_task: whether ``values`` carry a leading task axis.
    """

    values: dict[str, Array]
    buffers: dict[str, Array]
    per_task: bool

    def slice(self, start: int, stop: int) -> PolicyParams:
        """The parameter sets of tasks ``start:stop`` (shared sets are returned unchanged)."""
        if not self.per_task:
            return self
        return PolicyParams({k: v[start:stop] for k, v in self.values.items()}, self.buffers, True)

    def grouped(self, num_groups: int) -> dict[str, Array]:
        """Parameters and buffers with a leading group axis ``[G, ...]`` (broadcast views)."""
        out: dict[str, Array] = {}
        for k, v in self.values.items():
            out[k] = v if self.per_task else np.broadcast_to(v, (num_groups, *v.shape))
        for k, v in self.buffers.items():
            out[k] = np.broadcast_to(v, (num_groups, *v.shape))
        return out


def _to_numpy(value: Tensor) -> Array:
    return value.detach().to("cpu", torch.float32).contiguous().numpy()


def prepare_params(policy: nn.Module, params: Any, num_tasks: int) -> PolicyParams:
    """Check ``params`` against ``policy`` and copy them to CPU once.

    Args:
        policy: the policy module.
        params: None (the policy's own parameters), a sequence of ``num_tasks`` parameter dicts,
            or one dict of stacked parameters with a leading task axis ``[num_tasks, ...]``.
        num_tasks: ``K``.

    Raises:
        ValueError: a wrong number of sets, or keys or shapes that do not match the policy.
    """
    own = dict(policy.named_parameters())
    buffers = {k: _to_numpy(v) for k, v in policy.named_buffers()}
    if params is None:
        return PolicyParams({k: _to_numpy(v) for k, v in own.items()}, buffers, False)
    if isinstance(params, Mapping):
        _check_keys(params, own, "the stacked parameter dict")
        for k, v in params.items():
            want = (num_tasks, *own[k].shape)
            if tuple(v.shape) != want:
                raise ValueError(
                    f"stacked parameter {k!r} has shape {tuple(v.shape)}; with {num_tasks} tasks "
                    f"it must be {want} (a leading task axis, see metarl.policies.stack_params)"
                )
        return PolicyParams({k: _to_numpy(params[k]) for k in own}, buffers, True)
    if isinstance(params, Sequence) and not isinstance(params, str | bytes):
        if len(params) != num_tasks:
            raise ValueError(
                f"got {len(params)} parameter sets for {num_tasks} tasks; pass one per task, "
                "a stacked dict, or None for the policy's own parameters"
            )
        for i, p in enumerate(params):
            if not isinstance(p, Mapping):
                raise ValueError(f"parameter set {i} is a {type(p).__name__}, not a dict")
            _check_keys(p, own, f"parameter set {i}")
            for k, v in p.items():
                if tuple(v.shape) != tuple(own[k].shape):
                    raise ValueError(
                        f"parameter set {i}: {k!r} has shape {tuple(v.shape)}, the policy's "
                        f"is {tuple(own[k].shape)}"
                    )
        stacked = {k: np.stack([_to_numpy(p[k]) for p in params]) for k in own}
        return PolicyParams(stacked, buffers, True)
    raise ValueError(
        "params must be None, a list of one parameter dict per task, or a stacked dict; "
        f"got {type(params).__name__}"
    )


def _check_keys(given: Mapping[str, Any], own: Mapping[str, Tensor], what: str) -> None:
    missing = sorted(set(own) - set(given))
    unknown = sorted(set(given) - set(own))
    if missing or unknown:
        raise ValueError(
            f"{what} does not match the policy's parameters: missing {missing}, "
            f"unknown {unknown}; expected {sorted(own)}"
        )


def check_policy(policy: nn.Module, obs_dim: int, act_dim: int) -> None:
    """Run the policy once on a zero observation and check the action shape.

    Raises:
        ValueError: the policy cannot read ``obs_dim`` observations or does not output
            ``act_dim`` actions.
    """
    recurrent = bool(getattr(policy, "recurrent", False))
    with torch.inference_mode():
        try:
            if recurrent:
                state = policy.initial_state(1)  # type: ignore[operator]
                inputs = torch.zeros(1, obs_dim + act_dim + 2)
                mean, log_std, _ = policy(inputs, state)
            else:
                mean, log_std = policy(torch.zeros(1, obs_dim))
        except (RuntimeError, ValueError) as exc:
            width = f"{obs_dim} + {act_dim} + 2" if recurrent else f"{obs_dim}"
            raise ValueError(
                f"the policy cannot read this env's inputs (width {width}): {exc}"
            ) from exc
    for name, value in (("mean", mean), ("log_std", log_std)):
        if tuple(value.shape) != (1, act_dim):
            raise ValueError(
                f"the policy's {name} has shape {tuple(value.shape[1:])} per observation; the "
                f"env's action space needs ({act_dim},)"
            )


class PolicyStep:
    """Batched actions for ``G`` groups of ``E`` columns (``n = G * E``), one call per step."""

    recurrent: bool = False

    def __init__(self, num_groups: int, group_size: int, act_dim: int) -> None:
        self.num_groups, self.group_size, self.act_dim = num_groups, group_size, act_dim
        self.n = num_groups * group_size

    def begin(self, eps: Array) -> None:
        """Start a batch with the pre-drawn standard normal noise ``eps [T, n, act_dim]``."""
        self.eps = eps

    def act(
        self, t: int, obs: Array, prev_action: Array, prev_reward: Array, done: Array
    ) -> tuple[Array, Array]:
        """``(actions [n, act_dim], log_probs [n])`` float32 for step ``t``.

        ``obs [n, obs_dim]``; the ``prev_*`` and ``done`` inputs ``[n, ...]`` are only read by
        recurrent policies.
        """
        raise NotImplementedError

    def _noise(self, t: int, mean: Array, log_std: Array) -> tuple[Array, Array]:
        eps = self.eps[t]
        actions = mean + np.exp(log_std) * eps
        log_probs = -(0.5 * np.square(eps) + log_std + _HALF_LOG_2PI).sum(-1)
        return actions.astype(np.float32, copy=False), log_probs.astype(np.float32, copy=False)


def mlp_layers(policy: nn.Module) -> list[tuple[str, str, Any]] | None:
    """``(weight, bias, numpy activation)`` of each layer of a plain GaussianMLPPolicy whose
    activations all have a numpy form (:data:`~metarl.activations.ACTIVATIONS`), else None."""
    if not isinstance(policy, GaussianMLPPolicy) or type(policy).forward is not (
        GaussianMLPPolicy.forward
    ):
        return None
    numpy_of = {a.module: a.numpy for a in ACTIVATIONS.values() if a.numpy is not None}
    layers: list[tuple[str, str, Any]] = []
    modules = list(policy.mean_net.named_children())
    for i, (name, module) in enumerate(modules):
        if isinstance(module, nn.Linear):
            act = None
            if i + 1 < len(modules) and not isinstance(modules[i + 1][1], nn.Linear):
                act = numpy_of.get(type(modules[i + 1][1]))
                if act is None:
                    return None
            layers.append((f"mean_net.{name}.weight", f"mean_net.{name}.bias", act))
        elif type(module) not in numpy_of:
            return None
    return layers


class MLPStep(PolicyStep):
    """The fast path: a GaussianMLPPolicy's MLP in batched float32 numpy matmuls."""

    def __init__(
        self,
        layers: list[tuple[str, str, Any]],
        params: PolicyParams,
        num_groups: int,
        group_size: int,
        act_dim: int,
    ) -> None:
        super().__init__(num_groups, group_size, act_dim)
        grouped = params.grouped(num_groups)
        G = num_groups
        # Contiguous [G, in, out] weights so every group's product is the same BLAS call.
        self.layers = [
            (
                np.ascontiguousarray(np.swapaxes(grouped[w], 1, 2)),
                np.ascontiguousarray(grouped[b][:, None, :]),
                act,
            )
            for w, b, act in layers
        ]
        log_std = np.ascontiguousarray(grouped["log_std"]).reshape(G, 1, act_dim)
        self.log_std = np.broadcast_to(log_std, (G, group_size, act_dim)).reshape(self.n, act_dim)

    def begin(self, eps: Array) -> None:
        super().begin(eps)
        self.std = np.exp(self.log_std).astype(np.float32)
        # The log-density of mean + std * eps is a function of eps alone: one op per batch.
        self.log_probs = (
            -(0.5 * np.square(eps) + self.log_std + _HALF_LOG_2PI).sum(-1).astype(np.float32)
        )

    def act(
        self, t: int, obs: Array, prev_action: Array, prev_reward: Array, done: Array
    ) -> tuple[Array, Array]:
        x = obs.astype(np.float32).reshape(self.num_groups, self.group_size, -1)
        for weight, bias, activation in self.layers:
            x = np.matmul(x, weight)
            x += bias
            if activation is not None:
                x = activation(x)
        actions = x.reshape(self.n, self.act_dim)
        actions += self.std * self.eps[t]
        return actions, self.log_probs[t]


class TorchStep(PolicyStep):
    """Any policy module (recurrent ones too), called once per group on that group's columns.

    One call per group, not one ``vmap`` over the groups: a group's actions must not depend on
    which other groups share its worker (the backends split a batch by task), and torch's
    vectorized elementwise kernels round an element differently depending on its position in
    the tensor (a full SIMD vector or the scalar tail; measured with ``sigmoid`` on AVX-512).
    Each group gets a copy of the module holding its parameters (one copy for shared ones).
    """

    def __init__(
        self,
        policy: nn.Module,
        params: PolicyParams,
        num_groups: int,
        group_size: int,
        act_dim: int,
    ) -> None:
        super().__init__(num_groups, group_size, act_dim)
        self.policy = policy
        self.recurrent = bool(getattr(policy, "recurrent", False))
        grouped = params.grouped(num_groups)
        copies = num_groups if params.per_task else 1
        modules = [
            _with_params(policy, {k: v[g] for k, v in grouped.items()}) for g in range(copies)
        ]
        self.modules = modules * num_groups if copies == 1 else modules

    def begin(self, eps: Array) -> None:
        super().begin(eps)
        self.states: list[Any] = [None] * self.num_groups
        if self.recurrent:
            with torch.inference_mode():
                one = self.policy.initial_state(self.group_size)  # type: ignore[operator]
            self.states = [one] * self.num_groups  # never written in place: replaced per step

    def act(
        self, t: int, obs: Array, prev_action: Array, prev_reward: Array, done: Array
    ) -> tuple[Array, Array]:
        G, E = self.num_groups, self.group_size
        x = torch.from_numpy(obs.astype(np.float32)).view(G, E, -1)
        means, log_stds = [], []
        with torch.inference_mode():
            if self.recurrent:
                x = torch.cat(
                    [
                        x,
                        torch.from_numpy(prev_action).view(G, E, -1),
                        torch.from_numpy(prev_reward.astype(np.float32)).view(G, E, 1),
                        torch.from_numpy(done.astype(np.float32)).view(G, E, 1),
                    ],
                    dim=-1,
                )
            for g, module in enumerate(self.modules):
                if self.recurrent:
                    mean, log_std, self.states[g] = module(x[g], self.states[g])
                else:
                    mean, log_std = module(x[g])
                means.append(mean.reshape(E, -1))
                log_stds.append(log_std.expand(E, -1) if log_std.dim() < 2 else log_std)
        mean_n = torch.cat(means).numpy()
        log_std_n = torch.cat(log_stds).reshape(self.n, -1).numpy()
        return self._noise(t, mean_n, log_std_n)


def _with_params(policy: nn.Module, values: Mapping[str, Array]) -> nn.Module:
    """A copy of ``policy`` whose parameters and buffers are ``values`` (float32 arrays)."""
    module = copy.deepcopy(policy)
    with torch.no_grad():
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            # A writable copy: the values may be read-only views (shared memory, broadcasts),
            # which torch.from_numpy warns about.
            tensor.copy_(torch.from_numpy(np.array(values[name], copy=True)))
    return module.requires_grad_(False)


def make_policy_step(
    policy: nn.Module,
    params: PolicyParams,
    num_groups: int,
    group_size: int,
    act_dim: int,
    fast_path: bool = True,
) -> PolicyStep:
    """The fast MLP evaluator where the policy allows it, else the generic torch one."""
    layers = mlp_layers(policy) if fast_path else None
    if layers is not None:
        return MLPStep(layers, params, num_groups, group_size, act_dim)
    return TorchStep(policy, params, num_groups, group_size, act_dim)
