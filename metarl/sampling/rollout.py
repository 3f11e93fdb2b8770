"""The rollout loop every backend runs: one worker's columns for a whole batch, no sync per step.

A :class:`RolloutWorker` owns a batch of environments (a family's fast
:class:`~metarl.envs.BatchStepper`, or :class:`GymEnvBatch` for any Gymnasium env) and a copy of
the policy module. :meth:`RolloutWorker.run` takes a :class:`Job` (its tasks, the seed, the
parameters) and returns numpy arrays for its columns; the sampler concatenates the workers'
columns into one :class:`~metarl.sampling.EpisodeBatch`.

Randomness: column ``b`` of a batch (global, task-major) draws everything from
``SeedSequence(seed).spawn(B)[b]``: its action noise for the whole horizon (one call at batch
start) and its initial states, whichever worker owns it.

Memory: the generic path keeps one bounded pool of envs per worker (:class:`GymEnvBatch`, at
most ``max_envs`` of the source, :data:`DEFAULT_MAX_ENVS` by default, or one task's columns if
that is more). A worker with more columns than that runs them in waves of whole tasks, back to
back on the same envs, which take each wave's tasks through ``set_task``. A wave is exactly a
worker's job with fewer tasks, so the batch is the same bits as with one env per column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

import gymnasium as gym
import mujoco
import numpy as np
import torch
from torch import nn

from metarl.family import BatchStep, TaskFamily
from metarl.mujoco_messages import route_mujoco_warnings
from metarl.sampling.batch import (
    _TIME_FIELDS,
    NONFINITE_ACTIONS,
    NONFINITE_OBSERVATIONS,
    NONFINITE_REWARDS,
)
from metarl.sampling.policy_step import PolicyParams, make_policy_step
from metarl.tasks import Task, TaskSampler

__all__ = ["DEFAULT_MAX_ENVS", "EnvSource", "GymEnvBatch", "Job", "RolloutWorker", "column_rngs"]

Array = np.ndarray
EnvSource: TypeAlias = "TaskFamily | TaskSampler"
DEFAULT_MAX_ENVS = 40
"""Envs a worker's generic-path pool holds unless the source sets ``max_envs`` (a Meta-World
env is about 20 MiB: 40 of them stay within a GB per worker)."""
# Result keys with a leading time axis (the rest lead with the column axis); env info values
# travel as "info/<key>", time-major.
_TIME_KEYS = frozenset(_TIME_FIELDS)
INFO_PREFIX = "info/"
_UNSTABLE_WARNINGS = tuple(
    int(w)
    for w in (
        mujoco.mjtWarning.mjWARN_BADQPOS,
        mujoco.mjtWarning.mjWARN_BADQVEL,
        mujoco.mjtWarning.mjWARN_BADQACC,
    )
)


class _EnvBatch(Protocol):
    def set_tasks(
        self, tasks: Sequence[Mapping[str, Any]], indices: Sequence[int] | None = None
    ) -> None: ...

    def reset(
        self, rngs: Sequence[np.random.Generator], indices: Sequence[int] | None = None
    ) -> Array: ...

    def step(self, actions: Array, indices: Sequence[int] | None = None) -> BatchStep: ...

    def close(self) -> None: ...


@dataclass
class Job:
    """What one worker samples in one batch.

    Attributes:
        tasks: the worker's tasks (its groups), ``[G]``.
        first_task: global index of ``tasks[0]`` (fixes the global column numbers and seeds).
        episodes_per_task: ``E``, columns per task.
        episodes_per_trial: episodes per column (``M``; 1 outside trial mode).
        seed: the batch seed.
        params: the policy parameters of these tasks (sliced).
    """

    tasks: list[Task]
    first_task: int
    episodes_per_task: int
    episodes_per_trial: int
    seed: int
    params: PolicyParams


def column_rngs(
    seed: int, columns: Sequence[int]
) -> tuple[list[np.random.Generator], list[np.random.Generator]]:
    """``(noise, reset)`` generators of the given global columns of a batch with ``seed``.

    Column ``b``'s stream is ``SeedSequence(seed).spawn(B)[b]`` (independent of ``B``), split
    into one generator for action noise and one for initial states.
    """
    noise, reset = [], []
    for b in columns:
        child = np.random.SeedSequence(seed, spawn_key=(int(b),))
        a, r = child.spawn(2)
        noise.append(np.random.Generator(np.random.PCG64(a)))
        reset.append(np.random.Generator(np.random.PCG64(r)))
    return noise, reset


class GymEnvBatch:
    """The generic path: a pool of Gymnasium envs of a task sampler, stepped via ``env.step``.

    The first ``num_envs`` slots of the pool are in use (:meth:`resize` changes that; built envs
    beyond it are kept for later). A slot builds its env with ``sampler.make_env(task)`` once;
    a new task goes to the env it has through ``sampler.retask(env, task)`` where the sampler
    has that method and it returns True, else to another slot's env that the same call freed
    and that takes it, and a new env is built only where none does (or the sampler has no
    ``retask``). Reset seeds come from the column's generator. ``info["truncated"]`` of
    a step carries the env's own truncation (e.g. a ``TimeLimit``); the step's ``info`` values
    named by the sampler's ``info_keys`` (Meta-World's ``success``) come as ``[n]`` arrays.
    """

    def __init__(self, sampler: Any, num_envs: int, render_mode: str | None = None) -> None:
        self.sampler = sampler
        self.render_mode = render_mode
        self.info_keys: tuple[str, ...] = tuple(getattr(sampler, "info_keys", ()))
        self.envs: list[gym.Env | None] = []
        self._tasks: list[Task | None] = []
        self.num_envs = 0
        self._renderer: Any = None
        self.resize(num_envs)

    @property
    def tasks(self) -> list[Task | None]:
        """The task of every slot in use (None: not set yet)."""
        return self._tasks[: self.num_envs]

    def resize(self, num_envs: int) -> None:
        """Use the first ``num_envs`` slots of the pool (more slots are added empty)."""
        while len(self.envs) < num_envs:
            self.envs.append(None)
            self._tasks.append(None)
        self.num_envs = int(num_envs)

    def _make(self, task: Task) -> gym.Env:
        if self.render_mode is not None:
            return self.sampler.make_env(task, render_mode=self.render_mode)
        return self.sampler.make_env(task)

    def set_tasks(
        self, tasks: Sequence[Mapping[str, Any]], indices: Sequence[int] | None = None
    ) -> None:
        idx = range(self.num_envs) if indices is None else indices
        retask = getattr(self.sampler, "retask", None)
        pending: list[tuple[int, Task]] = []
        refused: list[tuple[gym.Env, Task | None]] = []
        for j, i in enumerate(idx):
            given = tasks[j]
            task = given if isinstance(given, Task) else Task(given)
            env = self.envs[i]
            if env is not None and self._tasks[i] == task:
                continue
            if env is not None and retask is not None and retask(env, task):
                self._tasks[i] = task
                continue
            if env is not None:
                refused.append((env, self._tasks[i]))
                self.envs[i], self._tasks[i] = None, None
            pending.append((i, task))
        # An env its own slot's task refused may take another slot's (Meta-World's envs take
        # tasks of their own env class only); the rest are closed before new envs are built.
        for i, task in pending:
            for k, (env, _) in enumerate(refused):
                if retask is not None and retask(env, task):
                    self.envs[i], self._tasks[i] = env, task
                    del refused[k]
                    break
        for env, _ in refused:
            env.close()
        for i, task in pending:
            if self.envs[i] is None:
                self.envs[i] = self._make(task)
                self._tasks[i] = task

    def _env(self, i: int) -> gym.Env:
        env = self.envs[i]
        if env is None:
            raise RuntimeError("GymEnvBatch: set_tasks before reset")
        return env

    def reset(
        self, rngs: Sequence[np.random.Generator], indices: Sequence[int] | None = None
    ) -> Array:
        idx = range(self.num_envs) if indices is None else indices
        obs = [self._env(i).reset(seed=int(rngs[j].integers(2**31)))[0] for j, i in enumerate(idx)]
        return np.asarray(obs, dtype=np.float64).reshape(len(obs), -1)

    def step(self, actions: Array, indices: Sequence[int] | None = None) -> BatchStep:
        idx = range(self.num_envs) if indices is None else indices
        obs, rew, term, trunc = [], [], [], []
        keys = self.info_keys
        kept: dict[str, list[float]] = {k: [] for k in keys}
        for j, i in enumerate(idx):
            o, r, te, tr, info = self._env(i).step(actions[j])
            obs.append(o)
            rew.append(r)
            term.append(te)
            trunc.append(tr)
            for k in keys:
                if k not in info:
                    raise KeyError(
                        f"{type(self._env(i).unwrapped).__name__}.step returned no info[{k!r}], "
                        f"which the sampler's info_keys {list(keys)} name"
                    )
                kept[k].append(float(info[k]))
        return BatchStep(
            obs=np.asarray(obs, dtype=np.float64).reshape(len(obs), -1),
            reward=np.asarray(rew, dtype=np.float64),
            terminated=np.asarray(term, dtype=bool),
            terms={},
            info={
                "truncated": np.asarray(trunc, dtype=bool),
                **{k: np.asarray(v, dtype=np.float64) for k, v in kept.items()},
            },
        )

    def warning_views(self) -> list[Array] | None:
        envs = self.envs[: self.num_envs]
        datas = [getattr(e.unwrapped, "data", None) if e is not None else None for e in envs]
        if any(not isinstance(d, mujoco.MjData) for d in datas):
            return None
        return [d.warning.number for d in datas]  # type: ignore[union-attr]

    def render(self, index: int, width: int = 480, height: int = 480, camera: Any = None) -> Array:
        """An ``[height, width, 3]`` uint8 frame of env ``index`` (its MuJoCo model and data,
        from ``camera`` or the sampler's ``render_camera``; else ``env.render()``)."""
        env = self._env(index).unwrapped
        model, data = getattr(env, "model", None), getattr(env, "data", None)
        if not isinstance(model, mujoco.MjModel) or not isinstance(data, mujoco.MjData):
            frame = env.render()
            if not isinstance(frame, np.ndarray) or frame.ndim != 3:
                raise ValueError(
                    f"{type(env).__name__} renders no frames; build it with "
                    "render_mode='rgb_array' (its make_env takes render_mode=)"
                )
            return frame
        size = (width, height)
        if self._renderer is None or self._renderer[0] != (size, id(model)):
            if self._renderer is not None:
                self._renderer[1].close()
            model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
            model.vis.global_.offheight = max(model.vis.global_.offheight, height)
            self._renderer = ((size, id(model)), mujoco.Renderer(model, height=height, width=width))
        renderer = self._renderer[1]
        if camera is None:
            camera = getattr(self.sampler, "render_camera", -1)
        renderer.update_scene(data, camera=camera)
        return renderer.render().copy()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer[1].close()
            self._renderer = None
        for env in self.envs:
            if env is not None:
                env.close()
        self.envs = [None] * len(self.envs)
        self._tasks = [None] * len(self._tasks)


def env_spaces(source: EnvSource) -> tuple[gym.spaces.Box, gym.spaces.Box]:
    """``(observation_space, action_space)`` of a family or task sampler (Box spaces only)."""
    obs_space = getattr(source, "observation_space", None)
    act_space = getattr(source, "action_space", None)
    if (obs_space is None or act_space is None) and not isinstance(source, TaskFamily):
        route_mujoco_warnings()  # a user's sampler may build MuJoCo envs of its own
        probe = source.make_env(None)
        obs_space, act_space = probe.observation_space, probe.action_space
        probe.close()
    for what, space in (("observation", obs_space), ("action", act_space)):
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"the sampler needs a flat Box {what} space, got {space}")
    return obs_space, act_space  # type: ignore[return-value]


