"""The sampler interface and the in-process backend.

Every backend answers ``sample(tasks, episodes_per_task, params=None, seed=...)`` with one
:class:`~metarl.sampling.EpisodeBatch`. Work is split between workers by whole tasks (a
contiguous range of task-major columns each); each worker runs free for the whole batch and the
sampler synchronises once per batch. The same seed gives the same bits on every backend and
with any number of workers.
"""

from __future__ import annotations

import copy
import itertools
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import numpy as np
import torch
from torch import nn

from metarl.family import FamilyTaskSampler, TaskFamily
from metarl.sampling.batch import _TIME_FIELDS, EpisodeBatch
from metarl.sampling.policy_step import check_policy, prepare_params
from metarl.sampling.rollout import INFO_PREFIX, EnvSource, Job, RolloutWorker, env_spaces
from metarl.tasks import Task, TaskSampler, qualified_name

__all__ = ["DivergedError", "InlineSampler", "Sampler", "WorkerError", "resolve_source"]

Array = np.ndarray


class WorkerError(RuntimeError):
    """A sampling worker died, hung or failed; the message names it (pid, columns)."""


class DivergedError(RuntimeError):
    """A batch had non-finite actions, observations or rewards (``on_diverged="raise"``).

    Attributes:
        kinds: what was non-finite (``"actions"``, ``"observations and rewards"``, ...).
        tasks: indices of the tasks with a diverged column.
        num_tasks: tasks in the batch.
    """

    def __init__(self, kinds: str, tasks: list[int], num_tasks: int) -> None:
        self.kinds, self.tasks, self.num_tasks = kinds, tasks, num_tasks
        super().__init__(f"non-finite {kinds} in {len(tasks)} of {num_tasks} tasks")


def resolve_source(source: str | TaskFamily | TaskSampler) -> EnvSource:
    """A family name, family or task sampler -> the family (fast path) or the task sampler."""
    if isinstance(source, str):
        from metarl.registry import make_family

        return make_family(source)
    if isinstance(source, FamilyTaskSampler):
        return source.family
    if isinstance(source, TaskFamily):
        return source
    if callable(getattr(source, "make_env", None)) and callable(getattr(source, "sample", None)):
        return source
    raise ValueError(
        "the sampler steps a task family (name or instance) or a task sampler with "
        f"sample(n, rng) and make_env(task); got {type(source).__name__}"
    )


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def split_tasks(num_tasks: int, num_workers: int) -> list[tuple[int, int]]:
    """Contiguous ``(start, stop)`` task ranges, one per worker that gets any task."""
    bounds = np.linspace(0, num_tasks, min(num_workers, num_tasks) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]


