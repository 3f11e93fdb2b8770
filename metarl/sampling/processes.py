"""The worker-process backend: each process owns whole tasks and runs free for a whole batch.

Processes start with ``spawn`` (safe with torch), run torch on one thread, ignore SIGINT and
SIGTERM (the parent handles Ctrl-C and SIGTERM, which a terminal, ``timeout`` or a scheduler
sends to the whole process group, and closes them) and exit when the parent's end of their pipe
closes, so no worker outlives the sampler, even one whose parent was SIGKILLed. The parent
synchronises once per batch and waits a bounded time: a worker that dies or does not answer
within ``timeout`` seconds raises :class:`~metarl.sampling.WorkerError` naming it, and the
sampler shuts all workers down.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
import traceback
import weakref
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

import cloudpickle
import numpy as np
from torch import nn

from metarl.family import TaskFamily
from metarl.sampling.rollout import Job, RolloutWorker
from metarl.sampling.sampler import Sampler, WorkerError
from metarl.tasks import TaskSampler

__all__ = ["ProcessSampler"]

Array = np.ndarray
STARTUP_TIMEOUT = 120.0
"""Seconds a worker may take to start (import torch and MuJoCo, build its envs)."""


def _worker_main(conn: Connection, payload: bytes) -> None:
    """A worker process: build the envs once, then sample one job per message until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    import torch

    torch.set_num_threads(1)
    source, policy, horizon, fast_path = cloudpickle.loads(payload)
    worker = RolloutWorker(source, policy, horizon, fast_path)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            break  # the parent is gone
        if job is None:
            break
        try:
            reply: tuple[str, Any] = ("ok", worker.run(job))
        except Exception:  # forwarded to the parent, which raises it as a WorkerError
            reply = ("error", traceback.format_exc())
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            break
    worker.close()


def _shutdown(processes: list[BaseProcess], conns: list[Connection]) -> None:
    for conn in conns:
        try:
            conn.send(None)
        except (BrokenPipeError, OSError):
            pass
    deadline = time.monotonic() + 2.0
    for proc in processes:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in processes:  # busy or hung past the grace time: it ignores SIGTERM, so SIGKILL
        if proc.is_alive():
            proc.kill()
    for proc in processes:
        proc.join(1.0)
    for conn in conns:
        conn.close()


class ProcessSampler(Sampler):
    """Worker processes on this machine, one batch per synchronisation.

    Args:
        source, policy, horizon, fast_path: as for :class:`~metarl.sampling.Sampler`.
        num_workers: worker processes; tasks are split between them in contiguous ranges.
        timeout: seconds to wait for a batch (and for start-up) before raising a WorkerError.
        start_method: ``"spawn"`` or ``"forkserver"`` (never ``fork``: unsafe with torch).
    """

    def __init__(
        self,
        source: str | TaskFamily | TaskSampler,
        policy: nn.Module,
        *,
        num_workers: int = 2,
        horizon: int | None = None,
        fast_path: bool = True,
        timeout: float = 600.0,
        start_method: str = "spawn",
    ) -> None:
        super().__init__(source, policy, horizon=horizon, fast_path=fast_path)
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
            raise ValueError(f"num_workers must be a positive int, got {num_workers!r}")
        if start_method not in ("spawn", "forkserver"):
            raise ValueError(f"start_method must be 'spawn' or 'forkserver', got {start_method!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive seconds, got {timeout!r}")
        self.num_workers = num_workers
        self.timeout = float(timeout)
        ctx: Any = mp.get_context(start_method)
        payload = cloudpickle.dumps((self.source, self.worker_policy, self.horizon, self.fast_path))
        self._procs: list[BaseProcess] = []
        self._conns: list[Connection] = []
        self.pids: list[int] = []
        self._finalizer = weakref.finalize(self, _shutdown, self._procs, self._conns)
        try:
            for i in range(num_workers):
                parent, child = ctx.Pipe()
                proc = ctx.Process(
                    target=_worker_main,
                    args=(child, payload),
                    daemon=True,
                    name=f"metarl-sampler-{i}",
                )
                proc.start()
                child.close()
                self._procs.append(proc)
                self._conns.append(parent)
            # Start-up imports torch and MuJoCo in every process: allow it more than one batch.
            replies = self._gather(
                list(range(num_workers)), "start-up", None, max(self.timeout, STARTUP_TIMEOUT)
            )
            self.pids = [int(pid) for pid in replies]
        except BaseException:
            self.close()
            raise

    def _describe(self, i: int, jobs: list[Job] | None) -> str:
        proc = self._procs[i]
        where = f"worker {i} (pid {proc.pid}"
        if jobs is not None and i < len(jobs):
            job = jobs[i]
            E = job.episodes_per_task
            first = job.first_task * E
            where += f", columns {first}-{first + len(job.tasks) * E - 1}"
        return where + ")"

    def _gather(
        self, workers: list[int], what: str, jobs: list[Job] | None, timeout: float
    ) -> list[Any]:
        """One reply from each of ``workers``, or a WorkerError naming the first that failed."""
        replies: dict[int, Any] = {}
        deadline = time.monotonic() + timeout
        pending = set(workers)
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                names = ", ".join(self._describe(i, jobs) for i in sorted(pending))
                raise WorkerError(
                    f"{names} did not answer within {timeout:g} s during "
                    f"{what} (hung or overloaded); the sampler is shut down"
                )
            handles: dict[Any, int] = {}
            for i in pending:
                handles[self._conns[i]] = i
                handles[self._procs[i].sentinel] = i
            for ready in wait(list(handles), timeout=remaining):
                i = handles[ready]
                if i not in pending:
                    continue
                conn = self._conns[i]
                if conn.poll():
                    try:
                        status, value = conn.recv()
                    except (EOFError, OSError):
                        status, value = "died", None
                else:
                    status, value = "died", None
                if status == "died":
                    self._procs[i].join(0.5)
                    code = self._procs[i].exitcode
                    raise WorkerError(
                        f"{self._describe(i, jobs)} died (exit code {code}) during "
                        f"{what}; the sampler is shut down, build a new one"
                    )
                if status == "error":
                    raise WorkerError(f"{self._describe(i, jobs)} failed during {what}:\n{value}")
                replies[i] = value
                pending.discard(i)
        return [replies[i] for i in workers]

    def _run(self, jobs: list[Job]) -> list[dict[str, Array]]:
        try:
            for i, job in enumerate(jobs):
                try:
                    self._conns[i].send(job)
                except (BrokenPipeError, OSError) as exc:
                    raise WorkerError(
                        f"{self._describe(i, jobs)} is gone ({exc}); the sampler "
                        "is shut down, build a new one"
                    ) from exc
            return self._gather(list(range(len(jobs))), "sampling", jobs, self.timeout)
        except BaseException:
            # A failure, a timeout or Ctrl-C: no partial batch, no orphan processes.
            self.close()
            raise

    def close(self) -> None:
        self._finalizer()
        super().close()
