"""Trained agents from Python: load a run folder, adapt to a task, act on observations.

::

    import metarl

    model = metarl.load("runs/maml-trpo-Point2DNav-...")
    task = model.test_tasks()[0]
    policy = model.exploration_policy()
    episodes = model.collect(task, policy, num_episodes=10, seed=0)
    policy = model.adapt(policy, episodes)           # one adaptation step
    env = model.make_env(task)
    obs, _ = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(model.predict(obs, policy))

``predict`` answers as Stable-Baselines3's ``model.predict`` does (an action for an
observation, the mean action unless ``deterministic=False``), for the policy after any number
of adaptation steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from metarl.agent import AdaptedPolicy, MetaAgent
from metarl.evaluation import LoadedRun, load_run
from metarl.tasks import Task

__all__ = ["TrainedAgent", "load"]


def load(
    run_dir: str | Path, checkpoint: str | Path | int | None = None, device: str = "cpu"
) -> TrainedAgent:
    """The agent of a run folder, with its policy and config, from its latest checkpoint (or
    ``checkpoint``: an iteration number or a checkpoint file).

    Raises:
        RunError: the folder is not a run, or its checkpoint does not fit its config.
    """
    return TrainedAgent(load_run(run_dir, checkpoint=checkpoint, device=device))


@dataclass
class TrainedAgent:
    """A meta-trained agent and the task family it was trained on."""

    run: LoadedRun

    @property
    def agent(self) -> MetaAgent:
        return self.run.agent

    @property
    def policy(self) -> torch.nn.Module:
        """The meta-trained policy module (the meta-parameters)."""
        return self.run.agent.policy

    @property
    def config(self) -> Any:
        """The agent's hyperparameters (its config dataclass)."""
        return self.run.agent.config

    @property
    def algo(self) -> str:
        return self.run.algo

    @property
    def family(self) -> Any:
        return self.run.family

    def test_tasks(self, split: str = "default") -> list[Task]:
        """The family's held-out tasks (those ``metarl eval`` uses)."""
        return list(self.family.task_split(split).test)

    def make_env(self, task: Task | dict[str, Any] | None = None, **kwargs: Any) -> gym.Env:
        """A Gymnasium env of the run's family (variant and horizon), set to ``task``."""
        from metarl.family import MetaEnv

        env = MetaEnv(self.family, **kwargs)
        if task is not None:
            env.set_task(task)
        return env

    def exploration_policy(self) -> AdaptedPolicy:
        """The policy before adaptation, for one task."""
        return self.agent.exploration_policy(1)

    def _gradient_agent(self, what: str) -> None:
        if self.algo == "rl2-ppo":
            raise ValueError(
                f"rl2-ppo adapts through its recurrent state within a trial, not on collected "
                f"episodes: {what} serves maml-trpo and reptile-ppo (evaluate RL^2 with "
                "metarl eval or agent.adaptation_curve)"
            )

    def collect(
        self,
        task: Task | dict[str, Any],
        policy: AdaptedPolicy | None = None,
        num_episodes: int = 10,
        seed: int = 0,
    ) -> Any:
        """``num_episodes`` episodes of ``policy`` (default: before adaptation) on ``task``,
        as an :class:`~metarl.sampling.EpisodeBatch` (``.returns``: one per episode)."""
        from metarl.family import FamilyTaskSampler
        from metarl.sampling import InlineSampler

        self._gradient_agent("collect")
        policy = policy or self.exploration_policy()
        params = None if policy.params is None else self._params(policy)
        sampler = InlineSampler(FamilyTaskSampler(self.family), self.policy)
        try:
            return sampler.sample([Task(task)], num_episodes, params=params, seed=seed)
        finally:
            sampler.close()

    def adapt(self, policy: AdaptedPolicy, episodes: Any) -> AdaptedPolicy:
        """The policy after one adaptation step on ``episodes`` (collected with ``policy``)."""
        self._gradient_agent("adapt")
        return self.agent.adapt(policy, episodes)

    def _params(self, policy: AdaptedPolicy) -> dict[str, torch.Tensor]:
        assert policy.params is not None
        return {k: v.detach().cpu() for k, v in policy.params.items()}

    def predict(
        self,
        obs: np.ndarray,
        policy: AdaptedPolicy | None = None,
        deterministic: bool = True,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """The action for ``obs`` (one observation or a batch ``[N, obs_dim]``) under ``policy``
        (default: before adaptation), clipped to the action space; a sample from the policy's
        Gaussian (drawn from ``rng``) when ``deterministic`` is False."""
        self._gradient_agent("predict")
        policy = policy or self.exploration_policy()
        x = np.asarray(obs, dtype=np.float64)
        single = x.ndim == 1
        dtype = next(self.policy.parameters()).dtype
        with torch.no_grad():
            t = torch.as_tensor(x.reshape(-1, x.shape[-1]), dtype=dtype)
            if policy.params is None:
                mean, log_std = self.policy(t)
            else:
                params = {k: v[0] for k, v in self._params(policy).items()}
                mean, log_std = self.policy.functional(t, params)  # type: ignore[operator]
        action = mean.double().numpy()
        if not deterministic:
            rng = rng if rng is not None else np.random.default_rng()
            action = action + np.exp(log_std.double().numpy()) * rng.standard_normal(action.shape)
        space = self.family.action_space
        action = np.clip(action, space.low, space.high)
        return action[0] if single else action
