"""Sampler throughput against the raw MuJoCo loop, measured in the same run.

Prints env steps/s and the ratio to a raw ``mj_step`` loop (one ``MjData``, ``frame_skip``
substeps per env step, no policy, controls drawn like the policy's) for HalfCheetahVel and
AntDir with 1, 8, 20 and 40 environments: in-process, 2 worker processes, optionally Ray, and a
``gymnasium.vector.SyncVectorEnv`` reference (the family's Gymnasium view, one batched torch
policy call per step). Each figure is the best of a few repeats (the machine may be shared).

Usage::

    python benchmarks/sampler.py            # full run
    python benchmarks/sampler.py --quick    # short episodes, fewer repeats
    python benchmarks/sampler.py --json figures.json --ray

Columns are split into 2 tasks (1 for a single env), ``E = n / 2`` episodes each, so that two
workers own one task each.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import gymnasium as gym
import mujoco
import numpy as np
import torch

from metarl.cli import parse_args
from metarl.envs import MetaEnv, MujocoTaskFamily, make_family
from metarl.policies import GaussianMLPPolicy
from metarl.sampling import InlineSampler, ProcessSampler, RaySampler, Sampler

FAMILIES = ("HalfCheetahVel", "AntDir")
ENV_COUNTS = (1, 8, 20, 40)


def best_of(repeats: int, fn: Callable[[], int]) -> float:
    """Best env steps/s of ``repeats`` calls of ``fn`` (which returns the steps it took)."""
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        steps = fn()
        best = max(best, steps / (time.perf_counter() - start))
    return best


def raw_loop(family: MujocoTaskFamily, steps: int, horizon: int) -> int:
    """The physics floor: one MjData, ``frame_skip`` substeps per env step, no policy.

    Controls are drawn like the samplers' actions at initialisation (standard normal, clipped
    to the control range): MuJoCo's cost depends on them (HalfCheetah ran about 25% slower
    with clipped normal than with uniform controls here), so the ratios compare like with like.
    """
    model, data = family.model, mujoco.MjData(family.model)
    rng = np.random.default_rng(0)
    low, high = model.actuator_ctrlrange.T
    controls = np.clip(rng.standard_normal((steps, model.nu)), low, high)
    frame_skip = family.frame_skip
    for t in range(steps):
        if t % horizon == 0:
            mujoco.mj_resetData(model, data)
            qpos, qvel = family.reset_state(rng)
            data.qpos[:] = qpos
            data.qvel[:] = qvel
        data.ctrl[:] = controls[t]
        mujoco.mj_step(model, data, nstep=frame_skip)
    return steps


def split(n: int) -> tuple[int, int]:
    return (1, 1) if n == 1 else (2, n // 2)


def sampler_run(sampler: Sampler, family: MujocoTaskFamily, n: int) -> Callable[[], int]:
    K, E = split(n)
    tasks = family.sample_tasks(K, np.random.default_rng(0))
    seed = iter(range(10**6))

    def run() -> int:
        return sampler.sample(tasks, E, seed=next(seed)).num_steps

    return run


def sync_vector_run(
    family: MujocoTaskFamily, policy: GaussianMLPPolicy, n: int, horizon: int
) -> Callable[[], int]:
    envs = gym.vector.SyncVectorEnv([lambda: MetaEnv(family) for _ in range(n)])
    low, high = family.action_space.low, family.action_space.high
    gen = torch.Generator().manual_seed(0)

    def run() -> int:
        obs, _ = envs.reset(seed=0)
        with torch.inference_mode():
            for _ in range(horizon):
                mean, log_std = policy(torch.as_tensor(obs, dtype=torch.float32))
                action = mean + log_std.exp() * torch.randn(mean.shape, generator=gen)
                obs, *_ = envs.step(np.clip(action.numpy(), low, high))
        return n * horizon

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="short episodes, fewer repeats",
    )
    parser.add_argument("--json", type=Path, help="write the figures here as a list of records")
    parser.add_argument(
        "--ray",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also measure 2 Ray actors",
    )
    parser.add_argument("--families", nargs="+", default=list(FAMILIES))
    parser.add_argument("--envs", nargs="+", type=int, default=list(ENV_COUNTS))
    args = parse_args(parser)
    torch.set_num_threads(1)
    horizon = 50 if args.quick else 200
    repeats = 2 if args.quick else 3
    records: list[dict[str, Any]] = []

    def report(env: str, backend: str, n: int, workers: int, sps: float, raw: float) -> None:
        record = {
            "env": env,
            "backend": backend,
            "n_envs": n,
            "workers": workers,
            "steps_per_s": round(sps, 1),
            "ratio_to_raw": round(sps / raw, 3),
        }
        records.append(record)
        print(
            f"{env:15s} {backend:16s} n_envs={n:3d} workers={workers}  "
            f"{sps:9.0f} steps/s  ratio {sps / raw:5.2f}",
            flush=True,
        )

    if args.ray:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    for name in args.families:
        family = make_family(name, horizon=horizon)
        assert isinstance(family, MujocoTaskFamily)
        obs_dim = family.observation_space.shape[0]
        act_dim = family.action_space.shape[0]
        torch.manual_seed(0)
        policy = GaussianMLPPolicy(obs_dim, act_dim, hidden_sizes=(64, 64))
        raw_steps = 4000 if args.quick else 20000
        raw = best_of(repeats, lambda f=family, s=raw_steps: raw_loop(f, s, horizon))
        report(name, "raw", 1, 1, raw, raw)
        inline = InlineSampler(family, policy)
        procs = ProcessSampler(family, policy, num_workers=2)
        backends: list[tuple[str, Sampler, int]] = [("inline", inline, 1), ("processes", procs, 2)]
        if args.ray:
            backends.append(("ray", RaySampler(family, policy, num_workers=2), 2))
        for n in args.envs:
            for backend, sampler, workers in backends:
                run = sampler_run(sampler, family, n)
                run()  # warm-up: builds the worker's envs of this size
                report(name, backend, n, workers, best_of(repeats, run), raw)
            sync = sync_vector_run(family, policy, n, horizon)
            report(name, "sync_vector_env", n, 1, best_of(repeats, sync), raw)
        for _, sampler, _ in backends:
            sampler.close()
    if args.json:
        args.json.write_text(json.dumps(records, indent=2))
        print(f"wrote {len(records)} records to {args.json}")


if __name__ == "__main__":
    main()
