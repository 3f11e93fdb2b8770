"""MAML-TRPO (Finn et al. 2017, https://arxiv.org/abs/1703.03400).

MAML learns an initialization ``theta`` from which ``num_adapt_steps`` vanilla policy-gradient
steps adapt to a new task, ``theta_k = theta - adapt_lr * grad L_k(theta)`` (:func:`inner_step`;
``L_k``: REINFORCE with a linear feature baseline on episodes of task k, :func:`inner_loss`).
The outer step is TRPO on the loss of the adapted policies on fresh episodes
(:func:`outer_loss`), differentiated through the inner steps (second order; ``first_order``
drops the inner Hessian). The tasks of a meta-batch are handled together, their parameter sets
stacked on a leading task axis. The TRPO step follows pytorch-maml-rl's ``maml_trpo.py``:
conjugate gradient on the Hessian of the mean KL between the sampling policies and the adapted
ones, then a backtracking line search that keeps ``KL <= max_kl``. Its gradient and curvature
come from :class:`AutogradMetaObjective` (autograd's double backward: the reference, for any
policy) or, where the policy's activation has one, the written-out kernel of
:mod:`metarl.curvature` (the same derivatives from forward passes cached once an iteration,
several times faster on a CPU; tested against the reference).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from metarl.advantages import discounted_returns, gae, normalize_advantages
from metarl.agent import AdaptedPolicy, MetaAgent, check_settings, success_metrics
from metarl.baselines import LinearFeatureBaseline
from metarl.curvature import WrittenOutMetaObjective, in_task_groups, written_out_meta_objective
from metarl.optim import (
    LineSearchResult,
    backtracking_line_search,
    flat_grad,
    hessian_vector_product,
    trpo_full_step,
)
from metarl.policies import INITS, GaussianMLPPolicy, Params, gaussian_log_prob
from metarl.sampling import EpisodeBatch
from metarl.task_steps import TaskSteps
from metarl.tasks import Task

if TYPE_CHECKING:
    from metarl.sampling import Sampler

__all__ = [
    "MAMLTRPO",
    "AutogradMetaObjective",
    "MAMLTRPOConfig",
    "inner_loss",
    "inner_step",
    "outer_loss",
]


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
    """Policy activation (tanh, relu and elu have the written-out curvature kernel)."""
    init_std: float = 1.0
    """Initial action standard deviation."""
    policy_init: str = "torch"
    """The mean network's initialization: ``torch`` (``nn.Linear``'s own) or ``xavier``
    (Xavier-uniform weights, zero biases: maml_rl's, the paper's code)."""
    cpu_chunk_steps: int = 4096
    """On a CPU, the written-out kernel's passes and the meta-test steps run over groups of
    tasks of about this many steps each: exact, and faster once a group's activations fit in
    the core's cache (see :mod:`metarl.curvature`). 0: all tasks at once, as always on a GPU."""

    def __post_init__(self) -> None:
        checks = [
            (self.iterations >= 1, "iterations", ">= 1"),
            (self.meta_batch_size >= 1, "meta_batch_size", ">= 1"),
            (self.episodes_per_task >= 1, "episodes_per_task", ">= 1"),
            (self.num_adapt_steps >= 1, "num_adapt_steps", ">= 1"),
            (self.adapt_lr > 0, "adapt_lr", "> 0"),
            (self.max_kl > 0, "max_kl", "> 0"),
            (self.cg_iters >= 1, "cg_iters", ">= 1"),
            (self.cg_damping >= 0, "cg_damping", ">= 0"),
            (self.ls_max_steps >= 1, "ls_max_steps", ">= 1"),
            (0 < self.ls_backtrack_ratio < 1, "ls_backtrack_ratio", "in (0, 1)"),
            (0 <= self.gamma <= 1, "gamma", "in [0, 1]"),
            (0 <= self.gae_lambda <= 1, "gae_lambda", "in [0, 1]"),
            (min(self.hidden_sizes, default=0) >= 1, "hidden_sizes", "positive widths"),
            (self.init_std > 0, "init_std", "> 0"),
            (self.policy_init in INITS, "policy_init", f"one of {list(INITS)}"),
            (self.cpu_chunk_steps >= 0, "cpu_chunk_steps", ">= 0"),
        ]
        check_settings(self, checks)


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


