"""A paper-size Meta-World batch: resident memory and env steps/s against a plain env.step loop.

(Not ``benchmarks/metaworld.py``: run as a script, that name would shadow the metaworld package.)

Samples ``--meta-batch-size`` ML1 tasks x ``--episodes-per-task`` episodes of ``--env`` (default
40 x 20 of ``reach-v3``, H = 500, the MAML-TRPO meta-batch) with the processes backend on
``--num-workers`` workers, then runs the same envs in a plain loop in as many processes at once:
per worker the same pool (``max_envs`` envs), each wave's tasks set with ``set_task``, reset,
and ``H`` calls of ``env.step`` with pre-drawn actions, no policy and no bookkeeping. Memory is
the peak resident set (``VmHWM``) of the parent plus every worker. Speed is given per wall-clock
second and per CPU second (the sampler's: its workers' and the parent's CPU time during the
batch), which a machine shared with other jobs disturbs far less. Needs ``metarl[metaworld]``.

Usage::

    python benchmarks/metaworld_batch.py                      # 40 x 20, H = 500, 2 workers
    python benchmarks/metaworld_batch.py --meta-batch-size 4 --episodes-per-task 5 \
        --horizon 100                                           # a quick look
    python benchmarks/metaworld_batch.py --json figures.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np
import torch

from metarl.envs import make_family
from metarl.policies import GaussianMLPPolicy
from metarl.sampling import ProcessSampler
from metarl.sampling.sampler import split_tasks


def peak_rss_mib(pid: int | str = "self") -> float:
    """Peak resident set of a process in MiB (``VmHWM``)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def plain_loop(args: tuple[str, int, list[Any], int, int, int]) -> tuple[int, float, float, float]:
    """One worker's share in a plain loop: ``(env steps, seconds, CPU seconds, peak RSS MiB)``."""
    name, horizon, tasks, episodes, max_envs, seed = args
    family = make_family(name, horizon=horizon)
    per = max(1, max_envs // episodes)
    envs: list[Any] = []
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, size=(horizon, 4)).astype(np.float32)
    steps = 0
    start, cpu = time.perf_counter(), time.process_time()
    for first in range(0, len(tasks), per):
        wave = [t for t in tasks[first : first + per] for _ in range(episodes)]
        for i, task in enumerate(wave):
            if i == len(envs):
                envs.append(family.make_env(task))
            else:
                family.retask(envs[i], task)
        live = envs[: len(wave)]
        for env in live:
            env.reset(seed=0)
        for t in range(horizon):
            for env in live:
                env.step(actions[t])
        steps += horizon * len(live)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return steps, seconds, cpu, peak_rss_mib()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="reach-v3", help="the ML1 env")
    parser.add_argument("--meta-batch-size", type=int, default=40, help="tasks in the batch")
    parser.add_argument("--episodes-per-task", type=int, default=20)
    parser.add_argument("--horizon", type=int, default=500)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--max-envs", type=int, help="env pool per worker (default: the family's)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    name = f"ML1-{args.env}"
    family = make_family(name, horizon=args.horizon)
    if args.max_envs is not None:
        family.max_envs = args.max_envs
    max_envs = int(family.max_envs or 40)
    tasks = family.sample_tasks(args.meta_batch_size, np.random.default_rng(0))
    policy = GaussianMLPPolicy(39, 4, hidden_sizes=(100, 100), activation="relu")
    torch.set_num_threads(1)
    print(
        f"{name}: {args.meta_batch_size} tasks x {args.episodes_per_task} episodes, "
        f"H = {args.horizon}, "
        f"{args.num_workers} workers, pool of {max_envs} envs per worker"
    )

    with ProcessSampler(family, policy, num_workers=args.num_workers, timeout=3600) as sampler:
        pids: list[int | str] = ["self", *sampler.pids]
        cpu0 = sum(cpu_seconds(pid) for pid in pids)
        start = time.perf_counter()
        batch = sampler.sample(tasks, args.episodes_per_task, seed=0)
        seconds = time.perf_counter() - start
        cpu = sum(cpu_seconds(pid) for pid in pids) - cpu0
        peaks = [peak_rss_mib(pid) for pid in pids]
    rss = sum(peaks)
    sampler_sps, sampler_cpu_sps = batch.num_steps / seconds, batch.num_steps / cpu
    print(
        f"  sampler:    {batch.num_steps} env steps in {seconds:.1f} s = {sampler_sps:,.0f} "
        f"steps/s ({sampler_cpu_sps:,.0f} per CPU second); peak resident memory {rss:,.0f} MiB "
        f"(parent {peaks[0]:,.0f} + workers {', '.join(f'{p:,.0f}' for p in peaks[1:])})"
    )

    shares = [
        (name, args.horizon, tasks[a:b], args.episodes_per_task, max_envs, i)
        for i, (a, b) in enumerate(split_tasks(args.meta_batch_size, args.num_workers))
    ]
    with mp.get_context("spawn").Pool(len(shares)) as pool:
        start = time.perf_counter()
        results = pool.map(plain_loop, shares)
        wall = time.perf_counter() - start
    plain_steps = sum(r[0] for r in results)
    plain_sps = plain_steps / wall
    plain_cpu_sps = plain_steps / sum(r[2] for r in results)
    plain_rss = sum(r[3] for r in results)
    print(
        f"  plain loop: {plain_steps} env steps in {wall:.1f} s = {plain_sps:,.0f} steps/s "
        f"({plain_cpu_sps:,.0f} per CPU second); workers' peak resident memory "
        f"{plain_rss:,.0f} MiB"
    )
    ratio, cpu_ratio = sampler_sps / plain_sps, sampler_cpu_sps / plain_cpu_sps
    print(
        f"  ratio: {ratio:.2f} of the plain loop's env steps/s, {cpu_ratio:.2f} of its env "
        "steps per CPU second"
    )
    if args.json:
        record = {
            "env": name,
            "tasks": args.meta_batch_size,
            "episodes": args.episodes_per_task,
            "horizon": args.horizon,
            "workers": args.num_workers,
            "max_envs": max_envs,
            "sampler_steps_per_s": sampler_sps,
            "sampler_steps_per_cpu_s": sampler_cpu_sps,
            "sampler_peak_rss_mib": rss,
            "sampler_peak_rss_mib_per_process": peaks,
            "plain_steps_per_s": plain_sps,
            "plain_steps_per_cpu_s": plain_cpu_sps,
            "plain_peak_rss_mib": plain_rss,
            "ratio": ratio,
            "cpu_ratio": cpu_ratio,
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
