"""Env steps/s of the warp backend against C MuJoCo's processes backend, in the same run.

For each family (HalfCheetahVel and AntDir; ``--families`` for others) and each world count,
prints:

- ``warp_physics``: MuJoCo Warp alone, ``frame_skip`` steps of every world per env step, no
  policy, observation or reward (the floor of the backend on this device);
- ``warp``: the warp backend's ``sample`` (the policy's forward, rewards, buffers on the
  device), one batch of ``n`` columns (``n / 20`` tasks x 20 episodes) per call;
- ``raw``: C MuJoCo's raw loop on one core (one ``MjData``, as ``benchmarks/sampler.py``);
- ``processes``: the processes backend with one worker per core over the same columns.

Each figure is the best of a few repeats after a warm-up (which compiles or loads Warp's
kernels and builds the simulation of that size). On a CUDA device the defaults are 1k, 4k and
16k worlds at H = 200; on the CPU device (for development only) 64, 256 and 1024 worlds at
H = 50, since MuJoCo Warp's CPU device steps worlds one after another.

Usage::

    python benchmarks/warp_sampler.py                  # the device torch finds (cuda, else cpu)
    python benchmarks/warp_sampler.py --worlds 64 256  # other world counts
    python benchmarks/warp_sampler.py --maml-iteration # also a MAML-TRPO iteration on warp
    python benchmarks/warp_sampler.py --json figures.json

(Not ``benchmarks/warp.py``: Python puts a script's folder first on its path, so a file of that
name would shadow the ``warp`` package for every script here.)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np
import torch
from sampler import best_of, raw_loop

from metarl.cli import parse_args
from metarl.envs import MujocoTaskFamily, make_family
from metarl.policies import GaussianMLPPolicy
from metarl.sampling import ProcessSampler, WarpSampler

FAMILIES = ("HalfCheetahVel", "AntDir")
EPISODES_PER_TASK = 20
GPU_WORLDS = (1024, 4096, 16384)
CPU_WORLDS = (64, 256, 1024)


def warp_physics_run(family: MujocoTaskFamily, n: int, horizon: int, device: torch.device) -> Any:
    """``horizon`` env steps of MuJoCo Warp alone over ``n`` worlds (clipped-normal controls)."""
    batch = family.make_device_batch(n, device)
    gen = torch.Generator(device=device).manual_seed(0)
    controls = torch.randn((horizon, n, family.model.nu), generator=gen, device=device)
    controls = controls.clamp(-1.0, 1.0)
    starts = batch.initial_states([np.random.default_rng(i) for i in range(n)], 1)
    everyone = torch.ones(n, dtype=torch.bool, device=device)

    def run() -> int:
        with batch.running():
            batch.reset({k: v[:, 0] for k, v in starts.items()}, everyone)
            for t in range(horizon):
                batch.advance(controls[t])  # type: ignore[attr-defined]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return n * horizon

    return run


def sampler_run(sampler: Any, family: MujocoTaskFamily, n: int, device: torch.device) -> Any:
    tasks = family.sample_tasks(max(1, n // EPISODES_PER_TASK), np.random.default_rng(0))
    episodes = n // len(tasks)
    seeds = iter(range(10**6))

    def run() -> int:
        batch = sampler.sample(tasks, episodes, seed=next(seeds))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return int(batch.num_steps)

    return run


def timed(repeats: int, fn: Callable[[], int]) -> tuple[float, float]:
    """``(steps/s of the best repeat, seconds of the warm-up call)``."""
    start = time.perf_counter()
    fn()
    warm_up = time.perf_counter() - start
    return best_of(repeats, fn), warm_up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if found)")
    parser.add_argument("--worlds", nargs="+", type=int, default=None)
    parser.add_argument("--horizon", type=int, default=None, help="default: 200 cuda, 50 cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES))
    parser.add_argument(
        "--processes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the C MuJoCo processes backend, one worker per core",
    )
    parser.add_argument(
        "--maml-iteration",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also one MAML-TRPO iteration at the paper's size (40 x 20 x H=200) on warp",
    )
    parser.add_argument("--json", type=Path, help="write the figures here as a list of records")
    args = parse_args(parser)
    import warp

    warp.config.log_level = logging.WARNING
    torch.set_num_threads(1)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    on_gpu = device.type == "cuda"
    worlds = args.worlds or list(GPU_WORLDS if on_gpu else CPU_WORLDS)
    horizon = args.horizon or (200 if on_gpu else 50)
    cpus = os.cpu_count() or 1
    records: list[dict[str, Any]] = []
    gpu = torch.cuda.get_device_name(device) if on_gpu else "none"
    print(f"device {device} ({gpu}), {cpus} CPU cores, H = {horizon}, best of {args.repeats}")
    if not on_gpu:
        print("CPU device: MuJoCo Warp for development only; smaller world counts")

    def report(env: str, backend: str, n: int, sps: float, raw: float, warm_s: float) -> None:
        records.append(
            {
                "env": env,
                "backend": backend,
                "n_envs": n,
                "device": str(device) if backend.startswith("warp") else "cpu",
                "horizon": horizon,
                "steps_per_s": round(sps, 1),
                "ratio_to_raw": round(sps / raw, 3),
                "warm_up_s": round(warm_s, 2),
            }
        )
        print(
            f"{env:15s} {backend:13s} n_envs={n:6d}  {sps:10.0f} steps/s  ratio to raw "
            f"{sps / raw:6.2f}  (warm-up {warm_s:5.1f} s)",
            flush=True,
        )

    for name in args.families:
        family = make_family(name, horizon=horizon)
        assert isinstance(family, MujocoTaskFamily)
        try:
            family.check_device_backend("warp")
        except ValueError as exc:
            print(f"{name}: skipped: {exc}")
            continue
        torch.manual_seed(0)
        policy = GaussianMLPPolicy(
            family.observation_space.shape[0], family.action_space.shape[0], hidden_sizes=(64, 64)
        )
        raw = best_of(args.repeats, lambda f=family: raw_loop(f, 20 * horizon, horizon))
        report(name, "raw", 1, raw, raw, 0.0)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="the warp backend on the CPU")
            warp_sampler = WarpSampler(family, policy, device=device)
        procs = ProcessSampler(family, policy, num_workers=cpus) if args.processes else None
        for n in worlds:
            sps, warm = timed(args.repeats, warp_physics_run(family, n, horizon, device))
            report(name, "warp_physics", n, sps, raw, warm)
            sps, warm = timed(args.repeats, sampler_run(warp_sampler, family, n, device))
            report(name, "warp", n, sps, raw, warm)
            if procs is not None:
                sps, warm = timed(args.repeats, sampler_run(procs, family, n, torch.device("cpu")))
                report(name, f"processes:{cpus}", n, sps, raw, warm)
        warp_sampler.close()
        if procs is not None:
            procs.close()

    if args.maml_iteration:
        # The agents' iteration benchmark, on this backend and device (a separate process:
        # its own torch and Warp state).
        cmd = [
            sys.executable,
            str(Path(__file__).parent / "maml_trpo.py"),
            "--backend",
            "warp",
            "--device",
            str(device),
            "--iterations",
            "2",
        ]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    if args.json:
        args.json.write_text(json.dumps(records, indent=2))
        print(f"wrote {len(records)} records to {args.json}")


if __name__ == "__main__":
    main()
