"""MAML-TRPO (Finn et al. 2017, https://arxiv.org/abs/1703.03400).

MAML learns an initialization ``theta`` from which ``num_adapt_steps`` vanilla policy-gradient
steps adapt to a new task: ``theta_k = theta - adapt_lr * grad L_k(theta)``, the inner loss
``L_k`` being REINFORCE with a linear feature baseline on episodes of task k. The outer step is
TRPO on the loss of the adapted policies on fresh episodes, differentiated through the inner
steps (second order; ``first_order=True`` drops the inner Hessian). The tasks of a meta-batch
are handled together: their parameter sets are stacked on a leading task axis and evaluated
as batched matrix multiplies, and one backward pass gives every task's inner gradient. On a
GPU every pass takes all tasks at once; on a CPU it takes them in cache-sized groups
(``cpu_chunk_steps``), which changes nothing but rounding, side by side on a pool of torch's
threads when there are several (each group on one thread, so the numbers do not depend on the
thread count). The inner losses' first and second
derivatives are written out layer by layer (:mod:`metarl.curvature`) and cached once an
iteration: the inner steps, the second-order outer gradient and TRPO's curvature products all
read the same forward passes, for any number of inner steps (autograd's double backward
through them serves only as the tests' reference).

The TRPO step follows pytorch-maml-rl's ``maml_trpo.py``: conjugate gradient on the Hessian of
the mean KL between the sampling policies and the adapted ones, then a backtracking line search
that keeps ``KL <= max_kl``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from metarl.advantages import discounted_returns, gae, normalize_advantages
from metarl.agent import AdaptedPolicy, MetaAgent, success_metrics
from metarl.baselines import LinearFeatureBaseline
from metarl.curvature import FisherProduct, PolicyGradientCurvature
from metarl.optim import (
    backtracking_line_search,
    flatten_params,
    trpo_full_step,
    unflatten_params,
)
from metarl.policies import INITS, GaussianMLPPolicy, Params, gaussian_log_prob
from metarl.sampling import EpisodeBatch
from metarl.sampling.batch import task_major
from metarl.tasks import Task

if TYPE_CHECKING:
    from metarl.sampling import Sampler

__all__ = ["MAMLTRPO", "MAMLTRPOConfig", "TaskSteps"]


@dataclass(frozen=True)
class MAMLTRPOConfig:
    """Hyperparameters of MAML-TRPO (defaults: pytorch-maml-rl's HalfCheetah configs)."""

    iterations: int = 500
    """Meta-iterations of a full run."""
    meta_batch_size: int = 40
    """Tasks per meta-iteration."""
    episodes_per_task: int = 20
    """Episodes sampled per task for each inner step and for the outer loss."""
    num_adapt_steps: int = 1
    """Inner policy-gradient steps."""
    adapt_lr: float = 0.1
    """Inner step size."""
    first_order: bool = False
    """Drop second-order terms of the meta-gradient (FOMAML)."""
    max_kl: float = 0.01
    """TRPO trust region: mean KL between sampling and updated adapted policies."""
    cg_iters: int = 10
    """Conjugate-gradient iterations."""
    cg_damping: float = 1e-5
    """Damping added to the KL Hessian."""
    ls_max_steps: int = 15
    """Line-search tries."""
    ls_backtrack_ratio: float = 0.8
    """Line-search shrink factor."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 1.0
    """GAE lambda (1.0: Monte-Carlo returns minus the baseline, as in MAML)."""
    normalize_advantages: bool = True
    """Normalize advantages per task."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Policy MLP widths."""
    activation: str = "tanh"
    """Policy activation: tanh, relu or elu."""
    init_std: float = 1.0
    """Initial action standard deviation."""
    policy_init: str = "torch"
    """The mean network's initialization: ``torch`` (``nn.Linear``'s own) or ``xavier``
    (Xavier-uniform weights, zero biases: maml_rl's, the paper's code)."""
    cpu_chunk_steps: int = 4096
    """On a CPU, every pass over the batch (inner steps, outer loss and gradient, curvature
    products, line-search candidates) runs over groups of tasks of about this many steps each,
    one group after another (or side by side, one thread each, with several torch threads):
    exact (tasks are independent until their losses are averaged), and faster once a group's
    activations fit in the core's cache (1.4x for an exact curvature product at 40 tasks of
    4000 steps). 0: all tasks at once, as always on a GPU."""

    def __post_init__(self) -> None:
        checks = [
            (self.iterations >= 1, "iterations must be >= 1"),
            (self.meta_batch_size >= 1, "meta_batch_size must be >= 1"),
            (self.episodes_per_task >= 1, "episodes_per_task must be >= 1"),
            (self.num_adapt_steps >= 1, "num_adapt_steps must be >= 1"),
            (self.adapt_lr > 0, "adapt_lr must be > 0"),
            (self.max_kl > 0, "max_kl must be > 0"),
            (self.cg_iters >= 1, "cg_iters must be >= 1"),
            (self.cg_damping >= 0, "cg_damping must be >= 0"),
            (self.ls_max_steps >= 1, "ls_max_steps must be >= 1"),
            (0 < self.ls_backtrack_ratio < 1, "ls_backtrack_ratio must be in (0, 1)"),
            (0 <= self.gamma <= 1, "gamma must be in [0, 1]"),
            (0 <= self.gae_lambda <= 1, "gae_lambda must be in [0, 1]"),
            (
                len(self.hidden_sizes) >= 1 and min(self.hidden_sizes) >= 1,
                "hidden_sizes must be positive widths",
            ),
            (self.init_std > 0, "init_std must be > 0"),
            (self.policy_init in INITS, f"policy_init must be one of {list(INITS)}"),
            (self.cpu_chunk_steps >= 0, "cpu_chunk_steps must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"MAMLTRPOConfig: {message}")


# The paper's runs, as named by the result files its test scripts load (cbfinn/maml_rl
# maml_examples/test_maml_*.py, e.g. maml1_fbs20_mbs40_flr_0.1_mlr0.02/itr_100.pkl:
# episodes per task, meta-batch, inner step, TRPO max KL, iteration).
# Point2DNav: maml1_fbs20_mbs20_flr_0.5metalr_0.01_step11 trained by maml_trpo_point.py for
# 100 iterations; the paper's appendix gives its meta-batch of 20 and an inner step of 0.1 (the
# file's 0.5 trained far worse here: the pre-adaptation policy runs off, -280 after 30
# iterations against -39 at 0.1).
PAPER_EPISODES = {"HalfCheetahVel": 10, "HalfCheetahDir": 20, "AntVel": 20, "AntDir": 40}
PAPER_ITERATIONS = {
    "HalfCheetahVel": 475,
    "HalfCheetahDir": 100,
    "AntVel": 375,
    "AntDir": 575,
    "Point2DNav": 100,
}
PAPER_META_BATCH = {"Point2DNav": 20}
"""Families whose paper run took a meta-batch other than 40."""
PAPER_MAX_KL = {"HalfCheetahDir": 0.02}
"""Families whose paper run took a TRPO max KL other than 0.01."""


def _gaussian_kl(mean_p: Tensor, log_std_p: Tensor, mean_q: Tensor, log_std_q: Tensor) -> Tensor:
    """KL(p || q) of diagonal Gaussians, summed over the action axis: ``[...]``."""
    var_ratio = torch.exp(2.0 * (log_std_p - log_std_q))
    mean_term = ((mean_p - mean_q) * torch.exp(-log_std_q)).pow(2)
    return (0.5 * (var_ratio + mean_term - 1.0) - (log_std_p - log_std_q)).sum(-1)


@dataclass(frozen=True)
class TaskSteps:
    """The valid steps of a meta-batch, task-major: what the inner and outer losses read.

    Packed once per batch, so every forward and backward pass of an iteration runs on
    contiguous ``[K, N, ...]`` tensors (``N``: the most valid steps of any task) instead of
    regathering the sampler's time-major ``[T, B, ...]`` layout on every pass. Padding (steps
    past an episode's end, and the tail of a task with fewer valid steps) has weight 0.
    """

    obs: Tensor
    """``[K, N, obs_dim]``."""
    actions: Tensor
    """``[K, N, act_dim]``: the sampled (unclipped) actions."""
    advantages: Tensor
    """``[K, N]``."""
    weights: Tensor
    """``[K, N]``: ``1 / (valid steps of task k)`` on its valid steps, 0 on padding."""

    @property
    def num_tasks(self) -> int:
        return int(self.obs.shape[0])

    @classmethod
    def pack(cls, batch: EpisodeBatch, advantages: Tensor) -> TaskSteps:
        """Gather ``batch``'s valid steps and their ``advantages [T, B]``, task by task."""
        K = batch.num_tasks
        valid = task_major(batch.valid, K, order="episode")
        fields = [task_major(t, K, order="episode") for t in (batch.obs, batch.actions, advantages)]
        counts = valid.sum(1)
        if not bool(valid.all()):
            # Each task's valid steps first (a stable sort keeps episode and time order).
            order = torch.sort((~valid).to(torch.uint8), dim=1, stable=True).indices
            order = order[:, : max(int(counts.max()), 1)]
            valid = torch.gather(valid, 1, order)
            fields = [
                torch.gather(
                    f,
                    1,
                    order.view(*order.shape, *[1] * (f.dim() - 2)).expand_as(
                        f[:, : order.shape[1]]
                    ),
                )
                for f in fields
            ]
        obs, actions, adv = (f.contiguous() for f in fields)
        weights = valid.to(obs.dtype) / counts.clamp_min(1).to(obs.dtype).unsqueeze(1)
        return cls(obs=obs, actions=actions, advantages=adv, weights=weights)

    def tasks(self, which: slice) -> TaskSteps:
        """The steps of the tasks ``which`` (views, no copy)."""
        return TaskSteps(
            obs=self.obs[which],
            actions=self.actions[which],
            advantages=self.advantages[which],
            weights=self.weights[which],
        )

    def task_mean(self, x: Tensor) -> Tensor:
        """Each task's mean of ``x [K, N]`` over its valid steps: ``[K]``."""
        return (x * self.weights).sum(1)


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


class _InnerSteps:
    """The inner steps of every task, with what the outer step needs cached, group by group.

    Each :meth:`step` takes one policy-gradient step of every task on its episodes and keeps
    the inner loss's derivatives there (one :class:`~metarl.curvature.PolicyGradientCurvature`
    per task group): the adapted parameters are what the next episodes are sampled with. Once
    the post-adaptation episodes are attached (one :class:`~metarl.curvature.FisherProduct`
    per group, at the adapted parameters), it gives the sampling policies' distributions, the
    outer loss's gradient at the current ``theta`` and the products of the KL's Hessian, all
    from forward passes cached once: each inner loss's forward and backward pass and the
    adapted policies' forward pass run once an iteration.

    At the current ``theta`` the adapted policies are the sampling ones, so the importance
    ratios are 1 and the KL's gradient in the adapted parameters is 0: the outer gradient is
    ``mean_k J_k^T g_k`` and the KL's Hessian ``mean_k J_k^T F_k J_k``. ``g_k`` is task k's
    policy gradient at its adapted parameters on its fresh episodes, ``F_k`` the adapted
    policy's Fisher matrix there and ``J_k`` the Jacobian of the adapted parameters in
    ``theta``: the product over the steps of ``I - adapt_lr * (Hessian of that step's inner
    loss at the step's start)``, or ``I`` with ``first_order``.
    """

    def __init__(
        self, policy: GaussianMLPPolicy, lr: float, first_order: bool, groups: list[slice]
    ) -> None:
        self.policy, self.lr, self.first_order, self.groups = policy, lr, first_order, groups
        self.like = {k: v.detach() for k, v in policy.params().items()}
        num_tasks = groups[-1].stop
        self.adapted: Params = {
            k: v.unsqueeze(0).expand(num_tasks, *v.shape) for k, v in self.like.items()
        }
        """Every task's parameters after the steps so far, ``[K, ...]``."""
        self.inner: list[list[PolicyGradientCurvature]] = [[] for _ in groups]  # [group][step]
        self.fisher: list[FisherProduct] = []
        self.valid: TaskSteps | None = None

    def step(self, train: TaskSteps) -> Params:
        """One inner step of every task on ``train``; the adapted parameters."""

        def group(i: int) -> tuple[Params, PolicyGradientCurvature]:
            g = self.groups[i]
            start = {k: v[g] for k, v in self.adapted.items()}
            t = train.tasks(g)
            inner = PolicyGradientCurvature(
                self.policy,
                start,
                t.obs,
                t.actions,
                t.advantages,
                t.weights,
                hessian=not self.first_order,
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
        return mean, self.adapted["log_std"].unsqueeze(1).expand_as(mean)

    def _attached(self) -> TaskSteps:
        if self.valid is None:
            raise RuntimeError("attach the post-adaptation episodes first")
        return self.valid

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
        valid = self._attached()

        def group(i: int) -> list[Tensor]:
            g = self.groups[i]
            outer = self.fisher[i].policy_gradient(valid.actions[g], valid.advantages[g])
            return self._pull_back(i, outer)

        return flatten_params(_sum_parts(_over_groups(group, len(self.groups)))) / valid.num_tasks

    def hvp(self, damping: float) -> Callable[[Tensor], Tensor]:
        """``v -> (H + damping I) v``, ``H = mean_k J_k^T F_k J_k``: per task and step two
        inner Hessian-vector products, and one Fisher-vector product, written out layer by
        layer."""
        K = self._attached().num_tasks

        def product(v: Tensor) -> Tensor:
            directions = unflatten_params(v, self.like)

            def group(i: int) -> list[Tensor]:
                n = self.groups[i].stop - self.groups[i].start
                parts = {k: p.unsqueeze(0).expand(n, *p.shape) for k, p in directions.items()}
                return self._pull_back(i, self.fisher[i].fvp(self._push_forward(i, parts)))

            total = _sum_parts(_over_groups(group, len(self.groups)))
            return flatten_params(total) / K + damping * v

        return product


class MAMLTRPO(MetaAgent):
    """MAML with a TRPO outer step; see the module docstring."""

    name: ClassVar[str] = "maml-trpo"
    config_cls: ClassVar[type] = MAMLTRPOConfig
    PRESET_NAMES: ClassVar[tuple[str, ...]] = ("quick", "default", "paper")
    takes_step_size: ClassVar[bool] = True
    config: MAMLTRPOConfig
    policy: GaussianMLPPolicy

    def __init__(
        self,
        config: MAMLTRPOConfig,
        observation_space: gym.spaces.Box,
        action_space: gym.spaces.Box,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(config, observation_space, action_space, torch.device(device))
        self.policy = GaussianMLPPolicy(
            observation_space.shape[0],
            action_space.shape[0],
            hidden_sizes=config.hidden_sizes,
            activation=config.activation,
            init_std=config.init_std,
            init=config.policy_init,
        ).to(self.device)
        self.baseline = LinearFeatureBaseline()

    # -- presets -----------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, family: str) -> MAMLTRPOConfig:
        """Named hyperparameters for a family.

        ``default``: pytorch-maml-rl (40 tasks x 20 episodes, (64, 64) tanh, 500 iterations).
        ``paper``: Finn et al. 2017 ((100, 100) ReLU; meta-batch, episodes, iterations and
        max KL per family as in the paper's result files). ``quick``: a few minutes on a
        laptop CPU.
        """
        if name == "default":
            return MAMLTRPOConfig()
        if name == "paper":
            return MAMLTRPOConfig(
                iterations=PAPER_ITERATIONS.get(family, 500),
                meta_batch_size=PAPER_META_BATCH.get(family, 40),
                episodes_per_task=PAPER_EPISODES.get(family, 20),
                max_kl=PAPER_MAX_KL.get(family, 0.01),
                hidden_sizes=(100, 100),
                activation="relu",
            )
        if name == "quick":
            return MAMLTRPOConfig(
                iterations=30, meta_batch_size=10, episodes_per_task=5, hidden_sizes=(32, 32)
            )
        raise ValueError(f"maml-trpo has no preset {name!r}; presets are {list(cls.PRESET_NAMES)}")

    # -- helpers -----------------------------------------------------------------------------
    def _distribution(self, params: Params, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Per-task ``(mean, log_std)`` of ``obs [K, N, obs_dim]``, each ``[K, N, act_dim]``."""
        return self.policy.per_task(params, obs)

    def _advantages(self, batch: EpisodeBatch) -> Tensor:
        """REINFORCE advantages ``[T, B]``: returns minus a linear baseline fitted per task."""
        cfg = self.config
        K = batch.num_tasks
        rewards = batch.rewards.to(torch.float64)
        returns = discounted_returns(rewards, batch.valid, cfg.gamma)
        values = self.baseline.fit_predict(batch.obs, returns, batch.valid, groups=K)
        adv, _ = gae(rewards, values, batch.valid, cfg.gamma, cfg.gae_lambda)
        if cfg.normalize_advantages:
            adv = normalize_advantages(adv, batch.valid, groups=K)
        return adv.to(batch.obs.dtype)

    def _inner_losses(self, params: Params, steps: TaskSteps) -> Tensor:
        """Every task's REINFORCE loss at its own parameters: ``[K]``."""
        mean, log_std = self._distribution(params, steps.obs)
        log_probs = gaussian_log_prob(steps.actions, mean, log_std)
        return -steps.task_mean(log_probs * steps.advantages)

    def _inner_step(
        self, params: Params, steps: TaskSteps, lr: float, create_graph: bool
    ) -> Params:
        """One policy-gradient step of every task at once."""
        losses = self._inner_losses(params, steps)
        grads = torch.autograd.grad(losses.sum(), list(params.values()), create_graph=create_graph)
        return {k: p - lr * g for (k, p), g in zip(params.items(), grads, strict=True)}

    def _task_groups(self, *steps: TaskSteps) -> list[slice]:
        """The groups of tasks a pass over ``steps`` runs over, one after another (see
        ``cpu_chunk_steps``): a single group of every task on a GPU."""
        K = steps[0].num_tasks
        limit = self.config.cpu_chunk_steps
        if self.device.type != "cpu" or limit == 0:
            return [slice(0, K)]
        per_task = sum(int(s.obs.shape[1]) for s in steps)
        size = max(1, limit // max(per_task, 1))
        return [slice(a, min(a + size, K)) for a in range(0, K, size)]

    def _adapted(self, params: Params, steps: TaskSteps, lr: float) -> Params:
        """:meth:`_inner_step` without a graph, group by group: the adapted parameters.

        ``params`` may be constants (the result of an earlier step): the step differentiates
        the inner loss at them all the same."""
        with torch.enable_grad():
            params = {
                k: v if v.requires_grad else v.detach().requires_grad_(True)
                for k, v in params.items()
            }
            parts = [
                self._detached(
                    self._inner_step(
                        {k: v[g] for k, v in params.items()}, steps.tasks(g), lr, False
                    )
                )
                for g in self._task_groups(steps)
            ]
        return {k: torch.cat([part[k] for part in parts]) for k in params}

    def _adapt_all(self, params: Params, train: list[TaskSteps], create_graph: bool) -> Params:
        for steps in train:
            params = self._inner_step(params, steps, self.config.adapt_lr, create_graph)
        return params

    @staticmethod
    def _theta_as_tasks(theta: Params, num_tasks: int) -> Params:
        """``theta`` seen as ``num_tasks`` identical per-task sets (a differentiable view)."""
        return {k: v.unsqueeze(0).expand(num_tasks, *v.shape) for k, v in theta.items()}

    @staticmethod
    def _detached(params: Params) -> Params:
        return {k: v.detach() for k, v in params.items()}

    def _sample(
        self, sampler: Sampler, tasks: list[Task], params: Params | None, rng: np.random.Generator
    ) -> EpisodeBatch:
        seed = int(rng.integers(2**62))
        cpu = None if params is None else {k: v.detach().cpu() for k, v in params.items()}
        batch = sampler.sample(tasks, self.config.episodes_per_task, params=cpu, seed=seed)
        return batch.to(self.device)

    def meta_objective(
        self,
        theta: Params,
        train: list[TaskSteps],
        valid: TaskSteps,
        old_dist: tuple[Tensor, Tensor],
        create_graph: bool,
    ) -> tuple[Tensor, Tensor]:
        """The outer TRPO loss and mean KL at meta-parameters ``theta``.

        ``theta`` is adapted on ``train`` (one inner step each); the loss is the negative
        importance-weighted advantage of the adapted policies on ``valid`` against the sampling
        policies ``old_dist = (mean, log_std)`` (each ``[K, N, act_dim]``, on ``valid.obs``),
        averaged over each task's valid steps, then over tasks. With ``create_graph`` the
        gradient flows through the inner steps (second order).
        """
        params = self._adapt_all(self._theta_as_tasks(theta, valid.num_tasks), train, create_graph)
        mean, log_std = self._distribution(params, valid.obs)
        old_mean, old_log_std = old_dist
        ratio = torch.exp(
            gaussian_log_prob(valid.actions, mean, log_std)
            - gaussian_log_prob(valid.actions, old_mean, old_log_std)
        )
        loss = -valid.task_mean(ratio * valid.advantages).mean()
        kl = valid.task_mean(_gaussian_kl(old_mean, old_log_std, mean, log_std))
        return loss, kl.mean()

    def _outer_by_groups(
        self,
        theta: Params,
        train: list[TaskSteps],
        valid: TaskSteps,
        old_dist: tuple[Tensor, Tensor],
    ) -> tuple[Tensor, Tensor]:
        """:meth:`meta_objective`'s loss and KL (detached, no second-order graph), computed
        group by group (:func:`_over_groups`): what the line search asks of each candidate.

        Both are means over tasks, so each group's share is its part of the mean; the sum
        differs from one pass over every task only by floating-point rounding.
        """
        K = valid.num_tasks
        groups = self._task_groups(*train, valid)

        def group(i: int) -> tuple[Tensor, Tensor]:
            g = groups[i]
            part_loss, part_kl = self.meta_objective(
                theta,
                [t.tasks(g) for t in train],
                valid.tasks(g),
                (old_dist[0][g], old_dist[1][g]),
                False,
            )
            return part_loss.detach(), part_kl.detach()

        loss = torch.zeros((), dtype=valid.obs.dtype, device=valid.obs.device)
        kl = torch.zeros_like(loss)
        for g, (part_loss, part_kl) in zip(groups, _over_groups(group, len(groups)), strict=True):
            share = (g.stop - g.start) / K
            loss = loss + share * part_loss
            kl = kl + share * part_kl
        return loss, kl

    def _start_inner_steps(self, first: TaskSteps, valid: TaskSteps | None = None) -> _InnerSteps:
        """:class:`_InnerSteps` before any step, its task groups sized for one inner batch
        (``first``) and the post-adaptation batch (``valid``; before it is sampled, as large
        as ``first``: as many episodes, as long)."""
        cfg = self.config
        groups = self._task_groups(first, first if valid is None else valid)
        return _InnerSteps(self.policy, cfg.adapt_lr, cfg.first_order, groups)

    def _inner_steps(self, train: list[TaskSteps], valid: TaskSteps | None = None) -> _InnerSteps:
        """:class:`_InnerSteps` through every batch of ``train`` (``valid`` attached if given)."""
        steps = self._start_inner_steps(train[0], valid)
        for batch in train:
            steps.step(batch)
        if valid is not None:
            steps.attach(valid)
        return steps

    # -- meta-training -----------------------------------------------------------------------
    def train_step(
        self, sampler: Sampler, tasks: list[Task], rng: np.random.Generator
    ) -> dict[str, float]:
        cfg = self.config
        K = len(tasks)
        if K == 0:
            raise ValueError("maml-trpo: train_step needs at least one task")
        t_start = time.perf_counter()
        sample_time = opt_time = 0.0

        # Inner loop: sample, then step, num_adapt_steps times (fresh episodes each step). The
        # steps keep their derivatives for the outer step (_InnerSteps).
        train_batches: list[EpisodeBatch] = []
        train: list[TaskSteps] = []
        inner: _InnerSteps | None = None
        adapted: Params | None = None
        for _ in range(cfg.num_adapt_steps):
            t0 = time.perf_counter()
            batch = self._sample(sampler, tasks, adapted, rng)
            sample_time += time.perf_counter() - t0
            adv = self._advantages(batch)
            train_batches.append(batch)
            train.append(TaskSteps.pack(batch, adv))
            t0 = time.perf_counter()
            if inner is None:
                inner = self._start_inner_steps(train[0])
            adapted = inner.step(train[-1])
            opt_time += time.perf_counter() - t0
        assert inner is not None and adapted is not None
        t0 = time.perf_counter()
        valid = self._sample(sampler, tasks, adapted, rng)
        sample_time += time.perf_counter() - t0
        valid_adv = self._advantages(valid)
        valid_steps = TaskSteps.pack(valid, valid_adv)

        t_opt = time.perf_counter()
        theta = self.policy.params()
        old_dist = inner.attach(valid_steps)
        # At the current theta the ratios are 1: the loss is minus the mean advantage.
        loss = -valid_steps.task_mean(valid_steps.advantages).mean()
        grad = inner.meta_gradient()
        metrics: dict[str, float] = {}
        if not bool(torch.isfinite(loss)) or not bool(torch.isfinite(grad).all()):
            accepted, fraction, new_loss, kl_value = False, 0.0, loss.item(), 0.0
            metrics["trpo/nonfinite"] = 1.0
        else:
            hvp = inner.hvp(cfg.cg_damping)
            full_step, expected = trpo_full_step(hvp, grad, cfg.max_kl, cfg.cg_iters)

            def outer(p: Params) -> tuple[Tensor, Tensor]:
                return self._outer_by_groups(p, train, valid_steps, old_dist)

            result = backtracking_line_search(
                outer,
                theta,
                full_step,
                expected,
                cfg.max_kl,
                ratio=cfg.ls_backtrack_ratio,
                max_steps=cfg.ls_max_steps,
                old_loss=loss.item(),
            )
            accepted, fraction = result.accepted, result.step_fraction
            new_loss, kl_value = result.loss, result.kl
            if accepted:
                with torch.no_grad():
                    for name, p in self.policy.named_parameters():
                        p.copy_(result.params[name])
            metrics["trpo/nonfinite"] = 0.0
        opt_time += time.perf_counter() - t_opt

        pre = train_batches[0]
        steps = sum(b.num_steps for b in train_batches) + valid.num_steps
        total = time.perf_counter() - t_start
        metrics.update(
            {
                "meta/return_pre_adapt": float(pre.returns.mean()),
                "meta/return_post_adapt": float(valid.returns.mean()),
                "losses/surrogate_before": loss.item(),
                "losses/surrogate_after": float(new_loss),
                "trpo/kl": float(kl_value),
                "trpo/accepted": float(accepted),
                "trpo/step_fraction": float(fraction),
                "policy/std": self.policy.log_std.detach().exp().mean().item(),
                "env_steps": float(steps),
                "time/sampling": sample_time,
                "time/optimization": opt_time,
                "time/env_steps_per_s": steps / max(total, 1e-9),
                **success_metrics(pre, valid),
            }
        )
        return metrics

    # -- meta-test ---------------------------------------------------------------------------
    def exploration_policy(self, num_tasks: int) -> AdaptedPolicy:
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
        return AdaptedPolicy(params=None, num_tasks=num_tasks)

    def adapt(
        self, policy: AdaptedPolicy, episodes: EpisodeBatch, lr: float | None = None
    ) -> AdaptedPolicy:
        """One inner policy-gradient step per task on ``episodes``.

        The step size is ``lr`` when given (the paper's test protocol uses 0.1, then 0.05),
        else ``adapt_lr``.
        """
        if episodes.num_tasks != policy.num_tasks:
            raise ValueError(
                f"maml-trpo: episodes of {episodes.num_tasks} tasks for a policy of "
                f"{policy.num_tasks}"
            )
        episodes = episodes.to(self.device)
        start = (
            self._theta_as_tasks(self.policy.params(), policy.num_tasks)
            if policy.params is None
            else {k: v.to(self.device) for k, v in policy.params.items()}
        )
        steps = TaskSteps.pack(episodes, self._advantages(episodes))
        new = self._adapted(start, steps, self.config.adapt_lr if lr is None else lr)
        return AdaptedPolicy(params=new, num_tasks=policy.num_tasks)

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        # The baseline is refit on every batch: it has no state to keep.
        return {
            "policy": {k: v.detach().cpu().clone() for k, v in self.policy.state_dict().items()}
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
