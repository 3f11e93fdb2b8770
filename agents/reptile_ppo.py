"""Reptile-PPO: a first-order meta-learner over PPO inner loops.

Reptile (Nichol et al. 2018, https://arxiv.org/abs/1803.02999) needs no second-order
gradients: for each task it trains a copy of the meta-parameters ``theta`` for a few steps and
then moves ``theta`` toward the average of the adapted copies,
``theta += meta_lr_t * (mean_k theta_k - theta)``, with ``meta_lr_t`` annealed linearly over
training as in the paper. Here the inner loop is PPO (Schulman et al. 2017): per task, start
from ``theta`` (policy and value network) with a fresh Adam, then ``num_adapt_steps`` rounds of
(collect ``episodes_per_task`` episodes, ``update_epochs`` epochs of minibatch updates).

All tasks of a meta-batch advance together: one sampler call per round with per-task
parameters, and the batched PPO of :mod:`metarl.ppo` (parameters stacked on a leading task
axis ``[K, ...]``, equal to ``K`` sequential PPO runs). Meta-test adaptation is the same inner
loop: :meth:`ReptilePPO.adapt` runs one round of PPO epochs and carries the value network and
the Adam moments to the next round in :attr:`AdaptedPolicy.state`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor
from torch.func import functional_call

from metarl.agent import AdaptedPolicy, MetaAgent, check_settings, success_metrics
from metarl.optim import BatchedAdam
from metarl.policies import ACTIVATIONS, GaussianMLPPolicy, MLPValue, Params
from metarl.ppo import (
    PPOData,
    finite_per_task,
    join_params,
    per_task_ppo_data,
    per_task_ppo_epochs,
    split_params,
    task_ppo_loss,
)
from metarl.sampling.batch import EpisodeBatch
from metarl.tasks import Task

if TYPE_CHECKING:
    from metarl.sampling import Sampler

__all__ = ["InnerState", "ReptilePPO", "ReptilePPOConfig", "meta_lr_at", "reptile_update"]


@dataclass(frozen=True)
class ReptilePPOConfig:
    """Hyperparameters of Reptile-PPO (defaults: a HalfCheetah-sized run)."""

    iterations: int = 500
    """Meta-iterations of a full run."""
    meta_batch_size: int = 20
    """Tasks per meta-iteration."""
    episodes_per_task: int = 10
    """Episodes sampled per task in each inner round."""
    num_adapt_steps: int = 3
    """Inner rounds per task: each collects episodes, then runs ``update_epochs`` epochs."""
    update_epochs: int = 4
    """PPO epochs over each round's episodes."""
    num_minibatches: int = 4
    """Minibatches per epoch and task (over the ``horizon * episodes_per_task`` step slots)."""
    adapt_lr: float = 1e-3
    """Inner Adam step size."""
    adam_eps: float = 1e-5
    """Inner Adam epsilon (cleanrl's 1e-5)."""
    meta_lr: float = 1.0
    """Reptile outer step size at the first iteration (the paper's 1.0)."""
    meta_lr_final: float = 0.0
    """Outer step size after ``anneal_iterations`` (linear annealing; the paper anneals to 0)."""
    anneal_iterations: int = 500
    """Meta-iterations over which ``meta_lr`` falls to ``meta_lr_final`` (then stays there).
    Its own setting, not ``iterations``, so extending a run on resume keeps the schedule."""
    clip_coef: float = 0.2
    """PPO's clipping epsilon."""
    clip_vloss: bool = False
    """Clip the value loss around the values at collection time (PPO2 style)."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus."""
    max_grad_norm: float = 0.5
    """Per-task gradient-norm clip, applied to the policy and the value network separately."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    reward_scale: float = 1.0
    """Rewards are multiplied by this for the value targets and advantages (not the metrics)."""
    normalize_advantages: bool = True
    """Normalize advantages per task and round."""
    baseline: str = "value"
    """What the advantages subtract: ``value``, the value network (meta-learned with the
    policy, trained in the inner loop by the value loss), or ``linear``, rllab's linear
    feature baseline (observation and time features) fitted per task and round in closed form,
    as MAML-TRPO does. With ``linear`` the value network is not trained (``vf_coef`` unused)."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Policy MLP widths."""
    value_hidden_sizes: tuple[int, ...] = (64, 64)
    """Value MLP widths."""
    activation: str = "tanh"
    """Activation of both networks: tanh, relu or elu."""
    init_std: float = 1.0
    """Initial action standard deviation."""

    def __post_init__(self) -> None:
        checks = [
            (self.iterations >= 1, "iterations", ">= 1"),
            (self.meta_batch_size >= 1, "meta_batch_size", ">= 1"),
            (self.episodes_per_task >= 1, "episodes_per_task", ">= 1"),
            (self.num_adapt_steps >= 1, "num_adapt_steps", ">= 1"),
            (self.update_epochs >= 1, "update_epochs", ">= 1"),
            (self.num_minibatches >= 1, "num_minibatches", ">= 1"),
            (self.adapt_lr > 0, "adapt_lr", "> 0"),
            (self.adam_eps >= 0, "adam_eps", ">= 0"),
            (0 < self.meta_lr <= 1, "meta_lr", "in (0, 1]"),
            (0 <= self.meta_lr_final <= self.meta_lr, "meta_lr_final", "in [0, meta_lr]"),
            (self.anneal_iterations >= 1, "anneal_iterations", ">= 1"),
            (self.clip_coef > 0, "clip_coef", "> 0"),
            (self.vf_coef >= 0, "vf_coef", ">= 0"),
            (self.ent_coef >= 0, "ent_coef", ">= 0"),
            (self.max_grad_norm > 0, "max_grad_norm", "> 0"),
            (0 <= self.gamma <= 1, "gamma", "in [0, 1]"),
            (0 <= self.gae_lambda <= 1, "gae_lambda", "in [0, 1]"),
            (self.reward_scale > 0, "reward_scale", "> 0"),
            (self.baseline in ("value", "linear"), "baseline", "value or linear"),
            (min(self.hidden_sizes, default=0) >= 1, "hidden_sizes", "positive widths"),
            (min(self.value_hidden_sizes, default=0) >= 1, "value_hidden_sizes", "positive widths"),
            (self.activation in ACTIVATIONS, "activation", f"one of {sorted(ACTIVATIONS)}"),
            (self.init_std > 0, "init_std", "> 0"),
        ]
        check_settings(self, checks)


FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    # Forward/backward running: two tasks, easy to tell apart; fewer iterations suffice.
    "HalfCheetahDir": {"iterations": 200, "anneal_iterations": 200, "reward_scale": 0.1},
    "HalfCheetahVel": {"iterations": 500, "anneal_iterations": 500, "reward_scale": 0.1},
    "Point2DNav": {"iterations": 100, "anneal_iterations": 100, "init_std": 0.5},
}
"""Per-family changes to the ``default`` preset."""

LOSS_METRICS = (
    "policy_loss",
    "value_loss",
    "entropy",
    "loss",
    "approx_kl",
    "clip_fraction",
    "explained_variance",
)
"""The inner PPO metrics logged (``losses/...``), each the mean over the rounds."""


# -- the math, as plain functions ------------------------------------------------------------
def reptile_update(
    theta: Mapping[str, Tensor], adapted: Mapping[str, Tensor], meta_lr: float
) -> Params:
    """Reptile's outer step ``theta + meta_lr * (mean_k adapted_k - theta)``.

    Args:
        theta: the meta-parameters, name -> ``[...]``.
        adapted: the adapted parameters of ``K`` tasks, name -> ``[K, ...]``.
        meta_lr: the outer step size (1.0 moves ``theta`` to the mean of the adapted sets).

    Returns:
        The new meta-parameters (detached).
    """
    if set(theta) != set(adapted):
        raise ValueError(f"adapted has keys {sorted(adapted)}, theta has {sorted(theta)}")
    out: Params = {}
    for name, p in theta.items():
        a = adapted[name]
        if a.dim() != p.dim() + 1 or a.shape[1:] != p.shape:
            raise ValueError(
                f"adapted[{name!r}] must have shape [K, *{tuple(p.shape)}], got {tuple(a.shape)}"
            )
        out[name] = (p + meta_lr * (a.mean(0) - p)).detach()
    return out


def meta_lr_at(iteration: int, iterations: int, meta_lr: float, meta_lr_final: float) -> float:
    """The outer step size at ``iteration`` (0-based) of ``iterations``: linear from ``meta_lr``.

    ``meta_lr`` at iteration 0, ``meta_lr_final`` after the last one (the Reptile paper's
    schedule with a floor); iterations beyond ``iterations`` stay at the floor.
    """
    frac = min(max(iteration, 0) / iterations, 1.0)
    return meta_lr + (meta_lr_final - meta_lr) * frac