class RolloutWorker:
    """Steps one worker's columns for whole batches.

    Args:
        source: a :class:`~metarl.envs.TaskFamily` (fast path) or any task sampler with
            ``make_env`` (generic Gymnasium path).
        policy: the policy module (its parameters are replaced per batch by the job's).
        horizon: steps per episode (default: the family's).
        fast_path: evaluate a GaussianMLPPolicy with the numpy MLP evaluator.

    A source stepped through ``env.step`` (a task sampler, or a family with ``gym_envs``) gets
    one pool of at most ``source.max_envs`` envs (:data:`DEFAULT_MAX_ENVS`), or one task's
    columns where those are more.
    """

    def __init__(
        self, source: EnvSource, policy: nn.Module, horizon: int, fast_path: bool = True
    ) -> None:
        route_mujoco_warnings()  # a user's sampler may build MuJoCo envs of its own
        self.source = source
        self.pooled = not isinstance(source, TaskFamily) or bool(getattr(source, "gym_envs", False))
        max_envs = getattr(source, "max_envs", None)
        self.max_envs = DEFAULT_MAX_ENVS if max_envs is None else int(max_envs)
        if self.max_envs < 1:
            raise ValueError(f"max_envs must be a positive int, got {max_envs!r}")
        self._pool: GymEnvBatch | None = None
        self.info_keys: tuple[str, ...] = tuple(getattr(source, "info_keys", ()))
        self.policy = policy
        self.horizon = horizon
        self.fast_path = fast_path
        obs_space, act_space = env_spaces(source)
        self.obs_dim = int(obs_space.shape[0])
        self.act_dim = int(act_space.shape[0])
        self.low = np.asarray(act_space.low, dtype=np.float64)
        self.high = np.asarray(act_space.high, dtype=np.float64)
        self._batches: dict[int, tuple[_EnvBatch, list[Array] | None]] = {}

    def _env_batch(self, n: int) -> tuple[_EnvBatch, list[Array] | None]:
        if self.pooled:
            if self._pool is None:
                self._pool = GymEnvBatch(self.source, n)
            self._pool.resize(n)
            return self._pool, None
        if n not in self._batches:
            if isinstance(self.source, TaskFamily):
                batch: Any = self.source.make_batch(n)
                datas = getattr(batch, "datas", None)
                views = [d.warning.number for d in datas] if datas is not None else None
            else:
                batch = GymEnvBatch(self.source, n)
                views = None
            self._batches[n] = (batch, views)
        return self._batches[n]

    def waves(self, job: Job) -> list[Job]:
        """The job in waves of whole tasks that fit the env pool (one wave off the pool)."""
        G, E = len(job.tasks), job.episodes_per_task
        if not self.pooled or G * E <= self.max_envs:
            return [job]
        per = max(1, self.max_envs // E)
        return [
            Job(
                job.tasks[a : a + per],
                job.first_task + a,
                E,
                job.episodes_per_trial,
                job.seed,
                job.params.slice(a, min(a + per, G)),
            )
            for a in range(0, G, per)
        ]

    def run(self, job: Job) -> dict[str, Array]:
        """Sample the job's columns; returns ``[T, n, ...]`` and ``[n, ...]`` numpy arrays."""
        # A diverged policy's NaNs are caught and marked per column (``nonfinite``); numpy's
        # warnings about them on the way would only be noise.
        with np.errstate(invalid="ignore", over="ignore"):
            waves = self.waves(job)
            if len(waves) == 1:
                return self._run_wave(job)
            parts = [self._run_wave(wave) for wave in waves]
        return {
            key: np.concatenate(
                [p[key] for p in parts],
                axis=1 if key in _TIME_KEYS or key.startswith(INFO_PREFIX) else 0,
            )
            for key in parts[0]
        }

    def _run_wave(self, job: Job) -> dict[str, Array]:
        torch.set_num_threads(1)
        G, E, M, H = len(job.tasks), job.episodes_per_task, job.episodes_per_trial, self.horizon
        n, T, A = G * E, H * M, self.act_dim
        env, views = self._env_batch(n)
        env.set_tasks([task for task in job.tasks for _ in range(E)])
        if isinstance(env, GymEnvBatch):
            views = env.warning_views()
        first = job.first_task * E
        noise_rngs, reset_rngs = column_rngs(job.seed, range(first, first + n))
        eps = np.empty((T, n, A), dtype=np.float32)
        for j, rng in enumerate(noise_rngs):
            eps[:, j] = rng.standard_normal((T, A), dtype=np.float32)
        step = make_policy_step(self.policy, job.params, G, E, A, self.fast_path)
        step.begin(eps)

        obs_buf = np.zeros((T, n, self.obs_dim), dtype=np.float32)
        act_buf = np.zeros((T, n, A), dtype=np.float32)
        rew_buf = np.zeros((T, n), dtype=np.float64)
        logp_buf = np.zeros((T, n), dtype=np.float32)
        term_buf = np.zeros((T, n), dtype=bool)
        trunc_buf = np.zeros((T, n), dtype=bool)
        valid = np.zeros((T, n), dtype=bool)
        ep_id = np.zeros((T, n), dtype=np.int64)
        ep_start = np.zeros((T, n), dtype=bool)
        last_obs = np.zeros((n, self.obs_dim), dtype=np.float32)
        unstable = np.zeros(n, dtype=bool)
        ep_ret = np.zeros((n, M), dtype=np.float64)
        ep_len = np.zeros((n, M), dtype=np.int64)
        nonfinite = np.zeros(n, dtype=np.uint8)
        info_buf = {key: np.zeros((T, n), dtype=np.float32) for key in self.info_keys}

        obs = np.array(env.reset(reset_rngs), dtype=np.float64)
        t_ep = np.zeros(n, dtype=np.int64)
        episode = np.zeros(n, dtype=np.int64)
        live = np.ones(n, dtype=bool)
        live_idx = np.arange(n)
        all_live = True
        prev_action = np.zeros((n, A), dtype=np.float32)
        prev_reward = np.zeros(n, dtype=np.float64)
        prev_done = np.zeros(n, dtype=bool)
        low, high = self.low, self.high
        pos_warn, vel_warn, acc_warn = _UNSTABLE_WARNINGS

        for t in range(T):
            actions, log_probs = step.act(t, obs, prev_action, prev_reward, prev_done)
            idx: Any = slice(None) if all_live else live_idx
            live_obs = obs if all_live else obs[live_idx]
            live_act = actions if all_live else actions[live_idx]
            obs_buf[t, idx] = live_obs
            act_buf[t, idx] = live_act
            logp_buf[t, idx] = log_probs if all_live else log_probs[live_idx]
            valid[t, idx] = True
            ep_id[t, idx] = episode if all_live else episode[live_idx]
            ep_start[t, idx] = (t_ep == 0) if all_live else (t_ep[live_idx] == 0)

            env_act = np.clip(live_act, low, high)
            act_bad = ~np.isfinite(live_act).all(axis=1)
            if act_bad.any():
                env_act[act_bad] = 0.0  # the env never sees them; the step is dropped below
            result = env.step(env_act, None if all_live else live_idx)  # type: ignore[arg-type]
            next_obs, reward = result.obs, result.reward
            for key, buf in info_buf.items():
                buf[t, idx] = result.info[key]
            obs_bad = ~np.isfinite(next_obs).all(axis=1)
            rew_bad = ~np.isfinite(reward)
            bad = act_bad | obs_bad | rew_bad
            if bad.any():
                # A non-finite value diverged the column: marked, never scored as a return.
                code = (
                    act_bad * NONFINITE_ACTIONS
                    | obs_bad * NONFINITE_OBSERVATIONS
                    | rew_bad * NONFINITE_REWARDS
                ).astype(np.uint8)
                nonfinite[live_idx[bad]] = code[bad]
            if views is not None:
                # MuJoCo resets an env whose state blew up and counts a warning instead.
                for j, i in enumerate(live_idx):
                    w = views[i]
                    if w[pos_warn] or w[vel_warn] or w[acc_warn]:
                        bad[j] = True
            terminated = result.terminated & ~bad
            t_ep[idx] += 1
            at_horizon = t_ep[idx] >= H
            env_trunc = result.info.get("truncated")
            cut = at_horizon if env_trunc is None else (at_horizon | env_trunc)
            truncated = cut & ~terminated & ~bad
            reward = np.where(bad, 0.0, reward)
            rew_buf[t, idx] = reward
            term_buf[t, idx] = terminated
            trunc_buf[t, idx] = truncated
            cols = live_idx
            ep_ret[cols, episode[cols]] += reward
            ep_len[cols, episode[cols]] += ~bad
            if bad.any():
                # The blown-up step is dropped; the episode ends at the step before it.
                broken = cols[bad]
                valid[t, broken] = False
                obs_buf[t, broken] = 0.0
                act_buf[t, broken] = 0.0
                logp_buf[t, broken] = 0.0
                ep_id[t, broken] = 0
                ep_start[t, broken] = False
                started = t_ep[broken] > 1
                if t > 0:
                    trunc_buf[t - 1, broken[started]] = True
                last_obs[broken] = obs[broken]
                unstable[broken] = True
                live[broken] = False
                next_obs = np.where(bad[:, None], obs[cols], next_obs)
            obs[cols] = next_obs
            ended = (terminated | truncated) & ~bad
            if ended.any():
                done_cols = cols[ended]
                more = episode[done_cols] + 1 < M
                again = done_cols[more]
                finished = done_cols[~more]
                last_obs[finished] = next_obs[ended][~more]
                live[finished] = False
                if again.size:
                    obs[again] = env.reset([reset_rngs[i] for i in again], again)
                    episode[again] += 1
                    t_ep[again] = 0
            if step.recurrent:
                prev_action = actions
                prev_reward = np.zeros(n)
                prev_reward[cols] = reward
                prev_done = np.zeros(n, dtype=bool)
                prev_done[cols] = ended
            if not live.all():
                all_live = False
                live_idx = np.flatnonzero(live)
                if live_idx.size == 0:
                    break

        diverged = np.flatnonzero(nonfinite)
        if diverged.size:
            # The diverged episode and the ones it kept from running have no return.
            later = np.arange(M)[None, :] >= episode[diverged, None]
            ep_ret[diverged] = np.where(later, np.nan, ep_ret[diverged])
        for buf in info_buf.values():
            buf[~valid] = 0.0  # padding and dropped (blown-up) steps
        return {
            **{INFO_PREFIX + key: buf for key, buf in info_buf.items()},
            "obs": obs_buf,
            "actions": act_buf,
            "rewards": rew_buf.astype(np.float32),
            "log_probs": logp_buf,
            "terminated": term_buf,
            "truncated": trunc_buf,
            "valid": valid,
            "episode_id": ep_id,
            "episode_start": ep_start,
            "last_obs": last_obs,
            "returns": ep_ret.sum(axis=1).astype(np.float32),
            "lengths": ep_len.sum(axis=1),
            "unstable": unstable,
            "episode_returns": ep_ret.astype(np.float32),
            "episode_lengths": ep_len,
            "nonfinite": nonfinite,
        }

    def close(self) -> None:
        for batch, _ in self._batches.values():
            batch.close()
        self._batches.clear()
        if self._pool is not None:
            self._pool.close()
            self._pool = None