class Sampler(ABC):
    """Collects ``K`` tasks x ``E`` episodes into one padded episode batch.

    Args:
        source: a family name (``"HalfCheetahVel"``), a :class:`~metarl.envs.TaskFamily`, a
            :class:`~metarl.envs.FamilyTaskSampler` (all three: the batched MuJoCo fast path), or
            any task sampler with ``make_env(task)`` (the generic Gymnasium path).
        policy: a policy module: ``forward(obs) -> (mean, log_std)``, or a recurrent one
            (``recurrent = True``, ``initial_state(batch_size)``, ``forward(inputs, state) ->
            (mean, log_std, state)`` with inputs ``[obs, previous action, previous reward,
            done]``). It may live on a GPU: the sampler copies its parameters to the CPU once per
            batch.
        horizon: steps per episode; defaults to the family's (required for a task sampler
            whose env has no ``max_episode_steps``).
        fast_path: evaluate a :class:`~metarl.policies.GaussianMLPPolicy` with batched numpy
            matmuls instead of ``torch.func.vmap`` (same contract, less per-step overhead).

    Raises:
        ValueError: an unusable source, or a policy whose input or action shape does not fit
            the env (checked with one forward pass, before any stepping).
    """

    num_workers: int = 1
    on_diverged: str = "mark"
    """``"mark"``: a batch with diverged columns comes back with them marked
    (:attr:`EpisodeBatch.nonfinite`, NaN returns; what evaluation wants); ``"raise"``: sampling
    raises :class:`DivergedError` instead (what training wants: no update from such a batch)."""

    def __init__(
        self,
        source: str | TaskFamily | TaskSampler,
        policy: nn.Module,
        *,
        horizon: int | None = None,
        fast_path: bool = True,
    ) -> None:
        self.source = resolve_source(source)
        obs_space, act_space = env_spaces(self.source)
        self.obs_dim, self.act_dim = int(obs_space.shape[0]), int(act_space.shape[0])
        if horizon is None:
            horizon = self._default_horizon()
        self.horizon = _positive_int(horizon, "horizon")
        if not isinstance(policy, nn.Module):
            raise ValueError(f"policy must be a torch.nn.Module, got {type(policy).__name__}")
        self.policy = policy
        # Workers own a CPU copy of the module's structure; parameters travel per batch.
        self.worker_policy = copy.deepcopy(policy).to("cpu").eval()
        check_policy(self.worker_policy, self.obs_dim, self.act_dim)
        self.fast_path = bool(fast_path)
        self._closed = False

    def _default_horizon(self) -> int:
        if isinstance(self.source, TaskFamily):
            return self.source.horizon
        horizon = getattr(self.source, "horizon", None)
        if isinstance(horizon, int):
            return horizon
        env = self.source.make_env(None)
        try:
            steps = env.spec.max_episode_steps if env.spec is not None else None
        finally:
            env.close()
        if steps is None:
            raise ValueError(
                "horizon=None needs an env with max_episode_steps; pass horizon=... explicitly"
            )
        return int(steps)

    @property
    def recurrent(self) -> bool:
        return bool(getattr(self.policy, "recurrent", False))

    # -- the one sampling call ---------------------------------------------------------------
    def sample(
        self,
        tasks: Sequence[Mapping[str, Any]],
        episodes_per_task: int,
        params: Sequence[Mapping[str, torch.Tensor]] | Mapping[str, torch.Tensor] | None = None,
        *,
        seed: int,
        episodes_per_trial: int = 1,
    ) -> EpisodeBatch:
        """Sample ``episodes_per_task`` columns for each task into one batch.

        Args:
            tasks: ``K`` tasks (at least one).
            episodes_per_task: ``E``, columns per task (trials per task in trial mode).
            params: None (the policy's own parameters), one parameter dict per task, or a
                stacked dict with a leading task axis ``[K, ...]``.
            seed: the only source of randomness: the same seed gives the same batch, bit for
                bit, on every backend and with any number of workers.
            episodes_per_trial: ``M > 1`` is trial mode (RL^2): each column runs ``M``
                consecutive episodes of its task, a recurrent policy's state carried across
                them and reset only at the start of the trial. ``T = M * horizon``.

        Returns:
            The :class:`EpisodeBatch`, on the CPU (a device backend's: on its device).

        Raises:
            ValueError: zero tasks, bad counts or seed, or parameter sets that do not match
                the tasks or the policy (all before any stepping).
            WorkerError: a worker died or did not answer in time (no partial batch).
        """
        if self._closed:
            raise RuntimeError(
                f"{type(self).__name__} is closed (after close() or a worker failure); "
                "build a new sampler"
            )
        if isinstance(tasks, Mapping) or not isinstance(tasks, Sequence):
            raise ValueError(f"tasks must be a list of tasks, got {type(tasks).__name__}")
        if len(tasks) == 0:
            raise ValueError("sample() needs at least one task, got an empty task list")
        E = _positive_int(episodes_per_task, "episodes_per_task")
        M = _positive_int(episodes_per_trial, "episodes_per_trial")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        checked = [self._check_task(i, task) for i, task in enumerate(tasks)]
        K = len(checked)
        policy_params = prepare_params(self.policy, params, K)
        jobs = [
            Job(checked[a:b], a, E, M, int(seed), policy_params.slice(a, b))
            for a, b in split_tasks(K, self.num_workers)
        ]
        results = self._run(jobs)
        batch = self._assemble(results, checked, E, M)
        if self.on_diverged == "raise" and bool(batch.nonfinite.any()):
            diverged = batch.by_task("nonfinite").any(dim=1)
            raise DivergedError(batch.nonfinite_kinds(), diverged.nonzero().flatten().tolist(), K)
        return batch

    def _check_task(self, i: int, task: Mapping[str, Any]) -> Task:
        if not isinstance(task, Mapping):
            raise ValueError(
                f"task {i} is a {qualified_name(type(task))}, not a mapping of parameters (a "
                "sampler's opaque task objects travel as their index: pass the sampler's tasks)"
            )
        if isinstance(self.source, TaskFamily):
            return self.source.validate_task(task)
        return task if isinstance(task, Task) else Task(task)

    @abstractmethod
    def _run(self, jobs: list[Job]) -> list[dict[str, Array]]:
        """Run every job (one per worker) and return their results in order."""

    def _assemble(
        self, results: list[dict[str, Any]], tasks: list[Task], E: int, M: int
    ) -> EpisodeBatch:
        def join(key: str, axis: int) -> torch.Tensor:
            parts = [r[key] for r in results]
            if isinstance(parts[0], torch.Tensor):  # a device backend's, already on its device
                return parts[0] if len(parts) == 1 else torch.cat(parts, dim=axis)
            value = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=axis)
            if not value.flags.writeable:  # Ray hands out read-only zero-copy arrays
                value = value.copy()
            return torch.from_numpy(value)

        K = len(tasks)
        values = {key: join(key, 1) for key in _TIME_FIELDS}
        values.update(
            {
                key: join(key, 0)
                for key in (
                    "last_obs",
                    "returns",
                    "lengths",
                    "unstable",
                    "episode_returns",
                    "episode_lengths",
                    "nonfinite",
                )
            }
        )
        info = {
            key.removeprefix(INFO_PREFIX): join(key, 1)
            for key in results[0]
            if key.startswith(INFO_PREFIX)
        }
        device = values["obs"].device
        values["task_index"] = torch.arange(K, device=device).repeat_interleave(E)
        values["episode_index"] = torch.arange(E, device=device).repeat(K)
        return EpisodeBatch(
            **values,
            tasks=list(tasks),
            num_tasks=K,
            episodes_per_task=E,
            episodes_per_trial=M,
            info=info,
        )

    # -- lifetime ----------------------------------------------------------------------------
    def close(self) -> None:
        """Free the workers; the sampler cannot sample afterwards."""
        self._closed = True

    def __enter__(self) -> Sampler:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class InlineSampler(Sampler):
    """The in-process backend: one :class:`RolloutWorker` in this process steps every column."""

    def __init__(
        self,
        source: str | TaskFamily | TaskSampler,
        policy: nn.Module,
        *,
        horizon: int | None = None,
        fast_path: bool = True,
    ) -> None:
        super().__init__(source, policy, horizon=horizon, fast_path=fast_path)
        self.worker = RolloutWorker(self.source, self.worker_policy, self.horizon, self.fast_path)

    def _run(self, jobs: list[Job]) -> list[dict[str, Array]]:
        threads = torch.get_num_threads()
        try:
            return [self.worker.run(job) for job in jobs]
        finally:
            torch.set_num_threads(threads)

    def close(self) -> None:
        self.worker.close()
        super().close()
