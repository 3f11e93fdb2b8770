"""The Ray backend: one actor per worker, on this machine or across a Ray cluster.

Needs the ``ray`` extra (``pip install metarl[ray]``). The same code samples on a laptop's
local Ray and on a cluster of many nodes: start Ray (``ray.init(address=...)``) before building
the sampler, or let the sampler start a local one. Actors run the same
:class:`~metarl.sampling.rollout.RolloutWorker` as the other backends, so batches are identical.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import numpy as np
from torch import nn

from metarl.family import TaskFamily
from metarl.sampling.rollout import Job, RolloutWorker
from metarl.sampling.sampler import Sampler, WorkerError
from metarl.tasks import TaskSampler

__all__ = ["RaySampler"]

Array = np.ndarray


class _RayWorker:
    """The body of a Ray actor: a RolloutWorker with torch on one thread."""

    def __init__(self, source: Any, policy: nn.Module, horizon: int, fast_path: bool) -> None:
        import torch

        torch.set_num_threads(1)
        self.worker = RolloutWorker(source, policy, horizon, fast_path)

    def where(self) -> tuple[str, int]:
        return socket.gethostname(), os.getpid()

    def run(self, job: Job) -> dict[str, Array]:
        return self.worker.run(job)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ImportError("RaySampler needs Ray: pip install 'metarl[ray]'") from exc
    if not hasattr(ray, "init"):
        # A stray ./ray folder (Ray's own temp dir, say) imports as an empty namespace package.
        raise ImportError(
            f"'import ray' found {list(getattr(ray, '__path__', []))}, not Ray: "
            "pip install 'metarl[ray]' or run from another folder"
        )
    return ray


class RaySampler(Sampler):
    """Ray actors, one batch per synchronisation.

    Args:
        source, policy, horizon, fast_path: as for :class:`~metarl.sampling.Sampler`.
        num_workers: actors (one CPU each); tasks are split between them in contiguous ranges.
        timeout: seconds to wait for a batch (and for start-up) before raising a WorkerError.
        address: the Ray cluster to join when Ray is not initialised yet (None: start a
            local one).
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
        address: str | None = None,
    ) -> None:
        super().__init__(source, policy, horizon=horizon, fast_path=fast_path)
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
            raise ValueError(f"num_workers must be a positive int, got {num_workers!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive seconds, got {timeout!r}")
        ray = _import_ray()
        self._ray = ray
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False)
        self.num_workers = num_workers
        self.timeout = float(timeout)
        actor = ray.remote(num_cpus=1)(_RayWorker)
        self._actors = [
            actor.remote(self.source, self.worker_policy, self.horizon, self.fast_path)
            for _ in range(num_workers)
        ]
        try:
            self.locations: list[tuple[str, int]] = self._get(
                [a.where.remote() for a in self._actors], "start-up", None, max(self.timeout, 120.0)
            )
        except BaseException:
            self.close()
            raise

    def _describe(self, i: int, jobs: list[Job] | None) -> str:
        where = f"Ray actor {i}"
        locations = getattr(self, "locations", None)
        if locations:
            host, pid = locations[i]
            where += f" (pid {pid} on {host}"
        else:
            where += " ("
        if jobs is not None and i < len(jobs):
            E = jobs[i].episodes_per_task
            first = jobs[i].first_task * E
            where += f", columns {first}-{first + len(jobs[i].tasks) * E - 1}"
        return where + ")"

    def _get(self, refs: list[Any], what: str, jobs: list[Job] | None, timeout: float) -> list[Any]:
        ray = self._ray
        _ready, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        if pending:
            names = ", ".join(self._describe(refs.index(r), jobs) for r in pending)
            raise WorkerError(
                f"{names} did not answer within {timeout:g} s during {what}; "
                "the sampler is shut down"
            )
        out = []
        for i, ref in enumerate(refs):
            try:
                out.append(ray.get(ref))
            except ray.exceptions.RayActorError as exc:
                raise WorkerError(
                    f"{self._describe(i, jobs)} died during {what}; the sampler "
                    f"is shut down, build a new one ({type(exc).__name__})"
                ) from exc
            except ray.exceptions.RayTaskError as exc:
                raise WorkerError(
                    f"{self._describe(i, jobs)} failed during {what}:\n{exc}"
                ) from exc
        return out

    def _run(self, jobs: list[Job]) -> list[dict[str, Array]]:
        try:
            refs = [self._actors[i].run.remote(job) for i, job in enumerate(jobs)]
            return self._get(refs, "sampling", jobs, self.timeout)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for a in getattr(self, "_actors", []):
            self._ray.kill(a)
        self._actors = []
        super().close()
