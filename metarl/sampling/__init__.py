"""Batched multi-task sampling: many tasks x many episodes into one padded episode batch.

Backends share one interface, ``sample(tasks, episodes_per_task, params=None, seed=...)``:

- :class:`InlineSampler`: in this process;
- :class:`ProcessSampler`: worker processes that each own whole tasks and synchronise once per
  batch;
- :class:`RaySampler`: Ray actors, on one machine or a cluster (``metarl[ray]``);
- :class:`WarpSampler`: every column as a world of one MuJoCo Warp simulation on the torch
  device, the policy's forward there too (``metarl[warp]``; the families that support it).

The source is a built-in task family (the batched MuJoCo fast path) or any task sampler with
``make_env(task)`` (the generic Gymnasium path, through ``env.step``).
"""

from typing import Any

import torch

from metarl.sampling.batch import EpisodeBatch
from metarl.sampling.policy_step import PolicyParams, prepare_params
from metarl.sampling.processes import ProcessSampler
from metarl.sampling.ray_backend import RaySampler
from metarl.sampling.rollout import GymEnvBatch, Job, RolloutWorker, column_rngs
from metarl.sampling.sampler import (
    DivergedError,
    InlineSampler,
    Sampler,
    WorkerError,
    split_tasks,
)
from metarl.sampling.trials import recurrent_inputs
from metarl.sampling.warp_backend import WarpSampler


def make_sampler(
    source: Any,
    policy: torch.nn.Module,
    backend: str = "inline",
    num_workers: int = 1,
    horizon: int | None = None,
    device: str | torch.device | None = None,
) -> Sampler:
    """The sampler backend ``backend`` (inline, processes, ray, warp) for ``source`` and
    ``policy``; ``device`` is the warp backend's (default: the policy's)."""
    if backend == "warp":
        if num_workers != 1:
            raise ValueError(
                f"the warp backend steps every column in one simulation; num_workers must be 1, "
                f"got {num_workers}"
            )
        return WarpSampler(source, policy, horizon=horizon, device=device)
    if backend == "inline":
        return InlineSampler(source, policy, horizon=horizon)
    if backend == "processes":
        return ProcessSampler(source, policy, num_workers=num_workers, horizon=horizon)
    if backend == "ray":
        return RaySampler(source, policy, num_workers=num_workers, horizon=horizon)
    raise ValueError(f"unknown sampler backend {backend!r}; choose inline, processes, ray or warp")


__all__ = [
    "DivergedError",
    "EpisodeBatch",
    "GymEnvBatch",
    "InlineSampler",
    "Job",
    "PolicyParams",
    "ProcessSampler",
    "RaySampler",
    "RolloutWorker",
    "Sampler",
    "WarpSampler",
    "WorkerError",
    "column_rngs",
    "make_sampler",
    "prepare_params",
    "recurrent_inputs",
    "split_tasks",
]
