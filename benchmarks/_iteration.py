"""The timing loop shared by the per-iteration benchmarks of the agents.

Each benchmark builds its agent and sampler with :func:`build`, then calls
:func:`run_iterations`, which times ``agent.train_step`` and splits every iteration into
sampling and optimization (as the agent's own ``time/sampling`` and ``time/optimization``
metrics report them, inner steps counted as optimization) and the rest
(advantages, baseline fits, packing the batches).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np
import torch

from metarl.agent import MetaAgent
from metarl.envs import FamilyTaskSampler, make_family
from metarl.runs import resolve_device
from metarl.sampling import make_sampler


class Setup(NamedTuple):
    family: Any
    config: Any
    device: torch.device
    agent: MetaAgent
    tasks_source: FamilyTaskSampler
    sampler: Any
    rng: np.random.Generator


def build(agent_cls: Any, args: Any, **overrides: Any) -> Setup:
    """Seed 0; ``args.env``'s family; ``agent_cls`` with its ``default`` preset and
    ``overrides`` on ``args.device``; a sampler (``args.backend``, ``args.num_workers``)."""
    torch.manual_seed(0)
    family = make_family(args.env)
    config = replace(agent_cls.preset("default", args.env), **overrides)
    device = resolve_device(args.device)
    agent = agent_cls(config, family.observation_space, family.action_space, device)
    tasks_source = FamilyTaskSampler(family)
    workers = args.num_workers if args.backend in ("processes", "ray") else 1
    sampler = make_sampler(tasks_source, agent.policy, args.backend, workers)
    return Setup(family, config, device, agent, tasks_source, sampler, np.random.default_rng(0))


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock times include it."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_iterations(
    agent: MetaAgent,
    sampler: Any,
    task_source: Any,
    meta_batch_size: int,
    iterations: int,
    rng: np.random.Generator,
) -> list[dict[str, float]]:
    """Time ``iterations`` meta-iterations; prints one line each and returns the records."""
    records = []
    for it in range(iterations):
        tasks = task_source.sample(meta_batch_size, rng)
        t0 = time.perf_counter()
        m = agent.train_step(sampler, tasks, rng)
        sync(agent.device)
        total = time.perf_counter() - t0
        rec = {
            "iteration": it,
            "seconds": total,
            "sampling_s": m["time/sampling"],
            "optimization_s": m["time/optimization"],
            "optimization_share": m["time/optimization"] / total,
            # Neither sampling nor optimization: advantages, baseline fits, packing.
            "other_s": total - m["time/sampling"] - m["time/optimization"],
            "env_steps": m["env_steps"],
            "env_steps_per_s": m["env_steps"] / total,
            "return_pre": m.get("meta/return_pre_adapt", float("nan")),
            "return_post": m.get("meta/return_post_adapt", float("nan")),
        }
        records.append(rec)
        print(
            f"  it {it}: {total:6.2f} s = sampling {rec['sampling_s']:6.2f} s + "
            f"optimization {rec['optimization_s']:6.2f} s "
            f"({100 * rec['optimization_share']:4.1f}%) + other {rec['other_s']:5.2f} s, "
            f"{rec['env_steps_per_s']:8.0f} env steps/s incl. optimization"
        )
    return records


def summarize(records: list[dict[str, float]]) -> dict[str, Any]:
    """Medians over the iterations after the first (which pays one-time start-up costs)."""
    steady = records[1:] or records
    keys = (
        "seconds",
        "sampling_s",
        "optimization_s",
        "optimization_share",
        "other_s",
        "env_steps_per_s",
    )
    summary: dict[str, Any] = {
        ("seconds_per_iteration" if k == "seconds" else k): statistics.median(r[k] for r in steady)
        for k in keys
    }
    summary["iterations"] = records
    print(
        f"median (after the first iteration): {summary['seconds_per_iteration']:.2f} s/it, "
        f"sampling {summary['sampling_s']:.2f} s, optimization {summary['optimization_s']:.2f} s "
        f"({100 * summary['optimization_share']:.1f}% of the iteration), other "
        f"{summary['other_s']:.2f} s, "
        f"{summary['env_steps_per_s']:.0f} env steps/s including optimization"
    )
    return summary
