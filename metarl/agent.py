"""The one interface every meta-learner in ``metarl.agents`` meets.

Meta-training: :meth:`MetaAgent.train_step` runs one meta-iteration on a batch of tasks and
returns namespaced metrics. Meta-test, the same question for every algorithm (as in garage):
start from :meth:`MetaAgent.exploration_policy`, sample episodes with it, and call
:meth:`MetaAgent.adapt` with those episodes to get the policy for the next round — a gradient
step for MAML-TRPO and Reptile-PPO, a hidden-state update for RL^2.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from metarl.policies import Params
from metarl.tasks import Task

if TYPE_CHECKING:
    from metarl.sampling import EpisodeBatch, Sampler

__all__ = [
    "REMOVED_SETTINGS",
    "RENAMED_SETTINGS",
    "SUCCESS_KEY",
    "AdaptedPolicy",
    "MetaAgent",
    "config_from_dict",
    "renamed_config",
    "success_metrics",
    "success_rates",
]

RENAMED_SETTINGS = {"ppo_epochs": "update_epochs", "clip_value_loss": "clip_vloss"}
"""Config names of earlier versions -> today's (one name per concept across agents, as
cleanrl spells them); the ``config.json`` of a run made before still loads, resumes and
evaluates."""

REMOVED_SETTINGS: dict[str, Any] = {"hvp_subsample": 1.0}
"""Config settings of earlier versions that are gone -> the value that behaves as today: a
saved run with that value still loads, resumes and evaluates; another value is refused
(``hvp_subsample``: MAML-TRPO's curvature subsample, unused by every preset)."""

SUCCESS_KEY = "success"
"""The env info key of task success (Meta-World's); a batch that carries it gets success rates."""


def success_rates(batch: EpisodeBatch) -> torch.Tensor | None:
    """``[B, episodes_per_trial]`` 1.0 where an episode succeeded at some step, 0.0 where it did
    not (NaN: no step), or None when the batch carries no ``success`` info."""
    if SUCCESS_KEY not in batch.info:
        return None
    best = batch.episode_info(SUCCESS_KEY)
    return torch.where(torch.isnan(best), best, (best > 0).to(best.dtype))


def success_metrics(
    pre: EpisodeBatch,
    post: EpisodeBatch,
    pre_episode: int | None = None,
    post_episode: int | None = None,
) -> dict[str, float]:
    """``meta/success_pre_adapt`` and ``meta/success_post_adapt``: the fraction of episodes of
    ``pre`` and ``post`` that succeeded (``*_episode``: only that episode of each trial); {}
    when the batches carry no ``success`` info."""
    out: dict[str, float] = {}
    for name, batch, episode in (("pre", pre, pre_episode), ("post", post, post_episode)):
        rates = success_rates(batch)
        if rates is None:
            return {}
        if episode is not None:
            rates = rates[:, episode]
        out[f"meta/success_{name}_adapt"] = float(rates.nanmean())
    return out


@dataclass
class AdaptedPolicy:
    """How to act on each of K tasks during meta-test.

    Attributes:
        params: per-task parameters stacked on a leading task axis ``[K, ...]``, or None for
            the agent's meta-parameters on every task.
        state: what a recurrent agent carries into the next episodes (RL^2), else None.
        num_tasks: K.
    """

    params: Params | None
    num_tasks: int
    state: Any = None


class MetaAgent(ABC):
    """Base class of the meta-learners.

    Subclasses set ``name`` (the CLI name, e.g. ``"maml-trpo"``), ``config_cls`` (a frozen
    dataclass of hyperparameters) and ``PRESET_NAMES``, implement :meth:`preset`, declare how
    they adapt (``takes_step_size``, ``recurrent``) and own a policy module in :attr:`policy`.
    """

    name: ClassVar[str]
    config_cls: ClassVar[type]
    PRESET_NAMES: ClassVar[tuple[str, ...]]
    """The presets :meth:`preset` knows, e.g. ``("quick", "default", "paper")``."""
    takes_step_size: ClassVar[bool] = False
    """Whether :meth:`adapt` takes a step size ``lr`` (a gradient step of a given size, as
    MAML's meta-test protocol sets one per step); other agents refuse one."""
    recurrent: ClassVar[bool] = False
    """Whether the agent adapts in a recurrent state within a trial (RL^2): its meta-test
    plays one trial per task, step ``s`` being episode ``s + 1``."""
    policy: nn.Module
    config: Any
    """The agent's hyperparameters: an instance of :attr:`config_cls`."""

    def __init__(
        self,
        config: Any,
        observation_space: gym.spaces.Box,
        action_space: gym.spaces.Box,
        device: torch.device,
    ) -> None:
        if not isinstance(config, self.config_cls):
            raise TypeError(
                f"{self.name} takes a {self.config_cls.__name__}, got {type(config).__name__}"
            )
        for space, what in ((observation_space, "observation"), (action_space, "action")):
            if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
                raise ValueError(f"{self.name} needs a flat Box {what} space, got {space}")
        self.config = config
        self.observation_space = observation_space
        self.action_space = action_space
        self.device = torch.device(device)

    @classmethod
    @abstractmethod
    def preset(cls, name: str, family: str) -> Any:
        """The config of preset ``name`` (one of :attr:`PRESET_NAMES`) for the family called
        ``family``.

        Raises:
            ValueError: an unknown preset, naming the ones there are.
        """

    @abstractmethod
    def train_step(
        self, sampler: Sampler, tasks: list[Task], rng: np.random.Generator
    ) -> dict[str, float]:
        """One meta-iteration on ``tasks``; sampling seeds come from ``rng``.

        Returns metrics with namespaced keys (``meta/return_pre_adapt``, ``losses/...``,
        ``time/...``, ``env_steps``).
        """

    def exploration_policy(self, num_tasks: int) -> AdaptedPolicy:
        """The policy that collects the first episodes on ``num_tasks`` new tasks (the
        gradient agents': the meta-parameters themselves, ``params=None``)."""
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
        return AdaptedPolicy(params=None, num_tasks=num_tasks)

    def sample_episodes(
        self,
        sampler: Sampler,
        tasks: list[Task],
        params: Mapping[str, torch.Tensor] | None,
        rng: np.random.Generator,
        clock: dict[str, float],
    ) -> EpisodeBatch:
        """``config.episodes_per_task`` episodes of each task with its parameters in ``params``
        (``[K, ...]``; None: the policy's own), seeded from ``rng``; the time goes to
        ``clock["time/sampling"]``."""
        t0 = time.perf_counter()
        seed = int(rng.integers(2**62))
        cpu = None if params is None else {k: v.detach().cpu() for k, v in params.items()}
        batch = sampler.sample(tasks, self.config.episodes_per_task, params=cpu, seed=seed)
        clock["time/sampling"] = clock.get("time/sampling", 0.0) + time.perf_counter() - t0
        return batch

    @abstractmethod
    def adapt(
        self, policy: AdaptedPolicy, episodes: EpisodeBatch, lr: float | None = None
    ) -> AdaptedPolicy:
        """The policy after adapting on ``episodes`` (sampled with ``policy``).

        ``lr`` is the step size of this step for agents that declare ``takes_step_size``
        (None: the config's); the others raise ValueError when given one.
        """

    def _no_step_size(self, lr: float | None) -> None:
        """Refuse a step size (for agents that adapt with their own optimizer or state)."""
        if lr is not None:
            raise ValueError(
                f"{self.name} adapts with its own optimizer or state and takes no step size; "
                "step sizes apply to agents with gradient steps of a given size (maml-trpo)"
            )

    def adaptation_curve(
        self,
        sampler: Sampler,
        tasks: list[Task],
        num_steps: int,
        episodes_per_step: int,
        seed: int,
        step_sizes: list[float] | None = None,
    ) -> np.ndarray:
        """Mean return per task after 0..``num_steps`` adaptation steps: ``[num_steps + 1, K]``.

        The meta-test protocol for gradient-based agents: sample ``episodes_per_step`` episodes
        per task with the current policy, record their mean return, adapt on them, repeat.
        ``step_sizes[s]`` (optional) is the step size of adaptation step ``s`` for agents whose
        ``adapt`` takes an ``lr``. Recurrent agents override :meth:`adaptation_curves`
        (episode 1..K of a trial). A task whose episodes diverged (non-finite actions,
        observations or rewards) is NaN from that step on.
        """
        return self.adaptation_curves(
            sampler, tasks, num_steps, episodes_per_step, seed, step_sizes
        )["return"]

    def adaptation_curves(
        self,
        sampler: Sampler,
        tasks: list[Task],
        num_steps: int,
        episodes_per_step: int,
        seed: int,
        step_sizes: list[float] | None = None,
    ) -> dict[str, np.ndarray]:
        """:meth:`adaptation_curve` as ``{"return": ...}``, with ``"success"`` (the fraction of
        each task's episodes that succeeded, ``[num_steps + 1, K]``) where the env reports
        success."""
        curve, success = [], []
        # A task whose episodes diverged (NaN return) stays diverged: adapting on them
        # gives no policy worth scoring.
        diverged = np.zeros(len(tasks), dtype=bool)
        stages = self.adaptation_stages(
            sampler, tasks, num_steps, episodes_per_step, seed, step_sizes
        )
        for _, batch in stages:
            assert batch is not None
            # .cpu(): a device backend's batch lives on its device.
            means = batch.returns.reshape(len(tasks), episodes_per_step).mean(1).cpu().numpy()
            diverged |= ~np.isfinite(means)
            curve.append(np.where(diverged, np.nan, means))
            rates = success_rates(batch)
            if rates is not None:
                rate = rates[:, 0].reshape(len(tasks), episodes_per_step).mean(1).cpu().numpy()
                success.append(np.where(diverged, np.nan, rate))
        out = {"return": np.stack(curve).astype(np.float64)}
        if success:
            out["success"] = np.stack(success).astype(np.float64)
        return out

    def adaptation_stages(
        self,
        sampler: Sampler,
        tasks: list[Task],
        num_steps: int,
        episodes_per_step: int,
        seed: int,
        step_sizes: Sequence[float] | None = None,
        sample_last: bool = True,
    ) -> Iterator[tuple[AdaptedPolicy, EpisodeBatch | None]]:
        """The meta-test loop of gradient agents, written once for eval and the videos.

        Yields, for step ``0..num_steps``, the policy of that step and the
        ``episodes_per_step`` episodes per task it sampled (sampling seed ``k`` of
        ``SeedSequence(seed)`` at step ``k``); the policy then adapts on them (step size
        ``step_sizes[k]`` where given) for the next step. ``sample_last=False`` yields the
        final policy with no episodes (None), for a caller that only plays it.
        """
        check_curve_args(num_steps, episodes_per_step)
        if step_sizes is not None and len(step_sizes) < num_steps:
            raise ValueError(
                f"give one step size per adaptation step ({num_steps}), got {list(step_sizes)}"
            )
        seeds = np.random.SeedSequence(seed).generate_state(num_steps + 1, dtype=np.uint64)
        policy = self.exploration_policy(len(tasks))
        for step in range(num_steps + 1):
            if step == num_steps and not sample_last:
                yield policy, None
                return
            params = (
                None
                if policy.params is None
                else {k: v.detach().cpu() for k, v in policy.params.items()}
            )
            batch = sampler.sample(
                tasks, episodes_per_step, params=params, seed=int(seeds[step] >> np.uint64(2))
            )
            yield policy, batch
            if step < num_steps:
                lr = None if step_sizes is None else float(step_sizes[step])
                policy = self.adapt(policy, batch, lr=lr)

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly (tensors and plain values only)."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


def check_settings(owner: Any, checks: Sequence[tuple[bool, str, str]]) -> None:
    """The one validation style of every settings dataclass: raise ValueError for the first
    failed check ``(ok, field, rule)``, one line naming the class, the field, the rule and the
    value given (``ReptilePPOConfig: meta_lr must be in (0, 1], got 1.5``)."""
    for ok, name, rule in checks:
        if not ok:
            raise ValueError(
                f"{type(owner).__name__}: {name} must be {rule}, got {getattr(owner, name)!r}"
            )


def check_curve_args(num_steps: int, episodes_per_step: int) -> None:
    """Raise ValueError for a meta-test with negative steps or no episodes per step."""
    if num_steps < 0 or episodes_per_step < 1:
        raise ValueError(
            f"num_steps must be >= 0 and episodes_per_step >= 1, got {num_steps}, "
            f"{episodes_per_step}"
        )


def renamed_config(data: Mapping[str, Any]) -> dict[str, Any]:
    """A saved config's settings under today's names (see :data:`RENAMED_SETTINGS`), without
    the removed ones (:data:`REMOVED_SETTINGS`).

    Raises:
        ValueError: a removed setting saved with a value other than today's behaviour.
    """
    for name, value in data.items():
        if name in REMOVED_SETTINGS and value != REMOVED_SETTINGS[name]:
            raise ValueError(
                f"setting {name}={value!r} was removed; this metarl runs only as "
                f"{name}={REMOVED_SETTINGS[name]!r} did: use the metarl version that made the run"
            )
    return {RENAMED_SETTINGS.get(k, k): v for k, v in data.items() if k not in REMOVED_SETTINGS}


def config_from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    """Rebuild a config dataclass from its JSON form (lists back to tuples), strictly; settings
    saved under an earlier name (:data:`RENAMED_SETTINGS`) load under today's, and removed ones
    at the value that behaves as today (:data:`REMOVED_SETTINGS`) are dropped."""
    data = renamed_config(data)
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ValueError(f"{cls.__name__} has no settings {sorted(unknown)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**values)
