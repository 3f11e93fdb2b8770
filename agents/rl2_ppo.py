"""RL^2 with PPO: a recurrent policy that adapts in its hidden state (Duan et al. 2016).

RL^2 (https://arxiv.org/abs/1611.02779) treats a *trial* -- ``episodes_per_trial`` consecutive
episodes of one task -- as one long episode of a recurrent policy whose input is
``[obs, previous action, previous reward, done]``. The state is carried over episode
boundaries and reset only between trials, so what the policy saw of the task in episode 1
shapes episode 2: adaptation happens in the hidden state, without gradients at test time.

Training is PPO over whole trials (as garage's ``RL2PPO``): the sampler runs each column as
one trial; the advantages are GAE over the whole trial (an episode boundary inside a trial is
not a terminal state of the meta-episode, so credit for exploring in episode 1 flows back from
later episodes); minibatches are sets of whole trials, each recomputed from the initial state on
exactly the inputs the sampler fed the policy (:func:`metarl.sampling.recurrent_inputs`), so
the gradient sees the states that produced the actions.

Meta-test: :meth:`RL2PPO.exploration_policy` gives the trial's initial state and
:meth:`RL2PPO.adapt` the state after some episodes. The sampler starts every trial from the
initial state, so the adaptation curve (:meth:`RL2PPO.adaptation_curves`) samples whole trials of
K episodes and reads the return of episode 1..K.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from metarl.advantages import gae, normalize_advantages
from metarl.agent import (
    AdaptedPolicy,
    MetaAgent,
    check_curve_args,
    check_settings,
    success_metrics,
    success_rates,
)
from metarl.policies import (
    RECURRENT_CELLS,
    RecurrentGaussianPolicy,
    gaussian_entropy,
    gaussian_log_prob,
)
from metarl.ppo import minibatch_indices, total_loss
from metarl.sampling.batch import EpisodeBatch
from metarl.sampling.trials import recurrent_inputs
from metarl.tasks import Task

if TYPE_CHECKING:
    from metarl.sampling import Sampler

__all__ = ["RL2PPO", "RL2PPOConfig", "TrialState"]


@dataclass(frozen=True)
class RL2PPOConfig:
    """Hyperparameters of RL^2-PPO (defaults: garage's ``rl2_ppo_halfcheetah`` example)."""

    iterations: int = 500
    """Meta-iterations of a full run."""
    meta_batch_size: int = 10
    """Tasks per meta-iteration."""
    episodes_per_trial: int = 4
    """Episodes per trial; the recurrent state is reset only between trials."""
    trials_per_task: int = 1
    """Trials sampled per task in each meta-iteration."""
    cell: str = "lstm"
    """Recurrent cell: lstm (the Meta-LSTM) or gru (what garage's and VariBAD's RL^2 use; the
    ``default`` and ``varibad`` presets follow them)."""
    hidden_size: int = 64
    """Width of the recurrent state h."""
    init_std: float = 1.0
    """Initial action standard deviation."""
    min_std: float | None = None
    """Lower bound on the action standard deviation (None: none). After every PPO step the
    learned std is projected back into [min_std, max_std], so a std that PPO drives down
    (without an entropy bonus it collapses on Point2DNav) keeps exploring, and a gradient
    that points back inside still moves it (a clamp inside the forward pass would not)."""
    max_std: float | None = None
    """Upper bound on the action standard deviation (None: none); see ``min_std``. With
    actions clipped to the range, an entropy bonus can widen the std without limit."""
    gamma: float = 0.99
    """Discount factor (across the whole trial)."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    clip_coef: float = 0.2
    """PPO's ratio clipping epsilon."""
    clip_vloss: bool = False
    """Clip the value loss around the old values (with clip_coef)."""
    update_epochs: int = 10
    """PPO epochs over each batch of trials."""
    num_minibatches: int = 1
    """Minibatches of whole trials per epoch (at most meta_batch_size * trials_per_task)."""
    learning_rate: float = 1e-3
    """Adam step size."""
    adam_eps: float = 1e-5
    """Adam epsilon."""
    ent_coef: float = 0.02
    """Weight of the entropy bonus."""
    vf_coef: float = 0.5
    """Weight of the value loss (the value head shares the recurrent trunk)."""
    max_grad_norm: float = 0.5
    """Clip the global gradient norm to this (0: no clipping)."""
    normalize_advantages: bool = True
    """Normalize the advantages over the batch."""
    reward_scale: float = 0.01
    """Rewards are multiplied by this for the value targets and advantages (not the policy's
    inputs), so that discounted trial returns of HalfCheetah-sized rewards are O(1) for the
    value head (garage fits a linear baseline instead, which needs no scale)."""

    def __post_init__(self) -> None:
        B = self.meta_batch_size * self.trials_per_task
        checks = [
            (self.iterations >= 1, "iterations", ">= 1"),
            (self.meta_batch_size >= 1, "meta_batch_size", ">= 1"),
            (self.episodes_per_trial >= 1, "episodes_per_trial", ">= 1 (episodes in a trial)"),
            (self.trials_per_task >= 1, "trials_per_task", ">= 1"),
            (self.cell in RECURRENT_CELLS, "cell", f"one of {sorted(RECURRENT_CELLS)}"),
            (self.hidden_size >= 1, "hidden_size", ">= 1"),
            (self.init_std > 0, "init_std", "> 0"),
            (self.min_std is None or self.min_std > 0, "min_std", "> 0 or None (no bound)"),
            (self.max_std is None or self.max_std > 0, "max_std", "> 0 or None (no bound)"),
            (
                self.min_std is None or self.max_std is None or self.min_std < self.max_std,
                "max_std",
                f"above min_std = {self.min_std}",
            ),
            (
                (self.min_std is None or self.init_std >= self.min_std)
                and (self.max_std is None or self.init_std <= self.max_std),
                "init_std",
                f"within [min_std, max_std] = [{self.min_std}, {self.max_std}]",
            ),
            (0 <= self.gamma <= 1, "gamma", "in [0, 1]"),
            (0 <= self.gae_lambda <= 1, "gae_lambda", "in [0, 1]"),
            (self.clip_coef > 0, "clip_coef", "> 0"),
            (self.update_epochs >= 1, "update_epochs", ">= 1"),
            (
                1 <= self.num_minibatches <= B,
                "num_minibatches",
                f"in [1, meta_batch_size * trials_per_task = {B}] (sets of whole trials)",
            ),
            (self.learning_rate > 0, "learning_rate", "> 0"),
            (self.adam_eps > 0, "adam_eps", "> 0"),
            (self.ent_coef >= 0, "ent_coef", ">= 0"),
            (self.vf_coef >= 0, "vf_coef", ">= 0"),
            (self.max_grad_norm >= 0, "max_grad_norm", ">= 0 (0: no clipping)"),
            (self.reward_scale > 0, "reward_scale", "> 0"),
        ]
        check_settings(self, checks)


@dataclass
class TrialState:
    """Where a trial stands after some episodes: what the next step's input continues from.

    Attributes:
        hidden: ``[N, state_size]`` the recurrent state.
        prev_action: ``[N, act_dim]`` the last action taken (unclipped).
        prev_reward: ``[N]`` the last reward.
        prev_done: ``[N]`` 1.0 where the last step ended an episode.
    """

    hidden: Tensor
    prev_action: Tensor
    prev_reward: Tensor
    prev_done: Tensor


class RL2PPO(MetaAgent):
    """RL^2 trained with PPO over whole trials; see the module docstring."""

    name: ClassVar[str] = "rl2-ppo"
    config_cls: ClassVar[type] = RL2PPOConfig
    PRESET_NAMES: ClassVar[tuple[str, ...]] = ("quick", "default", "varibad")
    recurrent: ClassVar[bool] = True
    config: RL2PPOConfig
    policy: RecurrentGaussianPolicy

    def __init__(
        self,
        config: RL2PPOConfig,
        observation_space: gym.spaces.Box,
        action_space: gym.spaces.Box,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(config, observation_space, action_space, torch.device(device))
        self.policy = RecurrentGaussianPolicy(
            observation_space.shape[0],
            action_space.shape[0],
            hidden_size=config.hidden_size,
            cell=config.cell,
            init_std=config.init_std,
        ).to(self.device)
        self.optimizer = torch.optim.Adam(
            self.policy.parameters(), lr=config.learning_rate, eps=config.adam_eps
        )

    # -- presets -----------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, family: str) -> RL2PPOConfig:
        """Named hyperparameters for a family.

        ``default``: garage's RL^2-PPO HalfCheetah example (meta-batch 10, 4 episodes per
        trial, GRU 64, gamma 0.99, lambda 0.95, clip 0.2, 10 epochs, Adam 1e-3, entropy 0.02).
        ``varibad``: the RL^2 baseline of VariBAD's cheetah-vel config (GRU 128, gamma 0.97,
        lambda 0.9, clip 0.1, Adam 7e-4, 2 episodes per trial). ``quick``: a few minutes on a
        laptop CPU (on Point2DNav, episode 2 of a trial is clearly better than episode 1).
        """
        if name == "default":
            return RL2PPOConfig(cell="gru")
        if name == "varibad":
            return RL2PPOConfig(
                meta_batch_size=16,
                episodes_per_trial=2,
                cell="gru",
                hidden_size=128,
                gamma=0.97,
                gae_lambda=0.9,
                clip_coef=0.1,
                learning_rate=7e-4,
                update_epochs=2,
                num_minibatches=4,
                ent_coef=0.01,
            )
        if name == "quick":
            if family == "Point2DNav":
                # Measured with H = 20 (RunArgs.horizon), seeds 0-2, 150 iterations: episode 2
                # of a trial beats episode 1 by 1.0-1.2 in the last 30 training batches. At
                # init_std 0.1 the std collapsed to 0.06 and one seed of three barely adapted.
                return RL2PPOConfig(
                    iterations=150,
                    meta_batch_size=40,
                    episodes_per_trial=2,
                    init_std=0.3,
                    update_epochs=4,
                    num_minibatches=4,
                    learning_rate=3e-3,
                    ent_coef=0.0,
                    reward_scale=0.2,
                )
            return RL2PPOConfig(
                iterations=50, meta_batch_size=10, episodes_per_trial=2, update_epochs=4
            )
        raise ValueError(f"rl2-ppo has no preset {name!r}; presets are {list(cls.PRESET_NAMES)}")

    # -- meta-training -----------------------------------------------------------------------
    def _check_sampler(self, sampler: Sampler) -> None:
        if not getattr(sampler, "recurrent", False):
            raise ValueError(
                "rl2-ppo needs a sampler built with its recurrent policy (agent.policy); this "
                f"sampler steps a {type(getattr(sampler, 'policy', None)).__name__}"
            )

    def sample_trials(
        self,
        sampler: Sampler,
        tasks: Sequence[Task],
        trials_per_task: int,
        seed: int,
        episodes_per_trial: int | None = None,
    ) -> EpisodeBatch:
        """Whole trials from the initial state (current parameters), on the agent's device."""
        self._check_sampler(sampler)
        M = self.config.episodes_per_trial if episodes_per_trial is None else episodes_per_trial
        if M < 1:
            raise ValueError(f"episodes_per_trial (the trial length) must be >= 1, got {M}")
        batch = sampler.sample(list(tasks), trials_per_task, seed=seed, episodes_per_trial=M)
        return batch.to(self.device)

    def train_step(
        self, sampler: Sampler, tasks: list[Task], rng: np.random.Generator
    ) -> dict[str, float]:
        cfg = self.config
        if len(tasks) == 0:
            raise ValueError("rl2-ppo: train_step needs at least one task")
        B = len(tasks) * cfg.trials_per_task
        if cfg.num_minibatches > B:
            raise ValueError(
                f"rl2-ppo: num_minibatches={cfg.num_minibatches} exceeds the {B} trials of this "
                "batch (minibatches are sets of whole trials)"
            )
        t_start = time.perf_counter()
        seed = int(rng.integers(2**62))
        batch = self.sample_trials(sampler, tasks, cfg.trials_per_task, seed)
        sample_time = time.perf_counter() - t_start

        t_opt = time.perf_counter()
        sums, updates = self._ppo_epochs(batch, B, rng)
        opt_time = time.perf_counter() - t_opt

        episode_means = batch.episode_returns.mean(dim=0)
        steps = batch.num_steps
        total = time.perf_counter() - t_start
        out = {
            "meta/return_pre_adapt": float(episode_means[0]),
            "meta/return_post_adapt": float(episode_means[-1]),
            **{f"meta/return_episode_{k + 1}": float(v) for k, v in enumerate(episode_means)},
            "meta/return_trial": float(batch.returns.mean()),
            **success_metrics(batch, batch, pre_episode=0, post_episode=-1),
            **{f"losses/{k}": v / updates for k, v in sums.items()},
            "policy/std": float(self.policy.log_std.detach().exp().mean()),
            "env_steps": float(steps),
            "time/sampling": sample_time,
            "time/optimization": opt_time,
            "time/env_steps_per_s": steps / max(total, 1e-9),
        }
        return out

    def _ppo_epochs(
        self, batch: EpisodeBatch, B: int, rng: np.random.Generator
    ) -> tuple[dict[str, float], int]:
        """``update_epochs`` epochs of PPO over minibatches of whole trials: the summed
        metrics and the number of updates."""
        cfg = self.config
        inputs = recurrent_inputs(batch)
        state0 = self.policy.initial_state(B)
        with torch.no_grad():
            _, _, old_values, _ = self.policy.evaluate(inputs, state0)
        rewards = batch.rewards * cfg.reward_scale
        # One trial is one meta-episode: no terminal inside it, nothing to bootstrap after it.
        adv, returns = gae(rewards, old_values, batch.valid, cfg.gamma, cfg.gae_lambda)
        if cfg.normalize_advantages:
            adv = normalize_advantages(adv, batch.valid)
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        sums: dict[str, float] = {}
        updates = 0
        for _ in range(cfg.update_epochs):
            for idx in minibatch_indices(B, cfg.num_minibatches, generator):
                idx = idx.to(self.device)
                # Trials are recomputed from their start; steps past the longest one are padding.
                T = int(batch.lengths[idx].max())
                metrics = self._ppo_update(
                    inputs[:T, idx],
                    state0[idx],
                    batch.actions[:T, idx],
                    batch.log_probs[:T, idx],
                    old_values[:T, idx],
                    adv[:T, idx],
                    returns[:T, idx],
                    batch.valid[:T, idx],
                )
                for key, value in metrics.items():
                    sums[key] = sums.get(key, 0.0) + value
                updates += 1
        return sums, updates

    def _ppo_update(
        self,
        inputs: Tensor,
        state0: Tensor,
        actions: Tensor,
        old_log_probs: Tensor,
        old_values: Tensor,
        adv: Tensor,
        returns: Tensor,
        valid: Tensor,
    ) -> dict[str, float]:
        """One PPO gradient step on a minibatch of whole trials (all ``[T, b, ...]``)."""
        cfg = self.config
        mean, log_std, values, _ = self.policy.evaluate(inputs, state0)
        loss, metrics = total_loss(
            gaussian_log_prob(actions, mean, log_std),
            old_log_probs,
            adv,
            values,
            old_values,
            returns,
            gaussian_entropy(log_std),
            valid,
            clip_coef=cfg.clip_coef,
            vf_coef=cfg.vf_coef,
            ent_coef=cfg.ent_coef,
            clip_vloss=cfg.clip_vloss,
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # With max_grad_norm = 0 nothing is clipped; the norm is still measured.
        max_norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), max_norm)
        self.optimizer.step()
        self._bound_std()
        metrics["grad_norm"] = grad_norm.detach()
        return {k: float(v) for k, v in metrics.items()}

    def _bound_std(self) -> None:
        """Project the learned std back into ``[min_std, max_std]`` (a no-op without bounds)."""
        low, high = self.config.min_std, self.config.max_std
        if low is None and high is None:
            return
        with torch.no_grad():
            self.policy.log_std.clamp_(
                min=None if low is None else math.log(low),
                max=None if high is None else math.log(high),
            )

    # -- meta-test ---------------------------------------------------------------------------
    def exploration_policy(self, num_tasks: int) -> AdaptedPolicy:
        """The start of one trial per task: the initial state, no previous step."""
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
        act_dim = self.policy.act_dim
        zeros = torch.zeros(num_tasks, device=self.device)
        state = TrialState(
            hidden=self.policy.initial_state(num_tasks),
            prev_action=torch.zeros(num_tasks, act_dim, device=self.device),
            prev_reward=zeros.clone(),
            prev_done=zeros.clone(),
        )
        return AdaptedPolicy(params=None, num_tasks=num_tasks, state=state)

    def adapt(
        self, policy: AdaptedPolicy, episodes: EpisodeBatch, lr: float | None = None
    ) -> AdaptedPolicy:
        """The trial state after ``episodes``: one column per task, continuing ``policy.state``.

        ``episodes`` holds the next episode (or trial of episodes) of each task, sampled from
        ``policy``; the policy is run over them from ``policy.state`` with the first input's
        previous action, reward and done flag taken from the state.
        """
        self._no_step_size(lr)
        state = policy.state
        if not isinstance(state, TrialState):
            raise ValueError(
                "rl2-ppo: adapt needs a policy from exploration_policy() or adapt() (its state "
                f"is a TrialState), got state {type(state).__name__}"
            )
        K = policy.num_tasks
        if episodes.num_tasks != K or episodes.batch_size != K:
            raise ValueError(
                f"rl2-ppo: adapt takes one column per task for the policy's {K} tasks; got "
                f"{episodes.num_tasks} tasks x {episodes.episodes_per_task} columns"
            )
        if state.hidden.shape != (K, self.policy.state_size):
            raise ValueError(
                f"rl2-ppo: the state is {tuple(state.hidden.shape)}, the batch needs "
                f"({K}, {self.policy.state_size})"
            )
        episodes = episodes.to(self.device)
        inputs = recurrent_inputs(episodes).clone()
        obs_dim = self.policy.obs_dim
        first = torch.cat(
            [state.prev_action, state.prev_reward[:, None], state.prev_done[:, None]], dim=-1
        )
        inputs[0, :, obs_dim:] = first * episodes.valid[0, :, None].to(first.dtype)
        hidden = state.hidden.to(self.device)
        valid = episodes.valid
        with torch.no_grad():
            for t in range(int(episodes.lengths.max())):
                _, _, new = self.policy(inputs[t], hidden)
                hidden = torch.where(valid[t, :, None], new, hidden)
        cols = torch.arange(K, device=self.device)
        last = (episodes.lengths.to(self.device) - 1).clamp_min(0)
        has = (episodes.lengths > 0).to(self.device)
        done = (episodes.terminated | episodes.truncated)[last, cols].to(state.prev_done.dtype)
        new_state = TrialState(
            hidden=hidden,
            prev_action=torch.where(has[:, None], episodes.actions[last, cols], state.prev_action),
            prev_reward=torch.where(has, episodes.rewards[last, cols], state.prev_reward),
            prev_done=torch.where(has, done, state.prev_done),
        )
        return AdaptedPolicy(params=None, num_tasks=K, state=new_state)

    def adaptation_curves(
        self,
        sampler: Sampler,
        tasks: list[Task],
        num_steps: int,
        episodes_per_step: int,
        seed: int,
        step_sizes: list[float] | None = None,
    ) -> dict[str, np.ndarray]:
        """Mean return of episode ``1..num_steps + 1`` of a trial, per task: ``[num_steps + 1, K]``
        (``"return"``; ``"success"``: the fraction of those episodes that succeeded, where the
        env reports success).

        RL^2's meta-test: ``episodes_per_step`` trials of ``num_steps + 1`` episodes per task,
        the hidden state carried through each trial (adaptation step ``s`` is episode
        ``s + 1``); row ``s`` is the return of episode ``s + 1`` averaged over the trials.
        """
        if step_sizes is not None:
            raise ValueError("rl2-ppo adapts in its hidden state: step_sizes must be None")
        check_curve_args(num_steps, episodes_per_step)
        batch = self.sample_trials(sampler, tasks, episodes_per_step, seed, num_steps + 1)
        per_task = batch.by_task("episode_returns").mean(dim=1)  # [K, num_steps + 1]
        out = {"return": per_task.T.cpu().numpy().astype(np.float64)}
        rates = success_rates(batch)
        if rates is not None:
            K = len(tasks)
            success = rates.reshape(K, episodes_per_step, num_steps + 1).mean(dim=1)
            out["success"] = success.T.cpu().numpy().astype(np.float64)
        return out

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "policy": {k: v.detach().cpu().clone() for k, v in self.policy.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        # The config's step size, which a resumed run may have lowered (the same otherwise).
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.learning_rate
