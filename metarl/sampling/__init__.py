"""Batched multi-task sampling: many tasks x many episodes into one padded episode batch.

Backends share one interface, ``sample(tasks, episodes_per_task, params=None, seed=...)``:

- :class:`InlineSampler`: in this process;
- :class:`ProcessSampler`: worker processes that each own whole tasks and synchronise once per
  batch;
- :class:`RaySampler`: Ray actors, on one machine or a cluster (``metarl[ray]``).

The source is a built-in task family (the batched MuJoCo fast path) or any task sampler with
``make_env(task)`` (the generic Gymnasium path, through ``env.step``).
"""

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
    "WorkerError",
    "column_rngs",
    "prepare_params",
    "recurrent_inputs",
    "split_tasks",
]
