"""A local Ray that the Ray backend starts listens on 127.0.0.1 only.

Real Ray, real sockets: every process of the local instance (this driver, the GCS, the raylet,
the actors, the dashboard process, the dashboard and runtime-env agents, the autoscaler monitor)
is a descendant of this process, and each TCP or UDP socket any of them has bound is listed.
"""

from __future__ import annotations

import ipaddress
import os

import numpy as np
import pytest

from metarl.envs import make_family
from metarl.policies import GaussianMLPPolicy
from metarl.sampling import RaySampler

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")


def _bound_sockets() -> list[tuple[str, int, str]]:
    """``(ip, port, process name)`` of every listening TCP and bound UDP socket of this
    process and its descendants."""
    me = psutil.Process(os.getpid())
    found = []
    for proc in [me, *me.children(recursive=True)]:
        try:
            connections = proc.net_connections(kind="inet")
            name = " ".join(proc.cmdline()[:1]).rsplit("/", 1)[-1] or proc.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for c in connections:
            udp = c.type == 2  # socket.SOCK_DGRAM: bound, no state
            if c.laddr and (udp or c.status == psutil.CONN_LISTEN):
                found.append((c.laddr.ip, c.laddr.port, name))
    return found


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1: a dual-stack socket on loopback
    return address.is_loopback


@pytest.fixture
def fresh_ray():
    if ray.is_initialized():
        ray.shutdown()
    yield
    ray.shutdown()


@pytest.mark.slow
def test_a_local_ray_listens_on_loopback_only(fresh_ray):
    env_before = os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    family = make_family("Point2DNav", horizon=10)
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(8,))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    # More actors than the local instance has CPUs would wait for ever: refused at once.
    with pytest.raises(ValueError, match=rf"--num-workers {cpus + 1} exceeds the \d+ CPUs"):
        RaySampler(family, policy, num_workers=cpus + 1, timeout=120)
    assert ray.is_initialized()  # started by the sampler: local, on 127.0.0.1
    workers = min(2, int(ray.cluster_resources()["CPU"]))
    sampler = RaySampler(family, policy, num_workers=workers, timeout=120)
    batch = sampler.sample(family.sample_tasks(workers, np.random.default_rng(0)), 1, seed=0)
    assert batch.returns.shape == (workers,)
    sockets = _bound_sockets()
    names = {name for _, _, name in sockets}
    # Not vacuous: Ray's core servers and the actors are among what was listed.
    assert {"gcs_server", "raylet"} <= names, sockets
    actor_pids = {pid for _, pid in sampler.locations}
    listening_pids = set()
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        if any(c.status == psutil.CONN_LISTEN for c in proc.net_connections(kind="inet")):
            listening_pids.add(proc.pid)
    assert actor_pids <= listening_pids
    exposed = [s for s in sockets if not _is_loopback(s[0])]
    assert not exposed, f"listening beyond this machine: {exposed}"
    assert ray.util.get_node_ip_address() == "127.0.0.1"
    sampler.close()
    # The driver's environment is as it was: only Ray's processes took the loopback setting.
    assert os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == env_before
