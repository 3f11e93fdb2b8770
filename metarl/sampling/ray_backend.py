"""The Ray backend: one actor per worker, on this machine or across a Ray cluster.

Needs the ``ray`` extra (``pip install metarl[ray]``). The same code samples on a laptop's
local Ray and on a cluster of many nodes: start Ray (``ray.init(address=...)``) before building
the sampler, give it a cluster's address (or set ``RAY_ADDRESS``, or ``ray start`` one on this
machine), or let the sampler start a local one. A local one listens on 127.0.0.1 only (see
:func:`init_local_ray`); a cluster keeps the network settings its owner gave it. Actors run the
same :class:`~metarl.sampling.rollout.RolloutWorker` as the other backends, so batches are
identical.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from typing import Any

import numpy as np
from torch import nn

from metarl.family import TaskFamily
from metarl.sampling.rollout import Job, RolloutWorker
from metarl.sampling.sampler import Sampler, WorkerError
from metarl.tasks import TaskSampler

__all__ = ["RaySampler", "init_local_ray"]

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


LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray's switch for its single-machine mode (the default on macOS and Windows): set to 0, Ray
takes 127.0.0.1 as the node's address, and every Ray server binds to the node's address when
that is a loopback one."""


@contextlib.contextmanager
def _loopback_node() -> Iterator[None]:
    """While Ray starts: 127.0.0.1 as this node's address, for the driver and for every process
    Ray starts (they inherit the environment; the driver read the constant when it imported
    Ray, so it is set for the duration too)."""
    from ray._private import ray_constants

    before_env = os.environ.get(LOOPBACK_ENV)
    before_constant = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before_constant
        if before_env is None:
            os.environ.pop(LOOPBACK_ENV, None)
        else:
            os.environ[LOOPBACK_ENV] = before_env


def _joins_a_cluster(address: str | None) -> bool:
    """Whether ``ray.init(address)`` joins a running cluster (an address given, ``"auto"``,
    ``RAY_ADDRESS``, or one that ``ray start`` left on this machine) rather than starting a new
    instance here (no address, or ``"local"``)."""
    if address == "local":
        return False
    if address is not None or os.environ.get("RAY_ADDRESS"):
        return True  # the user's choice, a ray:// client address included
    try:
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:  # a Ray without it: no address means a new instance
        return False
    # Ray's own lookup of a `ray start` cluster (its annotation says str; ray.init passes None).
    return canonicalize_bootstrap_address(None) is not None  # type: ignore[arg-type]


def init_local_ray(**kwargs: Any) -> None:
    """``ray.init(address="local", **kwargs)`` with every Ray process listening on 127.0.0.1.

    Ray's ``_node_ip_address="127.0.0.1"`` does not do this: ``ray.init`` replaces a loopback
    address with the machine's routable one, and its GCS, raylet, workers, dashboard process,
    dashboard agent, runtime-env agent and autoscaler monitor then listen on all interfaces or
    on that address (https://github.com/ray-project/ray/pull/59852 moves Ray's own servers to
    the node's address). Ray's single-machine mode takes 127.0.0.1 as the node's address and
    each of them binds to it. A cluster started this way takes no other machine.
    """
    ray = _import_ray()
    with _loopback_node():
        ray.init(address="local", **kwargs)


class RaySampler(Sampler):
    """Ray actors, one batch per synchronisation.

    Args:
        source, policy, horizon, fast_path: as for :class:`~metarl.sampling.Sampler`.
        num_workers: actors (one CPU each); tasks are split between them in contiguous ranges.
        timeout: seconds to wait for a batch (and for start-up) before raising a WorkerError.
        address: the Ray cluster to join when Ray is not initialised yet (None: the one
            ``RAY_ADDRESS`` names or ``ray start`` left running here, else a new local one
            that listens on 127.0.0.1 only and has as many CPUs as this machine).
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
            if _joins_a_cluster(address):
                try:
                    ray.init(address=address, include_dashboard=False)  # its owner's settings
                except (ConnectionError, RuntimeError) as exc:  # unreachable, auth, version
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    raise WorkerError(
                        f"could not join the Ray cluster {address or '(RAY_ADDRESS)'}: "
                        f"{type(exc).__name__}: {first} (a cluster with token authentication "
                        "also needs RAY_AUTH_MODE=token)"
                    ) from exc
            else:
                init_local_ray(include_dashboard=False)
                cpus = int(ray.cluster_resources().get("CPU", 0))
                if num_workers > cpus:  # the others would wait for a CPU for ever
                    raise ValueError(
                        f"--num-workers {num_workers} exceeds the {cpus} CPUs of the local "
                        f"Ray instance (each actor takes one): use at most {cpus}, or join a "
                        "Ray cluster (RAY_ADDRESS)"
                    )
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
