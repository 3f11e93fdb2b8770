"""The Ray backend on a real local Ray cluster: a round trip and a dead actor."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch

from metarl.envs import make_family
from metarl.policies import GaussianMLPPolicy
from metarl.sampling import InlineSampler, RaySampler, WorkerError

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_round_trip_and_dead_actor(ray_cluster):
    fam = make_family("HalfCheetahVel", horizon=20)
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(17, 6, hidden_sizes=(16, 16))
    tasks = fam.sample_tasks(3, np.random.default_rng(0))
    own = {k: v.detach() for k, v in policy.named_parameters()}
    per_task = [{k: v * (1 + 0.1 * i) for k, v in own.items()} for i in range(3)]
    sampler = RaySampler(fam, policy, num_workers=2, timeout=60)
    expected = InlineSampler(fam, policy).sample(tasks, 2, per_task, seed=4)
    got = sampler.sample(tasks, 2, per_task, seed=4)
    for name, value in expected.tensors().items():
        assert torch.equal(value, getattr(got, name)), name
    host, pid = sampler.locations[0]
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerError, match=rf"Ray actor 0 \(pid {pid} on {host}, columns 0-3\)"):
        sampler.sample(tasks, 2, per_task, seed=4)
    with pytest.raises(RuntimeError, match="build a new sampler"):
        sampler.sample(tasks, 2, seed=4)