# -- the losses ------------------------------------------------------------------------------
def gaussian_kl(mean_p: Tensor, log_std_p: Tensor, mean_q: Tensor, log_std_q: Tensor) -> Tensor:
    """KL(p || q) of diagonal Gaussians, summed over the action axis: ``[...]``."""
    var_ratio = torch.exp(2.0 * (log_std_p - log_std_q))
    mean_term = ((mean_p - mean_q) * torch.exp(-log_std_q)).pow(2)
    return (0.5 * (var_ratio + mean_term - 1.0) - (log_std_p - log_std_q)).sum(-1)


def inner_loss(policy: GaussianMLPPolicy, params: Params, steps: TaskSteps) -> Tensor:
    """Every task's REINFORCE loss at its own parameters ``params [K, ...]``: ``[K]``."""
    mean, log_std = policy.per_task(params, steps.obs)
    log_probs = gaussian_log_prob(steps.actions, mean, log_std)
    return -steps.task_mean(log_probs * steps.advantages)


def inner_step(
    policy: GaussianMLPPolicy,
    params: Mapping[str, Tensor],
    steps: TaskSteps,
    lr: float,
    create_graph: bool = False,
) -> Params:
    """One policy-gradient step of every task at once: ``params[k] - lr * grad L_k``,
    differentiable in ``params`` (through the gradient too with ``create_graph``: second
    order); constants (an earlier step's result) are differentiated all the same."""
    with torch.enable_grad():
        params = {
            k: v if v.requires_grad else v.detach().requires_grad_(True) for k, v in params.items()
        }
        losses = inner_loss(policy, params, steps)
        grads = torch.autograd.grad(losses.sum(), list(params.values()), create_graph=create_graph)
        return {k: p - lr * g for (k, p), g in zip(params.items(), grads, strict=True)}


def outer_loss(
    policy: GaussianMLPPolicy,
    theta: Params,
    train: list[TaskSteps],
    valid: TaskSteps,
    old_dist: tuple[Tensor, Tensor],
    lr: float,
    create_graph: bool,
) -> tuple[Tensor, Tensor]:
    """The outer TRPO loss and mean KL at meta-parameters ``theta``, adapted on each batch of
    ``train`` in turn: the negative importance-weighted advantage of the adapted policies on
    ``valid`` against the sampling policies ``old_dist = (mean, log_std)`` (each ``[K, N,
    act_dim]``), and ``KL(old || adapted)``, each averaged over a task's valid steps, then over
    tasks. With ``create_graph`` the gradient flows through the inner gradients (second order).
    """
    params = _as_tasks(theta, valid.num_tasks)
    for steps in train:
        params = inner_step(policy, params, steps, lr, create_graph)
    mean, log_std = policy.per_task(params, valid.obs)
    old_mean, old_log_std = old_dist
    ratio = torch.exp(
        gaussian_log_prob(valid.actions, mean, log_std)
        - gaussian_log_prob(valid.actions, old_mean, old_log_std)
    )
    loss = -valid.task_mean(ratio * valid.advantages).mean()
    kl = valid.task_mean(gaussian_kl(old_mean, old_log_std, mean, log_std))
    return loss, kl.mean()


def _as_tasks(theta: Mapping[str, Tensor], num_tasks: int) -> Params:
    """``theta`` seen as ``num_tasks`` identical per-task sets (a differentiable view)."""
    return {k: v.unsqueeze(0).expand(num_tasks, *v.shape) for k, v in theta.items()}


def _detached(params: Mapping[str, Tensor]) -> Params:
    return {k: v.detach() for k, v in params.items()}