@dataclass
class InnerState:
    """What one task batch carries from one inner round to the next.

    Attributes:
        value: the value network's ``[K, ...]`` parameters.
        optimizer: the inner Adam (moments of policy and value parameters).
        generator: the minibatch shuffler.
        rounds: inner rounds done so far.
    """

    value: Params
    optimizer: BatchedAdam
    generator: torch.Generator
    rounds: int = 0

    def copy(self) -> InnerState:
        """An independent continuation of this loop (``adapt`` leaves its input unchanged)."""
        generator = torch.Generator().set_state(self.generator.get_state())
        return InnerState(dict(self.value), self.optimizer.copy(), generator, self.rounds)


class ReptilePPO(MetaAgent):
    """Reptile over batched per-task PPO inner loops; see the module docstring."""

    name: ClassVar[str] = "reptile-ppo"
    config_cls: ClassVar[type] = ReptilePPOConfig
    PRESET_NAMES: ClassVar[tuple[str, ...]] = ("quick", "default")
    config: ReptilePPOConfig
    policy: GaussianMLPPolicy

    def __init__(
        self,
        config: ReptilePPOConfig,
        observation_space: gym.spaces.Box,
        action_space: gym.spaces.Box,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(config, observation_space, action_space, torch.device(device))
        obs_dim, act_dim = observation_space.shape[0], action_space.shape[0]
        self.policy = GaussianMLPPolicy(
            obs_dim, act_dim, config.hidden_sizes, config.activation, config.init_std
        ).to(self.device)
        self.value = MLPValue(obs_dim, config.value_hidden_sizes, config.activation).to(self.device)
        self.iteration = 0
        """Meta-iterations done (sets the annealed ``meta_lr``; saved in checkpoints)."""

    # -- presets -----------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, family: str) -> ReptilePPOConfig:
        """Named hyperparameters for a family.

        ``default``: 20 tasks x 10 episodes, 3 inner rounds of 4 PPO epochs, Adam 1e-3,
        ``meta_lr`` 1.0 annealed to 0, with per-family changes (:data:`FAMILY_DEFAULTS`).
        ``quick``: a minute of CPU on Point2DNav, a few minutes on HalfCheetah.
        """
        if name == "default":
            return replace(ReptilePPOConfig(), **FAMILY_DEFAULTS.get(family, {}))
        if name == "quick":
            return ReptilePPOConfig(
                iterations=30,
                anneal_iterations=30,
                meta_batch_size=10,
                episodes_per_task=5,
                num_adapt_steps=3,
                update_epochs=4,
                num_minibatches=2,
                adapt_lr=3e-3,
                meta_lr=1.0,
                meta_lr_final=0.1,
                hidden_sizes=(32, 32),
                value_hidden_sizes=(32, 32),
                init_std=0.5 if family == "Point2DNav" else 1.0,
                reward_scale=0.1 if family.startswith("HalfCheetah") else 1.0,
            )
        raise ValueError(
            f"reptile-ppo has no preset {name!r}; presets are {list(cls.PRESET_NAMES)}"
        )

    # -- parameters --------------------------------------------------------------------------
    def meta_params(self) -> Params:
        """``theta``: the policy's and the value network's parameters (prefixed names)."""
        return join_params(
            dict(self.policy.named_parameters()), dict(self.value.named_parameters())
        )

    split_params = staticmethod(split_params)
    join_params = staticmethod(join_params)

    def theta_as_tasks(self, num_tasks: int) -> Params:
        """``theta`` (policy and value) copied for ``num_tasks`` tasks: where every inner loop
        starts, ``[K, ...]`` per parameter (the input of :meth:`inner_round`)."""
        return {
            k: v.detach().unsqueeze(0).expand(num_tasks, *v.shape).clone()
            for k, v in self.meta_params().items()
        }

    def new_inner_state(self, params: Params, seed: int) -> InnerState:
        """A fresh inner loop for the ``[K, ...]`` combined ``params``: zero Adam moments."""
        _, value = split_params(params)
        optimizer = BatchedAdam(params, lr=self.config.adapt_lr, eps=self.config.adam_eps)
        return InnerState(value, optimizer, torch.Generator().manual_seed(int(seed)))

    # -- the inner loop: PPO of every task at once (metarl.ppo) -------------------------------
    def forward(self, params: Params, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One task's ``(mean, log_std, value)`` at ``obs [n, D]`` with combined ``params``."""
        pol, val = split_params(params)
        mean, log_std = functional_call(self.policy, pol, (obs,))
        return mean, log_std, functional_call(self.value, val, (obs,))

    def prepare_round(self, params: Params, batch: EpisodeBatch) -> PPOData:
        """The PPO data of ``batch``, collected with the ``[K, ...]`` combined ``params``."""
        cfg = self.config
        return per_task_ppo_data(
            self.forward,
            params,
            batch,
            gamma=cfg.gamma,
            gae_lambda=cfg.gae_lambda,
            reward_scale=cfg.reward_scale,
            normalize=cfg.normalize_advantages,
            linear_baseline=cfg.baseline == "linear",
        )

    def ppo_loss(self, params: Params, *minibatch: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """One task's PPO loss ``policy + vf_coef * value + ent_coef * entropy`` on a minibatch
        (:func:`~metarl.ppo.task_ppo_loss`; with the linear baseline the value network is
        not trained)."""
        cfg = self.config
        return task_ppo_loss(
            self.forward,
            params,
            *minibatch,
            clip_coef=cfg.clip_coef,
            vf_coef=cfg.vf_coef if cfg.baseline == "value" else 0.0,
            ent_coef=cfg.ent_coef,
            clip_vloss=cfg.clip_vloss,
        )

    def ppo_update(
        self, params: Params, state: InnerState, data: PPOData
    ) -> tuple[Params, dict[str, float]]:
        """``update_epochs`` epochs of minibatch updates of every task at once; the new
        ``[K, ...]`` parameters and the mean metrics (:func:`~metarl.ppo.per_task_ppo_epochs`)."""
        cfg = self.config
        params, stats = per_task_ppo_epochs(
            self.ppo_loss,
            params,
            data,
            state.optimizer,
            state.generator,
            update_epochs=cfg.update_epochs,
            num_minibatches=cfg.num_minibatches,
            max_grad_norm=cfg.max_grad_norm,
        )
        _, state.value = split_params(params)
        state.rounds += 1
        return params, stats

    def inner_round(
        self, params: Params, state: InnerState, batch: EpisodeBatch
    ) -> tuple[Params, dict[str, float]]:
        """One inner round on ``batch`` (collected with ``params``): PPO epochs for every task."""
        return self.ppo_update(params, state, self.prepare_round(params, batch))

    # -- meta-training -----------------------------------------------------------------------
    def train_step(
        self, sampler: Sampler, tasks: list[Task], rng: np.random.Generator
    ) -> dict[str, float]:
        """One Reptile iteration: ``num_adapt_steps`` inner PPO rounds per task from ``theta``,
        a post-adaptation batch, then ``theta += meta_lr * (mean(theta_i) - theta)``."""
        cfg = self.config
        if not tasks:
            raise ValueError("reptile-ppo: train_step needs at least one task")
        slots = int(getattr(sampler, "horizon", 1)) * cfg.episodes_per_task
        if cfg.num_minibatches > slots:
            raise ValueError(
                f"reptile-ppo: num_minibatches={cfg.num_minibatches} exceeds the {slots} step "
                f"slots per task (horizon x episodes_per_task); lower it"
            )
        t_start = time.perf_counter()
        clock = {"time/sampling": 0.0, "time/optimization": 0.0}
        theta = {k: v.detach().clone() for k, v in self.meta_params().items()}
        params = self.theta_as_tasks(len(tasks))
        state = self.new_inner_state(params, seed=int(rng.integers(2**62)))
        first: EpisodeBatch | None = None
        returns: list[float] = []  # each round's mean return
        sums: dict[str, float] = {}  # each round's PPO metrics, summed over the rounds
        steps = 0
        for r in range(cfg.num_adapt_steps):
            batch = self.sample_episodes(
                sampler, tasks, None if r == 0 else split_params(params)[0], rng, clock
            )
            first = batch if first is None else first
            returns.append(float(batch.returns.mean()))
            steps += batch.num_steps
            t0 = time.perf_counter()
            params, stats = self.inner_round(params, state, batch)
            clock["time/optimization"] += time.perf_counter() - t0
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + value
        post = self.sample_episodes(sampler, tasks, split_params(params)[0], rng, clock)
        steps += post.num_steps
        t0 = time.perf_counter()
        lr, skipped = self._outer_step(theta, params)
        clock["time/optimization"] += time.perf_counter() - t0
        assert first is not None  # num_adapt_steps >= 1
        return {
            "meta/return_pre_adapt": returns[0],
            "meta/return_post_adapt": float(post.returns.mean()),
            **success_metrics(first, post),
            **{f"meta/return_round_{r}": ret for r, ret in enumerate(returns[1:], start=1)},
            **{f"losses/{k}": sums.get(k, math.nan) / cfg.num_adapt_steps for k in LOSS_METRICS},
            "losses/nonfinite_updates": sums.get("nonfinite_updates", 0.0),
            "reptile/meta_lr": lr,
            "reptile/skipped_tasks": float(skipped),
            "policy/std": float(self.policy.log_std.detach().exp().mean()),
            "env_steps": float(steps),
            **clock,
            "time/env_steps_per_s": steps / max(time.perf_counter() - t_start, 1e-9),
        }

    def _outer_step(self, theta: Params, params: Params) -> tuple[float, int]:
        """The Reptile step toward the mean of the finite adapted sets; ``(meta_lr, skipped)``."""
        cfg = self.config
        K = next(iter(params.values())).shape[0]
        lr = meta_lr_at(self.iteration, cfg.anneal_iterations, cfg.meta_lr, cfg.meta_lr_final)
        # Tasks whose adapted parameters are not finite (they cannot be, as non-finite updates
        # are skipped, but a checkpoint must never hold NaN) are left out of the mean.
        ok = finite_per_task(params)
        if bool(ok.any()):
            new = reptile_update(theta, {k: v[ok] for k, v in params.items()}, lr)
            with torch.no_grad():
                for name, p in self.meta_params().items():
                    p.copy_(new[name])
        self.iteration += 1
        return lr, K - int(ok.sum())

    # -- meta-test ---------------------------------------------------------------------------
    def adapt(
        self, policy: AdaptedPolicy, episodes: EpisodeBatch, lr: float | None = None, seed: int = 0
    ) -> AdaptedPolicy:
        """One inner round (``update_epochs`` PPO epochs per task) on ``episodes``.

        From :meth:`exploration_policy` this starts a fresh inner loop at ``theta`` (zero Adam
        moments, minibatches shuffled from ``seed``); from an adapted policy it continues that
        loop (value network, Adam moments and shuffler in ``policy.state``), exactly as in
        meta-training. ``policy`` itself is left unchanged. Its step sizes are the inner
        Adam's (``adapt_lr``): ``lr`` is refused.
        """
        self._no_step_size(lr)
        K = policy.num_tasks
        if episodes.num_tasks != K:
            raise ValueError(
                f"reptile-ppo: {episodes.num_tasks} tasks of episodes for a policy of {K}"
            )
        if policy.params is None:
            params = self.theta_as_tasks(K)
            state = self.new_inner_state(params, seed)
        else:
            if not isinstance(policy.state, InnerState):
                raise ValueError(
                    "reptile-ppo: adapt continues a policy from exploration_policy() or adapt() "
                    f"(its state is an InnerState), got state {type(policy.state).__name__}"
                )
            state = policy.state.copy()
            params = join_params(
                {k: v.to(self.device) for k, v in policy.params.items()}, state.value
            )
        params, _ = self.inner_round(params, state, episodes)
        pol, _ = split_params(params)
        return AdaptedPolicy(params=pol, num_tasks=K, state=state)

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        # The inner optimizers live within one iteration: only theta and the schedule persist.
        return {
            "policy": {k: v.detach().cpu().clone() for k, v in self.policy.state_dict().items()},
            "value": {k: v.detach().cpu().clone() for k, v in self.value.state_dict().items()},
            "iteration": int(self.iteration),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        missing = sorted({"policy", "value", "iteration"} - set(state))
        if missing:
            raise ValueError(f"reptile-ppo: checkpoint state lacks {missing}")
        self.policy.load_state_dict(state["policy"])
        self.value.load_state_dict(state["value"])
        self.iteration = int(state["iteration"])
