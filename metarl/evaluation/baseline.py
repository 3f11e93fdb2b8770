"""The honest baseline: Stable-Baselines3's PPO learning each held-out task from scratch with the
same env steps per adaptation step as the meta-learner gets."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from metarl.tasks import Task

if TYPE_CHECKING:
    from metarl.family import TaskFamily


def _largest_divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def _rollout_returns(model: Any, env: Any, episodes: int, seed: int) -> list[float]:
    """Returns of ``episodes`` stochastic episodes of an SB3 model in ``env``."""
    out = []
    for e in range(episodes):
        obs, _ = env.reset(seed=seed + e)
        total, done = 0.0, False
        while not done:
            action, _ = model.predict(obs, deterministic=False)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        out.append(total)
    return out


def sb3_baseline(
    family: TaskFamily,
    tasks: Sequence[Task],
    num_steps: int,
    steps_per_step: int,
    eval_episodes: int,
    seed: int,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Stable-Baselines3 PPO learning each task from scratch: ``[len(tasks), num_steps + 1]``.

    Per task, a fresh ``PPO("MlpPolicy")`` with one rollout of ``steps_per_step`` env steps per
    update; entry ``[k, s]`` is the mean return of ``eval_episodes`` stochastic episodes after
    ``s`` updates (``s * steps_per_step`` env steps of learning, the budget the meta-learner
    got for ``s`` adaptation steps). Evaluation episodes are not counted as learning.

    Args:
        family: the task family (variant and horizon as in the run).
        tasks: the tasks to learn.
        num_steps: updates (adaptation steps) K.
        steps_per_step: env steps per update (>= 2).
        eval_episodes: episodes per evaluation.
        seed: seed of the PPO models and evaluation resets (task k uses ``seed + k``).
        progress: called with 1 after every task (for a progress bar counting tasks).
    """
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import Logger

    from metarl.family import MetaEnv

    if steps_per_step < 2:
        raise ValueError(
            f"the baseline needs at least 2 env steps per update, got {steps_per_step}"
        )
    if eval_episodes < 1:
        raise ValueError(f"eval_episodes must be >= 1, got {eval_episodes}")
    out = np.zeros((len(tasks), num_steps + 1))
    batch_size = _largest_divisor_at_most(steps_per_step, 64)
    for k, task in enumerate(tasks):
        env, eval_env = MetaEnv(family), MetaEnv(family)
        env.set_task(task)
        eval_env.set_task(task)
        try:
            model = PPO(
                "MlpPolicy",
                env,
                n_steps=steps_per_step,
                batch_size=batch_size,
                seed=seed + k,
                device="cpu",
                verbose=0,
            )
            # SB3's default logger makes a fresh SB3-<time> folder under /tmp for every model.
            model.set_logger(Logger(folder=None, output_formats=[]))
            for s in range(num_steps + 1):
                if s > 0:
                    model.learn(total_timesteps=steps_per_step, reset_num_timesteps=False)
                returns = _rollout_returns(model, eval_env, eval_episodes, 10_000 * (seed + k))
                out[k, s] = float(np.mean(returns))
        finally:
            env.close()
            eval_env.close()
        if progress is not None:
            progress(1)
    return out