# -- the outer step's derivatives ------------------------------------------------------------
class AutogradMetaObjective:
    """One iteration's inner steps and what TRPO's outer step reads of :func:`outer_loss`, by
    autograd (the reference path, for any policy): the meta-gradient is the loss's gradient
    through the inner steps, the curvature the double backward of its KL (both without the
    inner Hessian, first order). The written-out kernel
    (:class:`~metarl.curvature.WrittenOutMetaObjective`) answers the same questions."""

    def __init__(self, policy: GaussianMLPPolicy, adapt_lr: float, first_order: bool) -> None:
        self.policy, self.lr, self.second_order = policy, adapt_lr, not first_order
        self.theta = policy.params()
        self.train: list[TaskSteps] = []
        self.adapted: Params = {}
        self.attached: tuple[TaskSteps, tuple[Tensor, Tensor]] | None = None

    def adapt(self, train: TaskSteps) -> Params:
        """One inner step of every task on ``train``; the adapted parameters ``[K, ...]``."""
        start = self.adapted if self.train else _as_tasks(_detached(self.theta), train.num_tasks)
        self.train.append(train)
        self.adapted = _detached(inner_step(self.policy, start, train, self.lr))
        return self.adapted

    def attach(self, valid: TaskSteps) -> tuple[Tensor, Tensor]:
        """Take the post-adaptation steps; the adapted policies' ``(mean, log_std)`` there."""
        with torch.no_grad():
            old_dist = self.policy.per_task(self.adapted, valid.obs)
        self.attached = valid, old_dist
        return old_dist

    def _outer(self, theta: Params, create_graph: bool) -> tuple[Tensor, Tensor]:
        if self.attached is None:
            raise RuntimeError("attach the post-adaptation episodes first")
        valid, old_dist = self.attached
        return outer_loss(self.policy, theta, self.train, valid, old_dist, self.lr, create_graph)

    def meta_gradient(self) -> Tensor:
        """The outer loss's flat gradient in ``theta`` at the current ``theta``."""
        return flat_grad(self._outer(self.theta, self.second_order)[0], self.theta)

    def kl_hvp(self, damping: float) -> Callable[[Tensor], Tensor]:
        """``v -> (H + damping I) v``, ``H`` the mean KL's Hessian in ``theta``."""
        kl = lambda p: self._outer(p, self.second_order)[1]  # noqa: E731
        return hessian_vector_product(kl, self.theta, damping)

    def loss_and_kl(self, theta: Params) -> tuple[Tensor, Tensor]:
        """The outer loss and mean KL at ``theta`` (detached): the line search's question."""
        loss, kl = self._outer(theta, False)
        return loss.detach(), kl.detach()


