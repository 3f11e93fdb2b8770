"""Seconds per Reptile-PPO meta-iteration, and batched vs sequential per-task PPO updates.

Default size on HalfCheetahVel (H = 200): 20 tasks x 10 episodes, 3 inner rounds of 4 PPO
epochs x 4 minibatches, plus one post-adaptation round: 4 sampler calls per iteration. Prints
one line per iteration (sampling vs optimization) and then times one inner round of PPO
updates for all tasks at once (batched, ``torch.func.vmap`` + :class:`BatchedAdam`) against the
same updates task by task (the identical code with K = 1, run K times). ``--json PATH`` writes
the figures.

    python benchmarks/reptile_ppo.py               # 20 tasks x 10 episodes, 3 iterations
    python benchmarks/reptile_ppo.py --quick       # 20 tasks x 2 episodes, 1 iteration
    python benchmarks/reptile_ppo.py --device cuda

A run's adaptation curve (return after 0..K inner rounds on held-out tasks) is
``metarl eval RUN``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import torch
from _iteration import build, run_iterations, summarize, sync

from metarl.agents import ReptilePPO
from metarl.cli import parse_args


def time_updates(
    agent: ReptilePPO, params: dict[str, torch.Tensor], data: object, repeats: int
) -> tuple[float, float]:
    """Median seconds of one round of PPO updates: all tasks batched, and task by task."""
    K = next(iter(params.values())).shape[0]
    batched, sequential = [], []
    for r in range(repeats):
        state = agent.new_inner_state(params, seed=r)
        sync(agent.device)
        t0 = time.perf_counter()
        agent.ppo_update(params, state, data)  # type: ignore[arg-type]
        sync(agent.device)
        batched.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for k in range(K):
            one = {n: v[k : k + 1] for n, v in params.items()}
            part = dataclasses.replace(
                data,  # type: ignore[type-var]
                **{f.name: getattr(data, f.name)[k : k + 1] for f in dataclasses.fields(data)},  # type: ignore[arg-type]
            )
            agent.ppo_update(one, agent.new_inner_state(one, seed=r), part)
        sync(agent.device)
        sequential.append(time.perf_counter() - t0)
    return statistics.median(batched), statistics.median(sequential)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="HalfCheetahVel")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--meta-batch-size", type=int, default=20)
    parser.add_argument("--episodes-per-task", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="inline", choices=["inline", "processes", "ray"])
    parser.add_argument("--num-workers", type=int, default=2, help="processes/ray backends")
    parser.add_argument("--repeats", type=int, default=3, help="timings of the update ratio")
    parser.add_argument(
        "--quick",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="20 tasks x 2 episodes, 1 iteration",
    )
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parse_args(parser)
    torch.set_num_threads(1 if args.device == "cpu" else torch.get_num_threads())
    if args.quick:
        args.episodes_per_task, args.iterations, args.repeats = 2, 1, 1

    family, config, device, agent, tasks_source, sampler, rng = build(
        ReptilePPO,
        args,
        meta_batch_size=args.meta_batch_size,
        episodes_per_task=args.episodes_per_task,
    )
    print(
        f"Reptile-PPO on {args.env}: {config.meta_batch_size} tasks x "
        f"{config.episodes_per_task} episodes x H={family.horizon}, {config.num_adapt_steps} "
        f"inner rounds x {config.update_epochs} epochs x {config.num_minibatches} minibatches, "
        f"device={device}, backend={args.backend}, torch threads={torch.get_num_threads()}"
    )
    try:
        records = run_iterations(
            agent, sampler, tasks_source, config.meta_batch_size, args.iterations, rng
        )
        tasks = tasks_source.sample(config.meta_batch_size, rng)
        batch = sampler.sample(tasks, config.episodes_per_task, seed=1)
    finally:
        sampler.close()
    params = agent.theta_as_tasks(config.meta_batch_size)
    data = agent.prepare_round(params, batch)
    batched_s, sequential_s = time_updates(agent, params, data, args.repeats)
    summary = {
        "env": args.env,
        "device": str(device),
        "backend": args.backend,
        "meta_batch_size": config.meta_batch_size,
        "episodes_per_task": config.episodes_per_task,
        "horizon": family.horizon,
        "num_adapt_steps": config.num_adapt_steps,
        "update_epochs": config.update_epochs,
        "num_minibatches": config.num_minibatches,
        "round_update_batched_s": batched_s,
        "round_update_sequential_s": sequential_s,
        "sequential_over_batched": sequential_s / batched_s,
        **summarize(records),
    }
    print(
        f"one inner round of PPO updates for {config.meta_batch_size} tasks: batched "
        f"{batched_s:.3f} s, sequential {sequential_s:.3f} s -> "
        f"{sequential_s / batched_s:.1f}x faster batched"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
