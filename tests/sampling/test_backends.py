"""Worker processes and Ray: the same bits as in-process, and faults that fail fast and clean."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import cloudpickle
import numpy as np
import pytest
import torch

from metarl.envs import make_family
from metarl.policies import GaussianMLPPolicy
from metarl.sampling import EpisodeBatch, InlineSampler, ProcessSampler, WorkerError
from metarl.tasks import Task

H = 25
# Test-local classes (the GRU policy, the unstable family) travel to workers by value.
from tests.sampling import test_sampler as local  # noqa: E402

cloudpickle.register_pickle_by_value(local)


@pytest.fixture(scope="module")
def family():
    return make_family("HalfCheetahVel", horizon=H)


@pytest.fixture(scope="module")
def policy() -> GaussianMLPPolicy:
    torch.manual_seed(0)
    return GaussianMLPPolicy(17, 6, hidden_sizes=(32, 32))


def assert_batches_equal(a: EpisodeBatch, b: EpisodeBatch) -> None:
    for name, value in a.tensors().items():
        assert torch.equal(value, getattr(b, name)), name


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone once reaped or when its state is Z.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_processes_give_the_inline_bits_with_any_worker_count(family, policy):
    tasks = family.sample_tasks(3, np.random.default_rng(0))
    own = {k: v.detach() for k, v in policy.named_parameters()}
    per_task = [{k: v + 0.01 * i for k, v in own.items()} for i in range(3)]
    expected = InlineSampler(family, policy).sample(tasks, 2, seed=11)
    expected_pt = InlineSampler(family, policy).sample(tasks, 2, per_task, seed=11)
    for workers in (2, 3):
        with ProcessSampler(family, policy, num_workers=workers, timeout=60) as sampler:
            assert_batches_equal(expected, sampler.sample(tasks, 2, seed=11))
            assert_batches_equal(expected_pt, sampler.sample(tasks, 2, per_task, seed=11))
            pids = sampler.pids
        assert not any(alive(p) for p in pids)


def test_processes_run_blow_ups_and_recurrent_trials_like_inline():
    torch.manual_seed(0)
    gru = local.GRUPolicy(17, 6)
    fam = local.GearedCheetah(horizon=H)
    tasks = [Task(velocity=1.0, gear=1.0), Task(velocity=0.5, gear=100.0)]
    expected = InlineSampler(fam, gru).sample(tasks, 2, seed=1, episodes_per_trial=2)
    with ProcessSampler(fam, gru, num_workers=2, timeout=60) as sampler:
        got = sampler.sample(tasks, 2, seed=1, episodes_per_trial=2)
    assert_batches_equal(expected, got)
    assert got.unstable.tolist() == [False, False, True, True]


def test_a_killed_worker_raises_naming_it_and_the_sampler_can_be_rebuilt(family, policy):
    tasks = family.sample_tasks(2, np.random.default_rng(1))
    sampler = ProcessSampler(family, policy, num_workers=2, timeout=60)
    victim = sampler.pids[1]
    os.kill(victim, signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(WorkerError, match=rf"worker 1 \(pid {victim}, columns 3-5\) died"):
        sampler.sample(tasks, 3, seed=0)
    assert time.monotonic() - start < 10
    assert not any(alive(p) for p in sampler.pids)  # the survivor was shut down too
    with pytest.raises(RuntimeError, match="build a new sampler"):
        sampler.sample(tasks, 3, seed=0)
    with ProcessSampler(family, policy, num_workers=2, timeout=60) as rebuilt:
        assert_batches_equal(
            InlineSampler(family, policy).sample(tasks, 3, seed=0), rebuilt.sample(tasks, 3, seed=0)
        )


def test_a_hung_worker_raises_within_the_timeout(family, policy):
    tasks = family.sample_tasks(2, np.random.default_rng(1))
    sampler = ProcessSampler(family, policy, num_workers=2, timeout=3.0)
    stuck = sampler.pids[0]
    os.kill(stuck, signal.SIGSTOP)  # a real hang: the process exists but never answers
    try:
        start = time.monotonic()
        with pytest.raises(
            WorkerError,
            match=rf"worker 0 \(pid {stuck}, columns 0-0\) did not "
            r"answer within 3 s",
        ):
            sampler.sample(tasks, 1, seed=0)
        assert time.monotonic() - start < 10
        assert not any(alive(p) for p in sampler.pids)
    finally:
        if alive(stuck):
            os.kill(stuck, signal.SIGKILL)


CTRL_C_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from metarl.envs import make_family
    from metarl.policies import GaussianMLPPolicy
    from metarl.sampling import ProcessSampler
    import numpy as np

    if __name__ == "__main__":
        fam = make_family("HalfCheetahVel", horizon=100000)
        sampler = ProcessSampler(fam, GaussianMLPPolicy(17, 6), num_workers=2, timeout=600)
        print(*sampler.pids, flush=True)
        sampler.sample(fam.sample_tasks(2, np.random.default_rng(0)), 1, seed=0)
    """
)


def test_ctrl_c_leaves_no_orphan_processes(tmp_path):
    script = tmp_path / "ctrl_c.py"
    script.write_text(CTRL_C_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        # SIGINT may be ignored by the shell that started the suite; the child needs it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        pids = [int(p) for p in line.split()]
        assert len(pids) == 2, proc.stderr.read()  # type: ignore[union-attr]
        time.sleep(1.0)  # the workers are busy sampling
        assert all(alive(p) for p in pids)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert "KeyboardInterrupt" in err
        deadline = time.monotonic() + 10
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(p) for p in pids)
    finally:
        if proc.poll() is None:
            proc.kill()