MetaObjective = AutogradMetaObjective | WrittenOutMetaObjective
"""What the outer step reads its derivatives from: the reference or the written-out kernel."""


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

    def advantages(self, batch: EpisodeBatch) -> Tensor:
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

    # -- meta-training -----------------------------------------------------------------------
    def train_step(
        self, sampler: Sampler, tasks: list[Task], rng: np.random.Generator
    ) -> dict[str, float]:
        if not tasks:
            raise ValueError("maml-trpo: train_step needs at least one task")
        t_start = time.perf_counter()
        clock = {"time/sampling": 0.0, "time/optimization": 0.0}
        objective = self._meta_objective()
        # Inner loop: sample with the adapted policies (theta at first), then one
        # policy-gradient step of every task on those episodes, num_adapt_steps times.
        pre: list[EpisodeBatch] = []
        adapted: Params | None = None
        for _ in range(self.config.num_adapt_steps):
            batch = self.sample_episodes(sampler, tasks, adapted, rng, clock).to(self.device)
            pre.append(batch)
            train = TaskSteps.pack(batch, self.advantages(batch))
            t0 = time.perf_counter()
            adapted = objective.adapt(train)
            clock["time/optimization"] += time.perf_counter() - t0
        post = self.sample_episodes(sampler, tasks, adapted, rng, clock).to(self.device)
        valid = TaskSteps.pack(post, self.advantages(post))
        t0 = time.perf_counter()
        result, nonfinite = self._trpo_step(objective, valid)
        clock["time/optimization"] += time.perf_counter() - t0
        steps = sum(b.num_steps for b in pre) + post.num_steps
        return {
            "trpo/nonfinite": float(nonfinite),
            "meta/return_pre_adapt": float(pre[0].returns.mean()),
            "meta/return_post_adapt": float(post.returns.mean()),
            "losses/surrogate_before": result.old_loss,
            "losses/surrogate_after": result.loss,
            "trpo/kl": result.kl,
            "trpo/accepted": float(result.accepted),
            "trpo/step_fraction": result.step_fraction,
            "policy/std": self.policy.log_std.detach().exp().mean().item(),
            "env_steps": float(steps),
            **clock,
            "time/env_steps_per_s": steps / max(time.perf_counter() - t_start, 1e-9),
            **success_metrics(pre[0], post),
        }

    def _meta_objective(self) -> MetaObjective:
        """This iteration's derivatives: the written-out kernel where the policy's activation
        has one, else the autograd reference."""
        cfg = self.config
        score = partial(outer_loss, self.policy, lr=cfg.adapt_lr, create_graph=False)
        kernel = written_out_meta_objective(
            self.policy, cfg.adapt_lr, cfg.first_order, cfg.cpu_chunk_steps, score
        )
        return kernel or AutogradMetaObjective(self.policy, cfg.adapt_lr, cfg.first_order)

    def _trpo_step(
        self, objective: MetaObjective, valid: TaskSteps
    ) -> tuple[LineSearchResult, bool]:
        """TRPO on the post-adaptation loss: conjugate gradient on the KL's curvature, then the
        line search; the policy moves only to a step it accepts. Also whether the loss or its
        gradient was not finite (then no step is tried)."""
        cfg = self.config
        theta = self.policy.params()
        objective.attach(valid)
        # At the current theta the ratios are 1: the loss is minus the mean advantage.
        loss = -valid.task_mean(valid.advantages).mean().item()
        grad = objective.meta_gradient()
        if not math.isfinite(loss) or not bool(torch.isfinite(grad).all()):
            return LineSearchResult(False, theta, 0.0, loss, 0.0, loss, 0), True
        hvp = objective.kl_hvp(cfg.cg_damping)
        full_step, expected = trpo_full_step(hvp, grad, cfg.max_kl, cfg.cg_iters)
        result = backtracking_line_search(
            objective.loss_and_kl,
            theta,
            full_step,
            expected,
            cfg.max_kl,
            ratio=cfg.ls_backtrack_ratio,
            max_steps=cfg.ls_max_steps,
            old_loss=loss,
        )
        if result.accepted:
            with torch.no_grad():
                for name, p in self.policy.named_parameters():
                    p.copy_(result.params[name])
        return result, False

    # -- meta-test ---------------------------------------------------------------------------
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
        episodes, params = episodes.to(self.device), policy.params
        if params is None:
            start = _as_tasks(self.policy.params(), policy.num_tasks)
        else:
            start = {k: v.to(self.device) for k, v in params.items()}
        steps = TaskSteps.pack(episodes, self.advantages(episodes))
        step_size = self.config.adapt_lr if lr is None else lr

        def step(params: Params, group: TaskSteps) -> Params:
            return _detached(inner_step(self.policy, params, group, step_size))

        new = in_task_groups(step, start, steps, self.config.cpu_chunk_steps)
        return AdaptedPolicy(params=new, num_tasks=policy.num_tasks)

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        # The baseline is refit on every batch: it has no state to keep.
        return {
            "policy": {k: v.detach().cpu().clone() for k, v in self.policy.state_dict().items()}
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
