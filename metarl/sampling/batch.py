"""The episode batch: padded, time-major ``[T, B, ...]`` tensors with masks and per-task views.

Columns are task-major: column ``b = k * E + e`` holds episode (or trial) ``e`` of task ``k``,
so the columns of one task are a contiguous slice and ``[T, K, E, ...]`` reshapes are free.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from metarl.tasks import Task

__all__ = [
    "NONFINITE_ACTIONS",
    "NONFINITE_OBSERVATIONS",
    "NONFINITE_REWARDS",
    "EpisodeBatch",
    "describe_nonfinite",
    "task_major",
    "time_major",
]

NONFINITE_ACTIONS = 1
"""Bit of :attr:`EpisodeBatch.nonfinite`: the policy gave a NaN or infinite action."""
NONFINITE_OBSERVATIONS = 2
"""Bit of :attr:`EpisodeBatch.nonfinite`: the env returned a NaN or infinite observation."""
NONFINITE_REWARDS = 4
"""Bit of :attr:`EpisodeBatch.nonfinite`: the env returned a NaN or infinite reward."""
_NONFINITE_NAMES = (
    (NONFINITE_ACTIONS, "actions"),
    (NONFINITE_OBSERVATIONS, "observations"),
    (NONFINITE_REWARDS, "rewards"),
)


def task_major(x: Tensor, num_tasks: int, order: str = "time") -> Tensor:
    """A time-major batch tensor ``[T, K*E, ...]`` as one row per task: ``[K, T*E, ...]``.

    ``order="time"``: within a task, step ``t`` of every episode comes together (element
    ``t * E + e``), the order per-task fits and PPO minibatches use. ``order="episode"``: each
    episode's steps are contiguous (element ``e * T + t``), the order of MAML's gathered steps.
    Both are pure re-layouts (no arithmetic); :func:`time_major` inverts the first.
    """
    T, B = x.shape[:2]
    if num_tasks < 1 or B % num_tasks:
        raise ValueError(f"{B} columns do not split into {num_tasks} tasks")
    E, rest = B // num_tasks, x.shape[2:]
    y = x.reshape(T, num_tasks, E, *rest)
    if order == "time":
        y = y.transpose(0, 1)  # [K, T, E, ...]
    elif order == "episode":
        y = y.permute(1, 2, 0, *range(3, y.dim()))  # [K, E, T, ...]
    else:
        raise ValueError(f"order is 'time' or 'episode', got {order!r}")
    return y.reshape(num_tasks, T * E, *rest)


def time_major(x: Tensor, horizon: int) -> Tensor:
    """``[K, T*E, ...]`` in :func:`task_major`'s ``"time"`` order back to ``[T, K*E, ...]``."""
    K, n = x.shape[:2]
    if n % horizon:
        raise ValueError(f"{n} steps per task do not split into a horizon of {horizon}")
    rest = x.shape[2:]
    y = x.reshape(K, horizon, n // horizon, *rest).transpose(0, 1)
    return y.reshape(horizon, K * (n // horizon), *rest)


def describe_nonfinite(bits: int) -> str:
    """``"actions"``, ``"observations and rewards"``, ... for an OR of ``NONFINITE_*`` bits."""
    names = [name for bit, name in _NONFINITE_NAMES if bits & bit]
    if not names:
        return "nothing"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


# Per-column fields (leading axis B) and time-major fields (leading axes T, B).
_TIME_FIELDS = (
    "obs",
    "actions",
    "rewards",
    "log_probs",
    "terminated",
    "truncated",
    "valid",
    "episode_id",
    "episode_start",
)
_COLUMN_FIELDS = (
    "last_obs",
    "task_index",
    "episode_index",
    "returns",
    "lengths",
    "unstable",
    "episode_returns",
    "episode_lengths",
    "nonfinite",
)
_ALIGN = 16


@dataclass
class EpisodeBatch:
    """Episodes of ``num_tasks`` tasks, ``episodes_per_task`` columns each, padded to ``T`` steps.

    Time-major fields are ``[T, B, ...]`` with ``B = num_tasks * episodes_per_task``; padding
    (steps after a column's last step) is zero and ``valid`` is False there. In trial mode
    (``episodes_per_trial > 1``, RL^2) every column is one trial: ``episodes_per_trial``
    consecutive episodes of one task, ``episode_id`` says which, and ``episode_start`` marks
    each episode's first step.

    Attributes:
        obs: ``[T, B, obs_dim]`` float32, the observation the policy saw at step ``t``.
        actions: ``[T, B, act_dim]`` float32, the policy's unclipped sample (the env received
            it clipped to the action space).
        rewards: ``[T, B]`` float32.
        log_probs: ``[T, B]`` float32, log-density of ``actions`` under the sampling policy.
        terminated: ``[T, B]`` bool, the episode ended by the MDP at step ``t``.
        truncated: ``[T, B]`` bool, the episode was cut at step ``t`` (horizon, or the step
            before a physics blow-up); bootstrap from the next observation.
        valid: ``[T, B]`` bool, a real env step.
        episode_id: ``[T, B]`` long, index of the episode within the column's trial (0 outside
            trial mode and in padding).
        episode_start: ``[T, B]`` bool, the first step of an episode.
        last_obs: ``[B, obs_dim]`` float32, the observation after each column's final step.
        task_index: ``[B]`` long, index into ``tasks``.
        episode_index: ``[B]`` long, index of the column within its task.
        returns: ``[B]`` float32, undiscounted sum of rewards of the column (of the trial).
        lengths: ``[B]`` long, valid steps of the column.
        unstable: ``[B]`` bool, the column ended in a physics blow-up (NaN/Inf or MuJoCo's
            instability warning); its last, broken step is not in the batch.
        episode_returns: ``[B, episodes_per_trial]`` float32, return of each episode.
        episode_lengths: ``[B, episodes_per_trial]`` long, length of each episode.
        nonfinite: ``[B]`` uint8, what ended a column that *diverged*: an OR of
            :data:`NONFINITE_ACTIONS`, :data:`NONFINITE_OBSERVATIONS` and
            :data:`NONFINITE_REWARDS` (0: it did not). A diverged column is also ``unstable``;
            its ``returns`` and the ``episode_returns`` of its diverged episode and of every
            later one are NaN, never a number that ranks (its kept steps stay finite).
        tasks: the tasks given to the sampler, in order.
        num_tasks: ``K``.
        episodes_per_task: ``E``, columns per task (trials per task in trial mode).
        episodes_per_trial: episodes per column (1 outside trial mode).
        info: ``[T, B]`` float32 per-step env ``info`` values of the keys the sampler (or
            family) names in ``info_keys``, e.g. Meta-World's ``success``; 0 where not valid.
    """

    obs: Tensor
    actions: Tensor
    rewards: Tensor
    log_probs: Tensor
    terminated: Tensor
    truncated: Tensor
    valid: Tensor
    episode_id: Tensor
    episode_start: Tensor
    last_obs: Tensor
    task_index: Tensor
    episode_index: Tensor
    returns: Tensor
    lengths: Tensor
    unstable: Tensor
    episode_returns: Tensor
    episode_lengths: Tensor
    nonfinite: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.uint8))
    tasks: list[Task] = field(default_factory=list)
    num_tasks: int = 0
    episodes_per_task: int = 0
    episodes_per_trial: int = 1
    info: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Batches built by hand (tests, tools) may leave it out: no column diverged.
        if self.nonfinite.numel() == 0 and self.returns.numel() > 0:
            self.nonfinite = torch.zeros(
                self.returns.shape[0], dtype=torch.uint8, device=self.returns.device
            )

    @property
    def diverged(self) -> Tensor:
        """``[B]`` bool, the column ended in a non-finite action, observation or reward."""
        return self.nonfinite != 0

    def nonfinite_kinds(self) -> str:
        """What was non-finite in the diverged columns (``"actions"``, ...; ``"nothing"``)."""
        bits = 0
        for value in torch.unique(self.nonfinite).tolist():
            bits |= int(value)
        return describe_nonfinite(bits)

    # -- shape -------------------------------------------------------------------------------
    @property
    def horizon(self) -> int:
        """``T``, the padded number of time steps."""
        return int(self.obs.shape[0])

    @property
    def batch_size(self) -> int:
        """``B``, the number of columns."""
        return int(self.obs.shape[1])

    @property
    def num_steps(self) -> int:
        """Number of valid env steps in the batch."""
        return int(self.lengths.sum().item())

    @property
    def device(self) -> torch.device:
        return self.obs.device

    # -- per-task views ------------------------------------------------------------------------
    def for_task(self, k: int) -> EpisodeBatch:
        """The columns of task ``k`` as a batch of views (no copy), ``task_index`` all zero."""
        if not 0 <= k < self.num_tasks:
            raise IndexError(f"task index must lie in [0, {self.num_tasks}), got {k}")
        cols = slice(k * self.episodes_per_task, (k + 1) * self.episodes_per_task)
        values: dict[str, Any] = {}
        for name in _TIME_FIELDS:
            values[name] = getattr(self, name)[:, cols]
        for name in _COLUMN_FIELDS:
            values[name] = getattr(self, name)[cols]
        values["task_index"] = torch.zeros_like(values["task_index"])
        return EpisodeBatch(
            **values,
            tasks=[self.tasks[k]],
            num_tasks=1,
            episodes_per_task=self.episodes_per_task,
            episodes_per_trial=self.episodes_per_trial,
            info={key: v[:, cols] for key, v in self.info.items()},
        )

    def episode_info(self, key: str) -> Tensor:
        """``[B, episodes_per_trial]`` float32: the largest value of info ``key`` over each
        episode's steps (for Meta-World's ``success``: 1 where the episode succeeded at any
        step); NaN for an episode with no valid step.

        Raises:
            KeyError: ``key`` is not in :attr:`info`, naming the keys that are.
        """
        if key not in self.info:
            raise KeyError(
                f"the batch carries no info {key!r}; it has {sorted(self.info)} (a sampler "
                "names the info keys to keep in its info_keys)"
            )
        value = self.info[key]
        out = torch.full((self.batch_size, self.episodes_per_trial), math.nan, device=value.device)
        low = torch.tensor(-math.inf, device=value.device)
        for m in range(self.episodes_per_trial):
            steps = self.valid & (self.episode_id == m)
            best = torch.where(steps, value, low).max(dim=0).values
            out[:, m] = torch.where(steps.any(dim=0), best, out[:, m])
        return out

    def by_task(self, name: str) -> Tensor:
        """Field ``name`` as ``[T, K, E, ...]`` (time-major) or ``[K, E, ...]`` (a view)."""
        value = getattr(self, name)
        if name in _TIME_FIELDS:
            return value.view(
                value.shape[0], self.num_tasks, self.episodes_per_task, *value.shape[2:]
            )
        if name in _COLUMN_FIELDS:
            return value.view(self.num_tasks, self.episodes_per_task, *value.shape[1:])
        raise ValueError(
            f"by_task: {name!r} is not a tensor field of EpisodeBatch; "
            f"fields are {sorted(_TIME_FIELDS + _COLUMN_FIELDS)}"
        )

    # -- device ------------------------------------------------------------------------------
    def tensors(self) -> dict[str, Tensor]:
        """Every tensor field by name."""
        return {name: getattr(self, name) for name in _TIME_FIELDS + _COLUMN_FIELDS}

    def to(self, device: str | torch.device, non_blocking: bool = False) -> EpisodeBatch:
        """All tensors on ``device`` in one host-to-device copy (packed into one byte buffer)."""
        device = torch.device(device)
        tensors = self.tensors()
        if all(t.device == device for t in tensors.values()):
            return self
        chunks, layout, offset = [], [], 0
        for name, t in tensors.items():
            raw = (
                t.contiguous().view(-1).view(torch.uint8)
                if t.numel()
                else t.new_empty(0, dtype=torch.uint8)
            )
            pad = (-raw.numel()) % _ALIGN
            chunks.append(raw)
            if pad:
                chunks.append(torch.zeros(pad, dtype=torch.uint8, device=t.device))
            layout.append((name, offset, raw.numel(), t.dtype, t.shape))
            offset += raw.numel() + pad
        packed = torch.cat(chunks)
        if device.type == "cuda" and not packed.is_pinned():
            packed = packed.pin_memory()
        moved = packed.to(device, non_blocking=non_blocking)
        values = {
            name: moved[start : start + size].view(dtype).view(shape)
            for name, start, size, dtype, shape in layout
        }
        info = {key: v.to(device, non_blocking=non_blocking) for key, v in self.info.items()}
        return dataclasses.replace(self, **values, info=info)  # type: ignore[arg-type]
